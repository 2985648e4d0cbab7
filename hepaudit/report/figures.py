"""The report's figures, drawn with matplotlib (Agg backend) and returned as PNG bytes.

matplotlib is imported inside each function so that importing hepaudit stays fast and never
touches a display. Every function returns the PNG bytes (or None when there is nothing to
draw); writing them to disk is the writer's job.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hepaudit.report.style import DEFAULT_DPI as DPI  # noqa: F401  (public: hepaudit.plotting.DPI)
from hepaudit.report.style import EXTRA_FORMATS, PNG_DPI
from hepaudit.results import AuditReport, ExplainerResult, FeatureScore, sorted_scores

SIGNAL_COLOUR = "#d62728"
BACKGROUND_COLOUR = "#1f77b4"
OVERALL_COLOUR = "#4d4d4d"
RANK_TOP = 15


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _power_of_ten(value: float, _pos: object = None) -> str:
    """10ⁿ in Unicode superscripts for a power of ten, '' for other values."""
    if value <= 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) > 1e-9:
        return ""
    return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)


def log_scale(ax: Any, axis: str = "y") -> None:
    """A log axis whose tick labels are plain text (10⁻³), not matplotlib's mathtext: parsing
    the $10^{-3}$ labels took 0.1 s a figure, more than drawing the data."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    getattr(ax, f"set_{axis}scale")("log")
    which = ax.yaxis if axis == "y" else ax.xaxis
    which.set_major_formatter(FuncFormatter(_power_of_ten))
    # minor ticks get labels (plain decimals) only on an axis spanning about a decade or less
    which.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def named_ticks(axis: Any, positions: Sequence[float] | np.ndarray, labels: Sequence[str], **kwargs: Any) -> None:
    """Ticks at ``positions`` named ``labels`` (features, methods, layers), with no minor ticks
    between them: a style's minor ticks (the CMS style's) mean nothing on such an axis, and each
    is two lines and two texts more to lay out and draw."""
    from matplotlib.ticker import NullLocator

    axis.set_ticks(positions, labels, **kwargs)
    axis.set_minor_locator(NullLocator())


def fixed_margins(fig: Any, ax: Any, side: Any = None, pad: float = 0.1) -> bool:
    """Margins (inches) that just hold ``ax``'s tick labels, axis labels and title, and the tick
    labels and label of ``side`` (a colorbar's axes, laid out by the gridspec beside ``ax``),
    measured from those texts alone; False, leaving the figure as it was, when a label is wider
    than the figure allows (crop to a tight bounding box then). A tight bounding box lays the
    whole figure out once more to find the same margins: a quarter of a bar chart's cost."""
    import matplotlib

    renderer = fig.canvas.get_renderer()

    def span(texts: Sequence[Any], width: bool) -> float:  # inches
        boxes = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
        return max((b.width if width else b.height for b in boxes), default=0.0) / fig.dpi

    def ticks(axis: Any) -> float:  # the ticks' length outside the axes, their labels' pad, the label's pad
        major = axis.get_major_ticks()
        outside = max((t.get_tick_padding() + t.get_pad() for t in major[:1]), default=0.0)
        return (outside + axis.labelpad) / 72

    width, height = fig.get_size_inches()
    left = span(ax.get_yticklabels(which="both"), True) + span([ax.yaxis.label], True) + ticks(ax.yaxis) + pad
    bottom = span(ax.get_xticklabels(which="both"), False) + span([ax.xaxis.label], False) + ticks(ax.xaxis) + pad
    top = span([ax.title], False) + matplotlib.rcParams["axes.titlepad"] / 72 + pad
    right = pad
    if side is not None:
        right += span(side.get_yticklabels(which="both"), True) + span([side.yaxis.label], True) + ticks(side.yaxis)
    inner = width - left - right

    def inside(text: Any) -> bool:  # a title or x label, placed along the axes by its alignment
        size = span([text], True)
        start = left + inner * text.get_position()[0]
        start -= size * {"left": 0.0, "center": 0.5, "right": 1.0}.get(text.get_horizontalalignment(), 0.5)
        return start >= 0 and start + size <= width

    # an axis whose numbers carry an offset or a power of ten (1e−5) has one more text at its end,
    # set only while drawing: the tight box finds it
    offset = any(axis.major.formatter.get_offset() for axis in (ax.xaxis, ax.yaxis))
    if (offset or left + right > 0.6 * width or bottom + top > 0.6 * height
            or not (inside(ax.title) and inside(ax.xaxis.label))):
        return False
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return True


