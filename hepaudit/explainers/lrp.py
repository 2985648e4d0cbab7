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
biases absorbed. Per jet, ``lrp_{feature}`` goes to per_jet.root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hepaudit.data.builders import feature_matrix
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.model.backward import BackwardEngine, RuleSet, ScoreTarget
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, FeatureScore, Figure, sorted_scores

ETA_NAMES = ("eta", "deta", "eta_rel", "etarel", "delta_eta")
PHI_NAMES = ("phi", "dphi", "phi_rel", "phirel", "delta_phi")
PROFILE_BINS = 20


@dataclass(frozen=True)
class LrpOptions:
    rule: Literal["zero", "epsilon", "gamma", "alpha1beta0", "alpha2beta1", "zplus", "composite"] = "epsilon"
    epsilon: float = 1e-6
    gamma: float = 0.25
    first_layer: Literal["same", "flat", "wsquare"] = "same"
    composite: dict[str, str] = field(default_factory=lambda: {"dense": "epsilon", "conv": "gamma"})
    ignore_bias: bool = False
    normalize: Literal["none", "sum_abs"] = "none"
    per_jet: bool = True
    max_per_jet_features: int = 512
    profile_features: int = 4
    heatmap_range: float = 1.0
    heatmap_bins: int = 40


def rule_set(options: LrpOptions) -> RuleSet:
    if options.rule == "composite":
        return RuleSet(
            "epsilon",
            dict(options.composite),
            options.first_layer,
            options.epsilon,
            options.gamma,
            options.ignore_bias,
        )
    return RuleSet(
        options.rule, None, options.first_layer, options.epsilon, options.gamma, options.ignore_bias
    )


def engine_for(context: AuditContext) -> BackwardEngine:
    """The backward engine for the audited tagger, its hidden tensors exposed from onnxruntime."""
    tagger = context.tagger
    engine = BackwardEngine(
        tagger.proto,
        ScoreTarget.from_score_spec(tagger.score_spec),
        inputs=[i.name for i in tagger.info.inputs],
        # float32: the model's own precision, twice as fast as float64 (benchmarks/bench_lrp.py)
        dtype=np.float32,
    )
    # no busy-waiting onnxruntime threads while numpy runs the backward between forwards
    tagger.expose(engine.needed, spinning=False)
    return engine


