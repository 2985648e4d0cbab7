"""The sanity check's figure: each explanation's Spearman ρ against the randomisation step."""

from __future__ import annotations

from typing import Any

import numpy as np

from hepaudit.plotting import png, pyplot, short_label


def sanity_curves(fields: dict[str, Any]) -> bytes | None:
    """ρ per cascading step (step 0: trained weights, ρ = 1) with its 95 % band, one line per
    explainer; a second panel for the independent variant when it ran."""
    steps: list[str] = fields.get("steps") or []
    explainers: dict[str, Any] = fields.get("explainers") or {}
    if not steps or not explainers:
        return None
    panels = [("spearman", "cascading: top layers randomised")]
    if fields.get("independent"):
        panels.append(("independent_spearman", "independent: one layer (block) randomised"))
    plt = pyplot()
    width = max(6.0, 0.45 * len(steps) + 3.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4.6), squeeze=False, sharey=True)
    for ax, (key, title) in zip(axes[0], panels):
        cascading = key == "spearman"
        x = np.arange(len(steps) + 1) if cascading else np.arange(1, len(steps) + 1)
        for name, entry in explainers.items():
            values = [np.nan if v is None else v for v in entry.get(key) or []]
            bands = entry.get(key + "_ci95") or []
            if not values:
                continue
            y = np.array(([1.0] if cascading else []) + values)
            line = ax.plot(x, y, marker="o", ms=4, label=name)[0]
            low = [np.nan if b is None else b[0] for b in bands]
            high = [np.nan if b is None else b[1] for b in bands]
            if any(np.isfinite(low)):
                lo = np.array(([1.0] if cascading else []) + low)
                hi = np.array(([1.0] if cascading else []) + high)
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.axhline(float(fields.get("threshold", 0.5)), color="grey", ls="--", lw=1)
        ax.axhline(0.0, color="black", lw=0.5)
        labels = (["trained"] if cascading else []) + [short_label(s, 28) for s in steps]
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layers randomised, output first" if cascading else "layer randomised")
    axes[0][0].set_ylabel("Spearman ρ with the trained model's ranking")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    return png(fig)
