"""The local executor: one loop over chunks, every explainer fed from it.

Each chunk is read once, its inputs built once and scored once; then every explainer
updates its partial state from the same :class:`~hepaudit.explainers.base.Chunk`. One
explainer's exception marks it "failed" and the others go on. Per-jet columns are
written as the loop goes, so memory does not grow with the number of jets beyond what
explainers keep. A first, lighter pass computes x̄ and the input warnings when an
explainer needs the mean.

The sample is cut into the same partitions as on Dask (``execution.partition_size``; one
partition when unset): each partition's explainer states start empty, and the states are
merged with the same tree (:class:`~hepaudit.executors.partitions.MergeTree`) and, for
explainers with a reference pass, the same order (reference state first) as the Dask
executor's. So every ``merge`` runs in a local audit with several partitions, and a
local report equals the Dask one sum for sum.

The pieces are shared with the Dask executor (:mod:`hepaudit.executors.dask`), which runs
:meth:`LocalExecutor.audit_pass` on one partition (a file's entry range) per task: there
is one chunk loop, whichever executor drives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from hepaudit.data.builders import InputBuilder, feature_matrix, input_branches
from hepaudit.data.reading import Partition, RawChunk, Sample
from hepaudit.data.stats import InputStats
from hepaudit.errors import DataError, ModelError
from hepaudit.executors.partitions import (
    BOOT_LOGIT_BINS,
    LOGIT_BINS,
    SCORE_BINS,
    SPLIT_EVERY,
    MergeTree,
    PartResult,
    fill_input_histograms,
    merge_many,
)
from hepaudit.explainers.base import AuditContext, Chunk
from hepaudit.model.session import ModelOutputs, Tagger
from hepaudit.report.per_jet import PerJetSink
from hepaudit.run.lifecycle import ExplainerRun, by_reference_sample, call_phase
from hepaudit.run.prefetch import Prefetched
from hepaudit.run.progress import PhaseCounter, Progress

__all__ = ["SCORE_BINS", "ExplainerRun", "Job", "LocalExecutor", "Outcome", "by_reference_sample"]


@dataclass
class Job:
    """Everything the executor needs, prepared by :mod:`hepaudit.audit`."""

    sample: Sample
    builder: InputBuilder
    tagger: Tagger
    context: AuditContext
    runs: list[ExplainerRun]
    label: str | None
    weight: str | None
    nonfinite: str
    per_jet: PerJetSink | None
    progress: Progress = field(default_factory=Progress)
    debug: bool = False
    keep_arrays: bool = True  # an explainer reads chunk.arrays (needs "arrays")
    per_jet_inputs: bool = False  # [per_jet] inputs: the model inputs go to per_jet.root too


@dataclass
class Outcome:
    read_s: float = 0.0
    chunks_read: int = 0  # chunks read from disk and built, over every pass
    n_jets: int = 0
    n_dropped: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): unreadable, left out
    # score histograms on [0, 1]: rows background, signal, unlabelled (scores outside are clipped)
    score_hist: np.ndarray = field(default_factory=lambda: np.zeros((3, len(SCORE_BINS) - 1)))
    # weighted logit histograms, background and signal: the performance section's ROC
    logit_hist: np.ndarray = field(default_factory=lambda: np.zeros((2, len(LOGIT_BINS) - 1)))
    input_hist: np.ndarray | None = None  # per class, each feature's values (the inputs section)
    # (R, 2, bins): the logit histograms under each bootstrap replicate's jet weights (the AUC's interval)
    logit_boot: np.ndarray | None = None

    def fill_scores(self, score: np.ndarray, labels: np.ndarray | None, logit: np.ndarray | None = None,
                    weights: np.ndarray | None = None, entries: np.ndarray | None = None,
                    bootstrap: tuple[int, int] = (0, 0)) -> None:
        """Fill the histograms; ``bootstrap`` (seed, replicates) with ``entries`` fills the
        replicates' logit histograms too."""
        cls = np.full(len(score), 2) if labels is None else labels.astype(int)
        for c in range(3):
            self.score_hist[c] += np.histogram(np.clip(score[cls == c], 0.0, 1.0), SCORE_BINS)[0]
        if logit is None or labels is None:
            return
        z = np.clip(logit, LOGIT_BINS[0], LOGIT_BINS[-1])
        w = np.ones(len(z)) if weights is None else weights
        for c in (0, 1):
            sel = cls == c
            self.logit_hist[c] += np.histogram(z[sel], LOGIT_BINS, weights=w[sel])[0]
        seed, replicates = bootstrap
        if replicates and entries is not None and len(z):
            from hepaudit.bootstrap import poisson_weights

            boot = poisson_weights(entries, seed, replicates) * w[None, :]
            nbins = len(BOOT_LOGIT_BINS) - 1
            index = np.clip(np.searchsorted(BOOT_LOGIT_BINS, z, side="right") - 1, 0, nbins - 1) + nbins * (cls == 1)
            index = np.where((cls == 0) | (cls == 1), index, -1)
            keep = index >= 0
            if self.logit_boot is None:
                self.logit_boot = np.zeros((replicates, 2, nbins))
            for r in range(replicates):
                self.logit_boot[r] += np.bincount(index[keep], weights=boot[r, keep], minlength=2 * nbins
                                                  ).reshape(2, nbins)