def _png(fig: Any, tight: bool = True) -> bytes:
    """The figure as PNG bytes. ``tight=False`` for figures laid out with fixed margins:
    a tight bounding box draws the figure twice, a third of a simple figure's cost.

    zlib level 3, not Pillow's 6: a third less encoding time (10 ms for a 1400 x 390 figure)
    for files 1% larger."""
    buffer = io.BytesIO()
    bbox = "tight" if tight else None
    extra: dict[str, bytes] = {}
    try:
        fig.savefig(buffer, format="png", dpi=PNG_DPI.get(), bbox_inches=bbox, pil_kwargs={"compress_level": 3})
        for fmt in EXTRA_FORMATS.get():  # [report] figure_formats: vector files beside the PNG
            other = io.BytesIO()
            fig.savefig(other, format=fmt, bbox_inches=bbox)
            extra[fmt] = other.getvalue()
    finally:
        _pyplot().close(fig)
    return FigureBytes(buffer.getvalue(), extra)


class FigureBytes(bytes):
    """A figure's PNG bytes, carrying the same figure in the other formats asked for
    (``formats``: {"pdf": bytes, ...}), which the report writer saves beside the PNG."""

    formats: dict[str, bytes]

    def __new__(cls, png: bytes, formats: dict[str, bytes] | None = None) -> FigureBytes:
        out = super().__new__(cls, png)
        out.formats = formats or {}
        return out


def _finite(x: float | None) -> float:
    return float(x) if x is not None and math.isfinite(x) else 0.0


