"""LRP: per-jet relevance of every input feature, from the network's own weights.

Relevance is propagated by :mod:`hepaudit.model.backward` on the ONNX graph itself,
seeded with the logit z(x) feeding the score's head (methods.md): for a Sigmoid head
R = z; through a Softmax head z(x) is split over the pre-softmax logits in proportion
to their gradient times value. Rules: LRP-0, LRP-ε, LRP-γ, LRP-αβ (α1β0, α2β1), z⁺,
with ``flat`` or ``w²`` for the first layer, one rule for every layer or a composite per
layer kind; the bias is the weight of a constant input and absorbs its share.

The default is LRP-ε with ε = 1e-6 on every layer: for the dense taggers HEP audits
(TopoDNN-like MLPs, deep sets) ε that small keeps Σ_i R_i = z(x) − (bias share) to
float precision while still guarding the divisions against units with z ≈ 0; γ and αβ
make smoother maps for deep convolutional nets (``rule = "composite"``, whose default is
ε for dense layers and γ for Conv).

Reported per feature: mean |R| per class and overall (the ranking), the mean-behaviour
relevance r(x̄) (LRP on the mean input) and the differential part mean |R(x) − r(x̄)|,
which is what ΔAUC and SHAP measure; conservation (mean |Σ_i R_i − z(x)|) and what the
biases absorbed. Per jet, the relevance goes to per_jet.root: ``lrp_{input}`` of shape
(particles, features) for a constituents input, ``lrp_{feature}`` for jet-level features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from hepaudit.binning import histogram2d_uniform
from hepaudit.bootstrap import (
    BootstrapMeans,
    Replicates,
    class_weights,
    jet_weights,
    merged,
    poisson_counts,
    ranked_with_intervals,
    with_intervals,
)
from hepaudit.data.builders import Columns, column_selection, feature_matrix
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.columns import SpilledColumns
from hepaudit.explainers.iqr import clipped_class_sums
from hepaudit.explanation import Explanation, ExplanationSample
from hepaudit.model.backward import BackwardEngine, LrpOutput, RuleSet, ScoreTarget
from hepaudit.model.backward.blocked import BlockedBackward
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import CLASS_NAMES, ExplainerResult, FeatureScore, Figure, sorted_scores
from hepaudit.sampling import salt_for

ETA_NAMES = ("eta", "deta", "eta_rel", "etarel", "delta_eta")
PHI_NAMES = ("phi", "dphi", "phi_rel", "phirel", "delta_phi")
PROFILE_BINS = 20


@dataclass(frozen=True)
class LrpOptions:
    # the LRP rule of every layer, or "composite": a rule per layer kind (docs/explainers/lrp.md)
    rule: Literal["zero", "epsilon", "gamma", "alpha1beta0", "alpha2beta1", "zplus", "composite"] = "epsilon"
    epsilon: float = 1e-6  # ε of the ε rule (also the stabiliser of γ and αβ)
    gamma: float = 0.25  # γ of the γ rule
    first_layer: Literal["same", "flat", "wsquare"] = "same"  # the rule of the first Gemm/MatMul/Conv after the inputs
    # a {layer kind: rule} table, or the name of a composite in hepaudit.model.backward.rules.COMPOSITES
    composite: dict[str, str] | str = field(default_factory=lambda: {"dense": "epsilon", "conv": "gamma"})
    ignore_bias: bool = False  # leave biases out of z (relevance is then conserved through every layer)
    # "signed_sum": each jet's relevance divided by its signed sum (the paper's); "sum_abs": by Σ|R|
    normalize: Literal["none", "sum_abs", "signed_sum"] = "none"
    iqr_clip: bool = False  # the paper's outlier removal per feature and class before mean |R|
    per_jet: bool = True  # write the relevance of every feature to per_jet.root
    max_per_jet_features: int = 512  # ... only for models with at most this many features
    profile_features: int = 4  # features shown in the relevance-against-value profiles
    heatmap_range: float = 1.0  # half-width in Δη and Δφ of the η–φ relevance image
    heatmap_bins: int = 40  # bins per axis of the η–φ relevance image
    sample_jets: int = 500  # jets kept (a seeded sample) for the beeswarm and dependence plots


def composite_table(options: LrpOptions) -> dict[str, str]:
    """The composite's rule per layer kind (a named composite looked up)."""
    if isinstance(options.composite, str):
        return dict(RuleSet.composite(options.composite).by_kind or {})
    return dict(options.composite)


