"""The report's performance section (contract §5): ROC, AUC, background rejection, accuracy.

Built from the executors' weighted histograms of the logit per class (width 0.005 in z,
an edge at z = 0, i.e. score 0.5), which merge across chunks and Dask workers. The ROC's
points are the bin edges; jets in one bin count as tied (½), so the AUC is the Mann–Whitney
statistic of the binned logits — within about 1e-4 of the exact one on the example tagger.
The background rejection 1/ε_B at a signal efficiency is interpolated linearly in ε_B between
the ROC points around it; ``accuracy_at_0.5`` is exact (z = 0 is a bin edge).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepaudit.bootstrap import centred_interval
from hepaudit.report.drawing import add_figure
from hepaudit.results import Figure, ReportSection

EFFICIENCIES = (0.3, 0.5, 0.7)
MAX_POINTS = 200


def roc_from_histograms(bkg: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(fpr, tpr) at every bin edge from the highest threshold down, and the AUC."""
    tpr = np.concatenate([[0.0], np.cumsum(sig[::-1])]) / max(sig.sum(), 1e-300)
    fpr = np.concatenate([[0.0], np.cumsum(bkg[::-1])]) / max(bkg.sum(), 1e-300)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, auc


def _thin(fpr: np.ndarray, tpr: np.ndarray, n: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points of the curve, spread along its length, ends kept."""
    keep = np.flatnonzero(np.r_[True, (np.diff(fpr) != 0) | (np.diff(tpr) != 0)])
    fpr, tpr = fpr[keep], tpr[keep]
    if len(fpr) <= n:
        return fpr, tpr
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(fpr), np.diff(tpr)))])
    picks = np.unique(np.searchsorted(length, np.linspace(0.0, length[-1], n)).clip(0, len(fpr) - 1))
    return fpr[picks], tpr[picks]


def rejection_at(fpr: np.ndarray, tpr: np.ndarray, efficiency: float) -> float | None:
    """1/ε_B at signal efficiency ``efficiency`` (None when no background passes there)."""
    i = int(np.searchsorted(tpr, efficiency))
    if i >= len(tpr):
        return None
    if i == 0 or tpr[i] == tpr[i - 1]:
        eff_b = fpr[i]
    else:
        t = (efficiency - tpr[i - 1]) / (tpr[i] - tpr[i - 1])
        eff_b = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    return None if eff_b <= 0 else float(1.0 / eff_b)


def auc_interval(auc: float, replicates: np.ndarray | None) -> list[float] | None:
    """The AUC's 95 % interval from the bootstrap replicates' logit histograms (R, 2, bins):
    the replicates' spread around their median, carried to ``auc``."""
    if replicates is None or len(replicates) < 2:
        return None
    values = np.array([roc_from_histograms(bkg, sig)[2] for bkg, sig in replicates
                       if bkg.sum() > 0 and sig.sum() > 0])
    return centred_interval(auc, values, (0.0, 1.0))


def performance_section(logit_hist: np.ndarray, edges: np.ndarray, replicates: np.ndarray | None = None
                        ) -> ReportSection | None:
    """The section, or None when the audit had no labels of both classes; ``replicates``: the
    bootstrap's logit histograms, for ``auc_ci95``."""
    bkg, sig = logit_hist
    if bkg.sum() <= 0 or sig.sum() <= 0:
        return None
    fpr, tpr, auc = roc_from_histograms(bkg, sig)
    auc_ci95 = auc_interval(auc, replicates)
    centre_above = edges[:-1] >= 0.0  # bins at or above z = 0: score ≥ 0.5
    accuracy = float((sig[centre_above].sum() + bkg[~centre_above].sum()) / (sig.sum() + bkg.sum()))
    rejection = {f"{e:g}": rejection_at(fpr, tpr, e) for e in EFFICIENCIES}
    thin_fpr, thin_tpr = _thin(fpr, tpr)
    data: dict[str, Any] = {"auc": auc, "auc_ci95": auc_ci95,
                            "roc": {"fpr": thin_fpr.tolist(), "tpr": thin_tpr.tolist()},
                            "background_rejection": rejection, "accuracy_at_0.5": accuracy,
                            "weighted_jets": {"signal": float(sig.sum()), "background": float(bkg.sum())}}
    parts = [f"AUC {auc:.4f}" + (f" [{auc_ci95[0]:.4f}, {auc_ci95[1]:.4f}]" if auc_ci95 else "")]
    parts += [f"1/ε_B = {r:.3g} at ε_S = {e}" if r is not None else f"no background left at ε_S = {e}"
              for e, r in rejection.items()]
    parts.append(f"accuracy at score 0.5: {accuracy:.3f}")
    from hepaudit.report.figures import roc_curve

    figures: list[Figure] = []
    add_figure(figures, "roc.png", "ROC: background rejection 1/ε_B against signal efficiency ε_S", roc_curve,
               fpr, tpr, auc)
    return ReportSection("performance", "Performance", "; ".join(parts) + ".", data, figures)



#: how many of the leading features the inputs section shows
INPUT_FEATURES = 12


def inputs_section(hist: np.ndarray | None, feature_range: np.ndarray | None, features: list[str],
                   rankings: list[list[str]]) -> ReportSection | None:
    """Per-class histograms of the features the attribution methods rank highest (round-robin
    over the methods' rankings, so each method's leaders appear), from the executor's histograms."""
    if hist is None or feature_range is None or not features:
        return None
    order: list[str] = []
    for depth in range(len(features)):
        for ranking in rankings:
            if depth < len(ranking) and ranking[depth] in features and ranking[depth] not in order:
                order.append(ranking[depth])
        if len(order) >= INPUT_FEATURES:
            break
    order = order[:INPUT_FEATURES] or features[:INPUT_FEATURES]
    index = [features.index(name) for name in order]
    from hepaudit.executors.partitions import INPUT_BINS

    edges = np.array([np.linspace(feature_range[k, 0], feature_range[k, 1], INPUT_BINS + 1) for k in index])
    bkg, sig = hist[0][index], hist[1][index]
    data = {name: {"bin_edges": edges[i].tolist(), "signal": sig[i].tolist(), "background": bkg[i].tolist()}
            for i, name in enumerate(order)}
    from hepaudit.report.figures import input_histograms

    figures: list[Figure] = []
    add_figure(figures, "input_features.png", "Input features per class: the features the methods rank highest",
               input_histograms, order, edges, sig, bkg, cost=3)  # a panel per feature: among the costliest
    return ReportSection("inputs", "Input features per class",
                         f"The {len(order)} features the attribution methods rank highest, per class.",
                         {"features": data}, figures)
