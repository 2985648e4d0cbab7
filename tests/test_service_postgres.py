"""The service on a shared PostgreSQL database, when a server is available (``.ci/run`` starts
Debian's and sets ``HEPAUDIT_TEST_POSTGRES``); skipped cleanly otherwise."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the service needs pip install \".[service]\"")
sqlalchemy = pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg", reason="pip install psycopg[binary]")

sys.path.insert(0, str(Path(__file__).parent))
from service_helpers import (  # noqa: E402
    Service,
    api,
    audit_config,
    free_port,
    hepaudit,
    make_data,
    upload,
    wait_for,
)

URL = os.environ.get("HEPAUDIT_TEST_POSTGRES", "postgresql+psycopg://hepaudit:hepaudit@127.0.0.1:5432/postgres")


@pytest.fixture
def database() -> Any:
    """A fresh database on the server, dropped afterwards."""
    admin = sqlalchemy.create_engine(URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL server at {URL.split('@')[-1]} ({type(exc).__name__})")
    name = f"hepaudit_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.slow
def test_two_services_share_one_postgres_database(database: str, tmp_path: Path) -> None:
    model = make_data(tmp_path / "data")
    first = Service(tmp_path / "home", tmp_path / "data", free_port(), extra=["--database", database])
    second = Service(tmp_path / "home", tmp_path / "data", free_port(), extra=["--database", database])
    created = hepaudit("serve", "--home", str(first.home), "token", "create", "--database", database,
                       "--user", "alice", "--group", "top")
    assert created.returncode == 0, created.stderr  # token create also migrates the schema
    token = created.stdout.strip()
    first.start()
    second.start()
    try:
        status, registered = upload(first.url, token, model, "mlp", "v1")
        assert status == 201, registered
        assert api(second.url, "GET", f"/api/models/{registered['id']}", token)[0] == 200  # one registry
        config = audit_config(["jets.root"], {"dauc": {}})
        ids = [api(first.url, "POST", "/api/audits", token, {"model": registered["id"], "config": config})[1]["id"]
               for _ in range(4)]
        ends = [wait_for(second.url, token, audit_id, timeout=300) for audit_id in ids]
        assert all(e["status"] == "done" and e["attempts"] == 1 for e in ends), ends
    finally:
        first.stop()
        second.stop()
