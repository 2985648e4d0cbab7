"""The audit service with real parts (quality.md "The service"): ``hepaudit serve`` in a
subprocess on 127.0.0.1, a SQLite file, a local Dask cluster, real multipart uploads."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the service needs pip install \".[service]\"")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

sys.path.insert(0, str(Path(__file__).parent))
from service_helpers import (  # noqa: E402
    Service,
    api,
    audit_config,
    free_port,
    hepaudit,
    make_data,
    request,
    upload,
    wait_for,
)

CONFIG = audit_config(["jets.root"], {"dauc": {}, "mad": {}})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("service")
    model = make_data(folder / "data")
    svc = Service(folder / "home", folder / "data", free_port(), extra=["--max-upload-mb", "1"])
    tokens = {"alice": svc.token("alice", "top"), "bob": svc.token("bob", "higgs"),
              "root": svc.token("root", "ops", admin=True)}
    svc.start()
    status, doc = upload(svc.url, tokens["alice"], model, "mlp", "v1")
    assert status == 201, doc
    yield svc, tokens, model, doc
    svc.stop()


def test_health_needs_no_token_and_everything_else_does(service: Any) -> None:
    svc, tokens, _, _ = service
    status, doc = api(svc.url, "GET", "/api/health", None)
    assert status == 200 and doc["status"] == "ok"
    assert api(svc.url, "GET", "/api/models", None)[0] == 401
    assert api(svc.url, "GET", "/api/models", "hpa_not-a-token")[0] == 401
    status, doc = api(svc.url, "GET", "/api/models", tokens["alice"])
    assert status == 200 and [m["name"] for m in doc] == ["mlp"]


def test_uploads_duplicates_bad_files_and_size(service: Any, tmp_path: Path) -> None:
    svc, tokens, model, registered = service
    status, doc = upload(svc.url, tokens["alice"], model, "mlp", "v1")
    assert status == 409 and "already registered" in doc["error"]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    status, doc = upload(svc.url, tokens["alice"], junk, "junk", "v1")
    assert status == 400 and "not an ONNX model" in doc["error"] and str(tmp_path) not in doc["error"]
    status, doc = upload(svc.url, tokens["alice"], model, "big", "v1", data=b"\0" * (2 * 1024 * 1024))
    assert status == 413, doc
    assert list((svc.home / "uploads").iterdir()) == []  # nothing half-written is left behind
    assert registered["sha256"] and (svc.home / "models" / f"{registered['sha256']}.onnx").is_file()


def test_another_groups_token_gets_404(service: Any) -> None:
    svc, tokens, _, registered = service
    model_id = registered["id"]
    assert api(svc.url, "GET", f"/api/models/{model_id}", tokens["bob"])[0] == 404
    assert api(svc.url, "GET", "/api/models", tokens["bob"])[1] == []
    status, doc = api(svc.url, "POST", "/api/audits", tokens["bob"], {"model": model_id, "config": CONFIG})
    assert status == 404
    status, doc = api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": model_id, "config": CONFIG})
    assert status == 202
    audit_id = doc["id"]
    for path in (f"/api/audits/{audit_id}", f"/api/audits/{audit_id}/report.json"):
        assert api(svc.url, "GET", path, tokens["bob"])[0] == 404
    assert api(svc.url, "DELETE", f"/api/audits/{audit_id}", tokens["bob"])[0] == 404
    assert api(svc.url, "GET", f"/api/audits/{audit_id}", tokens["root"])[0] == 200  # admins see every group
    wait_for(svc.url, tokens["alice"], audit_id)


@pytest.mark.parametrize("files", [["/etc/passwd.root"], ["../model.onnx"], ["../*.root"], ["/tmp/*.root"],
                                   ["/etc/passwd"]])
def test_config_outside_the_data_roots_is_400(service: Any, files: list[str]) -> None:
    svc, tokens, _, registered = service
    status, doc = api(svc.url, "POST", "/api/audits", tokens["alice"],
                      {"model": registered["id"], "config": audit_config(files, {"dauc": {}})})
    assert status == 400 and "not inside the service's data roots" in doc["error"]


@pytest.mark.parametrize("table", ['[explainers.ood_ae.reference]\nfiles = ["/etc/passwd"]\ntree = "jets"\n',
                                   '[explainers.ood_ensemble]\nmembers = ["/etc/hostname"]\n',
                                   '[reference]\nfiles = ["../../outside"]\ntree = "jets"\n'])
def test_every_file_a_config_names_is_confined(service: Any, table: str) -> None:
    svc, tokens, _, registered = service
    config = audit_config(["jets.root"], {"dauc": {}}) + table
    status, doc = api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": registered["id"], "config": config})
    assert status == 400 and "not inside the service's data roots" in doc["error"], doc


def test_bad_config_is_400_with_the_reason(service: Any) -> None:
    svc, tokens, _, registered = service
    status, doc = api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": registered["id"], "config": "[[["})
    assert status == 400 and "not valid TOML" in doc["error"]
    status, doc = api(svc.url, "POST", "/api/audits", tokens["alice"],
                      {"model": registered["id"], "config": CONFIG.replace("[data]", "[data]\nbogus = 1")})
    assert status == 400 and "bogus" in doc["error"]


def test_api_and_cli_give_identical_numbers(service: Any, tmp_path: Path) -> None:
    svc, tokens, model, registered = service
    status, doc = api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": registered["id"], "config": CONFIG})
    assert status == 202 and doc["status"] == "queued"
    state = wait_for(svc.url, tokens["alice"], doc["id"])
    assert state["status"] == "done", state
    assert state["progress"] == 1.0 and state["started"] and state["finished"]
    status, body, _ = request(svc.url, "GET", f"/api/audits/{doc['id']}/report.json", tokens["alice"])
    served = json.loads(body)
    local = tmp_path / "local.toml"
    local.write_text(audit_config([str(svc.data_root / "jets.root")], {"dauc": {}, "mad": {}}, str(model)))
    done = hepaudit("audit", str(local), "--out", str(tmp_path / "cli"), "-q")
    assert done.returncode == 0, done.stderr
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    for name in ("dauc", "mad"):
        assert served["explainers"][name]["feature_importance"] == cli["explainers"][name]["feature_importance"]
    assert served["explainers"]["dauc"]["baseline_auc"] == cli["explainers"]["dauc"]["baseline_auc"]
    assert served["findings"] == cli["findings"]
    assert served["model"]["sha256"] == cli["model"]["sha256"]
    final = api(svc.url, "GET", f"/api/audits/{doc['id']}", tokens["alice"])[1]
    assert final["auc"] == served["sections"]["performance"]["auc"]
    assert final["auc_ci95"] == served["sections"]["performance"]["auc_ci95"]
    assert final["gates_passed"] is None  # the config has no gates


def test_cancelling_a_queued_and_a_running_audit(service: Any) -> None:
    svc, tokens, _, registered = service
    slow = audit_config(["many.root"], {"dauc": {}, "mad": {}, "lrp": {}}, step_size=500)
    ids = [api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": registered["id"], "config": slow})[1]["id"]
           for _ in range(3)]
    running = wait_for(svc.url, tokens["alice"], ids[0], ("running",), timeout=60)
    assert running["status"] == "running"
    status, doc = api(svc.url, "DELETE", f"/api/audits/{ids[2]}", tokens["alice"])
    assert status == 200
    assert wait_for(svc.url, tokens["alice"], ids[2])["status"] == "cancelled"
    for audit_id in ids[:2]:
        api(svc.url, "DELETE", f"/api/audits/{audit_id}", tokens["alice"])
    for audit_id in ids[:2]:
        end = wait_for(svc.url, tokens["alice"], audit_id, timeout=120)
        assert end["status"] == "cancelled", end
    assert api(svc.url, "DELETE", f"/api/audits/{ids[0]}", tokens["alice"])[0] == 409
    assert not (svc.home / "reports" / str(ids[0])).exists()


def test_diff_of_two_finished_audits(service: Any) -> None:
    svc, tokens, _, registered = service
    ids = [api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": registered["id"], "config": CONFIG})[1]["id"]
           for _ in range(2)]
    for audit_id in ids:
        assert wait_for(svc.url, tokens["alice"], audit_id)["status"] == "done"
    status, doc = api(svc.url, "GET", f"/api/diff?a={ids[0]}&b={ids[1]}", tokens["alice"])
    assert status == 200 and doc["changed"] is False and doc["baseline_auc"]["delta"] == 0.0
    assert api(svc.url, "GET", f"/api/diff?a={ids[0]}&b={ids[1]}", tokens["bob"])[0] == 404


def test_submit_uploads_follows_and_downloads(service: Any, tmp_path: Path) -> None:
    svc, tokens, model, _ = service
    config = tmp_path / "ci.toml"
    config.write_text(audit_config(["jets.root"], {"dauc": {}}, str(model)))
    done = hepaudit("submit", str(config), "--server", svc.url, "--token", tokens["alice"], "--wait",
                    "--out", str(tmp_path / "dl"), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "is registered" in done.stderr  # the same sha256 is not uploaded twice
    assert json.loads((tmp_path / "dl" / "report.json").read_text())["explainers"]["dauc"]["status"] == "ok"
    gated = tmp_path / "gated.toml"
    gated.write_text(audit_config(["jets.root"], {"dauc": {}}, str(model))
                     + '[gates]\n"dauc.baseline_auc" = {min = 0.99}\n')
    done = hepaudit("submit", str(gated), "--server", svc.url, "--token", tokens["alice"], "--wait", timeout=300)
    assert done.returncode == 1 and "gate failed" in done.stderr
    done = hepaudit("submit", str(gated), "--server", svc.url, "--token", "hpa_wrong", "--wait")
    assert done.returncode == 2 and "unknown token" in done.stderr


def test_ui_signs_in_escapes_and_checks_csrf(service: Any, tmp_path: Path) -> None:
    svc, tokens, model, _ = service
    status, doc = upload(svc.url, tokens["alice"], model, "<script>alert(1)</script>", "v9")
    assert status == 201
    status, body, _ = request(svc.url, "GET", "/")
    assert status == 200 and b'name="token"' in body
    status, body, headers = request(svc.url, "POST", "/signin", body=f"token={tokens['alice']}".encode(),
                                    content_type="application/x-www-form-urlencoded")
    assert status == 303 and "hepaudit_token=" in headers.get("set-cookie", "")
    assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
    cookie = f"hepaudit_token={tokens['alice']}"
    status, body, _ = request(svc.url, "GET", "/models", cookie=cookie)
    page = body.decode()
    assert status == 200 and "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    status, body, _ = request(svc.url, "POST", "/signout", body=b"csrf=forged", cookie=cookie,
                              content_type="application/x-www-form-urlencoded")
    assert status == 403
    status, _, _ = request(svc.url, "GET", "/models", cookie="hepaudit_token=hpa_wrong")
    assert status == 303  # back to the sign-in page
    import re
    from urllib.parse import urlencode

    status, body, _ = request(svc.url, "GET", "/models/1", cookie=cookie)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', body.decode()).group(1)  # type: ignore[union-attr]
    form = urlencode({"csrf": csrf, "config": '[model]\npath = "x"\n[data]\nfiles = ["/etc/passwd"]'}).encode()
    status, body, _ = request(svc.url, "POST", "/models/1/audits", body=form, cookie=cookie,
                              content_type="application/x-www-form-urlencoded")
    assert status == 400 and "not inside the service&#39;s data roots" in body.decode()  # shown on the form, escaped
    audit_id = api(svc.url, "POST", "/api/audits", tokens["alice"], {"model": 1, "config": CONFIG})[1]["id"]
    assert wait_for(svc.url, tokens["alice"], audit_id)["status"] == "done"
    status, body, headers = request(svc.url, "GET", "/models/1/trend.png", cookie=cookie)
    assert status == 200 and headers["content-type"] == "image/png" and body[:4] == b"\x89PNG"
    carol = svc.token("carol", "top")
    assert api(svc.url, "GET", "/api/models", carol)[0] == 200
    done = hepaudit("serve", "--home", str(svc.home), "token", "revoke", "--user", "carol")
    assert done.returncode == 0 and "removed 1" in done.stdout
    assert api(svc.url, "GET", "/api/models", carol)[0] == 401


@pytest.mark.slow
def test_sigkill_mid_audit_then_restart_ends_the_audit(tmp_path: Path) -> None:
    model = make_data(tmp_path / "data")
    svc = Service(tmp_path / "home", tmp_path / "data", free_port(), extra=["--stale-after", "5"])
    token = svc.token("alice", "top")
    svc.start()
    try:
        registered = upload(svc.url, token, model, "mlp", "v1")[1]
        slow = audit_config(["many.root"], {"dauc": {}, "mad": {}, "lrp": {}}, step_size=500)
        audit_id = api(svc.url, "POST", "/api/audits", token, {"model": registered["id"], "config": slow})[1]["id"]
        wait_for(svc.url, token, audit_id, ("running",), timeout=60)
        time.sleep(1.0)
        svc.kill()
        svc.start()
        end = wait_for(svc.url, token, audit_id, timeout=300)
        assert end["status"] in ("done", "failed"), end
        if end["status"] == "failed":
            assert "stopped" in (end["error"] or "")
        else:
            assert end["attempts"] == 2 and end["error"] is None  # resumed: run again from the start
    finally:
        svc.stop()


@pytest.mark.slow
def test_two_services_on_one_database_never_run_an_audit_twice(tmp_path: Path) -> None:
    model = make_data(tmp_path / "data")
    first = Service(tmp_path / "home", tmp_path / "data", free_port())
    second = Service(tmp_path / "home", tmp_path / "data", free_port())
    token = first.token("alice", "top")
    first.start()
    second.start()
    try:
        registered = upload(first.url, token, model, "mlp", "v1")[1]
        ids = [api(first.url, "POST", "/api/audits", token, {"model": registered["id"], "config": CONFIG})[1]["id"]
               for _ in range(6)]
        ends = [wait_for(second.url, token, audit_id, timeout=300) for audit_id in ids]
        assert all(e["status"] == "done" for e in ends), ends
        assert all(e["attempts"] == 1 for e in ends)  # each claimed once, by one of the two
    finally:
        first.stop()
        second.stop()


def test_an_upload_with_external_data_and_a_client_gone_mid_upload(service: Any, tmp_path: Path) -> None:
    """An uploaded model is checked as the CLI checks one: its external data would have to sit
    beside it, which a lone upload cannot (400). A client that stops mid-body leaves nothing."""
    import socket

    import onnx

    svc, tokens, model, _ = service
    proto = onnx.load(str(model))
    external = tmp_path / "external.onnx"
    onnx.save_model(proto, str(external), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    status, doc = upload(svc.url, tokens["alice"], external, "ext", "v1")
    assert status == 400 and "external data" in doc["error"] and "weights.bin" in doc["error"]
    with socket.create_connection(("127.0.0.1", svc.port)) as raw:
        head = (f"POST /api/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tokens['alice']}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 900000\r\n\r\n"
                '--b\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n')
        raw.sendall(head.encode() + b"\0" * 100_000)
    time.sleep(1.0)
    assert api(svc.url, "GET", "/api/health", None)[0] == 200
    assert list((svc.home / "uploads").iterdir()) == []
    # a chunked upload announces no size: it is counted as it arrives and cut off past the limit
    import http.client

    def chunks():  # type: ignore[no-untyped-def]
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    connection = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
    try:
        try:
            connection.request("POST", "/api/models", body=chunks(), encode_chunked=True,
                               headers={"Authorization": f"Bearer {tokens['alice']}",
                                        "Content-Type": "multipart/form-data; boundary=b"})
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = connection.getresponse()
        assert response.status == 413, response.read()
    finally:
        connection.close()
    assert list((svc.home / "uploads").iterdir()) == []


def still_running(psutil: Any, processes: list[Any], timeout: float) -> list[Any]:
    """Those of ``processes`` still running after up to ``timeout`` s (a zombie, exited but not
    yet reaped by whichever process adopted it, counts as ended)."""
    end = time.monotonic() + timeout
    while True:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_worker_loses_no_audit(tmp_path: Path) -> None:
    """The Dask worker running an audit is killed: Dask runs the task again on a fresh worker,
    and the audit ends done (or failed with the reason), never stuck running."""
    import os
    import signal

    psutil = pytest.importorskip("psutil")
    model = make_data(tmp_path / "data")
    svc = Service(tmp_path / "home", tmp_path / "data", free_port())
    token = svc.token("alice", "top")
    svc.start()
    try:
        registered = upload(svc.url, token, model, "mlp", "v1")[1]
        slow = audit_config(["many.root"], {"dauc": {}, "mad": {}, "lrp": {}}, step_size=500)
        audit_id = api(svc.url, "POST", "/api/audits", token, {"model": registered["id"], "config": slow})[1]["id"]
        wait_for(svc.url, token, audit_id, ("running",), timeout=60)
        time.sleep(1.0)
        assert svc.process is not None
        # the workers are the service's spawned processes; one running an audit may have a
        # child of its own (the report's drawing helper, started when the audit begins)
        spawned = [p for p in psutil.Process(svc.process.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        workers = [p for p in spawned if p.parent() not in spawned]
        assert workers, "no Dask worker process found"
        orphans = [child for worker in workers for child in worker.children(recursive=True)]
        for worker in workers:
            os.kill(worker.pid, signal.SIGKILL)
        end = wait_for(svc.url, token, audit_id, timeout=300)
        assert end["status"] == "done" or (end["status"] == "failed" and end["error"]), end
        # a killed worker's drawing helper reads end-of-file on its pipe and exits
        assert not still_running(psutil, orphans, timeout=30)
    finally:
        svc.stop()


@pytest.mark.slow
def test_audits_run_on_an_existing_dask_scheduler(tmp_path: Path) -> None:
    """--scheduler ADDRESS: the service starts no cluster of its own and submits to the given one."""
    distributed = pytest.importorskip("distributed")
    model = make_data(tmp_path / "data")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        svc = Service(tmp_path / "home", tmp_path / "data", free_port(),
                      extra=["--scheduler", cluster.scheduler_address])
        token = svc.token("alice", "top")
        svc.start(workers=None)
        try:
            registered = upload(svc.url, token, model, "mlp", "v1")[1]
            doc = {"model": registered["id"], "config": CONFIG}
            audit_id = api(svc.url, "POST", "/api/audits", token, doc)[1]["id"]
            assert wait_for(svc.url, token, audit_id)["status"] == "done"
            with distributed.Client(cluster) as client:
                prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
            assert "audit" in prefixes, prefixes  # the audit ran on this cluster's worker
        finally:
            svc.stop()
