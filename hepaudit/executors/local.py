"""The local executor: one loop over chunks, every explainer fed from it.

Each chunk is read once, its inputs built once and scored once; then every explainer
updates its partial state from the same :class:`~hepaudit.explainers.base.Chunk`. One
explainer's exception marks it "failed" and the others go on. Per-jet columns are
written as the loop goes, so memory does not grow with the number of jets beyond what
explainers keep. A first, lighter pass computes x̄ and the input warnings when an
explainer needs the mean.

The pieces are shared with the Dask executor (:mod:`hepaudit.executors.dask`), which runs
:meth:`LocalExecutor.audit_pass` on one partition (a file's entry range) per task: there
is one chunk loop, whichever executor drives it.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from hepaudit.data.builders import InputBuilder, feature_matrix
from hepaudit.data.reading import Partition, RawChunk, Sample
from hepaudit.data.stats import InputStats
from hepaudit.errors import DataError, ModelError
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.model.session import ModelOutputs, Tagger
from hepaudit.report.per_jet import PerJetWriter
from hepaudit.results import ExplainerResult


@dataclass
class ExplainerRun:
    """An explainer instance with its state and bookkeeping during the loop."""

    name: str
    plugin: dict[str, str]
    explainer: Explainer[Any] | None = None
    reference: Sample | None = None  # the sample update_reference sees (needs "reference")
    state: Any = None
    seconds: float = 0.0
    error: str | None = None
    result: ExplainerResult | None = None


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
    per_jet: PerJetWriter | None
    progress: bool
    debug: bool = False
    keep_arrays: bool = True  # an explainer reads chunk.arrays (needs "arrays")


SCORE_BINS = np.linspace(0.0, 1.0, 101)


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

    def fill_scores(self, score: np.ndarray, labels: np.ndarray | None) -> None:
        cls = np.full(len(score), 2) if labels is None else labels.astype(int)
        for c in range(3):
            self.score_hist[c] += np.histogram(np.clip(score[cls == c], 0.0, 1.0), SCORE_BINS)[0]


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="jet", unit_scale=True, desc=desc, file=sys.stderr,
                disable=not (enabled and sys.stderr.isatty()), leave=False)


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


class LocalExecutor:
    """Runs a :class:`Job` in this process."""

    def __init__(self, cache_bytes: int = 0) -> None:
        self.outcome = Outcome()
        # chunks of the x̄ pass kept for the audit pass: (raw, inputs, jets dropped), by sample
        self.cache_bytes = cache_bytes
        self._replay: dict[int, list[tuple[RawChunk, dict[str, np.ndarray], int]]] = {}
        self._last_dropped = 0  # jets the latest chunk lost to the non-finite policy

    def _chunks(self, sample: Sample, branches: list[str], job: Job, desc: str,
                count: bool = True, partition: Partition | None = None
                ) -> Iterator[tuple[RawChunk, dict[str, np.ndarray]]]:
        """Read and build inputs chunk by chunk, applying the non-finite policy to inputs.

        Reference samples (``count=False``) always drop non-finite jets: they only calibrate.
        ``partition`` restricts the pass to one file's entry range (the Dask executor's tasks).
        """
        bar = _progress(sample.n_entries if partition is None else partition.n_entries, job.progress, desc)
        replay = self._replay.pop(id(sample), None) if partition is None else None
        if replay is not None:  # the x̄ pass kept every chunk: read and build nothing again
            for raw, inputs, dropped in replay:
                if count:
                    self.outcome.n_dropped += dropped
                yield raw, inputs
                bar.update(len(raw.entries) + dropped)
            bar.close()
            return
        try:
            t0 = time.perf_counter()
            chunks = sample.chunks(branches, partition=partition)
            checked = False
            for raw in chunks:
                inputs = job.builder.build(raw.arrays)
                if not checked:  # a config that builds the wrong shape fails here, not inside onnxruntime
                    job.tagger.check_inputs(inputs)
                    checked = True
                bad = _nonfinite_rows(inputs)
                if bad.any():
                    if job.nonfinite == "fail" and count:
                        # count over the whole sample, so the message says how big the problem is
                        first = int(raw.entries[np.flatnonzero(bad)[0]])
                        n_bad = int(bad.sum()) + sum(int(_nonfinite_rows(job.builder.build(rest.arrays)).sum())
                                                     for rest in chunks)
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
                self.outcome.read_s += time.perf_counter() - t0
                yield raw, inputs
                bar.update(len(bad))
                t0 = time.perf_counter()
        finally:
            bar.close()

    def input_stats(self, sample: Sample, job: Job) -> InputStats:
        """The first pass: sums of every input (for x̄) and feature moments (for warnings).

        Over the audited data, the chunks are kept while they all fit in ``cache_bytes``, and
        the audit pass replays them: the data is then read and built once.
        """
        stats = InputStats()
        dropped = self.outcome.n_dropped
        audited = sample is job.sample and self.cache_bytes > 0
        branches = self._audit_branches(job) if audited else job.builder.branches
        kept: list[tuple[RawChunk, dict[str, np.ndarray], int]] | None = [] if audited else None
        size = 0
        for raw, inputs in self._chunks(sample, branches, job, "input means"):
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
                    kept.append((raw, inputs, self._last_dropped))
                else:  # too big to keep: the audit pass reads everything again, memory stays flat
                    kept = None
        if kept is not None:
            self._replay[id(sample)] = kept
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
        for _, inputs in self._chunks(sample, job.builder.branches, job, "input means", partition=partition):
            stats = InputStats()
            stats.update(inputs, feature_matrix(job.builder, inputs))
            out.append(stats)
        self.outcome.n_dropped = dropped
        return out

    def _update_all(self, runs: list[ExplainerRun], chunk: Chunk, job: Job, reference: bool) -> None:
        for run in runs:
            if run.error is not None:
                continue
            t0 = time.perf_counter()
            try:
                if reference:
                    run.state = run.explainer.update_reference(run.state, chunk)  # type: ignore[union-attr]
                else:
                    run.state = run.explainer.update(run.state, chunk)  # type: ignore[union-attr]
            except Exception as exc:  # an explainer's bug must not stop the audit
                run.error = _describe(exc, job.debug)
            run.seconds += time.perf_counter() - t0

    def reference_pass(self, job: Job, runs: list[ExplainerRun], partition: Partition | None = None,
                       prepare: bool = True) -> None:
        """Feed each reference sample once to the explainers that asked for it, then let them
        ``prepare`` (the Dask executor passes one ``partition`` and prepares after merging)."""
        for sample, users in by_reference_sample(runs):
            label, weight = sample.config.label, sample.config.weight
            branches = job.builder.branches + [b for b in (label, weight) if b and b not in job.builder.branches]
            for raw, inputs in self._chunks(sample, branches, job, f"reference ({sample.where})", count=False,
                                            partition=partition):
                out = job.tagger.run(inputs, scratch=True)  # exposed tensors: valid for this chunk only
                # a reference jet the model cannot score tells nothing: leave it out
                chunk = _scored_chunk(job, raw, inputs, out, label, weight,
                                      np.isfinite(out.score) & np.isfinite(out.logit))
                self._update_all(users, chunk, job, reference=True)
        if prepare:
            for run in runs:
                if run.reference is not None:
                    prepare_run(run, run.state, job.debug)

    def start(self, runs: list[ExplainerRun], debug: bool) -> list[ExplainerRun]:
        """Empty states for the runs that are alive; returns those runs."""
        live = [r for r in runs if r.error is None and r.explainer is not None]
        for run in live:
            t0 = time.perf_counter()
            try:
                run.state = run.explainer.start()  # type: ignore[union-attr]
            except Exception as exc:  # an explainer's bug must not stop the audit
                run.error = _describe(exc, debug)
            run.seconds += time.perf_counter() - t0
        return live

    def audit_pass(self, job: Job, live: list[ExplainerRun], partition: Partition | None = None) -> None:
        """The chunk loop: read, build, score once, update every explainer, write per-jet columns.

        On an error the per-jet writer is aborted (its temporary file removed) and the error raised.
        """
        branches = self._audit_branches(job)
        try:
            for raw, inputs in self._chunks(job.sample, branches, job, "auditing", partition=partition):
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
                self._update_all(live, chunk, job, reference=False)
                self.outcome.n_jets += len(chunk)
                self.outcome.fill_scores(chunk.score, labels)
                if job.per_jet is not None:
                    columns: dict[str, np.ndarray] = {"entry": chunk.entries, "score": chunk.score.astype(np.float32)}
                    if labels is not None:
                        columns["label"] = labels.astype(np.int32)
                    columns.update(chunk.per_jet)
                    job.per_jet.write(columns)
        except BaseException:
            if job.per_jet is not None:
                job.per_jet.abort()
            raise

    def finish(self, live: list[ExplainerRun], debug: bool) -> None:
        """Results from the (merged) states."""
        for run in live:
            if run.error is not None:
                continue
            t0 = time.perf_counter()
            try:
                run.result = run.explainer.finish(run.state)  # type: ignore[union-attr]
            except Exception as exc:
                run.error = _describe(exc, debug)
            run.seconds += time.perf_counter() - t0

    def run(self, job: Job) -> Outcome:
        live = self.start(job.runs, job.debug)
        self.reference_pass(job, live)
        self.audit_pass(job, live)
        self.finish(live, job.debug)
        return self.outcome


def by_reference_sample(runs: list[ExplainerRun]) -> list[tuple[Sample, list[ExplainerRun]]]:
    """The live runs that need a reference pass, grouped by the sample they read (each once)."""
    samples: dict[int, tuple[Sample, list[ExplainerRun]]] = {}
    for run in runs:
        if run.reference is not None and run.error is None:
            samples.setdefault(id(run.reference), (run.reference, []))[1].append(run)
    return list(samples.values())


def prepare_run(run: ExplainerRun, reference: Any, debug: bool) -> None:
    """``run.explainer.prepare(reference)``, timed; an exception fails that explainer only."""
    if run.error is not None or run.explainer is None:
        return
    t0 = time.perf_counter()
    try:
        run.explainer.prepare(reference)
    except Exception as exc:
        run.error = _describe(exc, debug)
    run.seconds += time.perf_counter() - t0


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


def _describe(exc: BaseException, debug: bool) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if debug:
        text += "\n" + "".join(traceback.format_exception(exc))
    return text
