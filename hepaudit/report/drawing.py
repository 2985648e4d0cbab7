"""The report's figures drawn in more than one process (``[report] figure_processes``).

Every figure is a :class:`Job`: an explainer's ``draw(result)``, a ranking's bar chart, a
section's figure (score, ROC, inputs; :func:`add_figure` inside :func:`drawn_later`), the rank
comparison. Drawing is matplotlib's Python code, which holds the GIL, so threads cannot share
it: a :class:`FigurePool` starts helper processes (:mod:`.draw_helper`) that take jobs from the
queue, the costliest first. On Linux they are one fresh interpreter and copies of it forked once
it has loaded matplotlib, and this process, which has not, draws only what they cannot; elsewhere
helper interpreters draw beside this process, which takes jobs from the queue too.

A helper gets an explainer's class (by module and name), its options and its finished result.
An explainer whose class a fresh interpreter cannot import (defined in ``__main__`` or inside
a function) is drawn here; so is any job whose drawing fails in a helper, so that a helper
never changes what the report holds: its failure is then this process's, a report warning.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hepaudit.errors import HepauditWarning
from hepaudit.model.blocks import usable_cores
from hepaudit.report.draw_helper import CAN_CLONE, Clone, Helper, settings_now
from hepaudit.report.style import ensure_style
from hepaudit.results import ExplainerResult, Figure

#: fewer explainers to draw than this: a helper's start-up (about a second) would not pay
MIN_JOBS = 3


@dataclasses.dataclass
class Job:
    """Figures to draw for the result ``name``: ``here()`` in this process, or ``function(*args)``
    (``elsewhere``, pickled; None: here only) in a helper; the costliest are started first."""

    name: str
    here: Callable[[], list[Figure]]
    elsewhere: tuple[Callable[..., list[Figure]], tuple[Any, ...]] | None = None
    cost: int = 1
    what: str = "its figures"  # for the warning when drawing fails
    # where the figures go: appended to ``owner``, or in place of ``placeholder`` in it
    owner: list[Figure] | None = None
    placeholder: Figure | None = None


def settle(job: Job, outcome: Outcome) -> str | None:
    """Put a job's figures where they belong (in place of its placeholder, or after the owner's
    figures); the warning for the report when its drawing failed, else None."""
    failed = isinstance(outcome, BaseException)
    figures: list[Figure] = [] if isinstance(outcome, BaseException) else outcome
    if job.owner is not None and job.placeholder is not None:
        index = next(i for i, f in enumerate(job.owner) if f is job.placeholder)
        job.owner[index:index + 1] = figures
    elif job.owner is not None:
        job.owner.extend(figures)
    return f"{job.name}: {job.what} could not be drawn: {type(outcome).__name__}: {outcome}" if failed else None


#: while set (:func:`drawn_later`), :func:`add_figure` leaves its drawing to the pool
_LATER: contextvars.ContextVar[list[Job] | None] = contextvars.ContextVar("hepaudit_drawn_later", default=None)


@contextlib.contextmanager
def drawn_later() -> Iterator[list[Job]]:
    """Collect the jobs of the :func:`add_figure` calls made inside, to draw in the pool."""
    jobs: list[Job] = []
    token = _LATER.set(jobs)
    try:
        yield jobs
    finally:
        _LATER.reset(token)


def add_figure(figures: list[Figure], name: str, caption: str, make: Callable[..., bytes | None],
               *args: Any, cost: int = 1) -> None:
    """Append ``Figure(name, caption, make(*args))`` to ``figures`` (nothing when ``make``
    returns None; a warning when it fails: a section's figure must never cost the report).
    Inside :func:`drawn_later` a placeholder is appended and the pool draws it with the others
    (a failure is then a report warning, from :func:`settle`), the costliest (``cost``, as a
    :class:`Job`'s) first."""
    later = _LATER.get()
    if later is None:
        try:
            ensure_style()
            figures.extend(draw_figure(make, name, caption, *args))
        except Exception as exc:  # the section is still made, without this figure
            warnings.warn(f"figure {name} could not be drawn: {type(exc).__name__}: {exc}", HepauditWarning,
                          stacklevel=2)
        return
    placeholder = Figure(name, caption)
    figures.append(placeholder)
    later.append(Job("report", lambda: draw_figure(make, name, caption, *args),
                     (draw_figure, (make, name, caption, *args)), cost, what=f"figure {name}", owner=figures,
                     placeholder=placeholder))


Outcome = list[Figure] | BaseException


def explainer_job(name: str, explainer: Any, result: ExplainerResult) -> Job:
    """``explainer.draw(result)``: in a helper, by a new instance of its class with its options."""
    cls = type(explainer)
    # the figures a finish set and the bootstrap replicates are no part of drawing
    sent = dataclasses.replace(result, figures=[], replicates=[])
    explanation = result.explanation
    # per-jet attributions mean a beeswarm, boxes and dependence plots: among the costliest
    cost = 3 if explanation is not None and len(explanation) else 1
    movable = cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__
    return Job(name, lambda: list(explainer.draw(result)),
               (draw_explainer, (cls, explainer.options, sent)) if movable else None, cost, owner=result.figures)


def draw_explainer(cls: type, options: Any, result: ExplainerResult) -> list[Figure]:
    """What a helper runs for :func:`explainer_job`: ``draw`` reads the options and the result only."""
    explainer: Any = object.__new__(cls)
    explainer.options, explainer.context = options, None
    return list(explainer.draw(result))


def chart_job(name: str, make: Callable[[ExplainerResult], bytes | None], file_name: str, caption: str,
              result: ExplainerResult) -> Job:
    """A figure made from a result's rankings (``make(result)``, a module-level function)."""
    rankings = ExplainerResult(name=result.name, feature_importance=result.feature_importance,
                               group_importance=result.group_importance)
    return Job(name, lambda: draw_figure(make, file_name, caption, rankings),
               (draw_figure, (make, file_name, caption, rankings)), what=f"figure {file_name}",
               owner=result.figures)


def draw_figure(make: Callable[..., bytes | None], file_name: str, caption: str, *args: Any) -> list[Figure]:
    """``make(*args)`` as a figure (none when it returns None): what a helper runs for a chart."""
    png = make(*args)
    return [] if png is None else [Figure(file_name, caption, png)]


def helpers_for(processes: int, jobs: int) -> int:
    """How many processes besides this one draw ``jobs`` figure jobs with ``[report]
    figure_processes`` = ``processes`` (never more than the cores): on Linux all of them (a
    helper and its copies, :data:`~hepaudit.report.draw_helper.CAN_CLONE`; this process,
    which has not imported matplotlib, only assembles), elsewhere one fewer (this process draws
    too)."""
    drawing = min(processes, usable_cores())
    if jobs < MIN_JOBS or drawing < 2:
        return 0
    return drawing if CAN_CLONE else drawing - 1


@contextlib.contextmanager
def started_early(processes: int) -> Iterator[list[Helper]]:
    """The helpers ``[report] figure_processes`` allows, started now, when an audit begins: each
    imports matplotlib on a core the audit's single-threaded start-up leaves idle, and waits for
    the report's settings (:class:`FigurePool` takes them from the list). On Linux that is one
    interpreter, ready to fork the others. Whatever is still in the list when the block ends (the
    audit failed or stopped before its report) is stopped."""
    helpers: list[Helper] = []
    wanted = helpers_for(processes, MIN_JOBS)
    try:
        if CAN_CLONE and wanted:
            helpers.append(Helper(clones=wanted - 1))
        else:
            for _ in range(wanted):
                helpers.append(Helper())
    except OSError:  # no interpreter to start: the pool starts its own, or draws here
        pass
    try:
        yield helpers
    finally:
        for helper in helpers:
            helper.discard()
        helpers.clear()


class FigurePool:
    """Helpers started now (their imports overlap whatever this process does next), shared
    with this process: :meth:`submit` hands jobs to the helpers at once (they draw while this
    process does other work), :meth:`draw` adds the last jobs and draws here too until every
    job is done; ``helpers=0`` draws everything here, in :meth:`draw`."""

    def __init__(self, helpers: int, formats: tuple[str, ...] = (), dpi: int = 100,
                 started: list[Helper] | None = None, style: str = "matplotlib") -> None:
        """``helpers``: processes drawing beside this one (:func:`helpers_for`). ``started``:
        helpers started earlier (:func:`started_early`), used first and taken out of that list
        (this pool closes them), each asked for as many copies as it can make and the pool
        still needs; any beyond ``helpers`` are stopped. The helpers draw in ``style``
        (``[report] style``) on top of this process's matplotlib settings, as this process
        does inside :func:`~hepaudit.report.style.figure_style`."""
        self.helpers: list[Helper | Clone] = []
        self.drawn_elsewhere: list[str] = []  # the results a helper drew, by name
        settings = settings_now(style)
        early = list(started or ())  # taken only now: until here, their owner still stops them
        if started:
            started.clear()
        for helper in early:
            if len(self.helpers) >= helpers:
                helper.discard()
                continue
            self.helpers.append(helper)
            self.helpers.extend(helper.configure(settings, formats, dpi, helpers - len(self.helpers)))
        while len(self.helpers) < helpers:
            copies = helpers - len(self.helpers) - 1 if CAN_CLONE else 0
            try:
                helper = Helper(settings, formats, dpi, clones=copies)
            except OSError:  # no interpreter to start: this process draws everything
                break
            self.helpers += [helper, *helper.clones]
        # this process takes jobs a helper could draw only beside helper interpreters (not
        # copies): where it would otherwise import matplotlib just to draw a share
        self.here_too = not any(isinstance(h, Clone) for h in self.helpers)
        self.jobs: list[Job] = []  # every job submitted, in order
        self._out: list[Outcome | None] = []
        self._pending: deque[int] = deque()  # the jobs nobody has taken, costliest first
        self._changed = threading.Condition()  # guards the fields above and below
        self._open = True  # more jobs may come: an idle helper waits for them
        self._busy: set[int] = set()  # the helpers (by id) drawing a job now
        self._returned: list[int] = []  # jobs a helper could not draw
        self._feeders: list[threading.Thread] = []
        self._feeding = 0  # feeders that may still take a job

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:  # Ctrl-C or an error: no helper's figure is wanted any more
            with self._changed:
                self._open = False
                self._pending.clear()
                self._changed.notify_all()
            for helper in self._copies_first():
                helper.stop()
        self.close()

    def _copies_first(self) -> list[Helper | Clone]:
        """The helpers, copies before interpreters: a helper reaps its copies while it lives."""
        return sorted(self.helpers, key=lambda h: not isinstance(h, Clone))

    def close(self) -> None:
        for thread in self._feeders:
            thread.join()
        self._feeders = []
        for helper in self._copies_first():  # a helper waits for its copies to end before it does
            helper.close()
        self.helpers = []

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs``; the helpers start on those they can draw now."""
        with self._changed:
            first = len(self.jobs)
            self.jobs.extend(jobs)
            self._out.extend([None] * len(jobs))
            queued = list(self._pending) + list(range(first, len(self.jobs)))
            self._pending = deque(sorted(queued, key=lambda i: -self.jobs[i].cost))
            self._changed.notify_all()
        if not self._feeders:
            self._feeders = [threading.Thread(target=self._feed, args=(h,), name="hepaudit-draw", daemon=True)
                             for h in self.helpers if h.alive]
            self._feeding = len(self._feeders)
            for thread in self._feeders:
                thread.start()

    def _feed(self, helper: Helper | Clone) -> None:
        """Hand ``helper`` one job after another until none is left and none will come, or the
        helper is gone (this process then draws what is left)."""
        try:
            if helper.wait_ready():
                self._feed_ready(helper)
        finally:
            with self._changed:
                self._busy.discard(id(helper))
                self._feeding -= 1
                self._changed.notify_all()

    def _feed_ready(self, helper: Helper | Clone) -> None:
        while helper.alive:
            with self._changed:
                self._busy.discard(id(helper))
                while True:
                    i = next((j for j in self._pending if self.jobs[j].elsewhere is not None), None)
                    if i is not None or not self._open:
                        break
                    self._changed.wait()
                if i is None:
                    return
                self._pending.remove(i)
                self._busy.add(id(helper))
                self._changed.notify_all()
            call = self.jobs[i].elsewhere
            figures = None if call is None else helper.draw(call)
            with self._changed:
                if figures is None:
                    self._returned.append(i)
                else:
                    self._out[i] = figures
                    self.drawn_elsewhere.append(self.jobs[i].name)

    def _mine(self, i: int) -> bool:
        """Whether this process draws pending job ``i`` now: one no helper can draw, any job
        when it draws beside helper interpreters, all that are left once no helper takes jobs."""
        return self.here_too or self.jobs[i].elsewhere is None or self._feeding == 0

    def draw(self, jobs: Sequence[Job] = ()) -> list[Outcome]:
        """Queue the last ``jobs``, draw here what this process takes (:meth:`_mine`), the
        costliest first, wait for the helpers' figures, and return every submitted job's
        figures, or the exception its drawing raised, in the order the jobs were submitted."""
        self.submit(jobs)
        with self._changed:
            self._open = False  # no more jobs: a helper with nothing to take is done
            self._changed.notify_all()
        while True:
            with self._changed:
                i = next((j for j in self._pending if self._mine(j)), None)
                if i is None:
                    if not self._pending:
                        idle = [h for h in self.helpers if id(h) not in self._busy and not h.ready]
                        break
                    self._changed.wait()
                    continue
                self._pending.remove(i)
            self._out[i] = _attempt(self.jobs[i])
        for helper in idle:  # one still starting up, with no job left, would only keep this process waiting
            helper.stop()
        for thread in self._feeders:
            thread.join()
        self._feeders = []
        for i in self._returned:
            self._out[i] = _attempt(self.jobs[i])
        self._returned = []
        return [o if o is not None else [] for o in self._out]


def _attempt(job: Job) -> Outcome:
    try:
        ensure_style()
        return job.here()
    except Exception as exc:  # a plotting bug must not cost the report
        return exc