def rule_set(options: LrpOptions) -> RuleSet:
    if options.rule == "composite":
        return RuleSet(
            "epsilon",
            composite_table(options),
            options.first_layer,
            options.epsilon,
            options.gamma,
            options.ignore_bias,
        )
    return RuleSet(
        options.rule, None, options.first_layer, options.epsilon, options.gamma, options.ignore_bias
    )


def backward_for(context: AuditContext) -> BlockedBackward:
    """The backward engine for the audited tagger, run on blocks of jets whose hidden tensors
    onnxruntime computes block by block (memory bounded whatever the chunk size)."""
    tagger = context.tagger
    engine = BackwardEngine(
        tagger.proto,
        ScoreTarget.from_score_spec(tagger.score_spec),
        inputs=[i.name for i in tagger.info.inputs],
        # float32: the model's own precision, twice as fast as float64 (benchmarks/bench_lrp.py)
        dtype=np.float32,
    )
    # no busy-waiting onnxruntime threads while numpy runs the backward between forwards
    tagger.expose([], spinning=False)
    return BlockedBackward(tagger, engine)


def mean_row(context: AuditContext) -> dict[str, np.ndarray]:
    """x̄ as a batch of one jet per input."""
    assert context.input_mean is not None
    return {name: row.reshape((1,) + row.shape) for name, row in context.input_mean.items()}


@dataclass
class AttributionSums:
    """Weighted per-class sums of |A| and A per feature (class 0 background, 1 signal, 2 unlabelled)."""

    weight: np.ndarray = field(default_factory=lambda: np.zeros(3))
    abs: np.ndarray | None = None
    signed: np.ndarray | None = None

    def add(self, values: np.ndarray, labels: np.ndarray | None, weights: np.ndarray | None) -> None:
        self.add_weighted(values, class_weights(labels, weights, len(values)))

    def add_weighted(self, values: np.ndarray, per_class: np.ndarray) -> None:
        """Add ``values`` (n, F) with :func:`hepaudit.bootstrap.class_weights` ``per_class`` (3, n)."""
        if self.abs is None:
            f = values.shape[1]
            self.abs, self.signed = np.zeros((3, f)), np.zeros((3, f))
        assert self.signed is not None
        values = values.astype(np.float64, copy=False)
        self.abs += per_class @ np.abs(values)
        self.signed += per_class @ values
        self.weight += per_class.sum(axis=1)

    def merge(self, other: AttributionSums) -> AttributionSums:
        if self.abs is None:
            return other
        if other.abs is None:
            return self
        assert self.signed is not None and other.signed is not None
        return AttributionSums(self.weight + other.weight, self.abs + other.abs, self.signed + other.signed)

    def means(self, kind: str = "abs") -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        sums = self.abs if kind == "abs" else self.signed
        assert sums is not None
        overall = sums.sum(axis=0) / max(self.weight.sum(), 1e-300)
        sig = sums[1] / self.weight[1] if self.weight[1] > 0 else None
        bkg = sums[0] / self.weight[0] if self.weight[0] > 0 else None
        return overall, sig, bkg

    def signed_means(self, names: list[str], order: list[int]) -> dict[str, dict[str, float | None]]:
        """Mean signed attribution per feature (in ``order``), overall and per class."""
        overall, sig, bkg = self.means("signed")
        return {names[k]: {"all": float(overall[k]), "signal": None if sig is None else float(sig[k]),
                           "background": None if bkg is None else float(bkg[k])} for k in order}

    def scores(self, names: list[str]) -> list[FeatureScore]:
        overall, sig, bkg = self.means("abs")
        return sorted_scores(
            [
                FeatureScore(
                    n,
                    float(overall[i]),
                    None if sig is None else float(sig[i]),
                    None if bkg is None else float(bkg[i]),
                )
                for i, n in enumerate(names)
            ]
        )


