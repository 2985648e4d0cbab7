"""Figures drawn by helper interpreters beside the audit's own (``[report] figure_processes``).

Real processes: ``python -m hepaudit.report.draw_helper`` started by the pool, fed over pipes.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from conftest import AuditSetup

import hepaudit
from hepaudit.errors import ConfigError
from hepaudit.report import assemble, drawing
from hepaudit.report.draw_helper import CAN_CLONE, Clone, Helper
from hepaudit.report.drawing import FigurePool, Job, started_early
from hepaudit.results import Figure

PNG = b"\x89PNG\r\n\x1a\n"


def pid_figure(name: str, delay: float) -> list[Figure]:
    """A figure whose caption says which process drew it."""
    time.sleep(delay)
    return [Figure(f"{name}.png", str(os.getpid()), PNG)]


def only_in(parent: int, name: str) -> list[Figure]:
    """Draws in the process ``parent`` only (a draw that needs something a helper lacks)."""
    if os.getpid() != parent:
        raise RuntimeError("not in this process")
    return pid_figure(name, 0.0)


def broken(name: str) -> list[Figure]:
    raise ValueError(f"{name} cannot be drawn")


def _job(name: str, function: object, *args: object, elsewhere: bool = True) -> Job:
    return Job(name, lambda: function(*args), (function, args) if elsewhere else None)  # type: ignore[operator]


def test_helpers_draw_what_they_can_and_this_process_the_rest() -> None:
    me = os.getpid()
    jobs = [_job(f"job{i}", pid_figure, f"job{i}", 0.3) for i in range(6)]
    jobs += [_job("here_only", pid_figure, "here_only", 0.0, elsewhere=False),
             _job("needs_parent", only_in, me, "needs_parent"),
             _job("unpicklable", lambda name: pid_figure(name, 0.0), "unpicklable"),
             _job("broken", broken, "broken")]
    with FigurePool(1) as pool:
        assert pool.helpers[0].wait_ready()
        outcomes = pool.draw(jobs)
        helper = pool.helpers[0].process
    assert helper.poll() is not None  # ended with the pool
    by_name = dict(zip([j.name for j in jobs], outcomes))
    assert isinstance(by_name.pop("broken"), ValueError)
    drawn_by = {name: int(figures[0].caption) for name, figures in by_name.items()}  # type: ignore[index]
    assert [f[0].name for f in by_name.values()] == [f"{n}.png" for n in by_name]  # type: ignore[index]
    elsewhere = {name for name, pid in drawn_by.items() if pid != me}
    assert elsewhere and elsewhere == set(pool.drawn_elsewhere) - {"needs_parent", "broken"}
    assert elsewhere <= {f"job{i}" for i in range(6)}
    assert {drawn_by["here_only"], drawn_by["needs_parent"], drawn_by["unpicklable"]} == {me}


def test_submitted_jobs_are_drawn_by_helpers_while_this_process_works() -> None:
    """Jobs handed out with ``submit`` are drawn by a helper before ``draw`` is called (this
    process meanwhile does other work); ``draw`` then adds the last jobs and returns every
    outcome in the order the jobs were submitted."""
    me = os.getpid()
    early = [_job(f"early{i}", pid_figure, f"early{i}", 0.0) for i in range(3)]
    late = [_job("late_here", pid_figure, "late_here", 0.0, elsewhere=False), _job("late", pid_figure, "late", 0.0)]
    with FigurePool(1) as pool:
        pool.submit(early)
        waited = 0.0
        while len(pool.drawn_elsewhere) < len(early) and waited < 120:  # this process's other work
            time.sleep(0.05)
            waited += 0.05
        assert sorted(pool.drawn_elsewhere) == ["early0", "early1", "early2"]  # all before draw()
        outcomes = pool.draw(late)
    names = [o[0].name for o in outcomes]  # type: ignore[index]
    assert names == ["early0.png", "early1.png", "early2.png", "late_here.png", "late.png"]
    pids = [int(o[0].caption) for o in outcomes]  # type: ignore[index]
    assert all(pid != me for pid in pids[:3]) and pids[3] == me


def test_without_helpers_everything_is_drawn_here() -> None:
    jobs = [_job(f"job{i}", pid_figure, f"job{i}", 0.0) for i in range(4)]
    with FigurePool(0) as pool:
        outcomes = pool.draw(jobs)
    assert [int(o[0].caption) for o in outcomes] == [os.getpid()] * 4  # type: ignore[index]


@pytest.mark.skipif(not CAN_CLONE, reason="copies of a helper are forked on Linux only")
def test_a_helper_and_its_copy_draw_everything_and_end_with_the_pool() -> None:
    """figure_processes = 2 on Linux: one interpreter and a copy forked from it draw every job
    they can, this process (no matplotlib of its own) only the one they cannot; closing the
    pool ends both, the copy reaped by its helper."""
    me = os.getpid()
    jobs = [_job(f"job{i}", pid_figure, f"job{i}", 0.3) for i in range(6)]
    jobs.append(_job("here_only", pid_figure, "here_only", 0.0, elsewhere=False))
    with FigurePool(2) as pool:
        helper, copy = pool.helpers
        assert isinstance(helper, Helper) and isinstance(copy, Clone) and not pool.here_too
        outcomes = pool.draw(jobs)
        assert copy.pid is not None and copy.pid != helper.process.pid
        copy_pid = copy.pid
    pids = [int(o[0].caption) for o in outcomes]  # type: ignore[index]
    assert set(pids[:6]) == {helper.process.pid, copy_pid} and pids[6] == me
    assert helper.process.poll() is not None
    assert not os.path.exists(f"/proc/{copy_pid}")  # ended and reaped, not a zombie


@pytest.mark.skipif(not CAN_CLONE, reason="copies of a helper are forked on Linux only")
def test_a_copy_that_dies_leaves_its_jobs_to_the_others() -> None:
    jobs = [_job(f"job{i}", pid_figure, f"job{i}", 0.1) for i in range(6)]
    with FigurePool(2) as pool:
        helper, copy = pool.helpers
        assert isinstance(copy, Clone) and copy.wait_ready() and copy.pid is not None
        os.kill(copy.pid, signal.SIGKILL)
        outcomes = pool.draw(jobs)
    assert [o[0].name for o in outcomes] == [f"job{i}.png" for i in range(6)]  # type: ignore[index]
    assert not copy.alive and helper.process.poll() is not None


def test_helpers_started_early_draw_for_the_pool() -> None:
    """Helpers started when an audit begins wait, unconfigured, for the pool, which takes them
    out of the list and configures them; those it does not need are stopped with it."""
    with started_early(2) as helpers:
        assert len(helpers) == 1  # figure_processes = 2: this process and one helper
        early = helpers[0]
        assert not early.configured and not early.wait_ready()  # no settings yet: never "ready"
        with FigurePool(1, started=helpers) as pool:
            assert helpers == [] and pool.helpers == [early] and early.wait_ready()
            outcomes = pool.draw([_job(f"job{i}", pid_figure, f"job{i}", 0.2) for i in range(4)])
        assert early.process.pid in {int(o[0].caption) for o in outcomes}  # type: ignore[index]
        assert early.process.poll() is not None  # closed with the pool
    with started_early(2) as helpers:
        spare = list(helpers)
        with FigurePool(0, started=helpers) as pool:
            assert pool.helpers == [] and helpers == []
        assert all(h.process.poll() is not None for h in spare)


def test_a_helper_told_only_the_style_draws_as_this_process_does() -> None:
    """A caller that has not imported matplotlib sends the style's name alone (``settings_now``
    does not import it for this): the helper applies the style on matplotlib's defaults itself,
    and its PNG equals, byte for byte, the one drawn here in that style."""
    import matplotlib
    import numpy as np

    from hepaudit.report import figures
    from hepaudit.report.draw_helper import Helper
    from hepaudit.report.style import figure_style

    args = (np.linspace(0, 1, 60) ** 3, np.linspace(0, 1, 60), 0.91)
    with matplotlib.rc_context():
        matplotlib.rc_file_defaults()  # what a fresh interpreter starts from
        with figure_style("cms", ()):
            here = figures.roc_curve(*args)
        helper = Helper(("cms", None, None))
        try:
            drawn = helper.draw((drawing.draw_figure, (figures.roc_curve, "roc.png", "", *args)))
        finally:
            helper.close()
    assert drawn is not None and bytes(drawn[0].png) == bytes(here)


def test_an_audit_that_stops_before_its_report_leaves_no_helper(setup: AuditSetup,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The helpers an audit starts at its beginning end with it when its plan fails."""
    started: list[drawing.Helper] = []

    class Counted(drawing.Helper):  # the real helper, counted
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    monkeypatch.setattr(drawing, "Helper", Counted)
    monkeypatch.chdir(setup.dir)
    doc = setup.doc()
    doc["data"] = {**doc["data"], "label": "no_such_branch"}  # type: ignore[dict-item]
    doc["explainers"] = {"dauc": {}}
    with pytest.raises(hepaudit.errors.DataError, match="no_such_branch"):
        hepaudit.audit(doc, out=None, warn=False)
    assert started and all(h.process.poll() is not None for h in started)


