"""Plot helpers for explainers' ``draw(result)``: the report's colours, style and PNG output.

A plugin draws the way the built-ins do::

    from hepaudit import plotting

    def draw(self, result):
        plt = plotting.pyplot()
        fig, ax = plt.subplots(figsize=(5, 3))
        ...
        return [Figure("my_plot.png", "What it shows", plotting.png(fig))]

Every explainer with per-jet attributions gets the same beeswarm and dependence plots from
its :class:`~hepaudit.explanation.Explanation`:
``explanation_figures(result.explanation, ExplanationLabels("lime", "LIME", "β", "logit per σ"))``.

matplotlib (Agg backend) is imported on the first :func:`pyplot` call, never at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hepaudit.report.explanation_figures import Labels as ExplanationLabels
from hepaudit.report.explanation_figures import explanation_figures
from hepaudit.report.figures import (
    BACKGROUND_COLOUR,
    DPI,
    OVERALL_COLOUR,
    SIGNAL_COLOUR,
    _png,
    _pyplot,
    _short,
    log_scale,
)

__all__ = ["BACKGROUND_COLOUR", "DPI", "OVERALL_COLOUR", "SIGNAL_COLOUR", "ExplanationLabels", "class_bars",
           "explanation_figures", "log_scale", "png", "pyplot", "short_label", "value_profiles"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    return _pyplot()


def png(fig: Any, tight: bool = True) -> bytes:
    """The figure as PNG bytes (the report's resolution); the figure is closed."""
    return _png(fig, tight)


def short_label(label: str, width: int = 40) -> str:
    """``label`` cut to ``width`` characters with an ellipsis (long feature names)."""
    return _short(label, width)


def class_bars(features: Sequence[str], signal: np.ndarray | None, background: np.ndarray | None,
               overall: np.ndarray, xlabel: str, top: int = 20) -> bytes | None:
    """Horizontal bars of a per-feature quantity per class, the first ``top`` features in order."""
    from hepaudit.explainers.lrp_figures import class_bars as bars

    return bars(features, list(range(len(features))), signal, background, overall, xlabel, top)


def value_profiles(names: Sequence[str], edges: np.ndarray, sums: np.ndarray, counts: np.ndarray,
                   ylabel: str) -> bytes | None:
    """Mean of a per-jet quantity in bins of each feature's value; ``sums``/``counts`` are
    (features, bins, 3 classes: background, signal, unlabelled)."""
    from hepaudit.explainers.lrp_figures import profiles

    return profiles(names, edges, sums, counts, ylabel)