def _known(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _short(label: str, width: int = 40) -> str:
    # Long names (prefixed multi-input features) would squeeze the bars to nothing.
    return label if len(label) <= width else label[: width - 1] + "…"


def _bar_chart(scores: list[FeatureScore], title: str, xlabel: str, top: int) -> bytes | None:
    ranked = sorted_scores(scores)[:top]
    if not ranked:
        return None
    plt = _pyplot()
    labels = [_short(s.feature) for s in ranked]
    per_class = any(_known(s.score_signal) or _known(s.score_background) for s in ranked)
    n = len(ranked)
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.3 * n * (1.6 if per_class else 1.0)))
    y = np.arange(n)
    overall = [_finite(s.score) for s in ranked]
    # the bootstrap's 95 % interval on the overall bar, where the result has one
    xerr = None
    if any(s.score_ci95 for s in ranked):
        lo = [max(_finite(s.score) - s.score_ci95[0], 0.0) if s.score_ci95 else 0.0 for s in ranked]
        hi = [max(s.score_ci95[1] - _finite(s.score), 0.0) if s.score_ci95 else 0.0 for s in ranked]
        xerr = np.array([lo, hi])
    if per_class:
        # Three thin bars per feature: overall, then each class, so a feature that only
        # matters for one class stands out.
        h = 0.27
        ax.barh(y - h, overall, height=h, color=OVERALL_COLOUR, label="all jets", xerr=xerr,
                error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.barh(y, [_finite(s.score_signal) for s in ranked], height=h, color=SIGNAL_COLOUR, label="signal")
        ax.barh(y + h, [_finite(s.score_background) for s in ranked], height=h,
                color=BACKGROUND_COLOUR, label="background")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    else:
        ax.barh(y, overall, height=0.7, color=OVERALL_COLOUR, xerr=xerr, error_kw={"elinewidth": 0.8, "capsize": 2})
    if xerr is not None:
        title += " (bars: 95 % bootstrap intervals)"
    named_ticks(ax.yaxis, y, labels, fontsize=8)
    ax.invert_yaxis()  # rank 1 at the top
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    return _png(fig, tight=not fixed_margins(fig, ax))


def importance_bar_chart(result: ExplainerResult, top: int = 20) -> bytes | None:
    """Horizontal bars of the ``top`` features by score, per class where the result has them."""
    if not result.feature_importance:
        return None
    return _bar_chart(result.feature_importance, f"{result.name}: feature importance (top {top})",
                      "importance score", top)


def group_bar_chart(result: ExplainerResult, top: int = 30) -> bytes | None:
    """Horizontal bars of the group scores (``particle_i``, ``feature_name``), when scored."""
    if not result.group_importance:
        return None
    return _bar_chart(result.group_importance, f"{result.name}: group importance", "importance score", top)


def hidden_bar_chart(scores: list[FeatureScore], title: str, xlabel: str, top: int = 30) -> bytes | None:
    """Horizontal bars of the channels of a hidden tensor (ΔAUC / MAD of hidden units)."""
    return _bar_chart(scores, title, xlabel, top)


def attribution_rankings(report: AuditReport) -> dict[str, list[str]]:
    """Feature names by descending score, for every explainer that ran and ranked features."""
    return {
        name: [s.feature for s in sorted_scores(r.feature_importance)]
        for name, r in report.explainers.items()
        if r.status == "ok" and r.feature_importance
    }


#: the file name of :func:`ranking_comparison`'s figure
RANKING_FIGURE = "ranking_comparison.png"


def ranking_comparison(report: AuditReport, top: int = RANK_TOP) -> bytes | None:
    """Rank heat-map: rows = union of each method's top features, columns = methods, cell = rank.

    None with fewer than two attribution methods, where there is nothing to compare.
    """
    return rank_heat_map(attribution_rankings(report), top)


def rank_heat_map(rankings: dict[str, list[str]], top: int = RANK_TOP) -> bytes | None:
    """:func:`ranking_comparison` from the rankings themselves (method -> features, best first)."""
    if len(rankings) < 2:
        return None
    methods = list(rankings)
    rank_of = {m: {f: i + 1 for i, f in enumerate(order)} for m, order in rankings.items()}
    rows: list[str] = []
    for order in rankings.values():
        rows += [f for f in order[:top] if f not in rows]
    worst = max(len(order) for order in rankings.values())
    # Rows ordered by mean rank so the features the methods agree on sit at the top.
    rows.sort(key=lambda f: np.mean([rank_of[m].get(f, worst + 1) for m in methods]))
    ranks = np.array([[rank_of[m].get(f, np.nan) for m in methods] for f in rows], dtype=float)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * len(methods), 1.2 + 0.26 * len(rows)))
    shown = np.clip(ranks, 1, 3 * top)  # beyond 3×top the exact rank no longer matters visually
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, aspect="auto", vmin=1, vmax=3 * top)
    for i in range(len(rows)):
        for j in range(len(methods)):
            r = ranks[i, j]
            text = "–" if np.isnan(r) else str(int(r))
            # Dark text on light cells and vice versa, from the cell colour's luminance.
            red, green, blue, _ = cmap(image.norm(shown[i, j])) if not np.isnan(r) else (0.87, 0.87, 0.87, 1)
            colour = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    named_ticks(ax.xaxis, range(len(methods)), methods, fontsize=9, rotation=30, ha="right")
    named_ticks(ax.yaxis, range(len(rows)), [_short(f, 32) for f in rows], fontsize=8)
    ax.set_title(f"Rank of each method's top-{top} features", fontsize=11)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    colorbar.set_label("rank (1 = most important)", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    colorbar.ax.invert_yaxis()  # rank 1 at the top, as in the rows
    return _png(fig, tight=not fixed_margins(fig, ax, colorbar.ax))


def score_distribution(scores_signal: Sequence[float] | np.ndarray,
                       scores_background: Sequence[float] | np.ndarray, bins: int = 50) -> bytes:
    """Histogram of the tagger score per class, each normalised to unit area."""
    sig = np.asarray(scores_signal, dtype=float)
    bkg = np.asarray(scores_background, dtype=float)
    sig, bkg = sig[np.isfinite(sig)], bkg[np.isfinite(bkg)]
    both = np.concatenate([sig, bkg])
    in_unit = both.size == 0 or (both.min() >= 0 and both.max() <= 1)
    lo, hi = (0.0, 1.0) if in_unit else (float(both.min()), float(both.max()))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for values, colour, label in ((sig, SIGNAL_COLOUR, "signal"), (bkg, BACKGROUND_COLOUR, "background")):
        if values.size:
            ax.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5, color=colour,
                    label=f"{label} ({values.size} jets)")
    ax.set_xlabel("tagger score")
    ax.set_ylabel("normalised jets")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Tagger score per class", fontsize=11)
    return _png(fig, tight=not fixed_margins(fig, ax))


