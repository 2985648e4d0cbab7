"""The service's schema migrations on a real SQLite file: an old database upgrades in place."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("alembic")
sqlalchemy = pytest.importorskip("sqlalchemy")


def test_a_database_at_the_first_revision_upgrades_keeping_its_rows(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from hepaudit.service.auth import create_token, revoke, user_for
    from hepaudit.service.db import Audit, Model, database_url, make_engine, migrate, session_factory

    url = database_url(tmp_path)
    config = Config()
    import hepaudit.service.db as db

    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0001")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(
            "INSERT INTO models (name, version, group_name, sha256, size, uploaded_by, created) "
            "VALUES ('m', 'v1', 'top', 'abc', 1, 'alice', '2026-01-01 00:00:00')"))
        connection.execute(sqlalchemy.text(
            "INSERT INTO audits (model_id, group_name, submitted_by, status, progress, config, created, attempts, "
            "cancel_requested) VALUES (1, 'top', 'alice', 'done', 1.0, '', '2026-01-01 00:00:00', 1, 0)"))
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("audits")}
    assert "auc" not in columns
    engine.dispose()
    migrate(url)  # what the service does when it starts
    engine = make_engine(url)
    columns = {c["name"] for c in sqlalchemy.inspect(engine).get_columns("audits")}
    assert {"auc", "auc_low", "auc_high"} <= columns
    with session_factory(engine)() as session:
        audit = session.get(Audit, 1)
        assert audit is not None and audit.status == "done" and audit.auc is None
        assert session.get(Model, 1).name == "m"
        token = create_token(session, "bob", "higgs")
        assert user_for(session, token).group_name == "higgs" and user_for(session, token + "x") is None
        assert revoke(session, "bob", "top") == 0 and revoke(session, "bob") == 1
        assert user_for(session, token) is None
    engine.dispose()
    migrate(url)  # idempotent
