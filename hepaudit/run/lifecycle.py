"""One timed, guarded call of an explainer phase, and the bookkeeping of one explainer's run.

Every phase an executor calls (``start``, ``update``, ``update_reference``, ``prepare``,
``merge``, ``finish``) goes through :func:`call_phase`: its time is added to the run's
``seconds`` and an exception marks that explainer failed (its message kept, with the
traceback under ``--debug``) while every other explainer goes on. A run already failed is
not called again.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from hepaudit.data.reading import Sample
    from hepaudit.explainers.base import Explainer
    from hepaudit.results import ExplainerResult

T = TypeVar("T")


def describe_error(exc: BaseException, debug: bool = False) -> str:
    """``Type: message``, with the traceback appended under ``debug``."""
    text = f"{type(exc).__name__}: {exc}"
    if debug:
        text += "\n" + "".join(traceback.format_exception(exc))
    return text


@dataclass
class ExplainerRun:
    """An explainer instance with its state and bookkeeping during the run."""

    name: str
    plugin: dict[str, str] = field(default_factory=dict)
    explainer: Explainer[Any] | None = None
    reference: Sample | None = None  # the sample update_reference sees (needs "reference")
    state: Any = None
    seconds: float = 0.0
    error: str | None = None
    result: ExplainerResult | None = None

    @property
    def alive(self) -> bool:
        return self.error is None and self.explainer is not None

    def fail(self, message: str) -> None:
        """Mark the run failed; the first error is the one kept."""
        if self.error is None:
            self.error = message


def call_phase(run: ExplainerRun, phase: Callable[..., T], *args: Any, debug: bool = False) -> T | None:
    """``phase(*args)`` for a live run, timed into ``run.seconds``; an exception fails the run
    (None is returned). A run that has already failed is not called."""
    if run.error is not None:
        return None
    t0 = time.perf_counter()
    try:
        return phase(*args)
    except Exception as exc:  # an explainer's bug fails that explainer, never the audit
        run.fail(describe_error(exc, debug))
        return None
    finally:
        run.seconds += time.perf_counter() - t0


def by_reference_sample(runs: list[ExplainerRun]) -> list[tuple[Sample, list[ExplainerRun]]]:
    """The live runs that need a reference pass, grouped by the sample they read (each once)."""
    samples: dict[int, tuple[Sample, list[ExplainerRun]]] = {}
    for run in runs:
        if run.reference is not None and run.error is None:
            samples.setdefault(id(run.reference), (run.reference, []))[1].append(run)
    return list(samples.values())
