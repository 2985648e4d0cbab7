"""The figures every per-jet attribution gets, drawn from an :class:`~hepaudit.explanation.Explanation`.

Beeswarm: one row per feature (the largest mean |attribution| at the top), one dot per jet
at its attribution, coloured by the feature's value in that jet (its percentile among the
jets shown, so that pT in GeV and η share one colour scale). Dependence: the attribution of
the leading features against their value, signal and background in their colours. SHAP,
LRP, gradients and plugins (LIME) call these with their own names and symbols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hepaudit.explanation import Explanation
from hepaudit.report.figures import (
    BACKGROUND_COLOUR,
    OVERALL_COLOUR,
    SIGNAL_COLOUR,
    _png,
    _pyplot,
    _short,
    fixed_margins,
    named_ticks,
)
from hepaudit.results import Figure

TOP = 15
DEPENDENCE_TOP = 4


@dataclass(frozen=True)
class Labels:
    """How a method's attributions are named on a figure."""

    key: str  # file name prefix: "shap" -> shap_beeswarm.png
    method: str  # "SHAP", "LRP"
    symbol: str  # "φ", "R"
    meaning: str  # "change of the signal score"
    jets: str = "explained jet"  # what one dot is
    value_note: str = "feature's value"  # what the colour is


def _percentile_ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(values, axis=0, kind="stable"), axis=0, kind="stable").astype(float)
    return ranks / max(1, len(values) - 1)


