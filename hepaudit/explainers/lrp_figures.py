"""The LRP and gradient explainers' own figures: per-class relevance bars, relevance-vs-input
profiles (Agarwal et al., arXiv:2011.13466) and an η–φ relevance image of constituent inputs.

matplotlib (Agg) is imported lazily through :mod:`hepaudit.report.figures`; every function
returns PNG bytes or None when there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hepaudit.report.figures import BACKGROUND_COLOUR, SIGNAL_COLOUR, _png, _pyplot, _short, fixed_margins, named_ticks


def class_bars(
    features: Sequence[str],
    order: Sequence[int],
    signal: np.ndarray | None,
    background: np.ndarray | None,
    overall: np.ndarray,
    xlabel: str,
    top: int = 20,
) -> bytes | None:
    """Mean signed relevance per class, side by side, for the ``top`` features of ``order``."""
    idx = list(order)[:top]
    if not idx:
        return None
    plt = _pyplot()
    n = len(idx)
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.42 * n))
    y = np.arange(n)
    h = 0.4
    if signal is not None and background is not None:
        ax.barh(y - h / 2, signal[idx], height=h, color=SIGNAL_COLOUR, label="signal")
        ax.barh(y + h / 2, background[idx], height=h, color=BACKGROUND_COLOUR, label="background")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    else:
        ax.barh(y, overall[idx], height=0.7, color="#4d4d4d")
    ax.axvline(0, color="black", lw=0.6)
    named_ticks(ax.yaxis, y, [_short(features[i]) for i in idx], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(f"top {n} features by mean |relevance|", fontsize=10)
    return _png(fig, tight=not fixed_margins(fig, ax))


def profiles(
    names: Sequence[str], edges: np.ndarray, sums: np.ndarray, counts: np.ndarray, ylabel: str
) -> bytes | None:
    """Mean relevance in bins of each feature's value; ``sums``/``counts`` are (features, bins, 3 classes)."""
    if not len(names):
        return None
    plt = _pyplot()
    k = len(names)
    cols = min(k, 2)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        centres = 0.5 * (edges[i][1:] + edges[i][:-1])
        drawn = False
        for cls, colour, label in ((1, SIGNAL_COLOUR, "signal"), (0, BACKGROUND_COLOUR, "background")):
            c = counts[i, :, cls]
            if c.sum() > 0:
                with np.errstate(invalid="ignore", divide="ignore"):
                    ax.plot(
                        centres,
                        np.where(c > 0, sums[i, :, cls] / c, np.nan),
                        "o-",
                        ms=3,
                        color=colour,
                        label=label,
                    )
                drawn = True
        if not drawn:
            c = counts[i].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                ax.plot(
                    centres, np.where(c > 0, sums[i].sum(axis=1) / c, np.nan), "o-", ms=3, color="#4d4d4d"
                )
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel(_short(name, 30), fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        if drawn and i == 0:
            ax.legend(fontsize=8, frameon=False)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    # fixed room in inches for the tick and axis labels: a tight layout or bounding box would lay
    # the whole figure out once more
    height, width = 3.0 * rows, 4.2 * cols
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.3 / height,
                        wspace=0.95 / (width / cols - 0.95), hspace=0.75 / (height / rows - 0.75))
    return _png(fig, tight=False)


def eta_phi_image(image: np.ndarray, extent: float, n_jets: int, title: str) -> bytes | None:
    """Relevance per jet in (η, φ) bins of the constituents, as a diverging image on a
    symmetric log scale: the leading constituent sits in one bin at the jet axis with most of
    the relevance, and on a linear scale every other bin would be white."""
    from matplotlib.colors import SymLogNorm
    from matplotlib.ticker import FuncFormatter

    if n_jets == 0 or not np.any(image):
        return None
    plt = _pyplot()
    mean = image / n_jets
    magnitude = np.abs(mean[mean != 0])
    vmax = float(magnitude.max())
    # linear within the smallest fifth of the bins' magnitudes, logarithmic above: four decades at most
    linthresh = max(float(np.percentile(magnitude, 20)), vmax * 1e-4)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(
        np.ma.masked_equal(mean.T, 0.0),  # bins no constituent reached stay blank
        origin="lower",
        extent=(-extent, extent, -extent, extent),
        cmap="RdBu_r",
        norm=SymLogNorm(linthresh, linscale=0.5, vmin=-vmax, vmax=vmax, base=10),
        aspect="equal",
    )
    bar = fig.colorbar(im, ax=ax, label="mean relevance per jet (symmetric log scale)")
    # decades well outside the linear band, and 0 (ticks at ±linthresh would overlap 0's label)
    bar.set_ticks([t for t in bar.get_ticks() if t == 0 or (abs(t) >= 3 * linthresh and abs(t) <= vmax)])
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.1g}"))  # not mathtext: 0.1 s a figure
    ax.set_xlabel("η (model input frame)")
    ax.set_ylabel("φ (model input frame)")
    ax.set_title(title, fontsize=10)
    return _png(fig, tight=not fixed_margins(fig, ax, bar.ax))
