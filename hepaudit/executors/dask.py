"""The Dask executor: the same chunk loop, run as tasks over file/entry ranges on a cluster.

The client (where :func:`hepaudit.audit` runs) prepares the audit exactly as for the local
executor. Then:

1. **x̄** (when an explainer needs it): one task per partition returns the per-chunk input
   sums; the client folds them in chunk order, so x̄ is bit for bit the local one.
2. **Audit**: one task per partition (:class:`~hepaudit.data.reading.Partition`: a file's
   entry range, cut at multiples of ``data.step_size`` so chunks are those of a local run)
   runs :meth:`LocalExecutor.audit_pass` and returns the explainers' partial states in a
   :class:`~hepaudit.executors.partitions.PartResult`. Each worker rebuilds the audit
   context (plugins, onnxruntime session, input builder, explainers) once and keeps it in
   :data:`_CACHE`, keyed by a hash of what it was built from: ONNX sessions do not pickle,
   and building one per task would cost more than the task.
3. **Reduction**: the results are tree-reduced on the workers with the explainers' own
   ``merge``, consecutive partitions only (entry order is kept), and the worker holding the
   root calls each explainer's ``finish`` (:func:`finish_task`): the client gets the
   results, not the states, which for ΔAUC are every jet's scores (0.7 GB at 2M jets).
4. **Per-jet columns**: each task writes ``per_jet.parts/part-NNNNN.root`` (under a
   temporary name, renamed when the partition is complete); the client copies the parts,
   in entry order, into the one ``per_jet.root`` and removes the folder.

Faults: states are returned, never accumulated in place, so a task that Dask retries after
its worker died replaces the lost result, and its part file overwrites a half-written one;
nothing is counted twice. A file that cannot be read fails the audit with its name, or with
``execution.skip_corrupt`` is left out entirely (every partition of it) and named in the
report's warnings.

Explainers that need a reference pass (``needs = {"reference"}``: the OOD explainers and
calibration) get it as tasks too, before the audit: one task per partition of the
reference sample folds it with ``update_reference`` into fresh states, which are merged on
the workers like audit results. Every audit task's worker ``prepare``s those explainers
from the merged reference state (once per worker), their audited states start empty, and
the worker finishing the reduction merges the reference state in first: the state a local
run would hold, so the same numbers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hepaudit.config import AuditConfig
from hepaudit.data.builders import InputBuilder
from hepaudit.data.reading import CorruptFileError, Partition, Sample
from hepaudit.data.stats import InputStats
from hepaudit.errors import ConfigError, DataError
from hepaudit.executors.heap import reusing_heap
from hepaudit.executors.local import Job, LocalExecutor, Outcome, with_reference
from hepaudit.executors.partitions import SPLIT_EVERY, PartResult, PartSummary, merge_many, merge_stats, tree_levels
from hepaudit.explainers.base import AuditContext, AuditFacts, Explainer
from hepaudit.model.session import Tagger
from hepaudit.report.per_jet import TREE_NAME, PerJetSink, PerJetWriter
from hepaudit.run.lifecycle import ExplainerRun, by_reference_sample, call_phase, describe_error

#: How long to wait for a scheduler named by address.
CONNECT_TIMEOUT = "15s"
#: Default partition: this many chunks of ``data.step_size`` (or the whole file if smaller).
CHUNKS_PER_PARTITION = 4


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError("execution.executor = \"dask\" needs Dask: pip install \"hepaudit[dask]\"") from None
    return distributed


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild the audit context; ``key`` identifies it in the cache."""

    config: AuditConfig
    disable: tuple[str, ...]
    plugins: tuple[tuple[str, object], ...]
    names: tuple[str, ...]  # explainers to build; () for the x̄ pass
    facts: AuditFacts
    debug: bool
    key: str = ""

    def with_key(self) -> WorkerSpec:
        digest = hashlib.sha256()
        arrays: dict[str, dict[str, np.ndarray | None]] = {
            "input_mean": dict(self.facts.input_mean or {}), "feature_range": {"": self.facts.feature_range}}
        scalars = {k: v for k, v in vars(self.facts).items() if k not in arrays}
        for part in (repr(self.config), repr(self.disable), repr([n for n, _ in self.plugins]), repr(self.names),
                     repr(sorted(scalars.items())), repr(self.debug)):
            digest.update(part.encode())
        for group, values in arrays.items():
            for name, value in sorted(values.items()):
                digest.update(f"{group}/{name}".encode())
                if value is not None:
                    digest.update(np.ascontiguousarray(value).tobytes())
        return replace(self, key=digest.hexdigest())


