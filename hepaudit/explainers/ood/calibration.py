"""``calibration``: is the tagger's score a probability on this data? Reliability and ECE.

Definitions. The score f ∈ [0, 1] is cut into ``bins`` equal-width bins (bin b holds
b/B ≤ f < (b+1)/B, the last bin includes 1). Per bin, with per-jet weights w (1 without
a weight branch): W_b = Σ w, the mean score f̄_b = Σ w f / W_b and the observed signal
fraction ȳ_b = Σ w y / W_b. The expected calibration error is

    ECE = Σ_b (W_b / W) |ȳ_b − f̄_b|.

``ece`` is computed with the sample's own class balance; ``ece_balanced`` after
reweighting signal and background to equal total weight (a tagger trained on balanced
classes is calibrated for a 50/50 mixture, not for the audited sample's mixture). Both
come from per-bin, per-class sums of w and w·f accumulated chunk by chunk.

Recalibration: what a monotone map of the score would change.
- Platt scaling: p = σ(a z + b) on the logit z(x), a and b by weighted maximum likelihood
  (Newton's method with step halving, numpy);
- isotonic scaling: pool-adjacent-violators on the weighted signal fraction in up to
  ``isotonic_bins`` quantile bins of the logit (a non-decreasing step function).
They are fitted on the reference sample when it has labels, and evaluated on all audited
jets; otherwise fitted on one half of the audited jets (a seeded hash of the entry
number) and evaluated on the other half. The result says which. Fitting keeps the logit,
label and weight of every jet concerned (O(jets) scalars, 9 bytes per jet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepaudit.explainers.base import AuditContext, Chunk, Explainer
from hepaudit.explainers.ood import figures
from hepaudit.explainers.ood.common import entry_keys, held_out, real_reference
from hepaudit.results import ExplainerResult, Figure


@dataclass(frozen=True)
class CalibrationOptions:
    bins: int = 15  # equal-width score bins for the reliability diagram and ECE
    isotonic_bins: int = 100  # quantile bins of the logit for isotonic scaling
    # a labelled sample to fit the recalibrations on (else [reference], else half the data)
    reference: dict | None = None

    def __post_init__(self) -> None:
        if self.bins < 1 or self.isotonic_bins < 2:
            raise ValueError("bins must be >= 1 and isotonic_bins >= 2")


# -- definitions, usable on their own ------------------------------------------------------------


def binned_sums(
    score: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class (row 0 background, 1 signal) and score bin: Σ w and Σ w·f."""
    score = np.asarray(score, dtype=np.float64)
    w = np.ones(len(score)) if weights is None else np.asarray(weights, dtype=np.float64)
    index = np.clip(np.floor(np.clip(score, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    cls = np.asarray(labels).astype(np.int64)
    weight = np.zeros((2, bins))
    wf = np.zeros((2, bins))
    for c in (0, 1):
        sel = cls == c
        weight[c] = np.bincount(index[sel], weights=w[sel], minlength=bins)
        wf[c] = np.bincount(index[sel], weights=w[sel] * score[sel], minlength=bins)
    return weight, wf


def reliability(
    weight: np.ndarray, wf: np.ndarray, balanced: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean score, observed signal fraction, weight) per bin and the ECE, from :func:`binned_sums`."""
    totals = weight.sum(axis=1)
    if balanced:
        if np.any(totals <= 0):
            raise ValueError("class-balanced ECE needs both classes")
        scale = (totals.sum() / 2) / totals  # each class to half of the total weight
        weight = weight * scale[:, None]
        wf = wf * scale[:, None]
    w_bin = weight.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_score = np.where(w_bin > 0, wf.sum(axis=0) / w_bin, np.nan)
        observed = np.where(w_bin > 0, weight[1] / w_bin, np.nan)
    ok = w_bin > 0
    ece = (
        float(np.sum(w_bin[ok] * np.abs(observed[ok] - mean_score[ok])) / w_bin.sum())
        if ok.any()
        else float("nan")
    )
    return mean_score, observed, w_bin, ece


def expected_calibration_error(
    score: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    bins: int = 15,
    balanced: bool = False,
) -> float:
    """ECE with ``bins`` equal-width bins (see the module docstring)."""
    return reliability(*binned_sums(score, labels, weights, bins), balanced=balanced)[3]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def fit_platt(
    logit: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, iterations: int = 100
) -> tuple[float, float]:
    """(a, b) maximising the weighted likelihood of p = σ(a z + b): Newton steps with step halving."""
    z = np.asarray(logit, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
    design = np.stack([z, np.ones_like(z)], axis=1)

    def loss(theta: np.ndarray) -> float:
        t = design @ theta
        # -[y log σ(t) + (1 - y) log(1 - σ(t))] = log(1 + e^t) - y t
        return float(np.sum(w * (np.logaddexp(0.0, t) - y * t)))

    theta = np.array([1.0, 0.0])
    current = loss(theta)
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        grad = design.T @ (w * (p - y))
        hess = design.T @ (design * (w * p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8:
            trial = theta - t * step
            value = loss(trial)
            if value <= current:
                break
            t *= 0.5
        else:
            break
        theta, previous, current = trial, current, value
        if np.max(np.abs(t * step)) < 1e-10 or previous - current < 1e-12 * max(abs(current), 1.0):
            break
    return float(theta[0]), float(theta[1])


def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-decreasing fit to ``values`` (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(np.asarray(values, float), np.asarray(weights, float)):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks[-1]
            total = w1 + w2
            blocks[-1] = [(v1 * w1 + v2 * w2) / total if total > 0 else 0.5 * (v1 + v2), total, n1 + n2]
    return np.concatenate([np.full(int(n), v) for v, _, n in blocks]) if blocks else np.zeros(0)


@dataclass
class IsotonicMap:
    """A non-decreasing step function of the logit, fitted on quantile bins."""

    inner_edges: np.ndarray
    values: np.ndarray

    def __call__(self, logit: np.ndarray) -> np.ndarray:
        return self.values[np.searchsorted(self.inner_edges, logit, side="right")]


def fit_isotonic(
    logit: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, bins: int = 100
) -> IsotonicMap:
    z = np.asarray(logit, dtype=np.float64)
    w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
    inner = np.unique(np.quantile(z, np.linspace(0, 1, bins + 1)[1:-1]))
    index = np.searchsorted(inner, z, side="right")
    n_bins = len(inner) + 1
    w_bin = np.bincount(index, weights=w, minlength=n_bins)
    wy_bin = np.bincount(index, weights=w * np.asarray(labels, float), minlength=n_bins)
    used = w_bin > 0
    fitted = pool_adjacent_violators(wy_bin[used] / w_bin[used], w_bin[used])
    values = np.empty(n_bins)
    values[used] = fitted
    # an empty bin takes the value of the nearest used bin below it (above it at the start)
    last = fitted[0]
    for i in range(n_bins):
        if used[i]:
            last = values[i]
        else:
            values[i] = last
    return IsotonicMap(inner, values)


# -- the explainer ----------------------------------------------------------------------------------


@dataclass
class Columns:
    """Per-jet logit, label, weight (for fitting and evaluating the recalibrations)."""

    logit: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)
    weight: list[np.ndarray] = field(default_factory=list)

    def add(self, logit: np.ndarray, label: np.ndarray, weight: np.ndarray) -> None:
        self.logit.append(logit.astype(np.float32))
        self.label.append(label.astype(np.int8))
        self.weight.append(weight.astype(np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.logit:
            return np.zeros(0), np.zeros(0, np.int8), np.zeros(0)
        return (
            np.concatenate(self.logit).astype(np.float64),
            np.concatenate(self.label),
            np.concatenate(self.weight).astype(np.float64),
        )

    def __add__(self, other: Columns) -> Columns:
        return Columns(self.logit + other.logit, self.label + other.label, self.weight + other.weight)


@dataclass
class CalibrationState:
    weight: np.ndarray
    wf: np.ndarray
    reference: Columns = field(default_factory=Columns)
    fit_half: Columns = field(default_factory=Columns)  # audited jets, hash bit 0
    eval_half: Columns = field(default_factory=Columns)  # audited jets, hash bit 1
    unlabelled_reference: bool = False


class Calibration(Explainer[CalibrationState]):
    name = "calibration"
    Options = CalibrationOptions
    needs = frozenset({"labels", "reference"})
    description = "Calibration: reliability diagram, ECE, and what Platt or isotonic scaling would change"

    def __init__(self, options: CalibrationOptions, context: AuditContext) -> None:
        super().__init__(options, context)
        self.real_reference = real_reference(context, options)

    def start(self) -> CalibrationState:
        return CalibrationState(np.zeros((2, self.options.bins)), np.zeros((2, self.options.bins)))

    def update_reference(self, state: CalibrationState, chunk: Chunk) -> CalibrationState:
        if not self.real_reference:  # the audited data itself: its halves are used instead
            return state
        if chunk.labels is None:
            state.unlabelled_reference = True
            return state
        w = np.ones(len(chunk)) if chunk.weights is None else chunk.weights
        state.reference.add(chunk.logit, chunk.labels, w)
        return state

    def update(self, state: CalibrationState, chunk: Chunk) -> CalibrationState:
        assert chunk.labels is not None
        w = np.ones(len(chunk)) if chunk.weights is None else chunk.weights
        weight, wf = binned_sums(chunk.score, chunk.labels, w, self.options.bins)
        state.weight += weight
        state.wf += wf
        held = held_out(entry_keys(chunk.entries, self.context.seed))
        state.fit_half.add(chunk.logit[~held], chunk.labels[~held], w[~held])
        state.eval_half.add(chunk.logit[held], chunk.labels[held], w[held])
        return state

    def merge(self, a: CalibrationState, b: CalibrationState) -> CalibrationState:
        return CalibrationState(
            a.weight + b.weight,
            a.wf + b.wf,
            a.reference + b.reference,
            a.fit_half + b.fit_half,
            a.eval_half + b.eval_half,
            a.unlabelled_reference or b.unlabelled_reference,
        )

    def _recalibration(self, state: CalibrationState) -> dict[str, Any]:
        bins = self.options.bins
        use_reference = self.real_reference and not state.unlabelled_reference and state.reference.logit
        if use_reference:
            fit = state.reference.arrays()
            evaluation = (state.fit_half + state.eval_half).arrays()
            fitted_on, evaluated_on = "the reference sample", "all audited jets"
        else:
            fit = state.fit_half.arrays()
            evaluation = state.eval_half.arrays()
            fitted_on = "half of the audited jets (seeded hash of the entry number)"
            evaluated_on = "the other half of the audited jets"
            if self.real_reference:
                fitted_on += " (the reference sample has no labels)"
        z_fit, y_fit, w_fit = fit
        z, y, w = evaluation
        out: dict[str, Any] = {
            "fitted_on": fitted_on,
            "evaluated_on": evaluated_on,
            "fit_jets": int(len(z_fit)),
            "evaluation_jets": int(len(z)),
        }
        if len(z) == 0 or len(np.unique(y_fit)) < 2 or len(np.unique(y)) < 2:
            out["note"] = "not enough labelled jets of both classes to fit and evaluate a recalibration"
            return out
        before = _sigmoid(z)
        out["ece"] = expected_calibration_error(before, y, w, bins)
        out["ece_balanced"] = expected_calibration_error(before, y, w, bins, balanced=True)
        a, b = fit_platt(z_fit, y_fit, w_fit)
        platt = _sigmoid(a * z + b)
        out["platt"] = {
            "a": a,
            "b": b,
            "ece": expected_calibration_error(platt, y, w, bins),
            "ece_balanced": expected_calibration_error(platt, y, w, bins, balanced=True),
        }
        iso = fit_isotonic(z_fit, y_fit, w_fit, self.options.isotonic_bins)(z)
        out["isotonic"] = {
            "bins": self.options.isotonic_bins,
            "ece": expected_calibration_error(iso, y, w, bins),
            "ece_balanced": expected_calibration_error(iso, y, w, bins, balanced=True),
        }
        return out

    def finish(self, state: CalibrationState) -> ExplainerResult:
        bins = self.options.bins
        edges = np.linspace(0.0, 1.0, bins + 1)
        mean_score, observed, w_bin, ece = reliability(state.weight, state.wf)
        both = bool(np.all(state.weight.sum(axis=1) > 0))
        bal = reliability(state.weight, state.wf, balanced=True) if both else None

        def listed(a: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else float(v) for v in a]

        fields: dict[str, Any] = {
            "definition": "ECE = sum over equal-width score bins of "
            "(W_b / W) |observed signal fraction - mean score|",
            "bins": bins,
            "ece": ece,
            "ece_balanced": bal[3] if bal else None,
            "signal_fraction": float(state.weight[1].sum() / state.weight.sum())
            if state.weight.sum()
            else None,
            "reliability": {
                "edges": edges.tolist(),
                "mean_score": listed(mean_score),
                "observed": listed(observed),
                "weight": w_bin.tolist(),
                "observed_balanced": listed(bal[1]) if bal else None,
                "mean_score_balanced": listed(bal[0]) if bal else None,
            },
            "recalibration": self._recalibration(state),
        }
        rec = fields["recalibration"]
        summary = f"ECE {ece:.4f} ({bins} bins)" + (f", {bal[3]:.4f} with balanced classes" if bal else "")
        if "platt" in rec:
            summary += (
                f"; on {rec['evaluated_on']}, Platt scaling would change ECE {rec['ece']:.4f} → "
                f"{rec['platt']['ece']:.4f}, isotonic → {rec['isotonic']['ece']:.4f} "
                f"(fitted on {rec['fitted_on']})."
            )
        return self.result(fields=fields, summary=summary)

    def draw(self, result: ExplainerResult) -> list[Figure]:
        """The reliability diagram, from ``fields["reliability"]``."""
        fields = result.fields
        rel = fields["reliability"]

        def array(values: list[float | None] | None) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values or []], float)

        balanced = (array(rel["mean_score_balanced"]), array(rel["observed_balanced"])) \
            if rel.get("observed_balanced") is not None else None
        title = f"calibration: ECE {fields['ece']:.4f}" + (
            f", balanced {fields['ece_balanced']:.4f}" if fields.get("ece_balanced") is not None else "")
        png = figures.reliability_diagram(array(rel["mean_score"]), array(rel["observed"]),
                                          np.asarray(rel["weight"], float), np.asarray(rel["edges"], float),
                                          balanced, title)
        return [Figure("calibration_reliability.png", "Reliability diagram: observed signal fraction vs "
                       "mean score per bin, as sampled and with classes reweighted to equal weight", png)]
