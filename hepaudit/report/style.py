"""The look of the report's figures and the files they are saved as (``[report]``).

``style`` is an experiment's plotting style from mplhep (CMS by default: TeX Gyre Heros,
ticks inside on all four sides, axis labels at the axis ends; major ticks only), scaled to the
report's small figures: mplhep's styles are made for 10-inch figures with 26-point type, and
the report's are 5 to 8 inches across. ``figure_formats`` adds vector files (PDF, SVG) beside
each PNG, for papers and slides. Both hold for the figures drawn inside :func:`figure_style`
(the report's drawing, after every explainer has finished), through a context variable, so
two audits in one process (the service) do not see each other's settings.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

#: formats saved beside the PNG while the report is drawn
EXTRA_FORMATS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("hepaudit_formats", default=())
#: the PNGs' resolution unless ``[report] dpi`` says otherwise
DEFAULT_DPI = 100
#: dots per inch of the PNGs while the report is drawn
PNG_DPI: contextvars.ContextVar[int] = contextvars.ContextVar("hepaudit_dpi", default=DEFAULT_DPI)

#: mplhep's style per ``[report] style``
STYLES = {"cms": "CMS", "atlas": "ATLAS", "lhcb": "LHCb2", "alice": "ALICE"}

# mplhep's sizes are for a 10-inch figure; the report's figures are about a third of that
_SCALED = {"font.size": 9.0, "xtick.major.size": 4.0, "xtick.minor.size": 2.0, "ytick.major.size": 4.0,
           "ytick.minor.size": 2.0, "xtick.major.pad": 3.0, "ytick.major.pad": 3.0, "axes.linewidth": 0.8,
           # minor ticks doubled the cost of drawing a figure (ticks are most of it): majors only
           "xtick.minor.visible": False, "ytick.minor.visible": False}
_DROPPED = ("figure.figsize", "figure.dpi", "savefig.")


def style_rc(style: str) -> tuple[dict[str, Any], str | None]:
    """The rcParams of ``style`` for the report's figures, and why it could not be applied (None: it was)."""
    if style == "matplotlib":
        return {}, None
    try:
        import mplhep  # type: ignore[import-untyped]
    except ImportError:
        return {}, _needs_mplhep(style)
    rc = dict(getattr(mplhep.style, STYLES[style]))
    rc = {k: v for k, v in rc.items() if not k.startswith(_DROPPED)}
    rc.update(_SCALED)
    # the experiment's font, then matplotlib's own for the glyphs it lacks (10⁻³'s superscripts):
    # font fallback takes a list of families (the generic "sans-serif" resolves to one font)
    first = next(iter(rc.get("font.sans-serif", [])), None)
    rc["font.family"] = [f for f in (first, "DejaVu Sans") if f]
    return rc, None


def style_problem(style: str) -> str | None:
    """Why ``style`` could not be applied (mplhep missing), found without importing anything."""
    import importlib.util

    if style == "matplotlib" or importlib.util.find_spec("mplhep") is not None:
        return None
    return _needs_mplhep(style)


def _needs_mplhep(style: str) -> str:
    return f'report.style = "{style}" needs mplhep (pip install mplhep); drawn in matplotlib\'s style'


@contextmanager
def figure_style(style: str, formats: tuple[str, ...], dpi: int = DEFAULT_DPI) -> Iterator[str | None]:
    """Draw the report's figures in ``style`` and save them in ``formats`` too (PNG always, at
    ``dpi``); yields why the style could not be applied, or None."""
    import matplotlib

    rc, problem = style_rc(style)
    with _saved_as(formats, dpi), matplotlib.rc_context(rc):  # type: ignore[arg-type]
        yield problem


#: inside :func:`figure_style_when_drawn`: applies the style in this process (once)
_WHEN_DRAWN: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "hepaudit_style_when_drawn", default=None)


@contextmanager
def figure_style_when_drawn(style: str, formats: tuple[str, ...], dpi: int = DEFAULT_DPI) -> Iterator[str | None]:
    """:func:`figure_style`, with matplotlib and the style loaded only when this process first
    draws (:func:`ensure_style`, called by the report's drawing): an audit whose figures are all
    drawn by helpers (:mod:`hepaudit.report.drawing`) never imports matplotlib here."""
    with ExitStack() as stack:
        def apply() -> None:
            import matplotlib

            token = _WHEN_DRAWN.set(None)  # once
            stack.callback(_WHEN_DRAWN.reset, token)
            stack.enter_context(matplotlib.rc_context(style_rc(style)[0]))  # type: ignore[arg-type]

        stack.enter_context(_saved_as(formats, dpi))
        token = _WHEN_DRAWN.set(apply)
        stack.callback(_WHEN_DRAWN.reset, token)
        yield style_problem(style)


def ensure_style() -> None:
    """Apply the style of the enclosing :func:`figure_style_when_drawn` before drawing here."""
    apply = _WHEN_DRAWN.get()
    if apply is not None:
        apply()


@contextmanager
def _saved_as(formats: tuple[str, ...], dpi: int) -> Iterator[None]:
    token = EXTRA_FORMATS.set(tuple(f for f in formats if f != "png"))
    dpi_token = PNG_DPI.set(dpi)
    try:
        yield
    finally:
        EXTRA_FORMATS.reset(token)
        PNG_DPI.reset(dpi_token)