@dataclass
class WorkerContext:
    """A worker's audit context, built once per spec: the model session, the builder, explainers."""

    tagger: Tagger
    builder: InputBuilder
    context: AuditContext
    explainers: dict[str, Explainer[Any] | str]  # an instance, or the error its constructor raised
    prepared: dict[str, str] = field(default_factory=dict)  # explainer -> the reference pass it is prepared from


#: Per worker process: contexts by spec key (a couple at most: the x̄ pass's and the audit's).
_CACHE: OrderedDict[str, WorkerContext] = OrderedDict()
_CACHE_SIZE = 2


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        worker = get_worker()
        return int(getattr(worker, "nthreads", None) or worker.state.nthreads)
    except Exception:  # not inside a worker (a test calling the task directly)
        return 1


def worker_context(spec: WorkerSpec) -> WorkerContext:
    """The cached context for ``spec`` in this process, built on first use."""
    found = _CACHE.get(spec.key)
    if found is not None:
        _CACHE.move_to_end(spec.key)
        return found
    if not spec.debug and os.environ.get("HEPAUDIT_QUIET_WORKERS"):
        warnings.filterwarnings("ignore")  # a worker's numpy warnings would reach the user's terminal
    from hepaudit.options import parse_table
    from hepaudit.plugins import PluginHost

    cfg = spec.config
    if not cfg.model.threads:  # onnxruntime's default takes every core: as many as the worker has threads
        cfg = replace(cfg, model=replace(cfg.model, threads=_worker_threads()))
    host = PluginHost(disable=spec.disable, extra=spec.plugins)
    tagger = Tagger(cfg.model)
    builder = InputBuilder(cfg.inputs, host.recipes().recipes, tagger.info.inputs)
    context = AuditContext.build(tagger, builder, spec.facts)
    explainers: dict[str, Explainer[Any] | str] = {}
    for name in spec.names:
        cls = host.explainer_class(name)
        options: Any = parse_table(cls.Options, cfg.explainers.get(name, {}), f"explainers.{name}")
        try:
            explainers[name] = cls(options, context)
        except Exception as exc:  # as in the client: that explainer fails, the others go on
            explainers[name] = describe_error(exc, spec.debug)
    context.peers = {n: e for n, e in explainers.items() if not isinstance(e, str)}
    found = WorkerContext(tagger, builder, context, explainers)
    _CACHE[spec.key] = found
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return found


def _job(spec: WorkerSpec, ctx: WorkerContext, sample: Sample, runs: list[ExplainerRun],
         per_jet: PerJetWriter | None) -> Job:
    cfg = spec.config
    return Job(sample=sample, builder=ctx.builder, tagger=ctx.tagger, context=ctx.context, runs=runs,
               label=cfg.data.label, weight=cfg.data.weight, nonfinite=cfg.data.nonfinite, per_jet=per_jet,
               debug=spec.debug, per_jet_inputs=cfg.per_jet.inputs)


@dataclass
class StatsPart:
    index: int
    chunks: list[InputStats]
    skipped: list[tuple[str, str]]


