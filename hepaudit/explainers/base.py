"""The explainer protocol: one small base class, a chunk, and the audit context.

An explainer turns chunks into a mergeable partial state and the merged state into an
:class:`~hepaudit.results.ExplainerResult`:

    start() -> state;  update(state, chunk) -> state;  merge(a, b) -> state;  finish(state)

The executor owns the loop; an explainer never opens files or builds sessions. What it
needs beyond the chunk (labels, the mean input x̄, graph weights, hidden tensors) it
declares in ``needs`` and finds in the :class:`AuditContext`. Per-jet outputs go into
``chunk.per_jet`` and end up in per_jet.root.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from hepaudit.results import ExplainerResult, Figure

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.bootstrap import BootstrapMeans
    from hepaudit.data.builders import InputBuilder, JetMomentum
    from hepaudit.model.first_layer import FactoredPasses
    from hepaudit.model.session import Tagger

State = TypeVar("State")


@dataclass(frozen=True)
class NoOptions:
    """For explainers without options."""


@dataclass(frozen=True)
class AuditFacts:
    """The audit's facts every process shares, picklable: known before the first audited chunk.

    The client computes them once; Dask workers rebuild their :class:`AuditContext` from the
    same object, so no field is ever copied by hand between the two.
    """

    seed: int = 0
    bootstrap: int = 0  # Poisson bootstrap replicates for error bars (hepaudit/bootstrap.py); 0: none
    has_labels: bool = False
    has_weights: bool = False
    has_reference: bool = False
    n_jets: int = 0
    n_signal: int = 0
    n_background: int = 0
    input_mean: dict[str, np.ndarray] | None = None
    feature_range: np.ndarray | None = None
    output_dir: Path | None = None
    config_dir: Path | None = None
    write_dir: Path | None = None


@dataclass
class AuditContext:
    """What every explainer may read: the model, the input layout, shared statistics."""

    tagger: Tagger
    builder: InputBuilder
    features: list[str]
    groups: dict[str, list[int]]
    input_mean: dict[str, np.ndarray] | None = None  # x̄ per input, one jet's row each
    seed: int = 0
    bootstrap: int = 0  # replicates of the Poisson bootstrap (execution.bootstrap)
    has_labels: bool = False
    has_weights: bool = False
    n_jets: int = 0
    n_signal: int = 0
    n_background: int = 0
    warnings: list[str] = field(default_factory=list)
    output_dir: Path | None = None  # where the report goes (None: nothing is written)
    # where files are written while the audit runs (the report's staging folder, moved to
    # output_dir when complete); name files by output_dir in results
    write_dir: Path | None = None
    has_reference: bool = False  # a [reference] sample is configured (else the data is its own reference)
    config_dir: Path | None = None  # the config file's folder: explainer options' paths are relative to it
    # (features, 2): a fixed binning range per feature from the x̄ pass (mean ± 3σ within the
    # observed |x| maximum), the same in every partition: for histograms that must merge exactly
    feature_range: np.ndarray | None = None
    # the other explainers of the same audit, by name (set once every one is built, in each
    # process that builds them): what the sanity check re-runs on a randomised graph
    peers: dict[str, Explainer[Any]] = field(default_factory=dict, repr=False)
    _baselines: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, tagger: Tagger, builder: InputBuilder, facts: AuditFacts,
              warnings: list[str] | None = None) -> AuditContext:
        """The context of ``tagger`` and ``builder`` with ``facts`` (client and workers alike)."""
        return cls(tagger=tagger, builder=builder, features=builder.features, groups=builder.groups(),
                   warnings=[] if warnings is None else warnings, **{f: getattr(facts, f) for f in _FACT_FIELDS})

    def facts(self) -> AuditFacts:
        """This context's facts, to rebuild it elsewhere."""
        return AuditFacts(**{f: getattr(self, f) for f in _FACT_FIELDS})

    def bootstrap_means(self, purpose: str) -> BootstrapMeans | None:
        """Empty bootstrap sums for an explainer's per-jet values (None when off)."""
        if not self.bootstrap:
            return None
        from hepaudit.bootstrap import BootstrapMeans

        return BootstrapMeans(self.bootstrap, self.seed)

    def baseline(self, spec: str | float) -> dict[str, np.ndarray]:
        """Replacement values per input (one jet's row): ``"mean"`` = x̄, or a constant."""
        key = repr(spec)
        if key not in self._baselines:
            if spec == "mean":
                if self.input_mean is None:
                    raise RuntimeError("the input mean was not computed; declare needs = {'input_mean'}")
                self._baselines[key] = self.input_mean
            elif isinstance(spec, (int, float)):
                shapes = {name: row.shape for name, row in (self.input_mean or {}).items()}
                if not shapes:
                    shapes = {name: self.tagger_input_row(name) for name in self.builder.model_inputs}
                self._baselines[key] = {n: np.full(s, float(spec), np.float32) for n, s in shapes.items()}
            else:
                raise ValueError(f"baseline must be \"mean\" or a number, not {spec!r}")
        return self._baselines[key]

    def tagger_input_row(self, name: str) -> tuple[int, ...]:
        """One jet's shape of a model input as the audit builds it: x̄'s when known (a symbolic
        dimension such as n_pf is the padded length the config chose), else the model's."""
        if self.input_mean is not None and name in self.input_mean:
            return tuple(self.input_mean[name].shape)
        shape = self.builder.model_inputs[name].shape[1:]
        dims = [d for d in shape if isinstance(d, int)]
        if len(dims) != len(shape):
            raise ValueError(f"input {name!r} has a symbolic dimension {tuple(shape)} and no x̄ is known to fix it")
        return tuple(dims)


