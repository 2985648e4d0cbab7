"""``hepaudit serve``: the database migrated, a Dask client, the job runner and uvicorn."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hepaudit.errors import ConfigError
from hepaudit.service.app import ServiceSettings, create_app
from hepaudit.service.db import database_url, make_engine, migrate, session_factory

log = logging.getLogger("hepaudit.service")


def prepare_home(home: Path, database: str | None) -> str:
    """The home folder made and the database migrated to the newest schema; its URL."""
    home.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "reports", "uploads"):
        (home / sub).mkdir(exist_ok=True)
    url = database_url(home, database)
    migrate(url)
    return url


def dask_client(workers: int | None, scheduler: str | None) -> Any:
    """A client of an existing scheduler, or of a local cluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s")
    cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster)


def serve(*, home: Path, host: str, port: int, database: str | None, data_roots: list[Path],
          workers: int | None, scheduler: str | None, max_running: int, max_upload_mb: int,
          stale_after: float = 15.0) -> None:
    """Run the service until interrupted."""
    import uvicorn

    from hepaudit.service.jobs import JobRunner

    roots = [Path(r).resolve() for r in data_roots]
    for root in roots:
        if not root.is_dir():
            raise ConfigError(f"--data-root {root}: not a folder")
    url = prepare_home(home, database)
    settings = ServiceSettings(home=home.resolve(), database=url, data_roots=roots,
                               max_upload=max_upload_mb * 1024 * 1024)
    app = create_app(settings)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        client = dask_client(workers, scheduler)
        runner = JobRunner(home=settings.home, database=url, data_roots=roots, client=client,
                           max_running=max_running, stale_s=stale_after)
        runner.start()
        state.update(client=client, runner=runner)
        try:
            yield
        finally:
            runner.stop()
            client.close()
            cluster = getattr(client, "cluster", None)
            if cluster is not None:
                cluster.close()

    app.router.lifespan_context = lifespan
    where = ", ".join(str(r) for r in roots) or "none (audits cannot read data)"
    print(f"hepaudit serve: http://{host}:{port}/  home {settings.home}  database {url.split('@')[-1]}  "
          f"data roots {where}  audits at once {max_running} on "
          f"{'Dask at ' + scheduler if scheduler else f'{workers or 2} local Dask workers'}", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=200)


def create_user_token(home: Path, database: str | None, user: str, group: str, admin: bool) -> str:
    """A new token (``hepaudit serve token create``)."""
    from hepaudit.service.auth import create_token

    url = prepare_home(home, database)
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            return create_token(session, user, group, admin)
    finally:
        engine.dispose()
