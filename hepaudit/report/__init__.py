"""Writing the audit report: report.json, report.html and figures/*.png, each atomically.

``write_report`` is what the executor calls; ``atomic_write`` is the one way hepaudit puts a
file on disk; ``report_json`` and ``render_html`` produce the two documents as text. They are
imported on first use: the explainers' figure modules live in this package, and registering
them must not load jinja2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hepaudit.lazy import lazy_exports

__all__ = ["atomic_write", "render_html", "report_json", "write_report"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "render_html": "hepaudit.report.html", "report_json": "hepaudit.report.json_report",
    "atomic_write": "hepaudit.report.writer", "write_report": "hepaudit.report.writer",
})

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.report.html import render_html
    from hepaudit.report.json_report import report_json
    from hepaudit.report.writer import atomic_write, write_report
