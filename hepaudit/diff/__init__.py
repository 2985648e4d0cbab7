"""``hepaudit diff A B``: two audits side by side (contract §5).

:mod:`.compare` builds diff.json from two report.json documents; :mod:`.page` renders the
self-contained diff.html with its figures.
"""

from hepaudit.diff.compare import diff_reports, load_report, write_diff

__all__ = ["diff_reports", "load_report", "write_diff"]