@dataclass
class Profiles:
    """Relevance summed in bins of every feature's value, per class (0 background, 1 signal,
    2 unlabelled). The bins come from the x̄ pass (``context.feature_range``), fixed before
    the first chunk, so two partitions' profiles always add up; the leading features are
    chosen in ``finish`` from every jet's relevance."""

    edges: np.ndarray  # (features, bins + 1)
    sums: np.ndarray  # (features, bins, 3)
    counts: np.ndarray

    ROWS: ClassVar[int] = 4096  # jets binned at once: bounds the (rows, features) index array

    @classmethod
    def empty(cls, feature_range: np.ndarray, bins: int = PROFILE_BINS) -> Profiles:
        lo, hi = feature_range[:, 0], feature_range[:, 1]
        edges = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, bins + 1)[None, :]
        shape = (len(feature_range), bins, 3)
        return cls(edges, np.zeros(shape), np.zeros(shape))

    def add(self, x: np.ndarray, r: np.ndarray, labels: np.ndarray | None) -> None:
        n_feat, bins, _ = self.sums.shape
        lo, width = self.edges[:, 0], self.edges[:, -1] - self.edges[:, 0]
        scale = bins / np.where(width > 0, width, 1.0)
        cls = np.full(len(x), 2, np.intp) if labels is None else labels.astype(np.intp)
        base = np.arange(n_feat, dtype=np.intp) * (bins * 3)  # (feature, bin, class) flattened
        size = n_feat * bins * 3
        for start in range(0, len(x), self.ROWS):
            t = x[start:start + self.ROWS] - lo
            t *= scale
            np.clip(t, 0, bins - 1, out=t)  # >= 0 now: truncation is the floor
            flat = t.astype(np.intp)
            flat *= 3
            flat += base
            flat += cls[start:start + self.ROWS, None]
            flat = flat.ravel()
            self.sums += np.bincount(flat, weights=r[start:start + self.ROWS].ravel(),
                                     minlength=size).reshape(self.sums.shape)
            self.counts += np.bincount(flat, minlength=size).reshape(self.counts.shape)

    def merge(self, other: Profiles) -> Profiles:
        if not np.array_equal(self.edges, other.edges):  # bins are fixed per audit: a bug, say so
            raise ValueError("LRP profiles with different bins cannot be merged")
        return Profiles(self.edges, self.sums + other.sums, self.counts + other.counts)

    def fields(self, names: list[str], features: list[int]) -> dict[str, dict[str, Any]]:
        """The profiles of ``features`` for report.json: bin edges, and per class the jets and
        mean relevance per bin (None where a bin is empty)."""
        out: dict[str, dict[str, Any]] = {}
        for k in features:
            entry: dict[str, Any] = {"bin_edges": self.edges[k].tolist()}
            for c, cls in ((1, "signal"), (0, "background"), (2, "unlabelled")):
                counts = self.counts[k, :, c]
                if counts.sum() == 0:
                    continue
                mean = np.divide(self.sums[k, :, c], counts, out=np.full(len(counts), np.nan), where=counts > 0)
                entry[cls] = {"jets": counts.astype(int).tolist(),
                              "mean_relevance": [None if np.isnan(v) else float(v) for v in mean]}
            out[names[k]] = entry
        return out


