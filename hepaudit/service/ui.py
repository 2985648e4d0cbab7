"""The web UI: server-rendered pages (Jinja2, autoescaped), no script fetched from anywhere.

Sign in with a token: it is kept in an HttpOnly, SameSite=Strict cookie. Every form carries a
CSRF field, an HMAC of the session's token under the service's secret (``home/secret``), checked
on each POST: a page of another site can neither read it nor send the cookie. A running audit's
page refreshes itself (``<meta http-equiv="refresh">``) until the audit ends; no JavaScript.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from hepaudit import __version__
from hepaudit.report.html import fmt
from hepaudit.service.auth import may_see, user_for
from hepaudit.service.db import FINAL, Audit, Model, User
from hepaudit.service.jobs import report_dir

COOKIE = "hepaudit_token"
#: a jet cone, so the browser's request for an icon is answered (and logs no error)
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path d="M2 14 L14 3 L14 9 Z" '
           b'fill="#0969da"/></svg>')
#: figures shown on an audit's page, when the report has them, in this order
PAGE_FIGURES = ("roc.png", "ranking_comparison.png", "sanity_curves.png", "dauc_importance.png",
                "shap_importance.png", "lrp_importance.png", "ood_ae_scores.png", "calibration_reliability.png")


def _secret(home: Path) -> bytes:
    path = home / "secret"
    if not path.exists():
        path.write_bytes(secrets.token_bytes(32))
        path.chmod(0o600)
    return path.read_bytes()


def add_ui(app: FastAPI, settings: Any, sessions: Any) -> None:
    """The UI's routes on ``app``."""
    from hepaudit.service.app import ApiError, _read_upload, create_audit, diff_of, register_model, request_cancel

    env = jinja2.Environment(loader=jinja2.PackageLoader("hepaudit.service", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt
    secret = _secret(settings.home)

    def signed_in(request: Request) -> User | None:
        with sessions() as session:
            return user_for(session, request.cookies.get(COOKIE))

    def csrf_for(request: Request) -> str:
        return hmac.new(secret, (request.cookies.get(COOKIE) or "").encode(), hashlib.sha256).hexdigest()

    async def checked_form(request: Request) -> dict[str, Any]:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf_for(request)):
            raise ApiError(403, "the form's CSRF field does not match this session: reload the page")
        return dict(form)

    def page(request: Request, name: str, user: User | None, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(user=user, csrf=csrf_for(request), version=__version__, **context)
        return HTMLResponse(html, status_code=status, headers={
            "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                       "frame-src 'self'; form-action 'self'; frame-ancestors 'self'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    def need_user(request: Request) -> User:
        user = signed_in(request)
        if user is None:
            raise _SignIn()
        return user

    @app.exception_handler(_SignIn)
    async def _to_sign_in(_request: Request, _exc: _SignIn) -> Response:
        return RedirectResponse("/", status_code=303)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        if signed_in(request) is not None:
            return RedirectResponse("/models", status_code=303)
        return page(request, "signin.html.j2", None, error=None)

    @app.post("/signin")
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token", "")).strip()
        with sessions() as session:
            user = user_for(session, token)
        if user is None:
            return page(request, "signin.html.j2", None, status=401, error="unknown token")
        response = RedirectResponse("/models", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @app.post("/signout")
    async def sign_out(request: Request) -> Response:
        await checked_form(request)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> Response:
        user = need_user(request)
        with sessions() as session:
            query = select(Model).order_by(Model.group_name, Model.name, Model.id)
            if not user.admin:
                query = query.where(Model.group_name == user.group_name)
            rows = session.execute(query).scalars().all()
            counts = dict(session.execute(select(Audit.model_id, func.count()).group_by(Audit.model_id)).all())
            latest = {m.id: session.execute(select(Audit).where(Audit.model_id == m.id).order_by(Audit.id.desc())
                                            .limit(1)).scalar_one_or_none() for m in rows}
        groups: dict[str, list[dict[str, Any]]] = {}
        for m in rows:
            groups.setdefault(m.group_name, []).append({"model": m, "audits": counts.get(m.id, 0),
                                                        "latest": latest.get(m.id)})
        return page(request, "models.html.j2", user, groups=groups)

    @app.post("/models")
    async def upload(request: Request) -> Response:
        user = need_user(request)
        fields, path = await _read_upload(request, settings)
        if not hmac.compare_digest(fields.get("csrf", ""), csrf_for(request)):
            Path(path).unlink(missing_ok=True)
            raise ApiError(403, "the form's CSRF field does not match this session: reload the page")
        model = register_model(settings, sessions, user, {**fields, "group": ""}, path)
        return RedirectResponse(f"/models/{model.id}", status_code=303)

    def model_view(request: Request, user: User, model_id: int, status: int = 200, error: str | None = None,
                   config: str = "") -> HTMLResponse:
        with sessions() as session:
            model = app.state.visible_model(session, user, model_id)
            audits = session.execute(select(Audit).where(Audit.model_id == model_id).order_by(Audit.id.desc())
                                     ).scalars().all()
        return page(request, "model.html.j2", user, status=status, model=model, audits=audits,
                    roots=settings.data_roots, error=error, config=config)

    @app.get("/models/{model_id}", response_class=HTMLResponse)
    def model_page(model_id: int, request: Request) -> Response:
        return model_view(request, need_user(request), model_id)

    @app.post("/models/{model_id}/audits")
    async def submit(model_id: int, request: Request) -> Response:
        user = need_user(request)
        form = await checked_form(request)
        explainers = [e.strip() for e in str(form.get("explainers", "")).split(",") if e.strip()] or None
        try:
            audit = create_audit(settings, sessions, user, {"model": model_id, "config": str(form.get("config", "")),
                                                            "explainers": explainers})
        except ApiError as exc:
            if exc.status != 400:
                raise
            return model_view(request, user, model_id, 400, exc.message, str(form.get("config", "")))
        return RedirectResponse(f"/audits/{audit.id}", status_code=303)

    @app.get("/audits/{audit_id}", response_class=HTMLResponse)
    def audit_page(audit_id: int, request: Request) -> Response:
        user = need_user(request)
        with sessions() as session:
            audit = app.state.visible_audit(session, user, audit_id)
            model = session.get(Model, audit.model_id)
        findings: list[dict[str, Any]] = []
        figures: list[str] = []
        folder = report_dir(settings.home, audit_id)
        if audit.status == "done" and (folder / "report.json").is_file():
            findings = json.loads((folder / "report.json").read_text()).get("findings", [])
            figures = [f for f in PAGE_FIGURES if (folder / "figures" / f).is_file()]
        return page(request, "audit.html.j2", user, audit=audit, model=model, findings=findings, figures=figures,
                    running=audit.status not in FINAL)

    @app.post("/audits/{audit_id}/cancel")
    async def cancel(audit_id: int, request: Request) -> Response:
        user = need_user(request)
        await checked_form(request)
        with sessions() as session:
            audit = app.state.visible_audit(session, user, audit_id)
            if audit.status not in FINAL:
                request_cancel(session, audit)
        return RedirectResponse(f"/audits/{audit_id}", status_code=303)

    @app.get("/audits/{audit_id}/report")
    def report(audit_id: int, request: Request) -> Response:
        user = need_user(request)
        with sessions() as session:
            audit = app.state.visible_audit(session, user, audit_id)
        path = report_dir(settings.home, audit_id) / "report.html"
        if audit.status != "done" or not path.is_file():
            raise ApiError(404, f"audit {audit_id} has no report (status {audit.status})")
        return FileResponse(path, media_type="text/html; charset=utf-8")

    @app.get("/audits/{audit_id}/figures/{name}")
    def figure(audit_id: int, name: str, request: Request) -> Response:
        user = need_user(request)
        with sessions() as session:
            app.state.visible_audit(session, user, audit_id)
        if name not in PAGE_FIGURES:
            raise ApiError(404, f"no figure {name!r}")
        path = report_dir(settings.home, audit_id) / "figures" / name
        if not path.is_file():
            raise ApiError(404, f"no figure {name!r}")
        return FileResponse(path, media_type="image/png")

    @app.get("/models/{model_id}/trend.png")
    def trend(model_id: int, request: Request) -> Response:
        user = need_user(request)
        with sessions() as session:
            model = app.state.visible_model(session, user, model_id)
            versions = session.execute(select(Model).where(Model.name == model.name,
                                                           Model.group_name == model.group_name)
                                       .order_by(Model.id)).scalars().all()
            points = [(m.version, a.id, a.auc, a.auc_low, a.auc_high) for m in versions
                      for a in session.execute(select(Audit).where(Audit.model_id == m.id, Audit.status == "done",
                                                                   Audit.auc.is_not(None)).order_by(Audit.id)
                                               ).scalars()]
        png = auc_trend(model.name, points)
        if png is None:
            raise ApiError(404, "no finished audit with an AUC yet")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/diff", response_class=HTMLResponse)
    def diff_page(request: Request, a: int, b: int) -> Response:
        from hepaudit.diff.page import render_diff_html

        user = need_user(request)
        with sessions() as session:
            model_id = app.state.visible_audit(session, user, a).model_id
        return HTMLResponse(render_diff_html(diff_of(settings, sessions, user, a, b), back=f"/models/{model_id}"))

    _ = may_see  # the UI reaches rows only through the app's visible_* helpers


def auc_trend(name: str, points: list[tuple[str, int, float, float | None, float | None]]) -> bytes | None:
    """The AUC of every finished audit of a model's versions, in upload order, with its 95 % interval."""
    if not points:
        return None
    from hepaudit.plotting import png, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    x = list(range(len(points)))
    auc = [p[2] for p in points]
    low = [p[2] - (p[3] if p[3] is not None else p[2]) for p in points]
    high = [(p[4] if p[4] is not None else p[2]) - p[2] for p in points]
    ax.errorbar(x, auc, yerr=[low, high], fmt="o", color="#0969da", capsize=3)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{p[0]}\n#{p[1]}" for p in points], fontsize=8)
    ax.set_ylabel("AUC (95 % interval)")
    ax.set_title(f"{name}: AUC of each finished audit, by version", fontsize=10)
    ax.grid(alpha=0.3)
    return bytes(png(fig))


class _SignIn(Exception):
    """Raised by a page that needs a signed-in user: redirects to the sign-in page."""
