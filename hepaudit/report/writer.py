"""Putting a report on disk: figures/, report.json and report.html, each written atomically.

``atomic_write`` is the one place hepaudit writes a file: other modules import it. A crash or
Ctrl-C part-way through leaves either the old file or the new one, never half of either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hepaudit.report.drawing import Job, chart_job
from hepaudit.report.figures import RANKING_FIGURE, group_bar_chart, importance_bar_chart, ranking_comparison
from hepaudit.report.html import render_html
from hepaudit.report.json_report import report_json
from hepaudit.results import AuditReport, ExplainerResult, Figure


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The temporary file sits next to the target so the rename stays on one filesystem (and is
    therefore atomic); fsync before the rename so a power cut cannot leave an empty file.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Ctrl-C included: do not leave the temporary file behind.
        tmp.unlink(missing_ok=True)
        raise


def _add_figure(figures: list[Figure], figure: Figure) -> None:
    """Add or replace (by file name) so that writing a report twice does not list a figure twice."""
    for i, existing in enumerate(figures):
        if existing.name == figure.name:
            figures[i] = figure
            return
    figures.append(figure)


def _charts(name: str) -> tuple[tuple[str, Callable[[ExplainerResult], bytes | None], str], ...]:
    """The ranking bar charts every result with rankings gets: (file name, maker, caption)."""
    return ((f"{name}_importance.png", importance_bar_chart, f"{name}: importance of the leading features"),
            (f"{name}_groups.png", group_bar_chart, f"{name}: importance of feature groups"))


def chart_jobs(name: str, result: ExplainerResult) -> list[Job]:
    """:func:`_charts` as drawing jobs, for the pool that draws the explainers' figures."""
    if result.status != "ok":
        return []
    # a maker returns None for a result without its ranking: that job draws nothing
    return [chart_job(name, make, file_name, caption, result) for file_name, make, caption in _charts(name)]


def write_report(report: AuditReport, out_dir: Path, shown_as: Path | None = None) -> None:
    """Make the figures and write ``figures/*.png``, ``report.json`` and ``report.html`` into ``out_dir``.

    Generated figures are added to each result's ``figures`` so report.json lists them. A figure
    that fails to render becomes a warning in ``report.warnings``; the report is still written.
    ``shown_as``: the folder the report will be published to, when ``out_dir`` is its staging folder.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes] = {}

    for name, result in report.explainers.items():
        for file_name, make, caption in _charts(name):
            if any(f.name == file_name for f in result.figures):
                continue  # drawn with the explainers' figures (hepaudit.report.drawing)
            try:
                png = make(result)
            except Exception as exc:  # a plotting bug must not cost the user the whole report
                report.warnings.append(f"figure {file_name} could not be drawn: {type(exc).__name__}: {exc}")
                continue
            if png is not None:
                _add_figure(result.figures, Figure(file_name, caption, png))

    drawn = {f.name: f.png for f in report._drawn}
    if RANKING_FIGURE in drawn:
        pngs[RANKING_FIGURE] = drawn[RANKING_FIGURE]
    else:
        try:
            ranking_png = ranking_comparison(report)
        except Exception as exc:
            report.warnings.append(f"figure {RANKING_FIGURE} could not be drawn: {type(exc).__name__}: {exc}")
            ranking_png = None
        if ranking_png is not None:
            pngs[RANKING_FIGURE] = ranking_png

    owners = [r.figures for r in report.explainers.values()] + [s.figures for s in report.sections]
    for figure_list in owners:
        for figure in figure_list:
            if figure.png:
                pngs[figure.name] = figure.png
            elif figure.name not in pngs:
                report.warnings.append(f"figure {figure.name} has no image data; left out of the report")

    for file_name in list(pngs):
        # Figure names come from plugins: keep them inside figures/.
        if Path(file_name).name != file_name or file_name.startswith(".") or "\\" in file_name:
            report.warnings.append(f"figure name {file_name!r} is not a plain file name; not written")
            del pngs[file_name]
            continue
        atomic_write(fig_dir / file_name, pngs[file_name])
        for fmt, data in getattr(pngs[file_name], "formats", {}).items():  # [report] figure_formats
            atomic_write(fig_dir / Path(file_name).with_suffix(f".{fmt}").name, data)

    report.output_dir = str(shown_as or out_dir)  # the folder it is published to, when staged
    atomic_write(out_dir / "report.json", report_json(report))
    atomic_write(out_dir / "report.html", render_html(report, pngs))