class EtaPhiImage:
    """Where the constituent inputs' (η, φ) coordinates live among the features: per particle of
    every per-particle input (``InputBuilder.particle_grids``) with an η and a φ feature."""

    def __init__(self, context: AuditContext) -> None:
        # per input with η and φ: each base feature's columns over the particles, then η's and φ's
        # (slices where evenly spaced, as in a (particles, features) input: views, not copies)
        self.columns: list[tuple[list[Columns], Columns, Columns]] = []
        for grid in context.builder.particle_grids().values():
            names = [f.lower() for f in grid.features]
            at_eta = next((j for j, f in enumerate(names) if f in ETA_NAMES), None)
            at_phi = next((j for j, f in enumerate(names) if f in PHI_NAMES), None)
            if at_eta is None or at_phi is None:
                continue
            index = np.asarray(grid.index, np.int64)
            self.columns.append(([column_selection(index[:, j]) for j in range(index.shape[1])],
                                 column_selection(index[:, at_eta]), column_selection(index[:, at_phi])))

    @property
    def usable(self) -> bool:
        return bool(self.columns)

    def histogram(self, x: np.ndarray, r: np.ndarray, extent: float, bins: int) -> np.ndarray:
        per_particle, present, eta, phi = [], [], [], []
        for features, at_eta, at_phi in self.columns:
            # each particle's relevance: its features' added one by one, in feature order, so a jet's
            # sum does not depend on the block it is in (a matrix product's rounding can)
            total = r[:, features[0]].copy()
            for c in features[1:]:
                total += r[:, c]
            per_particle.append(total)
            # zero-padded constituents carry no position
            mask = x[:, features[0]] != 0
            for c in features[1:]:
                mask |= x[:, c] != 0
            present.append(mask)
            eta.append(x[:, at_eta])
            phi.append(x[:, at_phi])
        keep = _joined(present)
        return histogram2d_uniform(_joined(eta)[keep], _joined(phi)[keep], bins, ((-extent, extent), (-extent, extent)),
                                   _joined(per_particle)[keep])


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


@dataclass
class LrpState:
    sums: AttributionSums = field(default_factory=AttributionSums)
    differential: AttributionSums = field(default_factory=AttributionSums)
    n: int = 0
    abs_error: float = 0.0
    abs_logit: float = 0.0
    bias: float = 0.0
    abs_bias: float = 0.0
    residual: float = 0.0  # Σ|ΣR + bias share − z|: what ε, gates and αβ leave unexplained
    outside: float = 0.0  # relevance that reached inputs that are not features (a mask)
    profiles: Profiles | None = None
    image: np.ndarray | None = None
    sample: ExplanationSample | None = None  # per-jet relevance of a seeded sample of jets
    # iqr_clip: every jet's relevance per feature (spilled to a temporary file), class and weight
    kept: SpilledColumns | None = None
    classes: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    boot: BootstrapMeans | None = None  # bootstrap replicates of the mean |R|
    entries: list[np.ndarray] = field(default_factory=list)  # iqr_clip: the bootstrap's keys


