"""How a report shows itself in a notebook (``AuditReport._repr_html_``): a compact table.

The headline (jets, AUC), one row per explainer with its status, time, headline numbers and
top features, the findings, and where the full report.html is, when one was written. The
full report stays in report.html: a notebook cell should not hold every figure.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.results import AuditReport

_LEVEL_COLOURS = {"alert": "#b00020", "warning": "#a15c00", "ok": "#1b7a1b", "info": "#444444"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def headline_auc(report: AuditReport) -> str | None:
    """"AUC 0.9660 [0.9623, 0.9691]" from the performance section, or None without labels."""
    performance = next((s.data for s in report.sections if s.key == "performance"), {})
    auc = _number(performance.get("auc"))
    if auc is None:
        return None
    ci = performance.get("auc_ci95")
    interval = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
    return f"AUC {auc:.4f}{interval}"


def headline_numbers(fields: dict[str, Any]) -> list[str]:
    """The numbers a reader looks for first in an explainer's fields (as report.json has them):
    ΔAUC's baseline AUC, OOD flagged fractions, ECE, NAP sparsity, the sanity verdicts."""
    out: list[str] = []

    def number(key: str) -> float | None:
        return _number(fields.get(key))

    if (auc := number("baseline_auc")) is not None:
        out.append(f"AUC {auc:.4f}")
    if (flagged := number("flagged_fraction")) is not None:
        ref = number("reference_flagged_fraction")
        out.append(f"flagged {flagged:.1%}" + (f" (reference {ref:.1%})" if ref is not None else ""))
    if (ece := number("ece")) is not None:
        out.append(f"ECE {ece:.4f}")
    if (sparsity := number("sparsity")) is not None:
        out.append(f"sparsity {sparsity:.2f}")
    checked = fields.get("explainers")
    if isinstance(checked, dict) and checked and all(isinstance(v, dict) and "passed" in v for v in checked.values()):
        out.append(f"passed {sum(bool(v['passed']) for v in checked.values())} of {len(checked)}")
    return out


def report_html_summary(report: AuditReport) -> str:
    """The notebook view of a report."""
    head = f"hepaudit: {report.data.get('n_jets')} jets with {escape(str(report.model.get('path', '?')))}"
    if (auc := headline_auc(report)) is not None:
        head += f"; {auc}"
    rows = []
    for name, result in report.explainers.items():
        numbers = headline_numbers(result.fields) if result.status == "ok" else [str(result.error or "")[:200]]
        top = ", ".join(s.feature for s in (result.feature_importance or [])[:3])
        rows.append(f"<tr><td><code>{escape(name)}</code></td><td>{escape(result.status)}</td>"
                    f"<td style='text-align:right'>{result.runtime_s:.1f} s</td>"
                    f"<td>{escape('; '.join(numbers))}</td><td>{escape(top)}</td></tr>")
    findings = "".join(
        f"<li><b style='color:{_LEVEL_COLOURS.get(f.level, '#444')}'>{escape(f.level.upper())}</b> "
        f"{escape(f.text)}</li>" for f in report.findings)
    where = (f"<p>Full report: <code>{escape(str(report.output_dir))}/report.html</code></p>"
             if report.output_dir else "")
    per_jet = "<p><code>report.per_jet</code>: per-jet results as numpy arrays.</p>" if report.per_jet else ""
    return (f"<div class='hepaudit-report'><p><b>{head}</b></p>"
            "<table><thead><tr><th>explainer</th><th>status</th><th>time</th><th>numbers</th>"
            f"<th>top features</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<p><b>Findings</b></p><ul>{findings}</ul>" if findings else "") + where + per_jet + "</div>")
