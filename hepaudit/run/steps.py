"""The steps of :func:`hepaudit.audit`, in the order it takes them (imported when an audit runs).

config → :func:`apply_overrides` → :meth:`AuditPlan.build` → :func:`open_output` →
:func:`make_executor` → :func:`execute` → :func:`assemble` → :func:`write_report`.
"""

from __future__ import annotations

from pathlib import Path

from hepaudit.executors import make_executor
from hepaudit.plugins import PluginHost
from hepaudit.report.assemble import assemble
from hepaudit.report.per_jet import PerJetWriter
from hepaudit.report.writer import write_report
from hepaudit.run.execute import execute
from hepaudit.run.plan import AuditPlan, apply_overrides
from hepaudit.run.progress import Progress, terminal_bars

__all__ = ["AuditPlan", "PluginHost", "Progress", "apply_overrides", "assemble", "execute", "make_executor",
           "open_output", "prepare_output", "terminal_bars", "write_report"]


def prepare_output(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder unless ``force``; never delete anything else."""
    import shutil

    from hepaudit.errors import OutputError

    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputError(f"{out}: the output folder is not empty (it may hold an earlier report); "
                              "choose another --out or pass --force to overwrite")
        for name in ("report.json", "report.html", "per_jet.root"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "figures", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def open_output(out: Path | None, force: bool) -> PerJetWriter | None:
    """The output folder made ready (after the plan checked everything); its per-jet writer."""
    if out is None:
        return None
    prepare_output(out, force)
    return PerJetWriter(out / "per_jet.root")
