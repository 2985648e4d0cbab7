"""A small client of the service's JSON API (``hepaudit submit``), on the standard library only."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class ServiceError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Client:
    def __init__(self, server: str, token: str, timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.server + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                message = json.loads(payload).get("error", payload.decode(errors="replace"))
            except ValueError:
                message = payload.decode(errors="replace")[:300]
            raise ServiceError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise ServiceError(0, f"cannot reach {self.server}: {exc.reason}") from None

    def get(self, path: str) -> Any:
        return json.loads(self._request("GET", path)[1])

    def download(self, path: str, target: Path) -> None:
        target.write_bytes(self._request("GET", path)[1])

    def post_json(self, path: str, doc: Any) -> Any:
        return json.loads(self._request("POST", path, json.dumps(doc).encode(), "application/json")[1])

    def delete(self, path: str) -> Any:
        return json.loads(self._request("DELETE", path)[1])

    def upload_model(self, path: Path, name: str, version: str, group: str | None) -> Any:
        boundary = "hepaudit-" + secrets.token_hex(12)
        parts: list[bytes] = []
        for key, value in (("name", name), ("version", version), ("group", group or "")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode())
        body = b"".join(parts) + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return json.loads(self._request("POST", "/api/models", body, f"multipart/form-data; boundary={boundary}")[1])
