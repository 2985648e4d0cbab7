"""The service under load on loopback: page latencies while audits run, and audit throughput.

Target (issue 21): tens of concurrent clients browsing while two audits run; report the p50,
p95 and p99 latency of the list and report pages, and the audit throughput compared with the
same audits run by the CLI one after another (a ratio, in one run).

What runs: ``hepaudit serve`` in a subprocess (SQLite in a temporary home, a local Dask
cluster of ``--workers`` processes, ``--max-running 2``) with the bundled TopoDNN and its 5000
example jets as the data root. A warm-up audit gives a finished report to browse. Then
``--audits`` audits are submitted at once while ``--clients`` threads each loop over: the
models page (UI), the audit list (API), an audit's page (UI), the finished report.html (API).
Latencies are collected until every audit is done. The baseline is the CLI running the same
config ``--audits`` times one after another.

    python benchmarks/bench_service.py [--clients 30] [--audits 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLE_MODEL, EXAMPLE_SAMPLE, machine  # noqa: E402

CONFIG = """[model]
path = "model.onnx"
[data]
files = ["{file}"]
tree = "jets"
label = "is_signal"
[[inputs]]
name = "x"
kind = "constituents"
momentum = {{ px = "part_px", py = "part_py", pz = "part_pz", energy = "part_energy" }}
features = ["pt", "eta", "phi"]
max_particles = 30
preprocess = "topodnn"
[explainers.dauc]
[explainers.mad]
[execution]
progress = false
"""


def call(port: int, method: str, path: str, token: str, body: bytes | None = None,
         content_type: str | None = None, cookie: bool = False) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Cookie": f"hepaudit_token={token}"} if cookie else {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def percentiles(values: list[float]) -> str:
    if not values:
        return "no requests"
    ordered = sorted(values)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"p50 {at(0.50):7.1f} ms  p95 {at(0.95):7.1f} ms  p99 {at(0.99):7.1f} ms  ({len(values)} requests)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--audits", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()} | load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "data"
        data.mkdir()
        shutil.copy(EXAMPLE_SAMPLE, data / EXAMPLE_SAMPLE.name)
        home = folder / "home"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        token = subprocess.run([sys.executable, "-m", "hepaudit", "serve", "--home", str(home), "token", "create",
                                "--user", "bench", "--group", "bench"], capture_output=True, text=True,
                               check=True).stdout.strip()
        server = subprocess.Popen([sys.executable, "-m", "hepaudit", "serve", "--home", str(home), "--port", str(port),
                                   "--data-root", str(data), "--workers", str(args.workers), "--max-running", "2"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(200):
                try:
                    if call(port, "GET", "/api/health", token)[0] == 200:
                        break
                except OSError:
                    time.sleep(0.3)
            boundary = "benchboundary"
            body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                            for k, v in (("name", "topodnn"), ("version", "v1")))
            body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'.encode()
                     + EXAMPLE_MODEL.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
            status, payload = call(port, "POST", "/api/models", token, body,
                                   f"multipart/form-data; boundary={boundary}")
            model_id = json.loads(payload)["id"]
            config = CONFIG.format(file=EXAMPLE_SAMPLE.name)

            def submit() -> int:
                doc = json.dumps({"model": model_id, "config": config}).encode()
                return int(json.loads(call(port, "POST", "/api/audits", token, doc, "application/json")[1])["id"])

            def wait(ids: list[int]) -> None:
                while True:
                    states = [json.loads(call(port, "GET", f"/api/audits/{i}", token)[1])["status"] for i in ids]
                    if all(s in ("done", "failed", "cancelled") for s in states):
                        assert all(s == "done" for s in states), states
                        return
                    time.sleep(0.2)

            warm = submit()
            wait([warm])
            pages = {"models page (UI)": ("/models", True), "audit list (API)": ("/api/audits", False),
                     "audit page (UI)": (f"/audits/{warm}", True),
                     "report.html (API)": (f"/api/audits/{warm}/report.html", False)}
            latencies: dict[str, list[float]] = {k: [] for k in pages}
            errors: list[str] = []
            stop = threading.Event()

            def browse() -> None:
                while not stop.is_set():
                    for name, (path, cookie) in pages.items():
                        t0 = time.perf_counter()
                        try:
                            status, _ = call(port, "GET", path, token, cookie=cookie)
                        except OSError as exc:
                            errors.append(repr(exc))
                            continue
                        if status != 200:
                            errors.append(f"{path}: {status}")
                        latencies[name].append(time.perf_counter() - t0)

            threads = [threading.Thread(target=browse, daemon=True) for _ in range(args.clients)]
            t0 = time.perf_counter()
            ids = [submit() for _ in range(args.audits)]
            for thread in threads:
                thread.start()
            wait(ids)
            service_s = time.perf_counter() - t0
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        (data / "model.onnx").write_bytes(EXAMPLE_MODEL.read_bytes())
        (data / "cli.toml").write_text(config)
        t0 = time.perf_counter()
        for k in range(args.audits):
            subprocess.run([sys.executable, "-m", "hepaudit", "audit", str(data / "cli.toml"), "--out",
                            str(folder / f"cli{k}"), "-q"], check=True)
        cli_s = time.perf_counter() - t0
    print(f"{args.clients} clients browsing while {args.audits} audits run (dauc + mad, TopoDNN, 5000 jets each), "
          f"{args.workers} Dask workers")
    for name, values in latencies.items():
        print(f"  {name:<20} {percentiles(values)}")
    print(f"  errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"audits through the service (submit → all done, under load): {service_s:.1f} s")
    print(f"the same audits by the CLI one after another:             {cli_s:.1f} s")
    print(f"throughput ratio (CLI time / service time):                {cli_s / service_s:.2f}")


if __name__ == "__main__":
    main()