class LayerwiseRelevance(Explainer[LrpState]):
    name = "lrp"
    Options = LrpOptions
    needs = frozenset({"input_mean"})
    attribution = True
    description = "Layer-wise relevance propagation on the ONNX graph, seeded with the logit z(x)"

    def __init__(self, options: LrpOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.rules = rule_set(options)
        self.backward = backward_for(context)
        self.engine = self.backward.engine
        self.warnings: list[str] = []
        n_feat = len(context.features)
        self.per_jet = options.per_jet and n_feat <= options.max_per_jet_features
        if options.per_jet and not self.per_jet:
            self.warnings.append(
                f"{n_feat} features > max_per_jet_features = {options.max_per_jet_features}: per_jet.root "
                "holds one array branch lrp_{input} per model input (the input's shape) instead of lrp_{feature}"
            )
        self.image = EtaPhiImage(context)
        # the mean-behaviour relevance r(x̄): LRP on the mean input
        mean = self.backward.relevance(mean_row(context), self.rules).relevance
        self.mean_relevance = self._normalized(feature_matrix(context.builder, mean))[0]

    def _normalized(self, r: np.ndarray) -> np.ndarray:
        """Relevance per feature normalised per jet as asked (a new array unless ``normalize = "none"``)."""
        if self.options.normalize == "sum_abs":
            total = np.abs(r).sum(axis=1, keepdims=True)
            r = np.divide(r, total, out=np.zeros_like(r), where=total > 0)
        elif self.options.normalize == "signed_sum":
            total = r.sum(axis=1, keepdims=True)
            r = np.divide(r, total, out=np.zeros_like(r), where=total != 0)
        return r

    def _empty_profiles(self) -> Profiles:
        bounds = self.context.feature_range
        if bounds is None:  # no x̄ pass (a context built by hand): unit bins
            bounds = np.tile([0.0, 1.0], (len(self.context.features), 1))
        return Profiles.empty(bounds)

    def start(self) -> LrpState:
        return LrpState(profiles=self._empty_profiles() if self.options.profile_features > 0 else None,
                        sample=ExplanationSample(self.options.sample_jets, salt_for(self.context.seed, "lrp-sample")),
                        kept=SpilledColumns(len(self.context.features)) if self.options.iqr_clip else None,
                        boot=None if self.options.iqr_clip else self.context.bootstrap_means("lrp"))

    def update(self, state: LrpState, chunk: Chunk) -> LrpState:
        n, n_feat = len(chunk), len(self.context.features)
        boot = state.boot
        counts = None if boot is None else poisson_counts(chunk.entries, boot.seed, boot.replicates)
        # every jet's relevance, written block by block, for the sample and per_jet.root
        r_all = np.empty((n, n_feat), self.engine.dtype)
        keep_inputs = self.options.per_jet and not self.per_jet

        def tally(rows: slice, out: LrpOutput) -> tuple[LrpState, dict[str, np.ndarray] | None]:
            """The sums of one block of jets (run on the block's thread: blocks stay in cache)."""
            part, r_all[rows] = self._block_sums(rows, out, chunk, counts, boot)
            return part, out.relevance if keep_inputs else None

        parts = self.backward.relevance_blocks(chunk.inputs, self.rules, tally)
        for part, _ in parts:  # in block order: the sums do not depend on the threads
            state = self.merge(state, part)
        if state.kept is not None:
            state.kept.append(r_all.T)
            state.classes.append(np.full(n, 2, np.int8) if chunk.labels is None else chunk.labels.astype(np.int8))
            state.weights.append(np.ones(n) if chunk.weights is None else chunk.weights)
            state.entries.append(np.asarray(chunk.entries, np.int64))
        if self.per_jet:
            branches = Explanation(r_all, self.context.features, chunk.entries).branches(
                "lrp", grids=self.context.builder.particle_grids())
            chunk.per_jet.update({k: v.astype(np.float32, copy=False) for k, v in branches.items()})
        elif keep_inputs:
            relevance = {k: np.concatenate([p[k] for _, p in parts if p is not None]) for k in parts[0][1] or {}}
            chunk.per_jet.update(Explanation.input_branches("lrp", relevance, self.context.builder.feature_inputs))
        if state.sample is not None:
            self._sample(state.sample, chunk, r_all)
        return state

    def _sample(self, sample: ExplanationSample, chunk: Chunk, relevance: np.ndarray) -> None:
        """Add the jets the seeded sample will keep, with their inputs (a few hundred of a large chunk)."""
        entries = np.asarray(chunk.entries, np.int64)
        rows = sample.wanted(entries)
        if not rows.any():  # the sample is full of jets with smaller keys
            return
        x = feature_matrix(self.context.builder, {k: v[rows] for k, v in chunk.inputs.items()})
        sample.add(Explanation(relevance[rows], self.context.features, entries[rows], data=x,
                               labels=None if chunk.labels is None else chunk.labels[rows],
                               scores=chunk.score[rows]))

    def _block_sums(self, rows: slice, out: LrpOutput, chunk: Chunk, counts: np.ndarray | None,
                    boot: BootstrapMeans | None) -> tuple[LrpState, np.ndarray]:
        """A block's share of every sum over jets, as a state of its own (merged in block order),
        and the block's relevance per jet."""
        # read only (a view of the block's relevance where it can be): copied into the chunk's array by the caller
        raw = feature_matrix(self.context.builder, out.relevance, view=True)
        r = self._normalized(raw)
        total = out.total()
        logit = chunk.logit[rows]
        labels = None if chunk.labels is None else chunk.labels[rows]
        per_class = class_weights(labels, None if chunk.weights is None else chunk.weights[rows], len(logit))
        part = LrpState(n=len(logit), profiles=None, sample=None)
        part.abs_error = float(np.abs(total - logit).sum())
        part.abs_logit = float(np.abs(logit).sum())
        part.bias = float(out.absorbed_bias.sum())
        part.abs_bias = float(np.abs(out.absorbed_bias).sum())
        part.residual = float(np.abs(total + out.absorbed_bias - logit).sum())
        part.outside = float(np.abs(total - raw.sum(axis=1)).sum())
        r64 = r.astype(np.float64)
        part.sums.add_weighted(r64, per_class)
        if boot is not None and counts is not None:
            part.boot = BootstrapMeans(boot.replicates, boot.seed)
            part.boot.add_weighted(np.abs(r64), per_class, chunk.entries[rows], counts[:, rows])
        x = feature_matrix(self.context.builder, {k: v[rows] for k, v in chunk.inputs.items()}, view=True)
        if self.options.profile_features > 0:
            part.profiles = self._empty_profiles()
            part.profiles.add(x, r64, labels)  # the float64 copy: binned as is, not converted again
        r64 -= self.mean_relevance[None, :]
        part.differential.add_weighted(r64, per_class)
        if self.image.usable:
            part.image = self.image.histogram(x, r, self.options.heatmap_range, self.options.heatmap_bins)
        return part, r

    def merge(self, a: LrpState, b: LrpState) -> LrpState:
        image = b.image if a.image is None else (a.image if b.image is None else a.image + b.image)
        return LrpState(
            a.sums.merge(b.sums),
            a.differential.merge(b.differential),
            a.n + b.n,
            a.abs_error + b.abs_error,
            a.abs_logit + b.abs_logit,
            a.bias + b.bias,
            a.abs_bias + b.abs_bias,
            a.residual + b.residual,
            a.outside + b.outside,
            a.profiles if b.profiles is None else b.profiles if a.profiles is None else a.profiles.merge(b.profiles),
            image,
            a.sample if b.sample is None else b.sample if a.sample is None else a.sample.merged(b.sample),
            b.kept if a.kept is None else a.kept if b.kept is None else a.kept.merged(b.kept),
            a.classes + b.classes,
            a.weights + b.weights,
            merged(a.boot, b.boot),
            a.entries + b.entries,
        )

    def rule_fields(self) -> dict[str, Any]:
        o = self.options
        fields: dict[str, Any] = {"rule": o.rule}
        table = composite_table(o) if o.rule == "composite" else {}
        used = {o.rule} if o.rule != "composite" else set(table.values()) | {"epsilon"}
        if o.rule == "composite":
            fields["composite"] = table
            if isinstance(o.composite, str):
                fields["composite_name"] = o.composite
        if used & {"epsilon", "gamma", "alpha1beta0", "alpha2beta1"}:
            fields["epsilon"] = o.epsilon
        if "gamma" in used:
            fields["gamma"] = o.gamma
        for name in sorted(used & {"alpha1beta0", "alpha2beta1", "zplus"}):
            alpha, beta = {"alpha1beta0": (1, 0), "alpha2beta1": (2, 1), "zplus": (1, 0)}[name]
            fields["alpha"], fields["beta"] = alpha, beta
        fields["first_layer"] = o.first_layer
        fields["ignore_bias"] = o.ignore_bias
        return fields

    def _clipped_scores(self, state: LrpState
                        ) -> tuple[list[FeatureScore], dict[str, list[str]], np.ndarray | None]:
        """mean |R| per feature after the paper's IQR clipping per feature and class, the features
        whose IQR is 0, and the bootstrap replicates of the means."""
        names = self.context.features
        kept = state.kept
        assert kept is not None
        weights = np.concatenate(state.weights)
        boot = jet_weights(state.entries, weights, self.context.seed, self.context.bootstrap)
        sums, weight, flat, reps = clipped_class_sums(lambda k: kept.row(k), len(names),
                                                      np.concatenate(state.classes), weights, None, boot)
        overall = sums.sum(axis=0) / max(weight.sum(), 1e-300)
        sig = sums[1] / weight[1] if weight[1] > 0 else None
        bkg = sums[0] / weight[0] if weight[0] > 0 else None
        scores = sorted_scores([FeatureScore(n, float(overall[i]), None if sig is None else float(sig[i]),
                                             None if bkg is None else float(bkg[i])) for i, n in enumerate(names)])
        return scores, {CLASS_NAMES[c]: [names[k] for k in ks] for c, ks in flat.items()}, reps

    def finish(self, state: LrpState) -> ExplainerResult:
        names = self.context.features
        n = max(state.n, 1)
        iqr_zero: dict[str, list[str]] = {}
        if state.kept is not None and state.n:
            scores, iqr_zero, reps = self._clipped_scores(state)
            replicates = [] if reps is None else [Replicates("features", list(names), reps)]
            scores = with_intervals(scores, replicates[0] if replicates else None)
        else:
            scores, replicates = ranked_with_intervals(state.sums.scores(names) if state.n else [], state.boot,
                                                       names)
        diff_overall = state.differential.means("abs")[0] if state.n else np.zeros(len(names))
        order = [names.index(s.feature) for s in scores]
        mean_behaviour = [
            {
                "feature": names[k],
                "relevance_at_mean": float(self.mean_relevance[k]),
                "differential_mean_abs": float(diff_overall[k]),
                "mean_abs": float(scores[i].score),
            }
            for i, k in enumerate(order)
        ]
        fields: dict[str, Any] = self.rule_fields()
        fields.update(
            {
                "seed_tensor": self.engine.target.tensor,
                "seed": self.engine.target.describe(),
                "normalize": self.options.normalize,
                "iqr_clip": self.options.iqr_clip,
                "iqr_zero": iqr_zero or None,
                "conservation_mean_abs_error": state.abs_error / n,
                "conservation_relative_error": state.abs_error / state.abs_logit if state.abs_logit else None,
                "bias_absorbed_mean": state.bias / n,
                "bias_absorbed_mean_abs": state.abs_bias / n,
                "conservation_with_bias_mean_abs_error": state.residual / n,
                "relevance_outside_features_mean_abs": state.outside / n,
                "mean_behaviour": mean_behaviour,
                **self.figure_fields(state, order),
                "path_ops": self.engine.path_ops,
                "canonizers": dict(self.engine.canonizers),
                "definition": "R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k, seeded with z(x); "
                "importance = mean |R|",
            }
        )
        summary = ""
        if scores:
            top = scores[0]
            k = names.index(top.feature)
            diff_rank = sorted(range(len(names)), key=lambda i: -diff_overall[i])
            summary = (
                f"LRP ({self.options.rule}) ranks {top.feature} first (mean |R| = {top.score:.3g}); "
                f"r(x̄) = {self.mean_relevance[k]:.3g} of it is mean-behaviour relevance, which ΔAUC and "
                f"SHAP do not see — by the differential part |R(x) − r(x̄)| the leader is "
                f"{names[diff_rank[0]]}. Conservation: mean |ΣR − z| = {state.abs_error / n:.3g}, "
                f"biases absorbed {state.bias / n:.3g} per jet on average."
            )
        return self.result(
            feature_importance=scores,
            fields=fields,
            summary=summary,
            replicates=replicates,
            explanation=state.sample.rows if state.sample is not None else None,
            warnings=list(self.warnings),
        )

    def figure_fields(self, state: LrpState, order: list[int]) -> dict[str, Any]:
        """Every number the LRP figures show, for report.json and :meth:`draw`."""
        if not state.n:
            return {}
        names = self.context.features
        out: dict[str, Any] = {"mean_signed_relevance": state.sums.signed_means(names, order)}
        if state.profiles is not None:
            out["profiles"] = state.profiles.fields(names, order[:self.options.profile_features])
        if state.image is not None:
            out["eta_phi_image"] = {"range": self.options.heatmap_range, "bins": self.options.heatmap_bins,
                                    "jets": state.n, "relevance_sum": state.image.tolist()}
        return out

    def draw(self, result: ExplainerResult) -> list[Figure]:
        from hepaudit.report.explanation_figures import Labels, explanation_figures

        return draw_relevance(result.fields, "LRP", "R", "lrp_relevance_by_class.png",
                              "Mean signed LRP relevance per class, top 20 features by mean |R|.") + \
            explanation_figures(result.explanation, Labels("lrp", "LRP", "R", "relevance of the logit",
                                                           jets="jet of a seeded sample"))


def draw_relevance(fields: dict[str, Any], method: str, symbol: str, bars_file: str, bars_caption: str
                   ) -> list[Figure]:
    """The per-class bars, value profiles and η–φ image from an attribution result's fields."""
    from hepaudit.explainers import lrp_figures

    figures: list[Figure] = []
    key = method.lower()
    means = fields.get("mean_signed_relevance") or {}
    if means:
        names = list(means)

        def column(cls: str) -> np.ndarray | None:
            values = [means[n][cls] for n in names]
            return None if any(v is None for v in values) else np.array(values, float)

        overall = column("all")
        assert overall is not None
        png = lrp_figures.class_bars(names, list(range(len(names))), column("signal"), column("background"),
                                     overall, f"mean {symbol} (signed)")
        if png:
            figures.append(Figure(bars_file, bars_caption, png))
    profiles = fields.get("profiles") or {}
    if profiles:
        names = list(profiles)
        edges = np.array([profiles[n]["bin_edges"] for n in names])
        bins = edges.shape[1] - 1
        sums, counts = np.zeros((len(names), bins, 3)), np.zeros((len(names), bins, 3))
        for i, n in enumerate(names):
            for c, cls in ((1, "signal"), (0, "background"), (2, "unlabelled")):
                if cls in profiles[n]:
                    counts[i, :, c] = profiles[n][cls]["jets"]
                    sums[i, :, c] = np.nan_to_num(np.array(profiles[n][cls]["mean_relevance"], float)) * counts[i, :, c]
        png = lrp_figures.profiles(names, edges, sums, counts, f"mean {symbol}")
        if png:
            figures.append(Figure(f"{key}_profiles.png", f"Mean {method} relevance in bins of the feature's value "
                                  "(Agarwal et al.), for the leading features by mean |relevance|.", png))
    image = fields.get("eta_phi_image")
    if image:
        png = lrp_figures.eta_phi_image(np.array(image["relevance_sum"]), image["range"], image["jets"],
                                        f"{method} relevance of constituents in (η, φ)")
        if png:
            figures.append(Figure(f"{key}_eta_phi.png", "Constituent relevance (summed over each constituent's "
                                  "features) histogrammed at its (η, φ) input, averaged over jets.", png))
    return figures


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(LayerwiseRelevance)