def forward_values(
    engine: BackwardEngine, inputs: dict[str, np.ndarray], extra: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    values = dict(inputs)
    values.update({k: extra[k] for k in engine.needed})
    return values


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
        n, f = values.shape
        cls = np.full(n, 2, np.int8) if labels is None else labels.astype(np.int8)
        w = np.ones(n) if weights is None else weights
        if self.abs is None:
            self.abs, self.signed = np.zeros((3, f)), np.zeros((3, f))
        assert self.signed is not None
        for c in range(3):
            sel = cls == c
            if sel.any():
                self.abs[c] += w[sel] @ np.abs(values[sel])
                self.signed[c] += w[sel] @ values[sel]
                self.weight[c] += w[sel].sum()

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
    """Relevance in bins of a few features' values, bins fixed from the first chunk."""

    features: list[int] = field(default_factory=list)
    edges: np.ndarray | None = None
    sums: np.ndarray | None = None  # (features, bins, 3)
    counts: np.ndarray | None = None

    def add(self, x: np.ndarray, r: np.ndarray, labels: np.ndarray | None, top: int) -> None:
        if self.edges is None:
            self.features = [int(i) for i in np.argsort(-np.abs(r).mean(axis=0), kind="stable")[:top]]
            if not self.features:
                return
            lo = np.quantile(x[:, self.features], 0.005, axis=0)
            hi = np.quantile(x[:, self.features], 0.995, axis=0)
            hi = np.where(hi > lo, hi, lo + 1.0)
            self.edges = np.linspace(lo, hi, PROFILE_BINS + 1).T
            self.sums = np.zeros((len(self.features), PROFILE_BINS, 3))
            self.counts = np.zeros_like(self.sums)
        assert self.sums is not None and self.counts is not None
        cls = np.full(len(x), 2, np.int64) if labels is None else labels.astype(np.int64)
        for j, k in enumerate(self.features):
            b = np.clip(np.searchsorted(self.edges[j], x[:, k], side="right") - 1, 0, PROFILE_BINS - 1)
            np.add.at(self.sums[j], (b, cls), r[:, k])
            np.add.at(self.counts[j], (b, cls), 1.0)

    def merge(self, other: Profiles) -> Profiles:
        if self.edges is None:
            return other
        if (
            other.edges is None
            or other.features != self.features
            or not np.array_equal(other.edges, self.edges)
        ):
            return self  # different binning: keep one (only happens with a distributed executor)
        assert self.sums is not None and other.sums is not None
        assert self.counts is not None and other.counts is not None
        return Profiles(self.features, self.edges, self.sums + other.sums, self.counts + other.counts)


class EtaPhiImage:
    """Where the constituent inputs' (η, φ) coordinates live among the features."""

    def __init__(self, context: AuditContext) -> None:
        by_particle: dict[tuple[str, int], dict[str, Any]] = {}
        for k, slot in enumerate(context.builder.slots):
            if slot.particle is None or slot.base is None:
                continue
            entry = by_particle.setdefault((slot.input, slot.particle), {"members": []})
            entry["members"].append(k)
            if slot.base.lower() in ETA_NAMES:
                entry["eta"] = k
            elif slot.base.lower() in PHI_NAMES:
                entry["phi"] = k
        usable = [e for e in by_particle.values() if "eta" in e and "phi" in e]
        self.eta = np.array([e["eta"] for e in usable], np.int64)
        self.phi = np.array([e["phi"] for e in usable], np.int64)
        self.members = np.zeros((len(context.builder.slots), len(usable)))
        for j, e in enumerate(usable):
            self.members[e["members"], j] = 1.0

    @property
    def usable(self) -> bool:
        return len(self.eta) > 0

    def histogram(self, x: np.ndarray, r: np.ndarray, extent: float, bins: int) -> np.ndarray:
        per_particle = r @ self.members
        present = np.abs(x) @ self.members > 0  # zero-padded constituents carry no position
        eta, phi = x[:, self.eta][present], x[:, self.phi][present]
        hist, _, _ = np.histogram2d(
            eta, phi, bins=bins, range=[[-extent, extent], [-extent, extent]], weights=per_particle[present]
        )
        return hist


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
    profiles: Profiles = field(default_factory=Profiles)
    image: np.ndarray | None = None


class LayerwiseRelevance(Explainer[LrpState]):
    name = "lrp"
    Options = LrpOptions
    needs = frozenset({"input_mean"})
    attribution = True
    description = "Layer-wise relevance propagation on the ONNX graph, seeded with the logit z(x)"

    def __init__(self, options: LrpOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.rules = rule_set(options)
        self.engine = engine_for(context)
        self.warnings: list[str] = []
        n_feat = len(context.features)
        self.per_jet = options.per_jet and n_feat <= options.max_per_jet_features
        if options.per_jet and not self.per_jet:
            self.warnings.append(
                f"{n_feat} features > max_per_jet_features = {options.max_per_jet_features}: "
                "lrp_{feature} columns are not written to per_jet.root"
            )
        self.image = EtaPhiImage(context)
        # the mean-behaviour relevance r(x̄): LRP on the mean input
        mean = mean_row(context)
        out = context.tagger.run(mean)
        self.mean_relevance = self._features(
            self.engine.relevance(forward_values(self.engine, mean, out.extra), self.rules).relevance
        )[0]

    def _features(self, relevance: dict[str, np.ndarray]) -> np.ndarray:
        r = feature_matrix(self.context.builder, relevance)
        if self.options.normalize == "sum_abs":
            total = np.abs(r).sum(axis=1, keepdims=True)
            r = np.divide(r, total, out=np.zeros_like(r), where=total > 0)
        return r

    def start(self) -> LrpState:
        return LrpState()

    def update(self, state: LrpState, chunk: Chunk) -> LrpState:
        out = self.engine.relevance(forward_values(self.engine, chunk.inputs, chunk.extra), self.rules)
        r = self._features(out.relevance)
        total = out.total()
        raw_features = feature_matrix(self.context.builder, out.relevance).sum(axis=1)
        state.n += len(chunk)
        state.abs_error += float(np.abs(total - chunk.logit).sum())
        state.abs_logit += float(np.abs(chunk.logit).sum())
        state.bias += float(out.absorbed_bias.sum())
        state.abs_bias += float(np.abs(out.absorbed_bias).sum())
        state.residual += float(np.abs(total + out.absorbed_bias - chunk.logit).sum())
        state.outside += float(np.abs(total - raw_features).sum())
        state.sums.add(r, chunk.labels, chunk.weights)
        state.differential.add(r - self.mean_relevance[None, :], chunk.labels, chunk.weights)
        x = feature_matrix(self.context.builder, chunk.inputs).astype(np.float64)
        state.profiles.add(x, r, chunk.labels, self.options.profile_features)
        if self.image.usable:
            hist = self.image.histogram(x, r, self.options.heatmap_range, self.options.heatmap_bins)
            state.image = hist if state.image is None else state.image + hist
        if self.per_jet:
            for k, name in enumerate(self.context.features):
                chunk.per_jet[f"lrp_{name}"] = r[:, k].astype(np.float32)
        return state

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
            a.profiles.merge(b.profiles),
            image,
        )

    def rule_fields(self) -> dict[str, Any]:
        o = self.options
        fields: dict[str, Any] = {"rule": o.rule}
        used = {o.rule} if o.rule != "composite" else set(o.composite.values()) | {"epsilon"}
        if o.rule == "composite":
            fields["composite"] = dict(o.composite)
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

    def finish(self, state: LrpState) -> ExplainerResult:
        names = self.context.features
        n = max(state.n, 1)
        scores = state.sums.scores(names) if state.n else []
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
                "conservation_mean_abs_error": state.abs_error / n,
                "conservation_relative_error": state.abs_error / state.abs_logit if state.abs_logit else None,
                "bias_absorbed_mean": state.bias / n,
                "bias_absorbed_mean_abs": state.abs_bias / n,
                "conservation_with_bias_mean_abs_error": state.residual / n,
                "relevance_outside_features_mean_abs": state.outside / n,
                "mean_behaviour": mean_behaviour,
                "path_ops": self.engine.path_ops,
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
            figures=self._figures(state, order),
            warnings=list(self.warnings),
        )

    def _figures(self, state: LrpState, order: list[int]) -> list[Figure]:
        from hepaudit.explainers import lrp_figures

        figures: list[Figure] = []
        if not state.n:
            return figures
        names = self.context.features
        overall, sig, bkg = state.sums.means("signed")
        png = lrp_figures.class_bars(names, order, sig, bkg, overall, "mean relevance R (signed)")
        if png:
            figures.append(
                Figure(
                    "lrp_relevance_by_class.png",
                    "Mean signed LRP relevance per class, top 20 features by mean |R|.",
                    png,
                )
            )
        p = state.profiles
        if p.edges is not None and p.sums is not None and p.counts is not None:
            png = lrp_figures.profiles([names[k] for k in p.features], p.edges, p.sums, p.counts, "mean R")
            if png:
                figures.append(
                    Figure(
                        "lrp_profiles.png",
                        "Mean LRP relevance in bins of the feature's value "
                        "(Agarwal et al.), for the leading features of the first chunk.",
                        png,
                    )
                )
        if state.image is not None:
            png = lrp_figures.eta_phi_image(
                state.image, self.options.heatmap_range, state.n, "LRP relevance of constituents in (η, φ)"
            )
            if png:
                figures.append(
                    Figure(
                        "lrp_eta_phi.png",
                        "Constituent relevance (summed over each constituent's "
                        "features) histogrammed at its (η, φ) input, averaged over jets.",
                        png,
                    )
                )
        return figures


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(LayerwiseRelevance)
