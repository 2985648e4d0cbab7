"""The steps of :func:`hepaudit.audit`, in the order it takes them (imported when an audit runs).

config → :func:`apply_overrides` → :meth:`AuditPlan.build` → :func:`open_output` (a staging
folder, :mod:`hepaudit.report.output`) → :func:`make_executor` → :func:`execute` →
:func:`assemble` → :func:`write_report` → published into ``--out`` when the ``with`` block ends.
"""

from __future__ import annotations

from pathlib import Path

from hepaudit.executors import make_executor
from hepaudit.plugins import PluginHost
from hepaudit.report.assemble import assemble
from hepaudit.report.output import StagedOutput
from hepaudit.report.per_jet import PerJetWriter
from hepaudit.report.writer import write_report
from hepaudit.run.execute import execute
from hepaudit.run.overrides import apply_overrides
from hepaudit.run.plan import AuditPlan
from hepaudit.run.progress import Progress, terminal_bars

__all__ = ["AuditPlan", "NoOutput", "PluginHost", "Progress", "apply_overrides", "assemble", "execute",
           "make_executor", "open_output", "per_jet_writer", "terminal_bars", "write_report"]


class NoOutput:
    """``out=None``: nothing is written."""

    stage: Path | None = None

    def __enter__(self) -> NoOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def open_output(out: Path | None, force: bool, plan: AuditPlan) -> StagedOutput | NoOutput:
    """The output folder, staged (after the plan checked everything); the plan's context learns
    where files go while the run lasts."""
    if out is None:
        return NoOutput()
    output = StagedOutput(out, force, plan.input_paths())
    plan.context.write_dir = output.stage
    return output


def per_jet_writer(output: StagedOutput | NoOutput) -> PerJetWriter | None:
    return None if output.stage is None else PerJetWriter(output.stage / "per_jet.root")
