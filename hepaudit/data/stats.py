"""Streaming statistics of the model inputs: x̄ for occlusion, and the report's warnings.

:class:`InputStats` folds chunks of built inputs into sums (and, for up to
``MAX_CORRELATION_FEATURES`` features, cross-products) and merges like an explainer
state. From it come the mean input x̄ per ONNX input (docs/methods.md) and warnings the
literature asks for: strongly correlated features and features spanning orders of
magnitude make every attribution method less reliable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_CORRELATION_FEATURES = 512


@dataclass
class InputFacts:
    """What the input statistics say about the features (for warnings and findings)."""

    constant: list[str] = field(default_factory=list)
    orders_of_magnitude: float | None = None  # log10 of the largest over the smallest |value| scale
    correlated: list[tuple[str, str, float]] = field(default_factory=list)  # |ρ| above the threshold, strongest first


@dataclass
class InputStats:
    """Sums over jets of every input (float64), plus flat-feature moments for warnings."""

    count: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    feature_sum: np.ndarray | None = None
    feature_sumsq: np.ndarray | None = None
    cross: np.ndarray | None = None
    abs_max: np.ndarray | None = None

    def update(self, inputs: dict[str, np.ndarray], features: np.ndarray | None) -> None:
        """Add a chunk: ``inputs`` per ONNX input, ``features`` the (N, K) feature matrix."""
        for name, value in inputs.items():
            s = np.add.reduce(value, axis=0, dtype=np.float64)  # float64 sums without a float64 copy
            self.sums[name] = s if name not in self.sums else self.sums[name] + s
        if features is not None:
            f = features.astype(np.float64)
            self.feature_sum = f.sum(0) if self.feature_sum is None else self.feature_sum + f.sum(0)
            amax = np.maximum(f.max(0), -f.min(0)) if len(f) else np.zeros(f.shape[1])
            self.abs_max = amax if self.abs_max is None else np.maximum(self.abs_max, amax)
            if f.shape[1] <= MAX_CORRELATION_FEATURES:
                c = f.T @ f
                self.cross = c if self.cross is None else self.cross + c
                sq = np.diag(c).copy()  # Σ f² is the cross-products' diagonal
            else:
                sq = np.einsum("ij,ij->j", f, f)
            self.feature_sumsq = sq if self.feature_sumsq is None else self.feature_sumsq + sq
        self.count += len(next(iter(inputs.values()))) if inputs else 0

    def mean(self) -> dict[str, np.ndarray]:
        """x̄ per input: one jet's row, float32 like the model inputs."""
        n = max(self.count, 1)
        return {name: (s / n).astype(np.float32) for name, s in self.sums.items()}

    def feature_range(self, width: float = 3.0) -> np.ndarray | None:
        """(features, 2) binning ranges: mean ± ``width`` σ, within ± the largest |value| seen."""
        if self.count == 0 or self.feature_sum is None or self.feature_sumsq is None or self.abs_max is None:
            return None
        mean = self.feature_sum / self.count
        std = np.sqrt(np.maximum(self.feature_sumsq / self.count - mean**2, 0.0))
        lo = np.maximum(mean - width * std, -self.abs_max)
        hi = np.minimum(mean + width * std, self.abs_max)
        hi = np.where(hi > lo, hi, lo + 1.0)  # a constant feature still gets bins
        return np.stack([lo, hi], axis=1)

    def describe(self, names: list[str], threshold: float = 0.9) -> InputFacts:
        """Constant features, the orders of magnitude the features span, strongly correlated pairs."""
        facts = InputFacts()
        if self.count < 2 or self.feature_sum is None or self.feature_sumsq is None:
            return facts
        n = self.count
        mean = self.feature_sum / n
        std = np.sqrt(np.maximum(self.feature_sumsq / n - mean**2, 0.0))
        # float noise (e.g. eta_1 after the TopoDNN rotation, ~1e-9) counts as constant
        typical = np.median(std[std > 0]) if (std > 0).any() else 1.0
        live = std > 1e-6 * typical
        facts.constant = [names[k] for k in np.flatnonzero(~live)]
        if self.abs_max is not None and live.any():
            scales = self.abs_max[live]
            scales = scales[scales > 0]
            if len(scales):
                facts.orders_of_magnitude = float(np.log10(scales.max() / scales.min()))
        if self.cross is not None and live.sum() > 1:
            cov = self.cross / n - np.outer(mean, mean)
            idx = np.flatnonzero(live)
            corr = cov[np.ix_(idx, idx)] / np.outer(std[idx], std[idx])
            iu = np.triu_indices(len(idx), 1)
            strong = np.flatnonzero(np.abs(corr[iu]) > threshold)
            order = strong[np.argsort(-np.abs(corr[iu][strong]), kind="stable")]
            facts.correlated = [(names[idx[iu[0][k]]], names[idx[iu[1][k]]], float(corr[iu][k])) for k in order]
        return facts

    def warnings(self, names: list[str], threshold: float = 0.9, max_listed: int = 5) -> list[str]:
        """Warnings about constant, correlated and orders-of-magnitude-spanning features."""
        facts = self.describe(names, threshold)
        out: list[str] = []
        if facts.constant:
            listed = ", ".join(facts.constant[:max_listed]) + (", ..." if len(facts.constant) > max_listed else "")
            out.append(f"{len(facts.constant)} feature(s) are constant over the audited jets ({listed}): "
                       "occluding them with their mean changes nothing,"
                       " while LRP may still rank them high (mean-behaviour relevance).")
        if facts.orders_of_magnitude is not None and facts.orders_of_magnitude > 3:
            out.append(f"input features span {facts.orders_of_magnitude:.0f} orders of magnitude "
                       "(largest |value| per feature); attributions are harder to compare across features.")
        if facts.correlated:
            pairs = [f"{a}~{b} ({r:+.2f})" for a, b, r in facts.correlated[:max_listed]]
            out.append(f"{len(facts.correlated)} pair(s) of features are strongly correlated (|rho| > {threshold}), "
                       f"e.g. {', '.join(pairs)}: occlusion and Shapley attributions split or move importance "
                       "between correlated inputs.")
        return out

    def merge(self, other: InputStats) -> InputStats:
        def add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return b if a is None else (a if b is None else a + b)

        sums = dict(self.sums)
        for k, v in other.sums.items():
            sums[k] = sums[k] + v if k in sums else v
        amax = (other.abs_max if self.abs_max is None else
                self.abs_max if other.abs_max is None else np.maximum(self.abs_max, other.abs_max))
        return InputStats(self.count + other.count, sums, add(self.feature_sum, other.feature_sum),
                          add(self.feature_sumsq, other.feature_sumsq), add(self.cross, other.cross), amax)