_FACT_FIELDS = tuple(AuditFacts.__dataclass_fields__)


def _key(tag: str, unit: Sequence[int]) -> tuple[object, ...]:
    """The cache key of an occluded unit under one baseline."""
    return (tag, *unit)


class Chunk:
    """A chunk of jets with their built inputs and base scores, shared by all explainers.

    Occluded forward passes are computed on first request and cached for the chunk, so
    explainers that need the same occlusions (ΔAUC and MAD) pay for them once.

    ``extra`` holds the hidden tensors exposed with ``tagger.expose``; the executor reuses
    their arrays for the next chunk, so an explainer that keeps any of them past ``update``
    must copy it.
    """

    def __init__(self, entries: np.ndarray, inputs: dict[str, np.ndarray], score: np.ndarray,
                 logit: np.ndarray, context: AuditContext, labels: np.ndarray | None = None,
                 weights: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None,
                 arrays: Any = None) -> None:
        self.entries = entries
        # contiguous, so that occlusion can write through reshape() views (see occluded)
        self.inputs = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        self.score = score
        self.logit = logit
        self.labels = labels
        self.weights = weights
        self.extra = extra or {}
        self.arrays = arrays  # the raw awkward branches, for observables
        self.context = context
        self.per_jet: dict[str, np.ndarray] = {}
        self._shared: dict[str, Any] = {}  # what several explainers derive from the chunk, once
        # per (baseline, unit): the (scores, logits) batch it was computed in, and its row
        self._occluded: dict[tuple[object, ...], tuple[tuple[np.ndarray, np.ndarray], int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def jet_momentum(self) -> JetMomentum | None:
        """The jets' four-momentum (the sum of the constituents) of the first constituents input
        with a momentum, as the builder summed it for this chunk's inputs; None without one.
        Computed once per chunk for every explainer that asks (latent's observables, the OOD
        explainers' pT and mass bins)."""
        if "jet_momentum" not in self._shared:
            self._shared["jet_momentum"] = self._jet_momentum()
        return self._shared["jet_momentum"]

    def _jet_momentum(self) -> JetMomentum | None:
        if self.arrays is None:
            return None
        builder = self.context.builder
        for cfg in builder.inputs:
            if cfg.kind == "constituents" and cfg.momentum is not None:
                # summed again only for arrays the builder did not build from (jets dropped
                # for non-finite inputs leave a new arrays object)
                return (builder.jet_momentum(self.arrays, cfg.name)
                        or builder.summed_jet_momentum(self.arrays, cfg.name))
        return None

    def occluded(self, units: Sequence[Sequence[int]], baseline: str | float = "mean"
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and logits, shape (len(units), N), with each unit's features replaced
        (read-only: they may be the cached arrays themselves).

        A unit is a list of feature indices occluded together (one feature, or a group);
        ``baseline`` is ``"mean"`` (x̄) or a constant (see :meth:`AuditContext.baseline`).
        Results are cached per (unit, baseline) for the life of the chunk, so explainers
        asking for the same occlusions share the forward passes.
        """
        values = self.context.baseline(baseline)
        tag = repr(baseline)
        wanted = [tuple(u) for u in units]
        missing = [u for u in dict.fromkeys(wanted) if _key(tag, u) not in self._occluded]
        if missing:
            self._run_occluded(missing, values, tag)
        found = [self._occluded[_key(tag, u)] for u in wanted]
        batch, first = found[0] if found else (None, 0)
        if batch is not None and all(b is batch and row == first + i for i, (b, row) in enumerate(found)):
            # consecutive rows of one computed batch (ΔAUC and MAD ask for the same units):
            # the cached read-only arrays themselves, no copy of the (units, N) scores
            return batch[0][first:first + len(found)], batch[1][first:first + len(found)]
        scores = np.empty((len(units), len(self)))
        logits = np.empty((len(units), len(self)))
        for i, (b, row) in enumerate(found):
            scores[i], logits[i] = b[0][row], b[1][row]
        return scores, logits

    def _run_occluded(self, units: list[tuple[int, ...]], values: dict[str, np.ndarray], tag: str) -> None:
        """The forward passes of ``units``, block of rows by block of rows, the blocks on every core.

        Rows outer, units inner: a block of jets stays in cache while every unit is occluded in it
        and scored, instead of streaming the whole chunk through memory once per unit, so that
        two processes (Dask workers) do not compete for memory bandwidth either. Each block runs
        on a one-thread session (:meth:`Tagger.one_thread`), several blocks at once: thousands of
        small calls then never wait for a thread pool to wake (benchmarks/bench_occlusion.py).
        """
        from hepaudit.model.blocks import for_blocks, shared_rows

        slots = self.context.builder.slots
        plans = []
        for unit in units:
            by_input: dict[str, list[int]] = {}
            for k in unit:
                by_input.setdefault(slots[k].input, []).append(slots[k].index)
            plans.append({name: (positions, values[name].reshape(-1)[positions])
                          for name, positions in by_input.items()})
        for plan in plans:  # an integer input takes whole numbers only: a cast would truncate x̄ silently
            for name, (_, value) in plan.items():
                kind = self.inputs[name].dtype.kind
                fractional = value[value != np.round(value)]
                if kind in "iu" and len(fractional):
                    raise ValueError(f"input {name!r} is {self.inputs[name].dtype}: occluding it with {tag} "
                                     f"would feed non-whole values (e.g. {float(fractional[0]):g}); set the "
                                     "explainer's baseline to a whole number")
        n = len(self)
        tagger = self.context.tagger
        # blocks of rows on every core, each scored by a one-thread session (model/blocks.py);
        # fixed blocks, so the numbers do not depend on the number of threads
        rows = tagger.fixed_batch or shared_rows(tagger.cached_rows)
        single = tagger.one_thread()
        scores = np.empty((len(units), n))
        logits = np.empty((len(units), n))
        # units within one input read by a dense layer alone: that layer once per block, the rest
        # of the graph per unit (model/first_layer.py)
        factored = {name: single.factored(name) for name in {k for plan in plans for k in plan}
                    } if tagger.factor_first_layer else {}
        # each factored unit (one input's features) with its rows of the layer's weights, found and
        # gathered once for every block
        by_unit: dict[int, tuple[FactoredPasses, np.ndarray]] = {}
        for i, plan in enumerate(plans):
            passes = factored.get(next(iter(plan))) if len(plan) == 1 else None
            if passes is not None:
                by_unit[i] = (passes, passes.rows(plan[passes.split.input][0]))

        def block(_: int, start: int, stop: int) -> None:
            # row slices of contiguous inputs are contiguous: reshape() gives writable views, and
            # the blocks' rows are disjoint, so each thread occludes its own rows in place
            rows_in = {k: v[start:stop] for k, v in self.inputs.items()}
            flat = {k: v.reshape(len(v), -1) for k, v in rows_in.items()}
            first: dict[str, np.ndarray] = {}  # each factored input's first layer, for this block
            for i, plan in enumerate(plans):
                if i in by_unit:
                    passes, weight_rows = by_unit[i]
                    name = passes.split.input
                    if name not in first:
                        first[name] = passes.first(rows_in[name])
                    positions, value = plan[name]
                    scores[i, start:stop], logits[i, start:stop] = passes.occluded(
                        first[name], rows_in[name], positions, value, weight_rows,
                        {k: v for k, v in rows_in.items() if k != name})
                    continue
                # occlude in place and restore: a copy of the block per unit would cost as much
                # memory traffic as the forward pass of a small tagger
                saved = []
                try:
                    for name, (positions, value) in plan.items():
                        saved.append((flat[name], positions, flat[name][:, positions].copy()))
                        flat[name][:, positions] = value
                    out = single.run(rows_in, extra=False)
                finally:
                    for array, positions, original in saved:
                        array[:, positions] = original
                scores[i, start:stop] = out.score
                logits[i, start:stop] = out.logit

        for_blocks(n, rows, tagger.block_threads, block)
        scores.flags.writeable = logits.flags.writeable = False  # shared by every caller: read-only
        batch = (scores, logits)
        for i, unit in enumerate(units):
            self._occluded[_key(tag, unit)] = (batch, i)


class Explainer(ABC, Generic[State]):
    """Base class for explainers. Subclass, set the class variables, implement the methods.

    ``name`` is the config table and the report key; ``Options`` a dataclass of options with
    defaults (validated from the config table); ``needs`` what the executor must provide:
    ``"labels"`` (the audit skips the explainer, with the reason, when labels are missing
    or one class only), ``"input_mean"`` (x̄ in the context before the first chunk) and
    ``"reference"`` (:meth:`update_reference` is called with every chunk of the reference
    sample, before the first audited chunk: the ``[reference]`` sample, or the explainer's
    own ``reference`` option table, or, when neither is set, the audited data itself) and
    ``"arrays"`` (``chunk.arrays`` holds the raw branches; without it an executor may hand
    over only the label and weight columns there).
    ``attribution`` says whether the result carries a feature ranking (such results enter
    the agreement table); ``description`` is the line ``hepaudit plugins --all`` shows;
    ``reference_option`` names the option that holds the explainer's own reference sample.
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    needs: ClassVar[frozenset[str]] = frozenset()
    attribution: ClassVar[bool] = False
    description: ClassVar[str] = ""
    #: the option (a table with the keys of ``[reference]``) that gives this explainer a
    #: reference sample of its own; None: the explainer takes no such option
    reference_option: ClassVar[str | None] = "reference"

    def __init__(self, options: Any, context: AuditContext) -> None:
        self.options = options
        self.context = context

    def start(self) -> State:
        """An empty partial state."""
        return None  # type: ignore[return-value]

    @abstractmethod
    def update(self, state: State, chunk: Chunk) -> State:
        """Fold one chunk into the state (and optionally fill ``chunk.per_jet``)."""

    @classmethod
    def needs_for(cls, options: Any) -> frozenset[str]:
        """What this explainer needs with these options (default: ``needs``); e.g. SHAP needs a
        reference pass only when its background is drawn from the reference sample."""
        return cls.needs

    def update_reference(self, state: State, chunk: Chunk) -> State:
        """Fold one chunk of the reference sample into the state (``needs = {"reference"}``)."""
        return state

    def prepare(self, reference: State) -> None:
        """Get ready for the audited chunks from the state of the whole reference pass
        (``needs = {"reference"}``): fit, set thresholds. Called once, after the reference pass
        and before the first :meth:`update`; the Dask executor calls it on every worker with
        the same merged reference state, and merges that state into the final one before
        :meth:`finish`, so what ``prepare`` sets must depend on ``reference`` only."""

    @abstractmethod
    def merge(self, a: State, b: State) -> State:
        """Combine the states of two disjoint sets of chunks."""

    @abstractmethod
    def finish(self, state: State) -> ExplainerResult:
        """The result from the merged state of every chunk."""

    def draw(self, result: ExplainerResult) -> list[Figure]:
        """The explainer's figures, drawn from its finished result: the one place figures are made.

        Called once per audit, after every explainer has finished, in the process that makes
        the report, and timed apart (``report.timing["figures_s"]``, never the explainer's
        ``runtime_s``); a failure is a warning. Draw only from the result (``fields``,
        ``trees``, ``explanation``), so the report holds every number a figure shows: on Dask
        ``finish`` runs on a worker and this instance never saw a chunk. ``finish`` returns
        numbers only (a ``figures`` list it sets is still shown, but drawn on the worker,
        inside the explainer's own time)."""
        return []

    def result(self, **kwargs: Any) -> ExplainerResult:
        """A result carrying this explainer's name and options; for use in ``finish``."""
        from hepaudit.options import as_table

        return ExplainerResult(name=self.name, options=as_table(self.options), **kwargs)