def _nonfinite_rows(inputs: dict[str, np.ndarray]) -> np.ndarray:
    bad = np.zeros(len(next(iter(inputs.values()))), bool)
    for value in inputs.values():
        bad |= ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
    return bad


def _project(arrays: ak.Array, fields: list[str]) -> ak.Array:
    """Only these fields of a chunk's branches (a record array of the same length)."""
    if fields:
        return arrays[fields]
    return ak.Array(ak.contents.RecordArray([], [], length=len(arrays)))


def _column(arrays: ak.Array, branch: str | None, dtype: type) -> np.ndarray | None:
    return None if branch is None else ak.to_numpy(arrays[branch]).astype(dtype)


#: A kept chunk of the x̄ pass: the raw branches, the built inputs, jets dropped, its first chain entry.
Replayed = tuple[RawChunk, dict[str, np.ndarray], int, int]


def _built_chunks(sample: Sample, branches: list[str], builder: InputBuilder, partition: Partition | None,
                  threads: int, helping: Callable[[], bool] | None
                  ) -> Iterator[tuple[RawChunk, dict[str, np.ndarray]]]:
    """Each chunk as read, with the model inputs built from it (the part that runs ahead) on
    up to ``threads`` threads (beyond the first only while ``helping()``, when given)."""
    for raw in sample.chunks(branches, partition=partition):
        yield raw, builder.build(raw.arrays, threads, helping)


