"""diff.html: the two audits side by side, one self-contained page (figures as data: URIs)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from hepaudit.plotting import log_scale, png, pyplot, short_label

COLOURS = {"a": "#1f77b4", "b": "#d62728"}


def _uri(data: bytes | None) -> str | None:
    return None if data is None else "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def rejection_figure(diff: dict[str, Any]) -> bytes | None:
    """Background rejection 1/ε_B against signal efficiency for A and B."""
    rocs = diff.get("roc") or {}
    if not rocs.get("a") or not rocs.get("b"):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    auc = diff["baseline_auc"]
    for side in ("a", "b"):
        fpr, tpr = np.asarray(rocs[side]["fpr"], float), np.asarray(rocs[side]["tpr"], float)
        keep = fpr > 0
        label = f"{side.upper()}: AUC {auc[side]:.4f}" if auc.get(side) is not None else side.upper()
        ax.plot(tpr[keep], 1.0 / fpr[keep], color=COLOURS[side], label=label)
    log_scale(ax, "y")
    ax.set_xlabel("signal efficiency ε_S")
    ax.set_ylabel("background rejection 1/ε_B")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return png(fig)


def ranking_figure(name: str, ranking: dict[str, Any]) -> bytes | None:
    """Each leading feature's score in A and B with its 95 % interval; changed features in bold."""
    shown = ranking.get("shown") or []
    if not shown:
        return None
    changed = {c["feature"] for c in ranking.get("changed") or []}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(shown) + 1.4))
    y = np.arange(len(shown))[::-1]
    for offset, side in ((0.18, "a"), (-0.18, "b")):
        values = np.array([np.nan if e[side] is None else e[side] for e in shown], float)
        low = np.array([e[f"{side}_ci95"][0] if e[f"{side}_ci95"] else v for e, v in zip(shown, values)], float)
        high = np.array([e[f"{side}_ci95"][1] if e[f"{side}_ci95"] else v for e, v in zip(shown, values)], float)
        err = np.vstack([np.maximum(values - low, 0), np.maximum(high - values, 0)])
        ax.barh(y + offset, values, height=0.34, color=COLOURS[side], alpha=0.8, label=side.upper(),
                xerr=err, error_kw={"elinewidth": 0.8, "capsize": 1.5})
    ax.set_yticks(y)
    labels = ax.set_yticklabels([short_label(e["feature"], 30) for e in shown], fontsize=8)
    for label, entry in zip(labels, shown):
        if entry["feature"] in changed:
            label.set_fontweight("bold")
            label.set_color("#b42318")
    ax.axvline(0, color="black", lw=0.5)
    tau = ranking.get("kendall_tau")
    ax.set_title(f"{name}: leading features of A and B" + (f" (Kendall τ = {tau:.2f})" if tau is not None else ""),
                 fontsize=10)
    ax.set_xlabel("score (bars: 95 % intervals; red: changed beyond them)")
    ax.legend(fontsize=8, loc="lower right")
    return png(fig)


def render_diff_html(diff: dict[str, Any], back: str | None = None) -> str:
    """The text of diff.html; ``back``: a link to show above it (the service's model page)."""
    from hepaudit.report.html import _environment

    figures = {name: _uri(ranking_figure(name, ranking)) for name, ranking in diff["explainers"].items()}
    context = {"d": diff, "rejection": _uri(rejection_figure(diff)), "figures": figures, "back": back}
    return _environment().get_template("diff.html.j2").render(**context)
