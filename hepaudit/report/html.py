"""report.html: one self-contained page for a physicist, rendered from a jinja2 template.

Everything from the report (feature names, branch names, error messages, plugin text) comes
from files and plugins, so the template autoescapes and nothing derived from the report is
marked safe. Figures are embedded as base64 ``data:`` URIs (whose alphabet needs no escaping)
and the CSS is inline: the page loads nothing from anywhere, opened from disk or mailed on.
"""

from __future__ import annotations

import base64
import math
from numbers import Integral, Real
from typing import Any

import jinja2

from hepaudit.report.figures import RANK_TOP, attribution_rankings
from hepaudit.report.json_report import report_dict
from hepaudit.report.method_notes import method_notes
from hepaudit.results import AuditReport, ExplainerResult, FeatureScore, Figure, sorted_scores

TOP_FEATURES = 20
LONG_TEXT = 60  # characters: a string field longer than this is a sentence, shown under the table
# Fields shown in their own place (or too large for a key/value table).
_HIDDEN_FIELDS = {"definition"}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: compact, and honest about missing or non-finite values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if isinstance(value, Integral):
            return f"{int(value):,}".replace(",", "\u2009")  # thin-space thousands separator
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}"
    return str(value)


def _shape(shape: Any) -> str:
    if isinstance(shape, (list, tuple)):
        return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
    return str(shape)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_views(figures: list[Figure], pngs: dict[str, bytes]) -> list[dict[str, str]]:
    views = []
    for figure in figures:
        png = pngs.get(figure.name) or figure.png
        if png:
            views.append({"name": figure.name, "caption": figure.caption, "src": _data_uri(png)})
    return views


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, Real))


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) > LONG_TEXT


def _score_rows(scores: list[FeatureScore]) -> list[dict[str, Any]]:
    return [{"rank": i + 1, "feature": s.feature, "score": fmt(s.score), "signal": fmt(s.score_signal),
             "background": fmt(s.score_background),
             "ci": f"[{fmt(s.score_ci95[0])}, {fmt(s.score_ci95[1])}]" if s.score_ci95 else ""}
            for i, s in enumerate(scores)]


def _explainer_view(result: ExplainerResult, pngs: dict[str, bytes]) -> dict[str, Any]:
    top = sorted_scores(result.feature_importance)[:TOP_FEATURES] if result.feature_importance else []
    groups = sorted_scores(result.group_importance)[:TOP_FEATURES] if result.group_importance else []
    per_class = any(s.score_signal is not None or s.score_background is not None for s in top)
    fields = {k: v for k, v in result.fields.items() if k not in _HIDDEN_FIELDS}
    # Scalars as a key/value table, sentences (a note) under it, so that a long one does not
    # push the table's values off screen; big nested fields stay in report.json.
    scalar_fields = [(k, fmt(v)) for k, v in fields.items() if _is_scalar(v) and not _is_text(v)]
    texts = [(k, v) for k, v in fields.items() if _is_text(v)]
    nested = [k for k, v in fields.items() if not _is_scalar(v)]
    return {
        "name": result.name,
        "status": result.status,
        "error": result.error,
        "plugin": result.plugin,
        "runtime": fmt(result.runtime_s, 3),
        "summary": result.summary,
        "definition": result.fields.get("definition"),
        "options": [(k, v if isinstance(v, str) else fmt(v) if _is_scalar(v) else str(v))
                    for k, v in result.options.items()],
        "fields": scalar_fields,
        "texts": texts,
        "nested_fields": nested,
        "figures": _figure_views(result.figures, pngs),
        "per_class": per_class,
        "top": _score_rows(top),
        "intervals": any(s.score_ci95 for s in top),
        "n_features": len(result.feature_importance or []),
        "groups": _score_rows(groups),
        "group_intervals": any(s.score_ci95 for s in groups),
        "n_groups": len(result.group_importance or []),
        "warnings": result.warnings,
    }


def _ranking_table(report: AuditReport) -> tuple[list[str], list[list[str]]]:
    rankings = attribution_rankings(report)
    methods = list(rankings)
    depth = min(RANK_TOP, max((len(r) for r in rankings.values()), default=0))
    rows = [[order[i] if i < len(order) else "" for order in rankings.values()] for i in range(depth)]
    return methods, rows


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hepaudit.report", "templates"),
        autoescape=True,  # every string from the report is untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt
    env.filters["shape"] = _shape
    return env


def render_html(report: AuditReport, figures: dict[str, bytes]) -> str:
    """The text of report.html; ``figures`` maps a figure's file name to its PNG bytes."""
    explainers = [_explainer_view(r, figures) for r in report.explainers.values()]
    methods, ranking_rows = _ranking_table(report)
    dauc = report.explainers.get("dauc")
    baseline_auc = dauc.fields.get("baseline_auc") if dauc is not None and dauc.status == "ok" else None
    # The same warnings report.json carries, including the NaN → null notes.
    warnings = report_dict(report)["warnings"]
    ranking_figure = figures.get("ranking_comparison.png")
    context = {
        "r": report,
        "config_source": report.config.get("source") if isinstance(report.config, dict) else None,
        "data": report.data or {},
        "model": report.model or {},
        "baseline_auc": baseline_auc,
        "explainers": explainers,
        "methods": methods,
        "ranking_rows": ranking_rows,
        "rank_top": RANK_TOP,
        "method_notes": method_notes(methods),
        "ranking_figure": _data_uri(ranking_figure) if ranking_figure else None,
        "sections": [{"title": s.title, "text": s.text, "key": s.key,
                      "data": [(k, fmt(v)) for k, v in s.data.items() if _is_scalar(v)],
                      "figures": _figure_views(s.figures, figures)} for s in report.sections],
        "warnings": warnings,
        "n_failed": sum(r.status != "ok" for r in report.explainers.values()),
    }
    return _environment().get_template("report.html.j2").render(**context)
