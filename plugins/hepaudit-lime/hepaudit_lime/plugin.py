"""The ``lime`` explainer: local linear surrogates of the tagger's logit, jet by jet.

For a seeded sample of jets per class (a bottom-k reservoir on a hash of the entry number,
so the same jets whatever the chunks or partitions), LIME perturbs each jet's features
around it, weights the perturbations by their proximity and fits a sparse linear model of
the logit (:mod:`hepaudit_lime.surrogate`). Reported: mean |β| per feature overall and per
class (the ranking), the local fidelity R² of the surrogates, and per jet (tree ``lime`` in
per_jet.root, written from an :class:`~hepaudit.api.Explanation` by its naming rule) every
coefficient, the jet's feature values and the R².

Only :mod:`hepaudit.api` and :mod:`hepaudit.plotting` are used: this plugin is the proof
that a third party can write an explainer against the public surface alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepaudit.api import (
    AuditContext,
    Chunk,
    Explainer,
    ExplainerRegistry,
    ExplainerResult,
    Explanation,
    FeatureScore,
    Figure,
    Reservoir,
    add_by_class,
    feature_matrix,
    hookimpl,
    merge_by_class,
    salt_for,
    salted_uniform,
    sorted_scores,
    with_features,
)
from hepaudit_lime.surrogate import Surrogate, fit, kernel_weights

CLASS_NAMES = {0: "background", 1: "signal", 2: "unlabelled"}


@dataclass(frozen=True)
class LimeOptions:
    """``[explainers.lime]``: how many jets, how many perturbations, how local, how sparse."""

    jets: int = 50  # jets explained per class
    samples: int = 1000  # perturbations per jet
    scale: float = 1.0  # perturbation width, in units of each feature's standard deviation
    kernel_width: float = 0.0  # in standardised units; 0: 0.75 sqrt(varying features), lime's default
    max_features: int = 10  # non-zero coefficients per surrogate
    ridge: float = 1.0  # the selection fit's ridge penalty (lime's Ridge(alpha=1))
    rows_per_call: int = 65536  # perturbed jets scored per model call

    def __post_init__(self) -> None:
        for name in ("jets", "samples", "max_features", "rows_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.samples < 10:
            raise ValueError("samples must be at least 10")
        if self.scale <= 0 or self.kernel_width < 0 or self.ridge < 0:
            raise ValueError("scale must be positive; kernel_width and ridge must not be negative")


@dataclass
class LimeState:
    """Per-class reservoirs of jets to explain, and feature moments for the perturbation widths."""

    jets: dict[int, Reservoir] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # each input's row shape
    n: int = 0
    sums: np.ndarray | None = None
    squares: np.ndarray | None = None


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a + b


class Lime(Explainer[LimeState]):
    name = "lime"
    Options = LimeOptions
    needs = frozenset()
    attribution = True
    description = "LIME: proximity-weighted sparse linear surrogates of the logit around sampled jets"

    def __init__(self, options: LimeOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.salt = salt_for(context.seed, "lime-jets")

    def start(self) -> LimeState:
        return LimeState()

    def update(self, state: LimeState, chunk: Chunk) -> LimeState:
        n = len(chunk)
        if n == 0:
            return state
        x = feature_matrix(self.context.builder, chunk.inputs).astype(np.float64)
        state.n += n
        state.sums = _add(state.sums, x.sum(axis=0))
        state.squares = _add(state.squares, (x * x).sum(axis=0))
        state.shapes = state.shapes or {k: v.shape[1:] for k, v in chunk.inputs.items()}
        flat = {k: v.reshape(n, -1) for k, v in chunk.inputs.items()}
        labels = np.full(n, 2, np.int8) if chunk.labels is None else chunk.labels.astype(np.int8)
        entries = np.asarray(chunk.entries, np.int64)
        add_by_class(state.jets, self.options.jets, salted_uniform(entries, self.salt), entries, flat,
                     chunk.score, labels)
        return state

    def merge(self, a: LimeState, b: LimeState) -> LimeState:
        return LimeState(merge_by_class(a.jets, b.jets), a.shapes or b.shapes, a.n + b.n, _add(a.sums, b.sums),
                         _add(a.squares, b.squares))

    def _surrogates(self, state: LimeState, inputs: dict[str, np.ndarray], entries: np.ndarray,
                    sigma: np.ndarray) -> list[Surrogate]:
        """One surrogate per jet; jets are scored together, up to ``rows_per_call`` rows a call."""
        o = self.options
        varying = np.flatnonzero(sigma > 0)
        width = o.kernel_width or 0.75 * math.sqrt(max(len(varying), 1))
        per_call = max(1, o.rows_per_call // o.samples)
        out: list[Surrogate] = []
        for start in range(0, len(entries), per_call):
            stop = min(start + per_call, len(entries))
            x = feature_matrix(self.context.builder, {k: v[start:stop] for k, v in inputs.items()})
            eps = [np.random.default_rng([self.context.seed, int(e)]).standard_normal((o.samples, len(varying)))
                   for e in entries[start:stop]]
            z = np.repeat(x.astype(np.float64), o.samples, axis=0)
            z[:, varying] += o.scale * np.concatenate(eps) * sigma[varying]
            jets = {k: np.repeat(v[start:stop], o.samples, axis=0) for k, v in inputs.items()}
            logit = self.context.tagger.run(with_features(self.context.builder, jets, z.astype(np.float32)),
                                            extra=False).logit
            for i, e in enumerate(eps):
                y = logit[i * o.samples:(i + 1) * o.samples]
                s = fit(e, y, kernel_weights(e, width), o.max_features, o.ridge)
                full = np.zeros(len(sigma))
                full[varying] = s.coefficients
                out.append(Surrogate(full, s.intercept, s.r2))
        return out

    def finish(self, state: LimeState) -> ExplainerResult:
        reservoirs = [state.jets[c] for c in sorted(state.jets)]
        if not reservoirs or sum(len(r) for r in reservoirs) == 0 or state.sums is None or state.squares is None:
            raise RuntimeError("no jets to explain")
        entries = np.concatenate([r.entries for r in reservoirs])
        order = np.argsort(entries, kind="stable")
        entries = entries[order]
        labels = np.concatenate([r.labels for r in reservoirs])[order]
        score = np.concatenate([r.score for r in reservoirs])[order]
        inputs = {k: np.concatenate([r.inputs[k] for r in reservoirs])[order].reshape((len(entries),) + shape)
                  for k, shape in state.shapes.items()}
        mean = state.sums / state.n
        sigma = np.sqrt(np.maximum(state.squares / state.n - mean ** 2, 0.0))
        sigma[sigma < 1e-9 * max(float(sigma.max()), 1e-300)] = 0.0  # constant features are not perturbed
        surrogates = self._surrogates(state, inputs, entries, sigma)
        beta = np.array([s.coefficients for s in surrogates])
        r2 = np.array([s.r2 for s in surrogates])
        # the surrogate at the jet itself (eps = 0) is its intercept: the base the coefficients add to
        explanation = Explanation(beta, list(self.context.features), entries,
                                  np.array([s.intercept for s in surrogates]),
                                  feature_matrix(self.context.builder, inputs).astype(np.float64), labels=labels,
                                  scores=score, output="logit per standard deviation")
        return self.result(feature_importance=self._scores(beta, labels),
                           fields=self._fields(beta, r2, labels, sigma), summary=self._summary(beta, r2),
                           trees={"lime": {**explanation.branches("lime", own_tree=True), "r2": r2}},
                           explanation=explanation)

    def _scores(self, beta: np.ndarray, labels: np.ndarray) -> list[FeatureScore]:
        absolute = np.abs(beta)

        def class_mean(c: int) -> np.ndarray | None:
            sel = labels == c
            return absolute[sel].mean(axis=0) if sel.any() and (labels != 2).any() else None

        overall, sig, bkg = absolute.mean(axis=0), class_mean(1), class_mean(0)
        return sorted_scores([FeatureScore(name, float(overall[k]), None if sig is None else float(sig[k]),
                                           None if bkg is None else float(bkg[k]))
                              for k, name in enumerate(self.context.features)])

    def _fields(self, beta: np.ndarray, r2: np.ndarray, labels: np.ndarray, sigma: np.ndarray) -> dict[str, Any]:
        o = self.options
        varying = int((sigma > 0).sum())
        edges = np.linspace(0.0, 1.0, 21)
        by_class = {CLASS_NAMES[int(c)]: float(r2[labels == c].mean()) for c in np.unique(labels)}
        hist = {CLASS_NAMES[int(c)]: np.histogram(np.clip(r2[labels == c], 0, 1), edges)[0].tolist()
                for c in np.unique(labels)}
        return {
            "jets_explained": int(len(r2)),
            "jets_explained_per_class": {CLASS_NAMES[int(c)]: int((labels == c).sum()) for c in np.unique(labels)},
            "samples_per_jet": o.samples,
            "scale": o.scale,
            "kernel_width": o.kernel_width or 0.75 * math.sqrt(max(varying, 1)),
            "max_features": o.max_features,
            "fidelity_r2_mean": float(r2.mean()),
            "fidelity_r2_median": float(np.median(r2)),
            "fidelity_r2_by_class": by_class,
            "low_fidelity_jets": int((r2 < 0.5).sum()),
            "fidelity_r2_histogram": {"bin_edges": edges.tolist(), **hist},
            "mean_signed_coefficient": {name: float(beta[:, k].mean())
                                        for k, name in enumerate(self.context.features)},
            "definition": "per jet, beta = sparse weighted least squares of the logit on perturbations "
                          "z = x + scale * sigma * eps, weights sqrt(exp(-|eps|^2 / width^2)); "
                          "importance = mean |beta| (logit per standard deviation of the feature)",
        }

    def _summary(self, beta: np.ndarray, r2: np.ndarray) -> str:
        top = int(np.abs(beta).mean(axis=0).argmax())
        return (f"LIME surrogates of {len(r2)} jets: largest mean |β| for {self.context.features[top]}; "
                f"local fidelity R² {np.mean(r2):.2f} on average ({int((r2 < 0.5).sum())} jets below 0.5).")

    def draw(self, result: ExplainerResult) -> list[Figure]:
        from hepaudit import plotting

        ranked = result.feature_importance or []
        figures = []
        if ranked:
            names = [s.feature for s in ranked]

            def column(values: list[float | None]) -> np.ndarray | None:
                return None if any(v is None for v in values) else np.array(values, float)

            png = plotting.class_bars(names, column([s.score_signal for s in ranked]),
                                      column([s.score_background for s in ranked]),
                                      np.array([s.score for s in ranked]), "mean |β| (logit per σ)")
            if png:
                figures.append(Figure("lime_coefficients.png", "Mean |β| of the LIME surrogates per class", png))
        hist = result.fields.get("fidelity_r2_histogram")
        if hist:
            plt = plotting.pyplot()
            fig, ax = plt.subplots(figsize=(4.5, 3.0))
            for cls, colour in (("signal", plotting.SIGNAL_COLOUR), ("background", plotting.BACKGROUND_COLOUR),
                                ("unlabelled", plotting.OVERALL_COLOUR)):
                if cls in hist:
                    ax.stairs(hist[cls], hist["bin_edges"], color=colour, label=cls, linewidth=1.4)
            ax.set_xlabel("local fidelity R²")
            ax.set_ylabel("jets")
            ax.legend(frameon=False, fontsize=8)
            figures.append(Figure("lime_fidelity.png", "How well the linear surrogates fit the logit near each jet",
                                  plotting.png(fig)))
        labels = plotting.ExplanationLabels("lime", "LIME", "β", "logit per σ of the feature")
        return figures + plotting.explanation_figures(result.explanation, labels)


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(Lime)
