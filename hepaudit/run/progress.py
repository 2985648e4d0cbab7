"""Progress and cancellation of a run, as one small API.

A run tells one callback where it is: a :class:`ProgressEvent` (phase, done, total, unit)
whenever a chunk or a partition is done, and once more with ``finished`` when a phase
ends. The command line turns these into tqdm bars on a terminal (:func:`terminal_bars`), a
notebook into ``tqdm.auto`` bars, the audit service into database rows. Cancelling is a
``threading.Event``: the run checks it between chunks and stops with
:class:`AuditCancelled`, leaving no temporary file behind.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hepaudit.errors import HepauditError


@dataclass(frozen=True)
class ProgressEvent:
    """How far one phase of a run is: ``done`` of ``total`` ``unit`` (jets or partitions)."""

    phase: str  # "input means", "reference (reference)", "auditing", "figures", ...
    done: int
    total: int
    unit: str = "jet"
    finished: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


class AuditCancelled(HepauditError):
    """The run was cancelled (its cancel event was set); nothing was written."""


class PhaseCounter:
    """Counts one phase's work and tells the callback; checks for cancellation on each step."""

    def __init__(self, progress: Progress, phase: str, total: int, unit: str) -> None:
        self.progress, self.phase, self.total, self.unit = progress, phase, total, unit
        self.done = 0
        progress.emit(ProgressEvent(phase, 0, total, unit))

    def update(self, n: int) -> None:
        self.done += n
        self.progress.emit(ProgressEvent(self.phase, self.done, self.total, self.unit))
        self.progress.check()

    def close(self) -> None:
        self.progress.emit(ProgressEvent(self.phase, self.done, self.total, self.unit, finished=True))


class Progress:
    """Where a run is, told to ``callback``; whether ``cancel`` asks it to stop."""

    def __init__(self, callback: ProgressCallback | None = None, cancel: threading.Event | None = None) -> None:
        self.callback = callback
        self.cancel = cancel

    def emit(self, event: ProgressEvent) -> None:
        if self.callback is not None:
            self.callback(event)

    def phase(self, name: str, total: int, unit: str = "jet") -> PhaseCounter:
        return PhaseCounter(self, name, total, unit)

    def check(self) -> None:
        """Raise :class:`AuditCancelled` when the run was asked to stop."""
        if self.cancel is not None and self.cancel.is_set():
            raise AuditCancelled("the audit was cancelled")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (its output is a notebook cell, not a terminal)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        return type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # an IPython without a running shell
        return False


def terminal_bars(enabled: bool = True, stream: Any = None) -> ProgressCallback | None:
    """A callback drawing one tqdm bar per phase: on ``stream`` (stderr) when it is a terminal,
    or in the notebook cell (``tqdm.auto``) when running in a Jupyter kernel."""
    if not enabled:
        return None
    if stream is None and in_notebook():
        return TqdmBars(None, auto=True)
    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return None
    return TqdmBars(stream)


class TqdmBars:
    """One tqdm bar per running phase (``tqdm.auto`` in a notebook, plain tqdm elsewhere)."""

    def __init__(self, stream: Any = None, auto: bool = False) -> None:
        self.stream = stream
        self.auto = auto
        self.bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        bar = self.bars.get(event.phase)
        if bar is None:
            if self.auto:
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm
            bar = self.bars[event.phase] = tqdm(total=event.total, unit=event.unit, unit_scale=True,
                                                desc=event.phase, file=self.stream, leave=False)
        bar.update(event.done - bar.n)
        if event.finished:
            bar.close()
            del self.bars[event.phase]