@reusing_heap
def stats_task(spec: WorkerSpec, sample: Sample, partition: Partition, index: int) -> StatsPart:
    """The x̄ pass over one partition: per-chunk input sums (the client folds them in order)."""
    ctx = worker_context(spec)
    executor = LocalExecutor(prefetch=False)  # a worker's parallelism is the cluster's processes
    try:
        chunks = executor.chunk_stats(sample, _job(spec, ctx, sample, [], None), partition)
    except CorruptFileError as exc:
        if not spec.config.execution.skip_corrupt:
            raise
        return StatsPart(index, [], [(exc.path, str(exc))])
    return StatsPart(index, chunks, [])


def _runs(ctx: WorkerContext, names: tuple[str, ...]) -> list[ExplainerRun]:
    runs = []
    for name in names:
        made = ctx.explainers[name]
        run = ExplainerRun(name=name, plugin={})
        if isinstance(made, str):
            run.error = made
        else:
            run.explainer = made
        runs.append(run)
    return runs


@reusing_heap
def reference_task(spec: WorkerSpec, sample: Sample, partition: Partition, index: int,
                   names: tuple[str, ...]) -> PartResult:
    """The reference pass over one partition of a reference sample, for the explainers ``names``:
    fresh states folded with ``update_reference``; merged like audit results, prepared from after."""
    ctx = worker_context(spec)
    runs = _runs(ctx, names)
    for run in runs:
        run.reference = sample
    executor = LocalExecutor(prefetch=False)  # a worker's parallelism is the cluster's processes
    live = executor.start(runs, spec.debug)
    try:
        executor.reference_pass(_job(spec, ctx, sample, runs, None), live, partition)
    except CorruptFileError as exc:
        if not spec.config.execution.skip_corrupt:
            raise
        return PartResult(first=index, last=index, skipped=[(exc.path, str(exc))])
    return PartResult(first=index, last=index, states={r.name: r.state for r in live if r.error is None},
                      errors={r.name: r.error for r in runs if r.error is not None},
                      seconds={r.name: r.seconds for r in runs})


def _prepare_from(ctx: WorkerContext, runs: list[ExplainerRun], key: str, references: tuple[PartResult, ...],
                  debug: bool) -> dict[str, Any]:
    """Each run's merged reference state (by name), its explainer prepared from it once per
    worker (``key`` names the audit's reference pass); a failed reference pass fails the run."""
    states: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for ref in references:
        states.update(ref.states)
        errors.update(ref.errors)
    for run in runs:
        if run.name in errors:
            run.error = run.error or errors[run.name]
        elif run.name in states and ctx.prepared.get(run.name) != key:
            if run.explainer is not None:
                call_phase(run, run.explainer.prepare, states[run.name], debug=debug)
            if run.error is None:
                ctx.prepared[run.name] = key
    return states


@reusing_heap
def audit_task(spec: WorkerSpec, sample: Sample, partition: Partition, index: int,
               parts_dir: str | None, reference_key: str = "", *references: PartResult) -> PartResult:
    """Audit one partition: fresh states for every explainer, the local chunk loop, no finish.
    Explainers with a reference pass are first prepared from its merged states ``references``."""
    ctx = worker_context(spec)
    runs = _runs(ctx, spec.names)
    _prepare_from(ctx, runs, reference_key, references, spec.debug)
    per_jet = None
    if parts_dir is not None:
        per_jet = PerJetWriter(Path(parts_dir) / f"part-{index:05d}.root")
    executor = LocalExecutor(prefetch=False)  # a worker's parallelism is the cluster's processes
    inference0 = ctx.tagger.inference_s
    live = executor.start(runs, spec.debug)
    try:
        executor.audit_pass(_job(spec, ctx, sample, runs, per_jet), live, partition)
    except CorruptFileError as exc:  # audit_pass has already removed the part's temporary file
        if not spec.config.execution.skip_corrupt:
            raise
        return PartResult(first=index, last=index, skipped=[(exc.path, str(exc))])
    written = per_jet is not None and per_jet.close()
    out = executor.outcome
    return PartResult(first=index, last=index,
                      states={r.name: r.state for r in live if r.error is None},
                      errors={r.name: r.error for r in runs if r.error is not None},
                      seconds={r.name: r.seconds for r in runs}, n_jets=out.n_jets, n_dropped=out.n_dropped,
                      read_s=out.read_s, inference_s=ctx.tagger.inference_s - inference0,
                      score_hist=out.score_hist, logit_hist=out.logit_hist, input_hist=out.input_hist,
                      logit_boot=out.logit_boot,
                      per_jet=[str(per_jet.path)] if written and per_jet else [])


