"""The ASGI app: the JSON API of contract §6 (and the web UI, :mod:`hepaudit.service.ui`).

Every request but ``GET /api/health`` carries ``Authorization: Bearer TOKEN`` (the UI sends
the same token from an HttpOnly, SameSite=Strict cookie); a model and its audits belong to
one group, and another group's user gets 404 for them, never 403, so ids leak nothing.
Errors are ``{"error": "..."}``. Uploads are counted as they arrive and cut off at
``max_upload`` bytes (413); an uploaded model is written under a temporary name, checked
as the CLI checks a model (ONNX, external data confined to its folder: a lone upload has
none), and renamed to ``models/<sha256>.onnx``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hepaudit import __version__
from hepaudit.errors import HepauditError
from hepaudit.service.auth import may_see, user_for
from hepaudit.service.db import FINAL, Audit, Model, User, make_engine, now, session_factory
from hepaudit.service.jobs import model_file, report_dir

#: the largest model upload accepted, bytes (--max-upload-mb)
MAX_UPLOAD = 512 * 1024 * 1024
#: the largest config text accepted, bytes
MAX_CONFIG = 256 * 1024
REPORT_FILES = {"report.json": "application/json", "report.html": "text/html; charset=utf-8",
                "per_jet.root": "application/octet-stream"}


class BodyLimit:
    """ASGI middleware: a POST body is counted as it arrives and cut off past ``limit`` bytes.

    The request then looks disconnected to the app (nothing more is read or spooled), and the
    scope is marked so the handler answers 413, also for chunked uploads that announce no size."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    scope["hepaudit.too_large"] = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited, send)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ServiceSettings:
    home: Path
    database: str
    data_roots: list[Path] = field(default_factory=list)
    max_upload: int = MAX_UPLOAD


