"""SHAP figures: a beeswarm-style summary and dependence plots for the leading players.

Beeswarm: one row per player (the largest mean |φ| at the top), one dot per explained jet
at its φ, coloured by the player's value in that jet (its percentile among the explained
jets, so that pT in GeV and η share one colour scale). A group is coloured by its first
feature's value (for ``particle_i`` groups, the constituent's pT). Dependence: φ_k against
x_k for the leading players, signal and background in their colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hepaudit.data.builders import FeatureSlot
from hepaudit.explainers.shap.evaluate import Players
from hepaudit.results import Figure

TOP = 15
DEPENDENCE_TOP = 4


def player_values(players: Players, slots: Sequence[FeatureSlot], jets: dict[str, np.ndarray]) -> np.ndarray:
    """(n, M): each player's value per jet (a group: its first feature's value)."""
    n = len(next(iter(jets.values())))
    out = np.empty((n, len(players)))
    for p, members in enumerate(players.members):
        slot = slots[members[0]]
        out[:, p] = jets[slot.input].reshape(n, -1)[:, slot.index]
    return out


def _percentile_ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(values, axis=0, kind="stable"), axis=0, kind="stable").astype(float)
    return ranks / max(1, len(values) - 1)


def beeswarm(phi: np.ndarray, values: np.ndarray, names: list[str], grouped: bool) -> Figure | None:
    if phi.size == 0:
        return None
    from hepaudit.report.figures import _png, _pyplot, _short

    plt = _pyplot()
    order = np.argsort(-np.abs(phi).mean(axis=0), kind="stable")[:TOP]
    colours = _percentile_ranks(values)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.35 * len(order)))
    for row, p in enumerate(order):
        # vertical spread grows with the local density of φ values, like a beeswarm
        x = phi[:, p]
        hist, edges = np.histogram(x, bins=30)
        bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(hist) - 1)
        density = hist[bins] / max(1, hist.max())
        y = row + rng.uniform(-0.35, 0.35, len(x)) * density
        points = ax.scatter(x, y, c=colours[:, p], cmap="coolwarm", vmin=0, vmax=1, s=8, linewidths=0)
    ax.axvline(0, color="#888888", lw=0.8)
    ax.set_yticks(np.arange(len(order)), [_short(names[p]) for p in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SHAP value φ (change of the signal score)")
    bar = fig.colorbar(points, ax=ax, pad=0.01)
    bar.set_label(("first feature's value" if grouped else "feature value") + " (percentile)")
    ax.set_title("SHAP summary: one dot per explained jet")
    caption = ("SHAP values per explained jet for the players with the largest mean |φ|, coloured by the "
               + ("value of the group's first feature (for particle groups the constituent's pT)"
                  if grouped else "feature's value") + ", as a percentile among the explained jets.")
    return Figure("shap_beeswarm.png", caption, _png(fig))


def dependence(phi: np.ndarray, values: np.ndarray, names: list[str], labels: np.ndarray,
               grouped: bool) -> Figure | None:
    if phi.size == 0:
        return None
    from hepaudit.report.figures import (
        BACKGROUND_COLOUR,
        OVERALL_COLOUR,
        SIGNAL_COLOUR,
        _png,
        _pyplot,
        _short,
    )

    plt = _pyplot()
    order = np.argsort(-np.abs(phi).mean(axis=0), kind="stable")[:DEPENDENCE_TOP]
    fig, axes = plt.subplots(1, len(order), figsize=(3.3 * len(order), 3.0), squeeze=False)
    for ax, p in zip(axes[0], order):
        for cls, colour, label in ((1, SIGNAL_COLOUR, "signal"), (0, BACKGROUND_COLOUR, "background"),
                                   (2, OVERALL_COLOUR, "unlabelled")):
            sel = labels == cls
            if sel.any():
                ax.scatter(values[sel, p], phi[sel, p], s=7, color=colour, alpha=0.6, linewidths=0,
                           label=label)
        ax.axhline(0, color="#888888", lw=0.8)
        ax.set_xlabel(_short(names[p], 28), fontsize=8)
        ax.set_ylabel("φ", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    caption = "SHAP dependence: φ of the leading players against their value" + (
        " (a group's first feature)" if grouped else "") + ", signal and background jets in their colours."
    return Figure("shap_dependence.png", caption, _png(fig))
