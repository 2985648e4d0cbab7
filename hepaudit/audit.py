"""The audit, end to end: config → plan → executor → report → files.

:func:`audit` is the public entry point (the CLI, a notebook, a coffea processor and the
audit service all call it). Each step is a module of its own: :mod:`hepaudit.run.plan`
validates everything before a jet is read, :mod:`hepaudit.executors` runs the passes (in
this process or on Dask, the same partitions and merges), :mod:`hepaudit.report.assemble`
builds the report and :mod:`hepaudit.report.writer` writes it. This module imports them
inside the function, so ``import hepaudit`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.config import AuditConfig
    from hepaudit.results import AuditReport
    from hepaudit.run.plan import AuditPlan
    from hepaudit.run.progress import ProgressCallback


def audit(config: str | Path | AuditConfig | Mapping[str, Any], *, out: str | Path | None = "hepaudit-report",
          explainers: Sequence[str] | None = None, max_jets: int | None = None, seed: int | None = None,
          force: bool = False, disable: Sequence[str] = (), progress: bool | None = None,
          debug: bool = False, plugins: Sequence[tuple[str, object]] = (), executor: str | None = None,
          scheduler: object = None, workers: int | None = None, on_progress: ProgressCallback | None = None,
          cancel: threading.Event | None = None, keep_per_jet: bool | None = None, warn: bool = True,
          arrays: Any = None) -> AuditReport:
    """Run an audit and return its report; with ``out`` set, also write it there.

    :param config: an audit TOML file, a dict with the TOML's structure (relative paths from
        the current folder), or an :class:`AuditConfig`.
    :param out: output folder (report.json, report.html, figures/, per_jet.root); None writes nothing.
    :param explainers: run only these (default: every ``[explainers.NAME]`` table).
    :param max_jets, seed: override ``data.max_jets`` and ``execution.seed``.
    :param force: overwrite a non-empty output folder. :param disable: plugin names to block.
    :param progress: bars on stderr (default: ``execution.progress``); ``on_progress`` instead gets
        each :class:`~hepaudit.run.progress.ProgressEvent`; setting ``cancel`` stops the run.
    :param plugins: extra ``(name, plugin)`` objects to register, e.g. from a notebook.
    :param executor, scheduler, workers: ``"local"`` or ``"dask"``; a Dask scheduler address or a
        ``distributed.Client``, or a number of local worker processes (both imply ``"dask"``).
    :param keep_per_jet: hold the per-jet results in memory as ``report.per_jet`` (default: when
        ``out`` is None on the local executor; with ``out`` set, ``report.per_jet`` reads
        per_jet.root on first use).
    :param arrays: the jets to audit, from memory (a coffea processor's, a notebook's): an awkward
        Array of records or a dict of numpy/awkward arrays keyed by branch name, used instead of
        reading ``data.files`` (which a dict config may then leave out); local executor only.
    :param warn: also raise each report warning as a :class:`~hepaudit.errors.HepauditWarning`
        (the CLI and the service, which show them themselves, pass False).
    """
    import time
    import warnings

    from hepaudit.errors import HepauditWarning
    from hepaudit.report.drawing import started_early
    from hepaudit.run.overrides import apply_overrides

    t_start = time.perf_counter()
    cfg = apply_overrides(config, max_jets=max_jets, seed=seed, executor=executor, scheduler=scheduler,
                          workers=workers, in_memory=arrays is not None)
    # the report's drawing helpers start now, before this process imports the readers and
    # onnxruntime: their imports run beside this process's, not beside its first pass over the jets
    with started_early(cfg.report.figure_processes) as helpers:
        from hepaudit.run import steps

        out_dir = Path(out) if out is not None else None
        plan = steps.AuditPlan.build(cfg, steps.PluginHost(disable=disable, extra=plugins), explainers, out_dir,
                                     debug, arrays)
        plan.figure_helpers = helpers
        report = _run(plan, out_dir, force, disable, plugins, scheduler, progress, on_progress, cancel, keep_per_jet,
                      t_start)
    if warn:
        for text in report.warnings:
            warnings.warn(text, HepauditWarning, stacklevel=2)
    return report


def _run(plan: AuditPlan, out_dir: Path | None, force: bool, disable: Sequence[str],
         plugins: Sequence[tuple[str, object]], scheduler: object, progress: bool | None,
         on_progress: ProgressCallback | None, cancel: threading.Event | None, keep_per_jet: bool | None,
         t_start: float) -> AuditReport:
    """The planned audit: executed, assembled and (with ``out_dir``) written and published."""
    from hepaudit.report.per_jet import PerJetColumns, PerJetSink
    from hepaudit.report.style import figure_style_when_drawn
    from hepaudit.run import steps

    cfg = plan.config
    bars = steps.terminal_bars(cfg.execution.progress if progress is None else progress)
    if keep_per_jet is None:
        keep_per_jet = out_dir is None and cfg.execution.executor == "local"
    with steps.open_output(out_dir, force, plan) as output:  # published whole, or not at all
        per_jet: PerJetSink | None = steps.per_jet_writer(output)
        if per_jet is None and keep_per_jet:  # out=None: the per-jet columns stay in memory
            per_jet = PerJetColumns()
        run_on = steps.make_executor(cfg, disable, plugins, None if isinstance(scheduler, str) else scheduler)
        outcome, timing = steps.execute(plan, run_on, per_jet, steps.Progress(on_progress or bars, cancel))
        # matplotlib is imported here only if this process draws a figure itself
        with figure_style_when_drawn(cfg.report.style, cfg.report.figure_formats, cfg.report.dpi) as problem:
            if problem:
                plan.warnings.append(problem)
            report = steps.assemble(plan, outcome, per_jet, {"total_s": t_start, **timing})
            if output.stage is not None:
                steps.write_report(report, output.stage, shown_as=out_dir)
        if isinstance(per_jet, PerJetColumns):
            report._per_jet = per_jet.arrays()
            report.per_jet_file = None  # nothing was written where the caller would look
    if keep_per_jet and out_dir is not None:
        _ = report.per_jet  # read from the published folder now, as asked
    return report
