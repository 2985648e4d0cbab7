"""The audit, end to end: config → plan → executor → report → files.

:func:`audit` is the public entry point (the CLI, a notebook, a coffea processor and the
audit service all call it). Each step is a module of its own: :mod:`hepaudit.run.plan`
validates everything before a jet is read, :mod:`hepaudit.executors` runs the passes (in
this process or on Dask, the same partitions and merges), :mod:`hepaudit.report.assemble`
builds the report and :mod:`hepaudit.report.writer` writes it. This module imports them
inside the function, so ``import hepaudit`` stays light.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.config import AuditConfig
    from hepaudit.results import AuditReport
    from hepaudit.run.progress import ProgressCallback


def prepare_output(out: Path, force: bool) -> None:
    """Refuse a non-empty output folder unless ``force``; never delete anything else."""
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


def audit(config: str | Path | AuditConfig, *, out: str | Path | None = "hepaudit-report",
          explainers: Sequence[str] | None = None, max_jets: int | None = None, seed: int | None = None,
          force: bool = False, disable: Sequence[str] = (), progress: bool | None = None,
          debug: bool = False, plugins: Sequence[tuple[str, object]] = (), executor: str | None = None,
          scheduler: object = None, workers: int | None = None, on_progress: ProgressCallback | None = None,
          cancel: threading.Event | None = None) -> AuditReport:
    """Run an audit and return its report; with ``out`` set, also write it there.

    :param config: an audit TOML file, or an :class:`AuditConfig`.
    :param out: output folder (report.json, report.html, figures/, per_jet.root); None
        writes nothing and only returns the report.
    :param explainers: run only these (default: every ``[explainers.NAME]`` table).
    :param max_jets: cap on audited jets (overrides ``data.max_jets``).
    :param seed: seed for stochastic explainers (overrides ``execution.seed``).
    :param force: overwrite a non-empty output folder.
    :param disable: plugin names to block.
    :param progress: progress bars on stderr (default: the config's ``execution.progress``).
    :param plugins: extra ``(name, plugin)`` objects to register, e.g. from a notebook.
    :param executor: ``"local"`` or ``"dask"`` (overrides ``execution.executor``).
    :param scheduler: a Dask scheduler address or a ``distributed.Client`` (implies ``executor="dask"``).
    :param workers: start a local Dask cluster of this many worker processes (implies ``executor="dask"``).
    :param on_progress: called with a :class:`~hepaudit.run.progress.ProgressEvent` as the run
        advances (instead of the bars on stderr).
    :param cancel: set this event to stop the run between chunks (:class:`~hepaudit.run.progress.AuditCancelled`).
    """
    import time

    from hepaudit.executors import make_executor
    from hepaudit.plugins import PluginHost
    from hepaudit.report.assemble import assemble
    from hepaudit.report.per_jet import PerJetWriter
    from hepaudit.run.execute import execute
    from hepaudit.run.plan import AuditPlan, apply_overrides
    from hepaudit.run.progress import Progress, terminal_bars

    t_start = time.perf_counter()
    cfg = apply_overrides(config, max_jets=max_jets, seed=seed, executor=executor, scheduler=scheduler,
                          workers=workers)
    out_dir = Path(out) if out is not None else None
    host = PluginHost(disable=disable, extra=plugins)
    plan = AuditPlan.build(cfg, host, explainers, out_dir, debug)
    if out_dir is not None:
        prepare_output(out_dir, force)
    per_jet = PerJetWriter(out_dir / "per_jet.root") if out_dir is not None else None
    bars = terminal_bars(cfg.execution.progress if progress is None else progress)
    client = None if isinstance(scheduler, str) else scheduler
    outcome, timing = execute(plan, make_executor(cfg, disable, plugins, client),
                              per_jet, Progress(on_progress or bars, cancel))
    report = assemble(plan, outcome, per_jet, {"total_s": t_start, **timing})
    if out_dir is not None:
        from hepaudit.report.writer import write_report

        write_report(report, out_dir)
    return report
