"""Figures laid out with margins measured from their labels (report/figures.py ``fixed_margins``)
instead of a tight bounding box: every label stays inside the canvas, little room is wasted, a
label too wide for the figure falls back to the tight box; named-tick axes carry no minor ticks.

Real matplotlib figures (Agg) in the report's own styles, drawn and measured after layout.
"""

from __future__ import annotations

import numpy as np
import pytest

from hepaudit.report.figures import fixed_margins, named_ticks
from hepaudit.report.style import figure_style

STYLES = ["matplotlib", "cms"]


def _bars(plt, title: str, colorbar: bool = False):  # type: ignore[no-untyped-def]
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    names = [f"feature_with_a_long_name_{i}" for i in range(8)]
    artist = ax.scatter(np.arange(8), np.arange(8), c=np.arange(8)) if colorbar else None
    ax.barh(np.arange(8), np.linspace(0.1, 1.0, 8))
    named_ticks(ax.yaxis, np.arange(8), names, fontsize=8)
    ax.set_xlabel("importance score")
    ax.set_title(title, fontsize=11)
    side = fig.colorbar(artist, ax=ax, fraction=0.04).ax if colorbar else None
    if side is not None:
        side.set_ylabel("a colour bar's label")
    return fig, ax, side


def _drawn(axis):  # type: ignore[no-untyped-def]
    """The tick labels matplotlib draws: those of ticks within the view limits."""
    lo, hi = sorted(axis.get_view_interval())
    return [label for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels()) if lo <= loc <= hi]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("colorbar", [False, True])
def test_labels_fit_inside_the_figure(style: str, colorbar: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with figure_style(style, ()):
        fig, ax, side = _bars(plt, "dauc: feature importance (top 8)", colorbar)
        assert fixed_margins(fig, ax, side)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        canvas = fig.bbox
        texts = [ax.title, ax.xaxis.label, *_drawn(ax.yaxis), *_drawn(ax.xaxis)]
        if side is not None:
            texts += [side.yaxis.label, *_drawn(side.yaxis)]
        for text in texts:
            if text.get_visible() and text.get_text():
                box = text.get_window_extent(renderer)
                assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1, text.get_text()
                assert canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1, text.get_text()
        # little wasted: the drawn content reaches within half an inch of every edge
        content = fig.get_tightbbox(renderer)  # inches
        width, height = fig.get_size_inches()
        assert content.x0 < 0.5 and content.y0 < 0.5 and content.x1 > width - 0.5 and content.y1 > height - 0.5
        assert not ax.yaxis.get_minorticklocs().size  # named ticks: no minor ticks between the names
        plt.close(fig)


def test_a_title_wider_than_the_figure_leaves_the_layout_to_the_tight_box() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with figure_style("matplotlib", ()):
        fig, ax, _ = _bars(plt, "a title far too long for a figure seven inches wide " * 3)
        before = ax.get_position().bounds
        assert not fixed_margins(fig, ax)
        assert ax.get_position().bounds == before
        plt.close(fig)


def test_an_axis_with_an_offset_leaves_the_layout_to_the_tight_box() -> None:
    """Importances of order 1e-5: the x axis writes "1e−5" at its end, a text matplotlib sets only
    while drawing, which the measured margins would not hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with figure_style("cms", ()):
        fig, ax = plt.subplots(figsize=(7.0, 4.0))
        ax.barh(np.arange(5), np.linspace(1e-6, 2e-5, 5))
        named_ticks(ax.yaxis, np.arange(5), [f"f{i}" for i in range(5)])
        ax.set_xlabel("importance score")
        assert not fixed_margins(fig, ax)
        plt.close(fig)



def _blank_edges(png: bytes) -> bool:
    """Nothing drawn on the outermost pixels: no label runs off the canvas."""
    import io

    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    edges = [pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]
    return all(np.all(edge > 0.95) for edge in edges)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("scale", "k"), [(1.0, 3), (1e4, 3), (1.0, 1)])
def test_latent_figures_fixed_margins_hold_their_labels(style: str, scale: float, k: int) -> None:
    """The latent explainer's figures (component histograms with fixed inch margins, the
    correlation map with measured ones): every label inside the canvas, for densities whose tick
    labels are short (2.5) and long (25000), and for one component under the row's title."""
    from hepaudit.explainers.nap_figures import latent_figures

    rng = np.random.default_rng(1)
    edges = np.linspace(-3.0, 3.0, 31) / scale
    histograms = [{"bin_edges": edges, "signal": rng.random(30) * scale, "background": rng.random(30) * scale}
                  for _ in range(k)]
    observables = ["mass", "pt", "n_constituents", "tau21"]
    components = [{"index": i, "pearson": {o: float(rng.uniform(-1, 1)) for o in observables}} for i in range(k)]
    with figure_style(style, ()):
        figures = latent_figures(histograms, np.array([0.9, 0.07, 0.02][:k]), components, observables)
    assert [name for name, _, _ in figures] == ["latent_components.png", "latent_correlations.png"]
    for name, _, png in figures:
        assert _blank_edges(png), name
