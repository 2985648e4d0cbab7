"""The service's database: users and their tokens, models, audits (SQLAlchemy 2).

An embedded SQLite file in ``--home`` by default (WAL journal, so pages read while the job
runner writes), or any SQLAlchemy URL (PostgreSQL) for a shared deployment. The schema is
created and upgraded by Alembic (:mod:`hepaudit.service.migrations`) when the service starts.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

#: the statuses an audit goes through; the last three are final
STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # naive UTC: the same on SQLite and PostgreSQL


class Base(DeclarativeBase):
    pass


class User(Base):
    """A token's holder: one group, or every group for an admin. Only the token's hash is kept."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    group_name: Mapped[str] = mapped_column(String(200), index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Model(Base):
    """An uploaded ONNX tagger: stored under ``home/models/<sha256>.onnx``."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_name_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    group_name: Mapped[str] = mapped_column(String(200), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    uploaded_by: Mapped[str] = mapped_column(String(200))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "version": self.version, "group": self.group_name,
                "sha256": self.sha256, "size": self.size, "uploaded_by": self.uploaded_by,
                "created": _iso(self.created)}


class Audit(Base):
    """One audit of a registered model: its config, status, progress and where its report is."""

    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    group_name: Mapped[str] = mapped_column(String(200), index=True)
    submitted_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    config: Mapped[str] = mapped_column(Text)  # the TOML as submitted
    explainers: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list, or null: the config's
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    started: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    gates_passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: the config has no gates
    auc: Mapped[float | None] = mapped_column(Float, nullable=True)  # the performance section's, when labelled
    auc_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    auc_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the service process running it and its last sign of life: a restart finds audits whose
    # runner is gone by a stale heartbeat, never by guessing
    runner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model_id, "group": self.group_name, "status": self.status,
                "progress": self.progress, "phase": self.phase, "error": self.error,
                "created": _iso(self.created), "started": _iso(self.started), "finished": _iso(self.finished),
                "gates_passed": self.gates_passed, "submitted_by": self.submitted_by, "attempts": self.attempts,
                "auc": self.auc, "auc_ci95": None if self.auc_low is None else [self.auc_low, self.auc_high]}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds")


def database_url(home: Path, url: str | None = None) -> str:
    """``url``, or the embedded SQLite file in ``home``."""
    return url or f"sqlite:///{(home / 'hepaudit.sqlite').resolve()}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
