"""``hepaudit serve``, ``hepaudit serve token create`` and ``hepaudit submit`` (contract §6)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hepaudit.config import tomllib
from hepaudit.errors import HepauditError

_MISSING = ("the service needs its optional dependencies: pip install \"hepaudit[service]\" "
            "(FastAPI, uvicorn, SQLAlchemy, Alembic, python-multipart, Dask)")


def _require_service() -> None:
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("alembic", "fastapi", "multipart", "sqlalchemy", "uvicorn")):
        click.echo(f"hepaudit: error: {_MISSING}", err=True)
        sys.exit(2)


@click.group(invoke_without_command=True)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=Path("hepaudit-home"),
              show_default=True, help="Database (SQLite by default), uploaded models and reports.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--database", default=None, metavar="URL", help="A SQLAlchemy URL, e.g. postgresql://... "
              "(default: SQLite in --home).")
@click.option("--data-root", "data_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder audits may read ROOT files from (repeatable).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Local Dask worker processes (default 2).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="An existing Dask scheduler instead.")
@click.option("--max-running", type=click.IntRange(min=1), default=2, show_default=True,
              help="Audits run at once by this service process; the rest queue.")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--stale-after", type=click.FloatRange(min=4.0), default=15.0, show_default=True,
              help="Seconds without a heartbeat after which a running audit counts as lost (its service died).")
@click.pass_context
def serve(ctx: click.Context, home: Path, host: str, port: int, database: str | None, data_roots: tuple[Path, ...],
          workers: int | None, scheduler: str | None, max_running: int, max_upload_mb: int,
          stale_after: float) -> None:
    """Run the audit service: model registry, audit history, web UI and JSON API."""
    ctx.ensure_object(dict)
    ctx.obj.update(home=home, database=database)
    if ctx.invoked_subcommand is not None:
        return
    _require_service()
    if workers and scheduler:
        raise click.UsageError("give either --workers or --scheduler")
    from hepaudit.service.server import serve as run

    try:
        run(home=home, host=host, port=port, database=database, data_roots=list(data_roots), workers=workers,
            scheduler=scheduler, max_running=max_running, max_upload_mb=max_upload_mb, stale_after=stale_after)
    except HepauditError as exc:
        click.echo(f"hepaudit: error: {exc}", err=True)
        sys.exit(exc.exit_code)


@serve.group()
def token() -> None:
    """Manage access tokens."""


@token.command("create")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--database", default=None, metavar="URL")
@click.option("--user", required=True, help="Who holds the token.")
@click.option("--group", required=True, help="The group whose models and audits the token reaches.")
@click.option("--admin", is_flag=True, help="May see every group.")
@click.pass_context
def token_create(ctx: click.Context, home: Path | None, database: str | None, user: str, group: str,
                 admin: bool) -> None:
    """Create a token and print it (it is shown only this once)."""
    _require_service()
    from hepaudit.service.server import create_user_token

    parent = ctx.find_root().obj or {}
    click.echo(create_user_token(home or parent.get("home") or Path("hepaudit-home"),
                                 database or parent.get("database"), user, group, admin))


@token.command("revoke")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--database", default=None, metavar="URL")
@click.option("--user", required=True, help="Whose tokens to remove.")
@click.option("--group", default=None, help="Only the user's tokens in this group.")
@click.pass_context
def token_revoke(ctx: click.Context, home: Path | None, database: str | None, user: str, group: str | None) -> None:
    """Remove a user's tokens (at once: the next request with one gets 401)."""
    _require_service()
    from hepaudit.service.auth import revoke
    from hepaudit.service.db import make_engine, session_factory
    from hepaudit.service.server import prepare_home

    parent = ctx.find_root().obj or {}
    url = prepare_home(home or parent.get("home") or Path("hepaudit-home"), database or parent.get("database"))
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            removed = revoke(session, user, group)
    finally:
        engine.dispose()
    click.echo(f"removed {removed} token(s) of {user}")
    if not removed:
        sys.exit(1)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--server", required=True, metavar="URL", help="e.g. http://127.0.0.1:8765")
@click.option("--token", required=True, envvar="HEPAUDIT_TOKEN", help="Or HEPAUDIT_TOKEN.")
@click.option("--group", default=None, help="Group for an uploaded model (default: the token's).")
@click.option("--name", default=None, help="Model name for an upload (default: the file's stem).")
@click.option("--version", "version", default=None, help="Model version for an upload (default: its sha256's start).")
@click.option("--explainer", "explainers", multiple=True, metavar="NAME", help="Run only this explainer.")
@click.option("--wait", is_flag=True, help="Follow the audit; exit 1 when it fails or a gate fails.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Download the report here (implies --wait).")
def submit(config: Path, server: str, token: str, group: str | None, name: str | None, version: str | None,
           explainers: tuple[str, ...], wait: bool, out: Path | None) -> None:
    """Upload CONFIG's model (unless already registered), submit the audit, optionally follow it."""
    import hashlib

    from hepaudit.service.client import Client, ServiceError

    text = config.read_text()
    try:
        raw = tomllib.loads(text)
        model_path = (config.parent / raw["model"]["path"]).resolve()
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        click.echo(f"hepaudit: error: {config}: no [model] path ({exc})", err=True)
        sys.exit(2)
    if not model_path.is_file():
        click.echo(f"hepaudit: error: {model_path}: model file not found", err=True)
        sys.exit(2)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    client = Client(server, token)
    try:
        known = [m for m in client.get("/api/models") if m["sha256"] == digest]
        if known:
            model = known[0]
            click.echo(f"model {model['name']} {model['version']} (id {model['id']}) is registered", err=True)
        else:
            model = client.upload_model(model_path, name or model_path.stem, version or digest[:12], group)
            click.echo(f"uploaded {model['name']} {model['version']} (id {model['id']})", err=True)
        audit = client.post_json("/api/audits", {"model": model["id"], "config": text,
                                                 "explainers": list(explainers) or None})
        click.echo(f"audit {audit['id']} queued: {server.rstrip('/')}/audits/{audit['id']}", err=True)
        if not (wait or out):
            click.echo(str(audit["id"]))
            return
        state = follow(client, audit["id"])
        if out is not None and state["status"] == "done":
            out.mkdir(parents=True, exist_ok=True)
            for file in ("report.json", "report.html", "per_jet.root"):
                try:
                    client.download(f"/api/audits/{audit['id']}/{file}", out / file)
                except ServiceError as exc:
                    if exc.status != 404:
                        raise
            click.echo(f"report: {out / 'report.html'}", err=True)
    except ServiceError as exc:
        click.echo(f"hepaudit: error: {server}: {exc.message} ({exc.status})", err=True)
        sys.exit(2 if 400 <= exc.status < 500 else 1)
    if state["status"] != "done":
        click.echo(f"hepaudit: audit {audit['id']} {state['status']}: {state.get('error')}", err=True)
        sys.exit(1)
    if state.get("gates_passed") is False:
        click.echo(f"hepaudit: audit {audit['id']}: a gate failed", err=True)
        sys.exit(1)


def follow(client: object, audit_id: int, every: float = 1.0) -> dict[str, object]:
    """Poll an audit until it ends, printing its progress; its final state."""
    last = None
    while True:
        state = client.get(f"/api/audits/{audit_id}")  # type: ignore[attr-defined]
        shown = (state["status"], round(100 * float(state["progress"])))
        if shown != last:
            click.echo(f"  {state['status']:<9} {shown[1]:3d} %  {state.get('phase') or ''}", err=True)
            last = shown
        if state["status"] in ("done", "failed", "cancelled"):
            return dict(state)
        time.sleep(every)