def beeswarm(explanation: Explanation, labels: Labels) -> Figure | None:
    """One dot per jet at its attribution, per leading feature, coloured by the feature's value
    (grey when the units have no single value: groups of features)."""
    phi, values, names = explanation.values, explanation.data, explanation.feature_names
    if phi.size == 0:
        return None
    plt = _pyplot()
    order = np.argsort(-np.abs(phi).mean(axis=0), kind="stable")[:TOP]
    colours = _percentile_ranks(values) if values is not None else None
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.35 * len(order)))
    rows = []
    for row, p in enumerate(order):
        # vertical spread grows with the local density of the values, like a beeswarm
        x = phi[:, p]
        hist, edges = np.histogram(x, bins=30)
        bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(hist) - 1)
        density = hist[bins] / max(1, hist.max())
        rows.append(row + rng.uniform(-0.35, 0.35, len(x)) * density)
    # every row in one collection: one artist to draw instead of one per feature
    x, y = phi[:, order].T.ravel(), np.concatenate(rows)
    if colours is None:
        points = ax.scatter(x, y, color=OVERALL_COLOUR, s=8, linewidths=0)
    else:
        points = ax.scatter(x, y, c=colours[:, order].T.ravel(), cmap="coolwarm", vmin=0, vmax=1, s=8,
                            linewidths=0)
    ax.axvline(0, color="#888888", lw=0.8)
    named_ticks(ax.yaxis, np.arange(len(order)), [_short(names[p]) for p in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{labels.method} value {labels.symbol} ({labels.meaning})")
    side = None
    if colours is not None:
        bar = fig.colorbar(points, ax=ax, pad=0.01, fraction=0.04)  # its slot no wider than the bar
        bar.set_label(f"{labels.value_note} (percentile)")
        side = bar.ax
    ax.set_title(f"{labels.method} summary: one dot per {labels.jets}")
    coloured = (f", coloured by the {labels.value_note}, as a percentile among the jets shown" if colours is not None
                else " (groups of features have no single value to colour by)")
    caption = (f"{labels.method} values per {labels.jets} for the features with the largest mean "
               f"|{labels.symbol}|{coloured}.")
    return Figure(f"{labels.key}_beeswarm.png", caption, _png(fig, tight=not fixed_margins(fig, ax, side)))


def dependence(explanation: Explanation, labels: Labels) -> Figure | None:
    """The attribution of the leading features against their value, per class (none for groups)."""
    phi, values, names = explanation.values, explanation.data, explanation.feature_names
    if phi.size == 0 or values is None:
        return None
    classes = explanation.labels if explanation.labels is not None else np.full(len(phi), 2)
    plt = _pyplot()
    order = np.argsort(-np.abs(phi).mean(axis=0), kind="stable")[:DEPENDENCE_TOP]
    fig, axes = plt.subplots(1, len(order), figsize=(3.3 * len(order), 3.0), squeeze=False)
    for ax, p in zip(axes[0], order):
        for cls, colour, label in ((1, SIGNAL_COLOUR, "signal"), (0, BACKGROUND_COLOUR, "background"),
                                   (2, OVERALL_COLOUR, "unlabelled")):
            sel = classes == cls
            if sel.any():
                ax.scatter(values[sel, p], phi[sel, p], s=7, color=colour, alpha=0.6, linewidths=0, label=label)
        ax.axhline(0, color="#888888", lw=0.8)
        ax.set_xlabel(_short(names[p], 28), fontsize=8)
        ax.set_ylabel(labels.symbol, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, frameon=False)
    # fixed margins and gaps between the panels, in inches (room for the tick and axis labels):
    # a tight layout or bounding box would lay the whole figure out once more
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.3 / height,
                        wspace=0.8 / (width / len(order) - 0.8))
    caption = (f"{labels.method} dependence: {labels.symbol} of the leading features against their value"
               f" ({labels.value_note}), signal and background jets in their colours.")
    return Figure(f"{labels.key}_dependence.png", caption, _png(fig, tight=False))


def box_plot(explanation: Explanation, labels: Labels) -> Figure | None:
    """Per leading feature, the distribution of its per-jet attribution, signal and background side
    by side (box: quartiles, whiskers: 5 % and 95 %): the spread a mean |value| hides."""
    phi = explanation.values
    if phi.size == 0:
        return None
    classes = explanation.labels if explanation.labels is not None else np.full(len(phi), 2)
    plt = _pyplot()
    order = np.argsort(-np.abs(phi).mean(axis=0), kind="stable")[:TOP]
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.4 * len(order)))
    groups = [(1, SIGNAL_COLOUR, "signal", -0.18), (0, BACKGROUND_COLOUR, "background", 0.18)]
    if not (classes != 2).any():
        groups = [(2, OVERALL_COLOUR, "jets", 0.0)]
    for cls, colour, name, shift in groups:
        sel = classes == cls
        if not sel.any():
            continue
        # the five numbers of every box from one percentile call, drawn as two collections: one
        # artist per box, whisker, cap and median (ax.bxp) cost most of this figure's drawing
        q = np.percentile(phi[sel][:, order], [5, 25, 50, 75, 95], axis=0)
        _boxes(ax, q, np.arange(len(order)) + shift, colour)
        ax.plot([], [], color=colour, linewidth=6, alpha=0.5, label=name)
    ax.axvline(0, color="#888888", lw=0.8)
    named_ticks(ax.yaxis, np.arange(len(order)), [_short(explanation.feature_names[p]) for p in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{labels.method} value {labels.symbol} ({labels.meaning})")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title(f"{labels.method} per {labels.jets}: quartiles (box) and 5–95 % (whiskers)")
    caption = (f"{labels.method} values per {labels.jets} for the features with the largest mean "
               f"|{labels.symbol}|, per class: boxes span the quartiles, whiskers 5 % to 95 %.")
    return Figure(f"{labels.key}_boxes.png", caption, _png(fig, tight=not fixed_margins(fig, ax)))


def _boxes(ax: Any, q: np.ndarray, rows: np.ndarray, colour: str, height: float = 0.3) -> None:
    """Horizontal boxes at ``rows`` from percentiles ``q`` (5, 25, 50, 75, 95 along axis 0):
    box over the quartiles, median line, whiskers to 5 % and 95 % with caps."""
    from matplotlib.collections import LineCollection, PolyCollection

    low, q1, med, q3, high = q
    top, bottom = rows - height / 2, rows + height / 2
    boxes = np.stack([np.stack([q1, top], 1), np.stack([q3, top], 1), np.stack([q3, bottom], 1),
                      np.stack([q1, bottom], 1)], axis=1)
    ax.add_collection(PolyCollection(list(boxes), facecolors=colour, edgecolors=colour, alpha=0.5))
    cap_top, cap_bottom = rows - height / 4, rows + height / 4

    def segments(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        return np.stack([np.stack([x0, y0], 1), np.stack([x1, y1], 1)], axis=1)

    lines = np.concatenate([segments(low, rows, q1, rows), segments(q3, rows, high, rows),
                            segments(low, cap_top, low, cap_bottom), segments(high, cap_top, high, cap_bottom),
                            segments(med, top, med, bottom)])
    ax.add_collection(LineCollection(list(lines), colors=colour))
    ax.autoscale_view()


def waterfall_figure(explanation: Explanation, jet: int, top: int = 10) -> Any:
    """The waterfall of one jet (:meth:`Explanation.waterfall`): a matplotlib Figure, not closed."""
    plt = _pyplot()
    phi = np.asarray(explanation.values[jet], float)
    base = float(explanation.base_values[jet]) if explanation.base_values is not None else 0.0
    order = np.argsort(-np.abs(phi), kind="stable")
    shown, rest = order[:top], order[top:]
    names = []
    for k in shown:
        value = f" = {explanation.data[jet, k]:.3g}" if explanation.data is not None else ""
        names.append(_short(explanation.feature_names[k], 32) + value)
    steps = list(phi[shown])
    if len(rest):
        names.append(f"{len(rest)} other features")
        steps.append(float(phi[rest].sum()))
    fig, ax = plt.subplots(figsize=(7.5, 1.4 + 0.38 * len(steps)))
    start = base
    for row, step in enumerate(steps):
        colour = SIGNAL_COLOUR if step >= 0 else BACKGROUND_COLOUR
        ax.barh(row, step, left=start, color=colour, alpha=0.8, height=0.6)
        ax.text(start + step, row, f" {step:+.3g} ", va="center", ha="left" if step >= 0 else "right", fontsize=7)
        start += step
    ax.axvline(base, color="#888888", lw=0.8, ls="--")
    ax.axvline(start, color=OVERALL_COLOUR, lw=0.8)
    named_ticks(ax.yaxis, np.arange(len(steps)), names, fontsize=8)
    ax.invert_yaxis()
    entry = int(explanation.entries[jet])
    ax.set_xlabel(f"{explanation.output}: base value {base:.3g} → {start:.3g}")
    ax.set_title(f"Jet at entry {entry}: the largest contributions first", fontsize=10)
    fig.tight_layout()
    return fig


def explanation_figures(explanation: Explanation | None, labels: Labels) -> list[Figure]:
    """The beeswarm, the box plot and the dependence plots (those that can be drawn)."""
    if explanation is None or not len(explanation):
        return []
    figures = (beeswarm(explanation, labels), box_plot(explanation, labels), dependence(explanation, labels))
    return [f for f in figures if f is not None]
