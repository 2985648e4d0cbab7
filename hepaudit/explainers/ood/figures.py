"""Figures of the OOD and calibration explainers (matplotlib, imported only when drawing).

- score distributions, reference (held-out half) vs audited, with the threshold line;
- flagged fraction vs jet pT and vs jet mass, audited and reference, with binomial errors;
- the reliability diagram (observed signal fraction vs mean score per bin), with the jet
  count per bin below it.

A figure that fails to draw is left out: a figure must never cost the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepaudit.report.figures import BACKGROUND_COLOUR, OVERALL_COLOUR, SIGNAL_COLOUR, _png, _pyplot, log_scale
from hepaudit.results import Figure

REFERENCE_COLOUR = BACKGROUND_COLOUR
AUDITED_COLOUR = SIGNAL_COLOUR


def _score_bins(values: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    joined = np.concatenate([v[np.isfinite(v)] for v in values if len(v)])
    lo, hi = float(np.min(joined)), float(np.max(joined))
    if lo > 0 and hi / lo > 100:  # reconstruction errors span decades: log bins
        return np.geomspace(lo, hi, 61), True
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, 61), False


def score_distribution(
    audited: np.ndarray, reference: np.ndarray | None, threshold: float, xlabel: str, title: str
) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    edges, log_x = _score_bins([audited] + ([reference] if reference is not None else []))
    # histogram in numpy and draw the outline only: matplotlib's hist is slow on 10^5 points
    heights = []
    if reference is not None and len(reference):
        counts, _ = np.histogram(reference, edges, density=True)
        heights.append(counts)
        ax.stairs(
            counts,
            edges,
            lw=1.8,
            color=REFERENCE_COLOUR,
            label=f"reference, held-out ({len(reference)} jets)",
        )
    counts, _ = np.histogram(audited, edges, density=True)
    heights.append(counts)
    ax.stairs(counts, edges, lw=1.8, color=AUDITED_COLOUR, label=f"audited ({len(audited)} jets)")
    ax.axvline(threshold, color=OVERALL_COLOUR, ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    if log_x:
        log_scale(ax, "x")
    log_scale(ax, "y")
    # on an axis spanning many decades (reconstruction errors and ensemble spreads often span
    # 5-7), minor ticks at 2 and 5 times each power of ten only: matplotlib's default 8 per
    # decade cost a third of the figure's drawing time and are too dense to read there
    joined = np.concatenate(heights)
    for axis, values in ((ax.yaxis, joined), (ax.xaxis, edges if log_x else None)):
        positive = values[values > 0] if values is not None else np.zeros(0)
        if len(positive) and positive.max() > 100 * positive.min():
            from matplotlib.ticker import LogLocator

            axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("jets (normalised)")
    ax.set_title(title, y=1.0)  # a fixed place: matplotlib's search for one measures every tick label
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.91)
    return _png(fig, tight=False)


def flagged_vs_kinematics(fields: dict[str, Any], expected: float | None, title: str) -> bytes | None:
    panels = [
        (k, label)
        for k, label in (("flagged_vs_pt", "jet pT [GeV]"), ("flagged_vs_mass", "jet mass [GeV]"))
        if k in fields
    ]
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        entry = fields[key]
        edges = np.asarray(entry["edges"])
        centres = 0.5 * (edges[1:] + edges[:-1])
        widths = 0.5 * (edges[1:] - edges[:-1])
        for name, colour in (("reference", REFERENCE_COLOUR), ("audited", AUDITED_COLOUR)):
            if name not in entry:
                continue
            frac = np.array([np.nan if v is None else v for v in entry[name]["flagged_fraction"]], float)
            err = np.array([np.nan if v is None else v for v in entry[name]["error"]], float)
            ax.errorbar(centres, frac, yerr=err, xerr=widths, fmt="o", ms=3, color=colour, label=name)
        if expected is not None:
            ax.axhline(expected, color=OVERALL_COLOUR, ls=":", lw=1, label="expected on reference")
        ax.set_xlabel(label)
        ax.set_ylabel("flagged fraction")
        ax.set_ylim(bottom=0)
        # about 5 ticks an axis, not matplotlib's up to 10: ticks and their labels are most of
        # a figure's drawing time, and 10 bins need no more to be read
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
    # one legend for both panels, in the title's band: no search for a free corner of each panel
    fig.suptitle(title, x=0.08, ha="left")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.88, wspace=0.22)
    return _png(fig, tight=False)


def ood_figures(
    name: str,
    what: str,
    audited: dict[str, np.ndarray],
    reference: dict[str, np.ndarray] | None,
    threshold: float,
    fields: dict[str, Any],
) -> list[Figure]:
    """The two figures every OOD explainer shows."""
    out: list[Figure] = []
    try:
        ref = reference["score"] if reference is not None else None
        png = score_distribution(audited["score"], ref, threshold, what, f"{name}: {what}")
        out.append(
            Figure(f"{name}_scores.png", f"{name}: {what}, reference vs audited, with the threshold", png)
        )
    except Exception:
        pass
    try:
        expected = fields.get("expected_reference_flagged_fraction")
        png2 = flagged_vs_kinematics(
            fields, expected if reference is not None else None, f"{name}: flagged fraction"
        )
        if png2 is not None:
            out.append(
                Figure(
                    f"{name}_flagged_vs_kinematics.png",
                    f"{name}: fraction of jets above the threshold vs jet pT and mass",
                    png2,
                )
            )
    except Exception:
        pass
    return out


def reliability_diagram(
    mean_score: np.ndarray,
    observed: np.ndarray,
    counts: np.ndarray,
    edges: np.ndarray,
    balanced: tuple[np.ndarray, np.ndarray] | None,
    title: str,
) -> bytes:
    plt = _pyplot()
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(5.6, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color=OVERALL_COLOUR, ls=":", lw=1, label="perfectly calibrated")
    ok = counts > 0
    ax.plot(mean_score[ok], observed[ok], "o-", color=AUDITED_COLOUR, ms=4, label="as sampled")
    if balanced is not None:
        b_score, b_obs = balanced
        ax.plot(
            b_score[ok],
            b_obs[ok],
            "s--",
            color=REFERENCE_COLOUR,
            ms=3,
            label="classes reweighted to equal weight",
        )
    ax.set_ylabel("observed signal fraction")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, y=1.0)  # a fixed place: matplotlib's search for one measures every tick label
    ax.legend(fontsize=8)
    ax_n.stairs(counts, edges, fill=True, color=OVERALL_COLOUR, alpha=0.5)
    log_scale(ax_n, "y")
    ax_n.set_xlabel("tagger score")
    ax_n.set_ylabel("jets")
    return _png(fig)