class LocalExecutor:
    """Runs a :class:`Job` in this process, partition by partition (``partition_size`` jets
    each, cut as on Dask; None: the whole sample is one partition)."""

    def __init__(self, cache_bytes: int = 0, partition_size: int | None = None,
                 split_every: int = SPLIT_EVERY, prefetch: bool = True) -> None:
        self.outcome = Outcome()
        self.prefetch = prefetch  # read and build the next chunk on a thread (hepaudit.run.prefetch)
        self.split_every = split_every  # nodes merged at once (Dask's, unless a check asks for another tree)
        # chunks of the x̄ pass kept for the audit pass, by sample
        self.cache_bytes = cache_bytes
        self.partition_size = partition_size
        self._replay: dict[int, list[Replayed]] = {}
        self._last_dropped = 0  # jets the latest chunk lost to the non-finite policy
        self._last_first = 0  # the latest chunk's first chain entry (before any was dropped)
        self._emptied: list[Replayed] = []  # chunks whose every jet was dropped, as the x̄ pass saw them

    def close(self) -> None:
        """Nothing to release in this process."""
        self._replay.clear()

    def partitions(self, sample: Sample) -> list[Partition | None]:
        """The partitions whose states are merged (None: the whole sample in one pass)."""
        if self.partition_size is None:
            return [None]
        return list(sample.partitions(self.partition_size)) or [None]

    def _replayed(self, sample: Sample, partition: Partition | None) -> list[Replayed] | None:
        kept = self._replay.get(id(sample))
        if kept is None or partition is None:
            return kept
        lo, hi = partition.offset + partition.start, partition.offset + partition.stop
        return [item for item in kept if item[0].file == partition.path and lo <= item[3] < hi]

    def _chunks(self, sample: Sample, branches: list[str], job: Job, counter: PhaseCounter | None,
                count: bool = True, partition: Partition | None = None
                ) -> Iterator[tuple[RawChunk, dict[str, np.ndarray]]]:
        """Read and build inputs chunk by chunk, applying the non-finite policy to inputs.

        Reference samples (``count=False``) always drop non-finite jets: they only calibrate.
        ``partition`` restricts the pass to one file's entry range. A chunk's blocks are built
        on up to ``tagger.block_threads`` threads (:meth:`InputBuilder.build`), beyond the
        first only while the pass waits for the chunk (the x̄ pass, cheap explainers, the
        first chunk of any pass), not while it keeps the cores busy with the chunk before.
        """
        replay = self._replayed(sample, partition)
        if replay is not None:  # the x̄ pass kept every chunk: read and build nothing again
            for raw, inputs, dropped, _ in replay:
                if count:
                    self.outcome.n_dropped += dropped
                if len(raw.entries):  # a chunk whose every jet was dropped only counts
                    yield raw, inputs
                if counter is not None:
                    counter.update(len(raw.entries) + dropped)
            return
        t0 = time.perf_counter()
        cores = job.tagger.block_threads
        if self.prefetch:
            started: list[Prefetched[tuple[RawChunk, dict[str, np.ndarray]]]] = []

            def idle() -> bool:  # the producer starts before `started` holds it: nothing consumed yet
                return not started or started[0].consumer_idles()

            started.append(Prefetched(_built_chunks(sample, branches, job.builder, partition, cores, idle)))
            chunks: Iterator[tuple[RawChunk, dict[str, np.ndarray]]] = started[0]
        else:  # built between the chunks' work: nothing else runs meanwhile
            chunks = _built_chunks(sample, branches, job.builder, partition, cores, None)
        try:
            checked = False
            for raw, inputs in chunks:
                self._last_first = int(raw.entries[0]) if len(raw.entries) else 0
                if not checked:  # a config that builds the wrong shape fails here, not inside onnxruntime
                    job.tagger.check_inputs(inputs)
                    checked = True
                bad = _nonfinite_rows(inputs) | self._bad_weights(sample, raw, job.nonfinite == "fail" and count)
                if bad.any():
                    if job.nonfinite == "fail" and count:
                        # count over the whole sample, so the message says how big the problem is
                        first = int(raw.entries[np.flatnonzero(bad)[0]])
                        n_bad = int(bad.sum()) + sum(int(_nonfinite_rows(rest).sum()) for _, rest in chunks)
                        raise DataError(f"{raw.file}: {n_bad} of {sample.n_entries} jets have NaN or inf "
                                        f"model inputs (first at entry {first}); fix the input or set "
                                        f"{sample.where}.nonfinite = \"drop\"")
                    keep = ~bad
                    inputs = {k: v[keep] for k, v in inputs.items()}
                    raw = RawChunk(raw.arrays[keep], raw.entries[keep], raw.file)
                    if count:
                        self.outcome.n_dropped += int(bad.sum())
                self._last_dropped = int(bad.sum())
                self.outcome.chunks_read += 1
                # with read-ahead, only the wait for the next chunk: the reading the audit did not hide
                self.outcome.read_s += time.perf_counter() - t0
                if len(raw.entries):
                    yield raw, inputs
                else:  # every jet dropped: no chunk for the explainers, but the x̄ pass's cache keeps the count
                    self._emptied.append((raw, inputs, self._last_dropped, self._last_first))
                if counter is not None:
                    counter.update(len(bad))
                t0 = time.perf_counter()
        finally:
            if isinstance(chunks, Prefetched):
                chunks.close()

    @staticmethod
    def _bad_weights(sample: Sample, raw: RawChunk, fail: bool) -> np.ndarray:
        """Jets whose weight is NaN or inf (a wrong weight is a wrong number in every weighted
        sum): an error naming the branch with ``fail``, else rows to drop with the others."""
        weight = sample.config.weight
        n = len(raw.entries)
        if not weight or weight not in raw.arrays.fields:
            return np.zeros(n, bool)
        bad = ~np.isfinite(ak.to_numpy(raw.arrays[weight]).astype(np.float64))
        if bad.any() and fail:
            first = int(raw.entries[np.flatnonzero(bad)[0]])
            raise DataError(f"{raw.file}: the weight branch {weight!r} ({sample.where}.weight) is NaN or inf for "
                            f"{int(bad.sum())} of {n} jets in a chunk (first at entry {first}); fix the weights "
                            f"or set {sample.where}.nonfinite = \"drop\"")
        return bad

    def input_stats(self, sample: Sample, job: Job) -> InputStats:
        """The first pass: sums of every input (for x̄) and feature moments (for warnings).

        Over the audited data, the chunks are kept while they all fit in ``cache_bytes``, and
        the audit pass replays them: the data is then read and built once.
        """
        stats = InputStats()
        dropped = self.outcome.n_dropped
        audited = sample is job.sample and self.cache_bytes > 0
        # the audited data's weights are read here too, so x̄ leaves out the jets the audit drops
        branches = self._audit_branches(job) if sample is job.sample else job.builder.branches
        kept: list[Replayed] | None = [] if audited else None
        size = 0
        counter = job.progress.phase("input means", sample.n_entries)
        for raw, inputs in self._chunks(sample, branches, job, counter):
            stats.update(inputs, feature_matrix(job.builder, inputs))
            if kept is not None:
                if not job.keep_arrays:  # keep the label and weight columns only
                    raw = RawChunk(_project(raw.arrays, [b for b in (job.label, job.weight) if b]),
                                   raw.entries, raw.file)
                nbytes = int(raw.arrays.nbytes) + sum(v.nbytes for v in inputs.values())
                jets = len(raw.entries) + self._last_dropped
                if size == 0 and nbytes * sample.n_entries > self.cache_bytes * max(jets, 1):
                    # judged on the first chunk, a sample that will not fit is never kept: keeping
                    # chunks up to the limit and then dropping them left the freed memory resident
                    # (~250 MB more at the end of a 2M-jet audit, docs/dask.md "Memory")
                    kept = None
                    continue
                size += nbytes
                if size <= self.cache_bytes:
                    kept.append((raw, inputs, self._last_dropped, self._last_first))
                else:  # too big to keep: the audit pass reads everything again, memory stays flat
                    kept = None
        counter.close()
        if kept is not None:
            self._replay[id(sample)] = kept + self._emptied  # their dropped jets are counted in the audit pass
        self._emptied = []
        self.outcome.n_dropped = dropped  # the audit pass counts the dropped jets; do not count them twice
        return stats

    @staticmethod
    def _audit_branches(job: Job) -> list[str]:
        extra = [b for b in (job.label, job.weight) if b and b not in job.builder.branches]
        return job.builder.branches + extra

    def chunk_stats(self, sample: Sample, job: Job, partition: Partition) -> list[InputStats]:
        """The first pass over one partition, one :class:`InputStats` per chunk: folded in
        chunk order by the caller, x̄ comes out bit for bit as from :meth:`input_stats`."""
        dropped = self.outcome.n_dropped
        out = []
        for _, inputs in self._chunks(sample, job.builder.branches, job, None, partition=partition):
            stats = InputStats()
            stats.update(inputs, feature_matrix(job.builder, inputs))
            out.append(stats)
        self.outcome.n_dropped = dropped
        return out

    @staticmethod
    def _update_all(runs: list[ExplainerRun], chunk: Chunk, debug: bool, reference: bool) -> None:
        for run in runs:
            if run.explainer is not None:
                phase = run.explainer.update_reference if reference else run.explainer.update
                run.state = call_phase(run, phase, run.state, chunk, debug=debug)

    def reference_pass(self, job: Job, runs: list[ExplainerRun], partition: Partition | None = None,
                       counter: PhaseCounter | None = None) -> None:
        """Fold the chunks of each run's reference sample (one ``partition`` of it, when given)
        into ``run.state`` with ``update_reference``; each sample is read once for all its users."""
        for sample, users in by_reference_sample(runs):
            label, weight = sample.config.label, sample.config.weight
            branches = job.builder.branches + [b for b in (label, weight) if b and b not in job.builder.branches]
            for raw, inputs in self._chunks(sample, branches, job, counter, count=False, partition=partition):
                out = job.tagger.run(inputs, scratch=True)  # exposed tensors: valid for this chunk only
                # a reference jet the model cannot score tells nothing: leave it out
                chunk = _scored_chunk(job, raw, inputs, out, label, weight,
                                      np.isfinite(out.score) & np.isfinite(out.logit))
                self._update_all(users, chunk, job.debug, reference=True)

    @staticmethod
    def start(runs: list[ExplainerRun], debug: bool) -> list[ExplainerRun]:
        """Empty states for the runs that are alive; returns those runs."""
        live = [r for r in runs if r.alive]
        for run in live:
            assert run.explainer is not None
            run.state = call_phase(run, run.explainer.start, debug=debug)
        return live

    def audit_pass(self, job: Job, live: list[ExplainerRun], partition: Partition | None = None,
                   counter: PhaseCounter | None = None) -> None:
        """The chunk loop: read, build, score once, update every explainer, write per-jet columns.

        On an error the per-jet writer is aborted (its temporary file removed) and the error raised.
        """
        branches = self._audit_branches(job)
        try:
            for raw, inputs in self._chunks(job.sample, branches, job, counter, partition=partition):
                # the exposed tensors are valid for this chunk only (explainers use them within update)
                out = job.tagger.run(inputs, scratch=True)
                bad = ~(np.isfinite(out.score) & np.isfinite(out.logit))
                if bad.any():
                    first = int(raw.entries[np.flatnonzero(bad)[0]])
                    if job.nonfinite == "fail":
                        raise ModelError(f"{job.tagger.path}: the model returned NaN or inf for {int(bad.sum())} of "
                                         f"{len(bad)} jets (first at entry {first}); set data.nonfinite = \"drop\" "
                                         "to leave them out")
                    self.outcome.n_dropped += int(bad.sum())
                chunk = _scored_chunk(job, raw, inputs, out, job.label, job.weight, ~bad)
                labels = chunk.labels
                self._update_all(live, chunk, job.debug, reference=False)
                self.outcome.n_jets += len(chunk)
                self.outcome.fill_scores(chunk.score, labels, chunk.logit, chunk.weights, chunk.entries,
                                         (job.context.seed, job.context.bootstrap))
                if job.context.feature_range is not None and len(chunk):
                    self.outcome.input_hist = fill_input_histograms(
                        self.outcome.input_hist, feature_matrix(job.builder, chunk.inputs), labels, chunk.weights,
                        job.context.feature_range)
                if job.per_jet is not None:
                    columns: dict[str, np.ndarray] = {"entry": chunk.entries, "score": chunk.score.astype(np.float32)}
                    if labels is not None:
                        columns["label"] = labels.astype(np.int32)
                    columns.update(chunk.per_jet)
                    if job.per_jet_inputs:
                        columns.update(input_branches(job.builder, chunk.inputs))
                    job.per_jet.write(columns)
        except BaseException:
            if job.per_jet is not None:
                job.per_jet.abort()
            raise

    @staticmethod
    def finish(live: list[ExplainerRun], debug: bool) -> None:
        """Results from the (merged) states."""
        for run in live:
            if run.explainer is not None:
                run.result = call_phase(run, run.explainer.finish, run.state, debug=debug)

    # -- partitions and their merge ------------------------------------------------------------
    @staticmethod
    def snapshot(runs: list[ExplainerRun], index: int) -> PartResult:
        """The runs' states after one partition, as a node of the merge tree."""
        return PartResult(first=index, last=index, states={r.name: r.state for r in runs if r.error is None},
                          errors={r.name: r.error for r in runs if r.error is not None})

    @staticmethod
    def merger(runs: list[ExplainerRun], debug: bool) -> Callable[[Sequence[PartResult]], PartResult]:
        """Merges consecutive nodes with the explainers' own ``merge``, timed into their runs."""
        by_name = {r.name: r for r in runs}

        def merge(name: str, a: Any, b: Any) -> Any:
            run = by_name[name]
            assert run.explainer is not None
            t0 = time.perf_counter()
            try:  # an exception is recorded by merge_parts: that explainer fails, the others go on
                return run.explainer.merge(a, b)
            finally:
                run.seconds += time.perf_counter() - t0

        return lambda parts: merge_many(parts, merge)

    @staticmethod
    def adopt(runs: list[ExplainerRun], merged: PartResult | None) -> None:
        """Each run's state from the merged tree, or the error a partition or a merge raised."""
        for run in runs:
            if merged is None:
                continue
            if run.name in merged.errors:
                run.fail(merged.errors[run.name])
            elif run.name in merged.states:
                run.state = merged.states[run.name]

    def reference_states(self, job: Job, live: list[ExplainerRun]) -> dict[str, Any]:
        """The reference pass, partition by partition, merged; each explainer ``prepare``d from
        its merged reference state, which is returned by explainer name."""
        states: dict[str, Any] = {}
        for sample, users in by_reference_sample(live):
            tree = MergeTree(self.merger(users, job.debug), self.split_every)
            counter = job.progress.phase(f"reference ({sample.where})", sample.n_entries)
            for index, partition in enumerate(self.partitions(sample)):
                self.start(users, job.debug)
                self.reference_pass(job, users, partition, counter)
                tree.push(self.snapshot(users, index))
            counter.close()
            self.adopt(users, tree.result())
            for run in users:
                if run.alive:
                    assert run.explainer is not None
                    states[run.name] = run.state
                    call_phase(run, run.explainer.prepare, run.state, debug=job.debug)
        return states

    def run(self, job: Job) -> Outcome:
        live = [r for r in job.runs if r.alive]
        try:
            references = self.reference_states(job, live)
            tree = MergeTree(self.merger(live, job.debug), self.split_every)
            counter = job.progress.phase("auditing", job.sample.n_entries)
            for index, partition in enumerate(self.partitions(job.sample)):
                self.start(live, job.debug)
                self.audit_pass(job, live, partition, counter)
                tree.push(self.snapshot(live, index))
            counter.close()
        finally:
            self._replay.clear()
            self._emptied = []
        self.adopt(live, tree.result())
        with_reference(live, references, job.debug)
        self.finish(live, job.debug)
        return self.outcome


