"""Audits off the request path: a queue in the database, run on Dask.

The :class:`JobRunner` thread of each service process claims queued audits with one
conditional UPDATE (``WHERE id = ? AND status = 'queued'``): of two processes on one
database exactly one gets the row, so no audit runs twice. It submits each claimed audit to
Dask (:func:`run_audit`, which calls the same :func:`hepaudit.audit` as the CLI and writes
its progress, result and errors into the database itself), at most ``max_running`` at once,
and beats a heartbeat for the audits it runs. On start, a running audit whose heartbeat is
stale lost its runner (the service was killed): it is queued again once ("resumed": it runs
from the start) and marked failed with the reason after that.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from hepaudit.service.db import FINAL, Audit, Model, make_engine, now, session_factory

log = logging.getLogger("hepaudit.service")

HEARTBEAT_S = 2.0
#: a running audit whose heartbeat is older than this has lost its runner
STALE_S = 15.0
#: how many times an audit is started before a lost runner fails it
MAX_ATTEMPTS = 2
#: progress is written at most this often (seconds): a row per chunk would load the database
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class AuditJob:
    """What a Dask worker needs to run one audit (picklable)."""

    audit_id: int
    database: str
    home: str
    model_file: str
    config_text: str
    data_roots: tuple[str, ...]
    explainers: tuple[str, ...] | None


def report_dir(home: Path, audit_id: int) -> Path:
    return home / "reports" / str(audit_id)


def run_audit(job: AuditJob) -> str:
    """Run one audit (in a Dask worker) and record its end in the database; the final status."""
    import hepaudit
    from hepaudit.errors import HepauditError
    from hepaudit.run.progress import AuditCancelled, ProgressEvent
    from hepaudit.service.configs import service_config

    engine = make_engine(job.database)
    sessions = session_factory(engine)
    cancel = threading.Event()
    last = [0.0]

    def progress(event: ProgressEvent) -> None:
        t = time.monotonic()
        if t - last[0] < PROGRESS_EVERY_S and not event.finished:
            return
        last[0] = t
        fraction = event.done / event.total if event.total else 0.0
        with sessions() as session:
            row = session.get(Audit, job.audit_id)
            if row is None or row.cancel_requested:
                cancel.set()
                return
            # the audit pass dominates; earlier passes (x̄, reference) fill the first tenth
            row.progress = round(0.1 * fraction if event.phase != "auditing" else 0.1 + 0.89 * fraction, 4)
            row.phase = event.phase
            session.commit()

    out = report_dir(Path(job.home), job.audit_id)
    status, error, gates = "failed", None, None
    auc: tuple[float | None, float | None, float | None] = (None, None, None)
    try:
        cfg = service_config(job.config_text, Path(job.model_file), [Path(r) for r in job.data_roots])
        report = hepaudit.audit(cfg, out=out, force=True, progress=False, executor="local",
                                explainers=list(job.explainers) if job.explainers else None,
                                on_progress=progress, cancel=cancel, warn=False)
        status, gates = "done", (report.gates_passed if report.gates else None)
        performance = next((s.data for s in report.sections if s.key == "performance"), {})
        ci = performance.get("auc_ci95") or (None, None)
        auc = (performance.get("auc"), ci[0], ci[1])
    except AuditCancelled:
        status, error = "cancelled", "cancelled on request"
    except HepauditError as exc:
        error = str(exc)
    except Exception as exc:  # a bug must still end the audit, with its reason
        error = f"{type(exc).__name__}: {exc}"
    if status != "done":
        shutil.rmtree(out, ignore_errors=True)
    with sessions() as session:
        row = session.get(Audit, job.audit_id)
        if row is not None and row.status not in FINAL:
            row.status, row.error, row.gates_passed, row.finished = status, error, gates, now()
            row.auc, row.auc_low, row.auc_high = auc
            if status == "done":
                row.progress = 1.0
            session.commit()
    engine.dispose()
    return status


class JobRunner:
    """Claims queued audits and runs them on Dask, ``max_running`` at once; see the module docstring."""

    def __init__(self, *, home: Path, database: str, data_roots: list[Path], client: Any,
                 max_running: int = 2, stale_s: float = STALE_S) -> None:
        self.home = home
        self.database = database
        self.data_roots = data_roots
        self.client = client
        self.max_running = max_running
        self.stale_s = max(stale_s, 2 * HEARTBEAT_S)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.engine = make_engine(database)
        self.sessions = session_factory(self.engine)
        self.futures: dict[int, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="hepaudit-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        beat = 0.0
        while not self._stop.is_set():
            try:
                self._reap()
                self._claim()
                if time.monotonic() - beat > HEARTBEAT_S:
                    self._heartbeat()
                    self.recover()
                    beat = time.monotonic()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("job runner")
            self._stop.wait(0.25)

    # -- the queue -------------------------------------------------------------------------
    def recover(self) -> None:
        """Audits left running by a runner that is gone: queued again, or failed with the reason."""
        cutoff = now() - dt.timedelta(seconds=self.stale_s)
        with self.sessions() as session:
            lost = session.execute(select(Audit).where(Audit.status == "running", Audit.runner != self.name,
                                                       (Audit.heartbeat.is_(None)) | (Audit.heartbeat < cutoff))
                                   ).scalars().all()
            for row in lost:
                gone = f"the service running it ({row.runner}) stopped at {row.heartbeat}Z"
                if row.cancel_requested:
                    row.status, row.error, row.finished = "cancelled", f"cancelled on request; {gone}", now()
                elif row.attempts < MAX_ATTEMPTS:
                    row.status, row.runner, row.progress, row.phase = "queued", None, 0.0, None
                    row.error = f"resumed: {gone}"
                else:
                    row.status, row.finished = "failed", now()
                    row.error = f"{gone}, {row.attempts} times; resubmit the audit"
                shutil.rmtree(report_dir(self.home, row.id), ignore_errors=True)
            session.commit()

    def _claim(self) -> None:
        free = self.max_running - len(self.futures)
        if free <= 0:
            return
        with self.sessions() as session:
            queued = session.execute(select(Audit.id).where(Audit.status == "queued").order_by(Audit.id)
                                     .limit(free * 4)).scalars().all()
            for audit_id in queued:
                if len(self.futures) >= self.max_running:
                    break
                claimed = session.execute(
                    update(Audit).where(Audit.id == audit_id, Audit.status == "queued")
                    .values(status="running", runner=self.name, started=now(), heartbeat=now(),
                            attempts=Audit.attempts + 1)).rowcount
                session.commit()
                if claimed != 1:
                    continue  # another service process took it
                row = session.get(Audit, audit_id)
                model = session.get(Model, row.model_id) if row is not None else None
                if row is None or model is None:
                    continue
                job = AuditJob(audit_id, self.database, str(self.home), str(model_file(self.home, model.sha256)),
                               row.config, tuple(str(r) for r in self.data_roots),
                               tuple(_json_list(row.explainers)) if row.explainers else None)
                self.futures[audit_id] = self.client.submit(run_audit, job, pure=False, key=f"audit-{audit_id}-"
                                                            f"{uuid.uuid4().hex[:6]}")

    def _reap(self) -> None:
        for audit_id, future in list(self.futures.items()):
            if future.done():
                if future.status == "error":  # the worker died or the task raised before recording
                    self._fail(audit_id, f"the audit's worker failed: {future.exception()!r}")
                del self.futures[audit_id]

    def _fail(self, audit_id: int, reason: str) -> None:
        with self.sessions() as session:
            row = session.get(Audit, audit_id)
            if row is not None and row.status not in FINAL:
                row.status, row.error, row.finished = "failed", reason, now()
                session.commit()

    def _heartbeat(self) -> None:
        if not self.futures:
            return
        with self.sessions() as session:
            session.execute(update(Audit).where(Audit.id.in_(list(self.futures)), Audit.runner == self.name,
                                                Audit.status == "running").values(heartbeat=now()))
            session.commit()


def model_file(home: Path, sha256: str) -> Path:
    return home / "models" / f"{sha256}.onnx"


def _json_list(text: str) -> list[str]:
    import json

    value = json.loads(text)
    return [str(v) for v in value] if isinstance(value, list) else []