def test_figures_drawn_by_helpers_equal_those_drawn_here(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real audit: every PNG is the same, byte for byte, whichever process drew it, and
    report.json lists the same figures in the same order."""
    pools: list[FigurePool] = []
    started = assemble.figure_pool

    def ready_pool(plan: object) -> FigurePool:  # the real pool, its helpers waited for
        pool = started(plan)  # type: ignore[arg-type]
        for helper in pool.helpers:
            helper.wait_ready()
        pools.append(pool)
        return pool

    monkeypatch.setattr(assemble, "figure_pool", ready_pool)
    monkeypatch.chdir(setup.dir)
    doc = setup.doc()
    doc["explainers"] = {"dauc": {}, "mad": {}, "shap": {"jets": 40}, "lrp": {}, "gradient": {}}
    doc["execution"] = {"progress": False}
    listed = {}
    for processes in (2, 1):
        doc["report"] = {"figure_processes": processes}
        hepaudit.audit(doc, out=setup.dir / f"p{processes}", warn=False)
        report = json.loads((setup.dir / f"p{processes}" / "report.json").read_text())
        assert not [w for w in report["warnings"] if "drawn" in w]
        listed[processes] = {n: e["figures"] for n, e in report["explainers"].items()}
    assert pools[0].drawn_elsewhere and not pools[1].helpers
    assert listed[2] == listed[1]
    two = sorted((setup.dir / "p2" / "figures").glob("*.png"))
    one = sorted((setup.dir / "p1" / "figures").glob("*.png"))
    assert [p.name for p in two] == [p.name for p in one] and len(two) > 8
    for a, b in zip(two, one):
        assert a.read_bytes() == b.read_bytes(), a.name
    with pytest.raises(ConfigError, match="figure_processes"):
        hepaudit.audit({**doc, "report": {"figure_processes": 0}}, out=None)



def test_a_section_figure_that_fails_is_a_warning(setup: AuditSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The performance section is still made without its ROC figure, and the report says why;
    called on its own, the section function warns."""
    import numpy as np

    from hepaudit.errors import HepauditWarning
    from hepaudit.executors.partitions import LOGIT_BINS
    from hepaudit.report import figures
    from hepaudit.report.performance import performance_section

    def broken(*args: object) -> bytes:
        raise RuntimeError("no ink")

    monkeypatch.setattr(figures, "roc_curve", broken)
    monkeypatch.chdir(setup.dir)
    doc = setup.doc()
    doc["execution"] = {"progress": False}
    doc["report"] = {"figure_processes": 1}  # the broken function exists in this process only
    report = hepaudit.audit(doc, out=setup.dir / "out", warn=False)
    section = next(s for s in report.sections if s.key == "performance")
    assert section.figures == [] and section.data["auc"] > 0.5
    assert "report: figure roc.png could not be drawn: RuntimeError: no ink" in report.warnings
    assert not (setup.dir / "out" / "figures" / "roc.png").exists()
    hist = np.stack([np.linspace(1, 0, len(LOGIT_BINS) - 1), np.linspace(0, 1, len(LOGIT_BINS) - 1)])
    with pytest.warns(HepauditWarning, match="roc.png could not be drawn"):
        alone = performance_section(hist, LOGIT_BINS)
    assert alone is not None and alone.figures == []