def score_histograms(edges: np.ndarray, signal: np.ndarray | None, background: np.ndarray | None,
                     unlabelled: np.ndarray | None = None) -> bytes:
    """The tagger score per class from pre-filled histograms (the executor fills them chunk by chunk)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    widths = np.diff(edges)
    for counts, colour, label in ((signal, SIGNAL_COLOUR, "signal"), (background, BACKGROUND_COLOUR, "background"),
                                  (unlabelled, "0.3", "jets")):
        if counts is not None and counts.sum() > 0:
            density = counts / (counts.sum() * widths)
            ax.stairs(density, edges, color=colour, linewidth=1.5, label=f"{label} ({int(counts.sum())} jets)")
    ax.set_xlabel("tagger score")
    ax.set_ylabel("normalised jets")
    log_scale(ax, "y")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Tagger score per class", fontsize=11)
    return _png(fig, tight=not fixed_margins(fig, ax))


def roc_curve(fpr: np.ndarray, tpr: np.ndarray, auc: float) -> bytes:
    """Background rejection 1/ε_B against signal efficiency ε_S, the HEP way (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ok = fpr > 0
    ax.plot(tpr[ok], 1.0 / fpr[ok], color=SIGNAL_COLOUR, linewidth=1.5)
    log_scale(ax, "y")
    ax.set_xlim(0, 1)
    ax.set_xlabel("signal efficiency ε_S")
    ax.set_ylabel("background rejection 1/ε_B")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"ROC (AUC = {auc:.4f})", fontsize=11)
    return _png(fig, tight=not fixed_margins(fig, ax))


def input_histograms(names: Sequence[str], edges: np.ndarray, signal: np.ndarray, background: np.ndarray) -> bytes:
    """A grid of per-class, unit-area histograms of the given input features."""
    plt = _pyplot()
    n = len(names)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        widths = np.diff(edges[k])
        for counts, colour, label in ((signal[k], SIGNAL_COLOUR, "signal"), (background[k], BACKGROUND_COLOUR,
                                                                            "background")):
            if counts.sum() > 0:
                ax.stairs(counts / (counts.sum() * widths), edges[k], color=colour, linewidth=1.2, label=label)
        ax.set_xlabel(_short(names[k], 30), fontsize=8)
        ax.tick_params(labelsize=7)
        # a few major ticks on these small panels: each tick is two lines and two texts to lay out
        ax.locator_params(axis="x", nbins=5)
        ax.locator_params(axis="y", nbins=4)
        ax.minorticks_off()
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle("The leading features' inputs per class (unit area; the end bins hold the tails)", fontsize=10)
    # fixed margins in inches (the panels are alike): a tight layout and bounding box drew the
    # grid three times, two thirds of its cost
    height, width = 2.4 * rows, 3.0 * cols
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.45 / height,
                        wspace=0.3, hspace=0.5)
    return _png(fig, tight=False)
