"""A real service for the tests: ``hepaudit serve`` in a subprocess on 127.0.0.1, a SQLite file,
a local Dask cluster, and a data root with a trained tagger's jets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from builders import mlp_model, save, toml_dumps, train_mlp, write_features  # noqa: E402

FEATURES = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hepaudit(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hepaudit", *args], capture_output=True, text=True, **kwargs)


def make_data(root: Path, n: int = 3000) -> Path:
    """``root/jets.root`` and a trained ``root/../model.onnx`` (outside the data root); the model."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    labels = (np.arange(n) % 2).astype(np.int32)
    x = (rng.normal(size=(n, FEATURES)) + np.array([1.2, 0.8, 0.4, 0.1]) * labels[:, None]).astype(np.float32)
    write_features(root / "jets.root", x, labels)
    many = 100_000  # for audits that must still be running when the test acts on them
    big_labels = (np.arange(many) % 2).astype(np.int32)
    big = (rng.normal(size=(many, FEATURES)) + np.array([1.2, 0.8, 0.4, 0.1]) * big_labels[:, None])
    write_features(root / "many.root", big.astype(np.float32), big_labels)
    model = root.parent / "model.onnx"
    save(mlp_model(train_mlp(x, labels, [8], seed=2, epochs=150)), model)
    return model


def audit_config(files: list[str], explainers: dict[str, dict[str, Any]], model: str = "model.onnx",
                 step_size: int | None = None) -> str:
    data: dict[str, Any] = {"files": files, "tree": "jets", "label": "is_signal"}
    if step_size:
        data["step_size"] = step_size
    doc = {"model": {"path": model}, "data": data,
           "inputs": [{"name": "x", "kind": "jet", "branches": [f"f{k}" for k in range(FEATURES)]}],
           "execution": {"progress": False}}
    text = toml_dumps(doc)
    for name, options in explainers.items():
        text += toml_dumps({f"explainers.{name}": options})
    return text


@dataclass
class Service:
    home: Path
    data_root: Path
    port: int
    process: subprocess.Popen[str] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0, workers: int | None = 1) -> None:
        """Start the service (``workers=None``: no local cluster, for ``--scheduler`` in ``extra``).

        The port was free when chosen, but the service's own Dask workers start before it binds
        and may take it first: then it is started again on another free port."""
        for _ in range(3):
            try:
                return self._start(timeout, workers)
            except RuntimeError as exc:
                if "address already in use" not in str(exc):
                    raise
                self.port = free_port()
        raise RuntimeError(f"no free port for the service after 3 tries (last {self.port})")

    def _start(self, timeout: float, workers: int | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hepaudit", "serve", "--home", str(self.home), "--port", str(self.port),
             "--data-root", str(self.data_root), *(["--workers", str(workers)] if workers else []), *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {self.process.stdout.read() if self.process.stdout else ''}")
            try:
                if request(self.url, "GET", "/api/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the service did not answer /api/health")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL the service and everything it started (its Dask workers too)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def token(self, user: str, group: str, admin: bool = False) -> str:
        done = hepaudit("serve", "--home", str(self.home), "token", "create", "--user", user, "--group", group,
                        *(["--admin"] if admin else []))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def request(url: str, method: str, path: str, token: str | None = None, body: bytes | None = None,
            content_type: str | None = None, cookie: str | None = None,
            timeout: float = 60.0) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one HTTP request (redirects not followed). A server that answers
    before reading the whole body (413 on an announced size) is heard even though the rest of
    the body then hits a closed socket."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    if cookie:
        headers["Cookie"] = cookie
    try:
        try:
            connection.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def api(url: str, method: str, path: str, token: str | None, doc: Any = None) -> tuple[int, Any]:
    body = None if doc is None else json.dumps(doc).encode()
    status, payload, _ = request(url, method, path, token, body, "application/json" if body else None)
    return status, json.loads(payload) if payload else None


def upload(url: str, token: str, path: Path, name: str, version: str, group: str = "",
           data: bytes | None = None) -> tuple[int, Any]:
    boundary = "testboundary1234"
    parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                     for k, v in (("name", name), ("version", version), ("group", group)))
    parts += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n").encode()
    body = parts + (path.read_bytes() if data is None else data) + f"\r\n--{boundary}--\r\n".encode()
    status, payload, _ = request(url, "POST", "/api/models", token, body, f"multipart/form-data; boundary={boundary}")
    return status, json.loads(payload)


def wait_for(url: str, token: str, audit_id: int, states: tuple[str, ...] = ("done", "failed", "cancelled"),
             timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, doc = api(url, "GET", f"/api/audits/{audit_id}", token)
        assert status == 200, doc
        if doc["status"] in states:
            return dict(doc)
        time.sleep(0.3)
    raise AssertionError(f"audit {audit_id} did not reach {states}: {doc}")
