"""Gradient attributions from the backward engine: saliency, gradient × input, SmoothGrad,
integrated gradients.

All four use the exact analytic gradient of the score's logit z(x) (``target = "logit"``,
default) or of its probability f(x) = σ(z(x)) (``target = "probability"``) with respect
to every input, computed on the ONNX graph by :mod:`hepaudit.model.backward`:

* ``gradient``: ∂t/∂x_k;
* ``gradient_x_input``: x_k · ∂t/∂x_k;
* ``smoothgrad``: the mean gradient over ``samples`` copies of x with Gaussian noise of
  σ = ``noise`` × (max − min of the jet's input tensor) (Smilkov et al. 2017);
* ``integrated_gradients``: (x_k − x'_k) · mean over α of ∂t/∂x_k(x' + α(x − x')), α on
  the ``steps`` midpoints of [0, 1], baseline x' = x̄ (``"mean"``) or 0 (Sundararajan et
  al. 2017); the completeness error mean |Σ_k IG_k − (t(x) − t(x'))| is reported.

Feature importance is the mean |attribution| per class and overall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hepaudit.bootstrap import BootstrapMeans, merged, ranked_with_intervals
from hepaudit.data.builders import feature_matrix
from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.lrp import AttributionSums, backward_for, draw_relevance, mean_row
from hepaudit.explanation import Explanation, ExplanationSample
from hepaudit.plugins import ExplainerRegistry, hookimpl
from hepaudit.results import ExplainerResult, Figure
from hepaudit.sampling import salt_for


@dataclass(frozen=True)
class GradientOptions:
    # ∂t/∂x, x·∂t/∂x, SmoothGrad (mean over noisy copies) or integrated gradients (docs/explainers/gradient.md)
    method: Literal["gradient", "gradient_x_input", "smoothgrad", "integrated_gradients"] = "gradient_x_input"
    target: Literal["logit", "probability"] = "logit"  # t: the score's logit z(x) or its probability
    noise: float = 0.1  # SmoothGrad noise level (fraction of the jet's input range)
    samples: int = 16  # SmoothGrad samples (one forward + backward each)
    baseline: Literal["mean", "zero"] = "mean"  # IG baseline x': the mean x̄ or 0
    steps: int = 32  # IG steps (one forward + backward each)
    per_jet: bool = False  # write the attributions to per_jet.root (grad_{input}[particles][features])
    max_per_jet_features: int = 512  # ... only for models with at most this many features
    sample_jets: int = 500  # jets kept (a seeded sample) for the beeswarm and dependence plots


@dataclass
class GradientState:
    sums: AttributionSums = field(default_factory=AttributionSums)
    n: int = 0
    completeness: float = 0.0
    sample: ExplanationSample | None = None  # per-jet attributions of a seeded sample of jets
    boot: BootstrapMeans | None = None  # bootstrap replicates of the mean |attribution|


class Gradient(Explainer[GradientState]):
    name = "gradient"
    Options = GradientOptions
    needs = frozenset({"input_mean"})
    attribution = True
    description = "Exact gradients of the score on the ONNX graph: saliency, gradient×input, SmoothGrad, IG"

    def __init__(self, options: GradientOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        if options.samples < 1 or options.steps < 1:
            from hepaudit.errors import ConfigError

            raise ConfigError("explainers.gradient: samples and steps must be at least 1")
        self.backward = backward_for(context)
        self.engine = self.backward.engine
        self.per_jet = options.per_jet and len(context.features) <= options.max_per_jet_features

    def start(self) -> GradientState:
        return GradientState(boot=self.context.bootstrap_means("gradient"),
                             sample=ExplanationSample(self.options.sample_jets,
                                                      salt_for(self.context.seed, "gradient-sample")))

    def _target(self, z: np.ndarray) -> np.ndarray:
        """t from the logit z: z itself, or the probability σ(z) (the score when there is no head)."""
        if self.options.target == "probability":
            return 1.0 / (1.0 + np.exp(-z))
        return z

    def _grad(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The gradient of the target per input, and the target t(x), per jet."""
        grads, z = self.backward.gradient(inputs, self.options.target)
        return grads, self._target(z)

    def attributions(self, chunk: Chunk) -> tuple[dict[str, np.ndarray], float]:
        """Attribution per input tensor for the chunk, and the summed IG completeness error."""
        o = self.options
        if o.method in ("gradient", "gradient_x_input"):
            grads, _ = self._grad(chunk.inputs)
            if o.method == "gradient":
                return grads, 0.0
            return {k: g * chunk.inputs[k] for k, g in grads.items()}, 0.0
        if o.method == "smoothgrad":
            rng = np.random.default_rng([self.context.seed, int(chunk.entries[0]) if len(chunk) else 0])
            total: dict[str, np.ndarray] = {}
            for _ in range(o.samples):
                noisy = {}
                for k, x in chunk.inputs.items():
                    flat = x.reshape(len(x), -1)
                    sigma = o.noise * (flat.max(axis=1) - flat.min(axis=1))
                    shape = (len(x),) + (1,) * (x.ndim - 1)
                    noisy[k] = (x + rng.normal(size=x.shape) * sigma.reshape(shape)).astype(x.dtype)
                grads, _ = self._grad(noisy)
                for k, g in grads.items():
                    total[k] = total[k] + g if k in total else g
            return {k: g / o.samples for k, g in total.items()}, 0.0
        base = (
            mean_row(self.context)
            if o.baseline == "mean"
            else {k: np.zeros((1,) + v.shape[1:], v.dtype) for k, v in chunk.inputs.items()}
        )
        total = {}
        for step in range(o.steps):
            alpha = (step + 0.5) / o.steps
            point = {k: (base[k] + alpha * (x - base[k])).astype(x.dtype) for k, x in chunk.inputs.items()}
            grads, _ = self._grad(point)
            for k, g in grads.items():
                total[k] = total[k] + g if k in total else g
        ig = {k: (chunk.inputs[k] - base[k]) * g / o.steps for k, g in total.items()}
        _, t_base = self._grad({k: np.repeat(v, 1, axis=0) for k, v in base.items()})
        t_x = self._target(chunk.logit)
        n = len(chunk)
        summed = sum(v.reshape(n, -1).sum(axis=1) for v in ig.values())
        return ig, float(np.abs(summed - (t_x - t_base[0])).sum())

    def update(self, state: GradientState, chunk: Chunk) -> GradientState:
        attr, completeness = self.attributions(chunk)
        a = feature_matrix(self.context.builder, attr)
        state.sums.add(a, chunk.labels, chunk.weights)
        if state.boot is not None:
            state.boot.add(np.abs(a), chunk.labels, chunk.weights, chunk.entries)
        state.n += len(chunk)
        state.completeness += completeness
        explanation = Explanation(a, self.context.features, chunk.entries, labels=chunk.labels, scores=chunk.score,
                                  data=feature_matrix(self.context.builder, chunk.inputs), output=self.options.target)
        if self.per_jet:
            branches = explanation.branches("grad", grids=self.context.builder.particle_grids())
            chunk.per_jet.update({k: v.astype(np.float32) for k, v in branches.items()})
        elif self.options.per_jet:  # thousands of features: one array branch per input
            chunk.per_jet.update(Explanation.input_branches("grad", attr, self.context.builder.feature_inputs))
        if state.sample is not None:
            state.sample.add(explanation)
        return state

    def merge(self, a: GradientState, b: GradientState) -> GradientState:
        sample = a.sample if b.sample is None else b.sample if a.sample is None else a.sample.merged(b.sample)
        return GradientState(a.sums.merge(b.sums), a.n + b.n, a.completeness + b.completeness, sample,
                             merged(a.boot, b.boot))

    def finish(self, state: GradientState) -> ExplainerResult:
        names = self.context.features
        scores, replicates = ranked_with_intervals(state.sums.scores(names) if state.n else [], state.boot, names)
        o = self.options
        fields: dict[str, object] = {
            "method": o.method,
            "target": o.target,
            "seed_tensor": self.engine.target.tensor,
            "definition": "exact analytic gradient of the "
            + ("logit z(x)" if o.target == "logit" else "probability f(x)"),
        }
        if o.method == "smoothgrad":
            fields.update({"noise": o.noise, "samples": o.samples})
        if o.method == "integrated_gradients":
            fields.update(
                {
                    "baseline": o.baseline,
                    "steps": o.steps,
                    "completeness_mean_abs_error": state.completeness / max(state.n, 1),
                }
            )
        if scores:
            fields["mean_signed_relevance"] = state.sums.signed_means(names, [names.index(x.feature) for x in scores])
        summary = (
            f"{o.method} of the {o.target}: largest mean |attribution| for {scores[0].feature} "
            f"({scores[0].score:.3g})."
            if scores
            else ""
        )
        return self.result(feature_importance=scores, fields=fields, summary=summary, replicates=replicates,
                           explanation=state.sample.rows if state.sample is not None else None)

    def draw(self, result: ExplainerResult) -> list[Figure]:
        method = self.options.method
        from hepaudit.report.explanation_figures import Labels, explanation_figures

        return draw_relevance(result.fields, method, method, f"gradient_{method}_by_class.png",
                              f"Mean signed {method} per class, top 20 features by mean |attribution|.") + \
            explanation_figures(result.explanation, Labels(f"gradient_{method}", method, "A",
                                                           f"attribution of the {self.options.target}",
                                                           jets="jet of a seeded sample"))


@hookimpl
def hepaudit_register_explainers(register: ExplainerRegistry) -> None:
    register(Gradient)
