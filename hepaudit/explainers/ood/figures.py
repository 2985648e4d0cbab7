"""Figures of the OOD and calibration explainers (matplotlib, imported only when drawing).

- per OOD explainer, one figure: the score distributions, reference (held-out half) vs
  audited, with the threshold line, and beside it the flagged fraction vs jet pT and vs jet
  mass, audited and reference, with binomial errors;
- the reliability diagram (observed signal fraction vs mean score per bin), with the jet
  count per bin below it.

The OOD figure is drawn from the result's fields by the explainers' ``draw`` (after every
explainer has finished; a failure there is a warning). A reliability diagram that fails to
draw is left out: a figure must never cost the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepaudit.report.figures import BACKGROUND_COLOUR, OVERALL_COLOUR, SIGNAL_COLOUR, _png, _pyplot, log_scale
from hepaudit.results import Figure

REFERENCE_COLOUR = BACKGROUND_COLOUR
AUDITED_COLOUR = SIGNAL_COLOUR


def _score_panel(ax: Any, histogram: dict[str, Any], threshold: float, xlabel: str) -> None:
    """Score distributions (normalised outlines), reference and audited, with the threshold line,
    from ``score_histogram`` (jet counts in shared bins)."""
    from matplotlib.ticker import NullLocator

    edges = np.asarray(histogram["edges"], float)
    widths = np.diff(edges)
    for key, colour, label in (("reference", REFERENCE_COLOUR, "reference, held-out"),
                               ("audited", AUDITED_COLOUR, "audited")):
        counts = histogram.get(key)
        if counts is None or not sum(counts):
            continue
        counts = np.asarray(counts, float)
        total = int(counts.sum())
        ax.stairs(counts / (total * widths), edges, lw=1.8, color=colour, label=f"{label} ({total} jets)")
    ax.axvline(threshold, color=OVERALL_COLOUR, ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    for axis, log in ((ax.xaxis, histogram.get("log_x", False)), (ax.yaxis, True)):
        if log:
            log_scale(ax, "x" if axis is ax.xaxis else "y")
            # no minor ticks: unlabelled on axes spanning decades (reconstruction errors and
            # ensemble spreads span 5-7), and each tick costs matplotlib about a millisecond
            axis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("jets (normalised)")


def _flagged_panel(ax: Any, entry: dict[str, Any], label: str, expected: float | None) -> None:
    """Flagged fraction in bins of one kinematic variable, reference and audited, binomial errors."""
    from matplotlib.ticker import MaxNLocator

    edges = np.asarray(entry["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    widths = 0.5 * (edges[1:] - edges[:-1])
    for name, colour in (("reference", REFERENCE_COLOUR), ("audited", AUDITED_COLOUR)):
        if name not in entry:
            continue
        frac = np.array([np.nan if v is None else v for v in entry[name]["flagged_fraction"]], float)
        err = np.array([np.nan if v is None else v for v in entry[name]["error"]], float)
        ax.errorbar(centres, frac, yerr=err, xerr=widths, fmt="o", ms=3, color=colour, label=f"{name}, flagged")
    if expected is not None:
        ax.axhline(expected, color=OVERALL_COLOUR, ls=":", lw=1, label="expected on reference")
    ax.set_xlabel(label)
    ax.set_ylabel("flagged fraction")
    ax.set_ylim(bottom=0)
    # about 5 ticks an axis, not matplotlib's up to 10: ticks and their labels are most of
    # a figure's drawing time, and 10 bins need no more to be read
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))


def ood_figure(fields: dict[str, Any], xlabel: str, title: str) -> bytes:
    """One figure, side by side: the score distributions with the threshold, then the flagged
    fraction vs jet pT and vs jet mass when the result has them.

    One figure rather than three: a figure's own set-up, legend and title cost as much as
    a panel, and an OOD result is read across the three at once.
    """
    plt = _pyplot()
    panels = [(k, label) for k, label in (("flagged_vs_pt", "jet pT [GeV]"), ("flagged_vs_mass", "jet mass [GeV]"))
              if k in fields]
    # the expected fraction only when there is a reference to expect it on
    reference = fields.get("reference_flagged_fraction") is not None
    expected = fields.get("expected_reference_flagged_fraction") if reference else None
    widths = [1.3] + [1.0] * len(panels)
    fig, axes = plt.subplots(1, len(widths), figsize=(1.3 * 4.4 + 4.2 * len(panels), 3.9), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    axes = axes[0]
    _score_panel(axes[0], fields["score_histogram"], fields["threshold"], xlabel)
    for ax, (key, label) in zip(axes[1:], panels):
        _flagged_panel(ax, fields[key], label, expected)
    # the legends in the title's band: no search for a free corner of each panel
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    if panels:
        more, more_labels = axes[1].get_legend_handles_labels()
        handles, labels = handles + more, labels + more_labels
    fig.legend(handles, labels, loc="upper right", ncol=3 if panels else 1, fontsize=8, frameon=False)
    # fixed margins (no tight bounding box, which draws the figure twice): 0.85 in for the y labels
    fig.subplots_adjust(left=0.85 / fig.get_figwidth(), right=0.99, bottom=0.14, top=0.80, wspace=0.28)
    return _png(fig, tight=False)


def ood_figures(name: str, what: str, fields: dict[str, Any]) -> list[Figure]:
    """The figure of an OOD explainer's result, drawn from its fields (none without scores)."""
    if not fields.get("score_histogram"):
        return []
    png = ood_figure(fields, what, f"{name}: {what}")
    kinematics = " and the flagged fraction vs jet pT and mass" if "flagged_vs_pt" in fields else ""
    return [Figure(f"{name}.png", f"{name}: {what}, reference vs audited, with the threshold{kinematics}", png)]


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