@reusing_heap
def merge_task(spec: WorkerSpec, *parts: PartResult) -> PartResult:
    """One node of the tree reduction, with the worker's explainer instances' ``merge``."""
    ctx = worker_context(spec)

    def merge(name: str, a: Any, b: Any) -> Any:
        explainer = ctx.explainers[name]
        assert not isinstance(explainer, str)
        return explainer.merge(a, b)

    return merge_many(parts, merge)


@reusing_heap
def finish_task(spec: WorkerSpec, part: PartResult, reference_key: str = "", *references: PartResult) -> PartResult:
    """The root of the reduction: every explainer's ``finish`` on its merged state, where the
    state already is; the result goes back to the client instead of the state. The reference
    pass's merged state goes in first (as the local executor merges it)."""
    ctx = worker_context(spec)
    errors = dict(part.errors)
    runs = [r for r in _runs(ctx, spec.names) if r.name not in errors]
    reference = _prepare_from(ctx, runs, reference_key, references, spec.debug)
    for run in runs:
        if run.name in part.states:
            run.state = part.states[run.name]
        elif run.name in reference:  # no audited partition: the reference state alone
            run.state = reference[run.name]
    with_reference([r for r in runs if r.name in part.states], reference, spec.debug)
    LocalExecutor.finish([r for r in runs if r.name in part.states or r.name in reference], spec.debug)
    seconds = dict(part.seconds)
    results: dict[str, Any] = {}
    for run in runs:
        seconds[run.name] = (seconds.get(run.name, 0.0) + run.seconds
                             + sum(ref.seconds.get(run.name, 0.0) for ref in references))
        if run.error is not None:
            errors[run.name] = run.error
        elif run.result is not None:
            results[run.name] = run.result
    return replace(part, states={}, results=results, errors=errors, seconds=seconds)


def summary_task(part: PartResult) -> PartSummary:
    return part.summary()


