"""Writing the audit report: report.json, report.html and figures/*.png, each atomically.

``write_report`` is what the executor calls; ``atomic_write`` is the one way hepaudit puts a
file on disk; ``report_json`` and ``render_html`` produce the two documents as text.
"""

from hepaudit.report.html import render_html
from hepaudit.report.json_report import report_json
from hepaudit.report.writer import atomic_write, write_report

__all__ = ["atomic_write", "render_html", "report_json", "write_report"]