def create_app(settings: ServiceSettings) -> FastAPI:
    """The app for ``settings``; the job runner is started by :mod:`hepaudit.service.server`."""
    engine = make_engine(settings.database)
    sessions = session_factory(engine)
    app = FastAPI(title="hepaudit", version=__version__, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.sessions = sessions
    app.add_middleware(BodyLimit, limit=settings.max_upload + 64 * 1024)  # room for the form's other fields

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    def caller(request: Request) -> User:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get("hepaudit_token")
        with sessions() as session:
            user = user_for(session, token)
        if user is None:
            raise ApiError(401, "missing or unknown token: send Authorization: Bearer TOKEN")
        return user

    def visible_model(session: Any, user: User, model_id: int) -> Model:
        model = session.get(Model, model_id)
        if model is None or not may_see(user, model):
            raise ApiError(404, f"no model {model_id}")
        return model

    def visible_audit(session: Any, user: User, audit_id: int) -> Audit:
        audit = session.get(Audit, audit_id)
        if audit is None or not may_see(user, audit):
            raise ApiError(404, f"no audit {audit_id}")
        return audit

    app.state.caller = caller
    app.state.visible_model = visible_model
    app.state.visible_audit = visible_audit

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.post("/api/models", status_code=201)
    async def upload_model(request: Request) -> JSONResponse:
        user = caller(request)
        fields, upload = await _read_upload(request, settings)
        model = register_model(settings, sessions, user, fields, upload)
        return JSONResponse(model.to_dict(), status_code=201)

    @app.get("/api/models")
    def list_models(request: Request) -> list[dict[str, Any]]:
        user = caller(request)
        with sessions() as session:
            query = select(Model).order_by(Model.name, Model.id)
            if not user.admin:
                query = query.where(Model.group_name == user.group_name)
            return [m.to_dict() for m in session.execute(query).scalars()]

    @app.get("/api/models/{model_id}")
    def get_model(model_id: int, request: Request) -> dict[str, Any]:
        user = caller(request)
        with sessions() as session:
            return visible_model(session, user, model_id).to_dict()

    @app.post("/api/audits", status_code=202)
    async def submit_audit(request: Request) -> JSONResponse:
        user = caller(request)
        body = await request.body()
        if len(body) > MAX_CONFIG:
            raise ApiError(413, f"the request is larger than {MAX_CONFIG} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            raise ApiError(400, "the body must be JSON: {model: ID, config: TOML text, explainers?: [...]}") from None
        audit = create_audit(settings, sessions, user, doc)
        return JSONResponse({"id": audit.id, "status": audit.status}, status_code=202)

    @app.get("/api/audits")
    def list_audits(request: Request, model: int | None = None) -> list[dict[str, Any]]:
        user = caller(request)
        with sessions() as session:
            query = select(Audit).order_by(Audit.id.desc())
            if model is not None:
                visible_model(session, user, model)
                query = query.where(Audit.model_id == model)
            if not user.admin:
                query = query.where(Audit.group_name == user.group_name)
            return [a.to_dict() for a in session.execute(query).scalars()]

    @app.get("/api/audits/{audit_id}")
    def get_audit(audit_id: int, request: Request) -> dict[str, Any]:
        user = caller(request)
        with sessions() as session:
            return visible_audit(session, user, audit_id).to_dict()

    @app.delete("/api/audits/{audit_id}")
    def cancel_audit(audit_id: int, request: Request) -> dict[str, Any]:
        user = caller(request)
        with sessions() as session:
            audit = visible_audit(session, user, audit_id)
            if audit.status in FINAL:
                raise ApiError(409, f"audit {audit_id} is already {audit.status}")
            request_cancel(session, audit)
            return audit.to_dict()

    @app.get("/api/audits/{audit_id}/{name}")
    def report_file(audit_id: int, name: str, request: Request) -> Response:
        user = caller(request)
        if name not in REPORT_FILES:
            raise ApiError(404, f"no file {name!r}: report.json, report.html or per_jet.root")
        with sessions() as session:
            audit = visible_audit(session, user, audit_id)
            if audit.status != "done":
                raise ApiError(409, f"audit {audit_id} is {audit.status}: its report exists once it is done")
        path = report_dir(settings.home, audit_id) / name
        if not path.is_file():
            raise ApiError(404, f"audit {audit_id} wrote no {name}")
        return FileResponse(path, media_type=REPORT_FILES[name], filename=name if name.endswith(".root") else None)

    @app.get("/api/diff")
    def diff(request: Request, a: int, b: int) -> dict[str, Any]:
        user = caller(request)
        return diff_of(settings, sessions, user, a, b)

    from hepaudit.service.ui import add_ui

    add_ui(app, settings, sessions)
    return app


def register_model(settings: ServiceSettings, sessions: Any, user: User, fields: dict[str, str], upload: str
                   ) -> Model:
    """Register an uploaded file (the API's and the UI form's): checked, named, moved into place.
    The temporary upload is removed whatever happens."""
    try:
        name, version = fields.get("name", "").strip(), fields.get("version", "").strip()
        group = fields.get("group", "").strip() or user.group_name
        if not name or not version:
            raise ApiError(400, "name and version are required")
        if group != user.group_name and not user.admin:
            raise ApiError(403, f"you may upload to your group {user.group_name!r} only")
        digest, size = _check_model(upload)
        with sessions() as session:
            model = Model(name=name, version=version, group_name=group, sha256=digest, size=size,
                          uploaded_by=user.name)
            session.add(model)
            try:
                session.flush()
            except IntegrityError:
                raise ApiError(409, f"model {name!r} version {version!r} is already registered") from None
            target = model_file(settings.home, digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.replace(upload, target)  # atomic: a reader sees the whole file or none
            session.commit()
            return model
    finally:
        Path(upload).unlink(missing_ok=True)


def request_cancel(session: Any, audit: Audit) -> None:
    """Cancel a queued audit at once; ask a running one's worker to stop at its next chunk."""
    if audit.status == "queued":
        audit.status, audit.finished, audit.error = "cancelled", now(), "cancelled on request"
    audit.cancel_requested = True
    session.commit()


def create_audit(settings: ServiceSettings, sessions: Any, user: User, doc: Any) -> Audit:
    """Validate and queue an audit (the API's and the UI form's): 400 for a bad config."""
    from hepaudit.service.configs import service_config

    if not isinstance(doc, dict) or not isinstance(doc.get("model"), int) or not isinstance(doc.get("config"), str):
        raise ApiError(400, "expected {model: ID, config: TOML text, explainers?: [...]}")
    explainers = doc.get("explainers")
    if explainers is not None and (not isinstance(explainers, list) or not all(isinstance(e, str) for e in explainers)):
        raise ApiError(400, "explainers: a list of explainer names")
    with sessions() as session:
        model = session.get(Model, doc["model"])
        if model is None or not may_see(user, model):
            raise ApiError(404, f"no model {doc['model']}")
        try:
            service_config(doc["config"], model_file(settings.home, model.sha256), settings.data_roots)
        except HepauditError as exc:
            raise ApiError(400, str(exc)) from None
        audit = Audit(model_id=model.id, group_name=model.group_name, submitted_by=user.name, status="queued",
                      progress=0.0, config=doc["config"], explainers=json.dumps(explainers) if explainers else None,
                      attempts=0, cancel_requested=False)
        session.add(audit)
        session.commit()
        return audit


def diff_of(settings: ServiceSettings, sessions: Any, user: User, a: int, b: int) -> dict[str, Any]:
    """The diff of two finished audits the user may see (as ``hepaudit diff`` computes it)."""
    from hepaudit.diff import diff_reports, load_report

    docs = []
    names = []
    with sessions() as session:
        for audit_id in (a, b):
            audit = session.get(Audit, audit_id)
            if audit is None or not may_see(user, audit):
                raise ApiError(404, f"no audit {audit_id}")
            if audit.status != "done":
                raise ApiError(409, f"audit {audit_id} is {audit.status}: only finished audits compare")
            model = session.get(Model, audit.model_id)
            names.append(f"{model.name} {model.version}" if model is not None else "?")
    for audit_id in (a, b):
        try:
            docs.append(load_report(report_dir(settings.home, audit_id))[1])
        except HepauditError as exc:
            raise ApiError(404, str(exc)) from None
    diff = diff_reports(docs[0], docs[1], f"audit {a}", f"audit {b}")
    for side, name in zip(("a", "b"), names):  # the registry's name, not the service's file layout
        diff[side]["model"] = name
        diff[side]["files"] = [Path(f).name for f in diff[side]["files"] if f]
    return diff


async def _read_upload(request: Request, settings: ServiceSettings) -> tuple[dict[str, str], str]:
    """The multipart form's text fields and its ``file`` saved to a temporary file in the home,
    counting bytes as they arrive (413 beyond ``max_upload``)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_upload + 64 * 1024:
        raise ApiError(413, f"the upload is larger than {settings.max_upload} bytes")
    staging = settings.home / "uploads"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:  # a malformed or truncated body (a client gone mid-upload)
        if request.scope.get("hepaudit.too_large"):
            raise ApiError(413, f"the upload is larger than {settings.max_upload} bytes") from None
        raise ApiError(400, f"cannot read the upload ({type(exc).__name__})") from None
    try:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart field 'file' (the .onnx) is missing")
        handle, path = tempfile.mkstemp(dir=staging, suffix=".onnx.part")
        total = 0
        with os.fdopen(handle, "wb") as out:
            while block := await upload.read(1 << 20):
                total += len(block)
                if total > settings.max_upload:
                    out.close()
                    Path(path).unlink(missing_ok=True)
                    raise ApiError(413, f"the upload is larger than {settings.max_upload} bytes")
                out.write(block)
        return fields, path
    finally:
        await form.close()


def _check_model(path: str) -> tuple[str, int]:
    """The upload's sha256 and size, after the CLI's model checks (400 when they fail)."""
    from hepaudit.errors import ModelError
    from hepaudit.model.graph import load_model

    try:
        load_model(path)
    except ModelError as exc:
        raise ApiError(400, str(exc).replace(path, "the uploaded file")) from None
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