class DaskExecutor:
    """Runs a :class:`Job` on a Dask cluster: ``scheduler`` (an address or a ``distributed.Client``),
    else a local cluster of ``workers`` processes."""

    def __init__(self, config: AuditConfig, *, scheduler: Any = None, workers: int | None = None,
                 threads_per_worker: int = 1, disable: tuple[str, ...] = (),
                 plugins: tuple[tuple[str, object], ...] = (), partition_size: int | None = None) -> None:
        distributed = _require_distributed()
        # what workers rebuild the context from: where the cluster is does not matter to them
        self.config = replace(config, execution=replace(config.execution, scheduler=None, workers=None))
        self.disable = tuple(disable)
        self.plugins = tuple(plugins)
        self.partition_size = partition_size
        self.outcome = Outcome()
        self._cluster = None
        self._own_client = False
        if isinstance(scheduler, distributed.Client):
            self.client = scheduler
        elif scheduler is not None:
            try:
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise DataError(f"execution.scheduler: cannot reach the Dask scheduler at {scheduler} "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
            self._own_client = True
        else:
            import dask

            # ONNX sessions release the GIL but our numpy glue does not: processes, not threads
            with dask.config.set({"distributed.worker.daemon": False}):
                quiet = {"silence_logs": logging.ERROR} if os.environ.get("HEPAUDIT_QUIET_WORKERS") else {}
                self._cluster = distributed.LocalCluster(n_workers=workers or 1, threads_per_worker=threads_per_worker,
                                                         processes=True, dashboard_address=None, **quiet)
            self.client = distributed.Client(self._cluster)
            self._own_client = True
        self.run_id = uuid.uuid4().hex[:12]
        self._local: LocalExecutor | None = None

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------
    def _spec(self, job: Job, names: tuple[str, ...]) -> WorkerSpec:
        facts = job.context.facts()
        if not names:  # the x̄ pass: before x̄ exists, and one cached context whatever x̄ turns out
            facts = replace(facts, input_mean=None, feature_range=None)
        return WorkerSpec(config=self.config, disable=self.disable, plugins=self.plugins, names=names,
                          facts=facts, debug=job.debug).with_key()

    def partitions(self, sample: Sample) -> list[Partition]:
        size = self.partition_size or CHUNKS_PER_PARTITION * sample.config.step_size
        return sample.partitions(size)

    def _progress(self, futures: list[Any], job: Job, desc: str) -> None:
        """Wait for every future (a progress bar on a terminal); the first error is raised."""
        from distributed import as_completed

        counter = job.progress.phase(desc, len(futures), unit="part")
        try:
            for future in as_completed(futures):
                if future.status == "error":
                    exc = future.exception()  # the task's own exception (DataError, ModelError, ...)
                    self.client.cancel([f for f in futures if f is not future])
                    raise exc
                counter.update(1)  # raises AuditCancelled when the run was cancelled
        except BaseException:
            self.client.cancel(futures)
            raise
        finally:
            counter.close()

    # -- the executor interface (as LocalExecutor) --------------------------------------------
    def input_stats(self, sample: Sample, job: Job) -> InputStats:
        """The x̄ pass as tasks; per-chunk sums folded in chain order."""
        # spec and sample go inside each task (a few kB), not scattered: scattered data that dies
        # with a worker cannot be recomputed, a task's arguments can
        spec = self._spec(job, ())
        parts = self.partitions(sample)
        futures = [self.client.submit(stats_task, spec, sample, p, i, key=f"hepaudit-stats-{self.run_id}-{i}")
                   for i, p in enumerate(parts)]
        self._progress(futures, job, "input means")
        stats = InputStats()
        skipped: list[tuple[str, str]] = []
        for part in self.client.gather(futures):
            for chunk in part.chunks:
                stats = merge_stats(stats, chunk)
            skipped += part.skipped
        if sample is job.sample:
            self._note_skipped(skipped)  # and the audit pass leaves these files out
        else:  # a [reference] file: x̄ comes from the rest of the reference
            self.outcome.warnings += [f"reference: {reason} (left out of x̄)" for _, reason in skipped]
        del futures
        return stats

    def _note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        for path, reason in skipped:
            if path not in {p for p, _ in self.outcome.skipped}:
                self.outcome.skipped.append((path, reason))

    def reference_pass(self, spec: WorkerSpec, job: Job, live: list[ExplainerRun]) -> tuple[Any, ...]:
        """Per reference sample, the explainers' reference states over its partitions, merged
        on the workers: futures of one PartResult each (the explainers are prepared from them)."""
        roots = []
        for n, (sample, users) in enumerate(by_reference_sample(live)):
            names = tuple(r.name for r in users)
            futures = [self.client.submit(reference_task, spec, sample, p, i, names,
                                          key=f"hepaudit-reference-{self.run_id}-{n}-{i}")
                       for i, p in enumerate(self.partitions(sample))]
            self._progress(futures, job, f"reference ({sample.where})")
            summaries = self.client.gather([self.client.submit(summary_task, f, key=f"{f.key}-summary")
                                            for f in futures])
            self._note_skipped([item for s in summaries for item in s.skipped])  # named, as audited files are
            roots.append(self._merge_tree(spec, futures, f"reference-{n}"))
        return tuple(roots)

    def run(self, job: Job) -> Outcome:
        executor = LocalExecutor(prefetch=False)  # reads nothing: the client only starts the states
        live = executor.start(job.runs, job.debug)  # the client's states are only for explainers failing here
        names = tuple(r.name for r in live if r.error is None)
        spec = self._spec(job, names)
        parts_dir = None
        if isinstance(job.per_jet, PerJetWriter):  # beside the output, where the workers can write
            parts_path = job.per_jet.path.parent / "per_jet.parts"
            shutil.rmtree(parts_path, ignore_errors=True)
            parts_path.mkdir(parents=True)
            parts_dir = str(parts_path)
        elif job.per_jet is not None:  # kept in memory (out=None): the parts on this machine
            parts_dir = tempfile.mkdtemp(prefix="hepaudit-per-jet-parts-")
        skip_files = {p for p, _ in self.outcome.skipped}  # found unreadable by the x̄ pass
        parts = [(i, p) for i, p in enumerate(self.partitions(job.sample)) if p.path not in skip_files]
        try:
            references = self.reference_pass(spec, job, live)
            futures = [self.client.submit(audit_task, spec, job.sample, p, i, parts_dir, self.run_id, *references,
                                          key=f"hepaudit-audit-{self.run_id}-{i}") for i, p in parts]
            self._progress(futures, job, "auditing")
            summaries = self.client.gather([self.client.submit(summary_task, f, key=f"{f.key}-summary")
                                            for f in futures])
            bad = {path for s in summaries for path, _ in s.skipped}
            self._note_skipped([item for s in summaries for item in s.skipped])
            # a file with one unreadable partition is left out whole, not with a hole in it
            kept = [f for f, (_, p) in zip(futures, parts) if p.path not in bad]
            futures.clear()  # the reduction holds the only references: merged inputs are released
            merged = self._reduce(spec, kept, references)
            if job.per_jet is not None:
                self._combine_per_jet(job.per_jet, merged.per_jet if merged else [])
        finally:
            if parts_dir is not None:
                shutil.rmtree(parts_dir, ignore_errors=True)
        if merged is not None:
            for run in live:
                if run.name in merged.errors:
                    run.error = run.error or merged.errors[run.name]
                elif run.name in merged.results:
                    run.result = merged.results[run.name]
                run.seconds += merged.seconds.get(run.name, 0.0)
            self.outcome.n_jets = merged.n_jets
            self.outcome.n_dropped = merged.n_dropped
            self.outcome.read_s = merged.read_s
            self.outcome.score_hist = merged.score_hist
            self.outcome.logit_hist = merged.logit_hist
            self.outcome.logit_boot = merged.logit_boot
            self.outcome.input_hist = merged.input_hist
            job.tagger.inference_s += merged.inference_s
        # finished on a worker, or failed; what is left (no partition audited) finishes here
        executor.finish([r for r in live if r.result is None], job.debug)
        return self.outcome

    def _merge_tree(self, spec: WorkerSpec, futures: list[Any], tag: str) -> Any:
        """Tree-merge consecutive results on the workers; the root's future."""
        level = list(futures)
        futures.clear()  # the tree holds the only references: merged inputs are released
        for depth, groups in enumerate(tree_levels(len(level), SPLIT_EVERY)):
            level = [self.client.submit(merge_task, spec, *level[a:b],
                                        key=f"hepaudit-merge-{tag}-{self.run_id}-{depth}-{a}") for a, b in groups]
        return level[0]

    def _reduce(self, spec: WorkerSpec, futures: list[Any], references: tuple[Any, ...] = ()) -> PartResult | None:
        """Tree-reduce consecutive results on the workers and finish the root there; its results
        come back to the client."""
        if not futures:
            return None
        root = self._merge_tree(spec, futures, "audit")
        return self.client.gather(self.client.submit(finish_task, spec, root, self.run_id, *references,
                                                     key=f"hepaudit-finish-{self.run_id}"))

    def _combine_per_jet(self, writer: PerJetSink, paths: list[str]) -> None:
        """Copy the part files, in entry order, into the one per_jet.root."""
        import uproot

        step = self.config.data.step_size
        for path in paths:
            with uproot.open(path) as handle:
                for arrays in handle[TREE_NAME].iterate(step_size=step, library="np"):
                    writer.write(dict(arrays))