def with_reference(runs: list[ExplainerRun], references: dict[str, Any], debug: bool) -> None:
    """The reference pass's merged state merged in before the audited ones, as a single pass
    that read the reference first would hold it (the Dask executor's order too)."""
    for run in runs:
        if run.alive and run.name in references:
            assert run.explainer is not None
            merged = call_phase(run, run.explainer.merge, references[run.name], run.state, debug=debug)
            if run.error is None:
                run.state = merged


def _scored_chunk(job: Job, raw: RawChunk, inputs: dict[str, np.ndarray], out: ModelOutputs,
                  label: str | None, weight: str | None, keep: np.ndarray) -> Chunk:
    """The chunk explainers see: scored jets, less those ``keep`` leaves out."""
    labels = _column(raw.arrays, label, np.int8)
    weights = _column(raw.arrays, weight, np.float64)
    if not keep.all():
        inputs = {k: v[keep] for k, v in inputs.items()}
        raw = RawChunk(raw.arrays[keep], raw.entries[keep], raw.file)
        out = ModelOutputs(out.score[keep], out.logit[keep], {k: v[keep] for k, v in out.extra.items()})
        labels = None if labels is None else labels[keep]
        weights = None if weights is None else weights[keep]
    return Chunk(raw.entries, inputs, out.score, out.logit, job.context, labels, weights, out.extra, raw.arrays)
