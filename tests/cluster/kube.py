"""A small, dependency-free Kubernetes REST client (JSON dicts over HTTPS).

Used by the local node and by the cluster's readiness checks: it starts in milliseconds
(the ``kubernetes`` package takes about a second to import) and streams watches as plain
JSON lines. Thread-safe: each thread keeps its own keep-alive connection.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

JSON = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        try:
            self.message = str(json.loads(body).get("message", body))
        except (ValueError, AttributeError):
            self.message = body
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")


@dataclass
class KubeConfig:
    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    namespace: str = "default"

    @classmethod
    def load(cls, path: Path | str) -> KubeConfig:
        """Load the current context of a kubeconfig (file paths or inline ``*-data``)."""
        path = Path(path)
        doc = yaml.safe_load(path.read_text())
        ctx_name = doc.get("current-context")
        contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
        ctx = contexts[ctx_name] if ctx_name else next(iter(contexts.values()))
        cluster = {c["name"]: c["cluster"] for c in doc["clusters"]}[ctx["cluster"]]
        user = {u["name"]: u["user"] for u in doc.get("users", [])}.get(ctx.get("user"), {})
        base = path.parent

        def file_of(obj: dict[str, Any], key: str) -> str | None:
            if obj.get(f"{key}-data"):
                fd, name = tempfile.mkstemp(prefix="agentrun-kube-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(base64.b64decode(obj[f"{key}-data"]))
                return name
            if obj.get(key):
                return str(base / obj[key])
            return None

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = (base / user["tokenFile"]).read_text().strip()
        return cls(
            server=cluster["server"],
            ca_file=file_of(cluster, "certificate-authority"),
            cert_file=file_of(user, "client-certificate"),
            key_file=file_of(user, "client-key"),
            token=token,
            namespace=ctx.get("namespace", "default"),
        )


class KubeClient:
    def __init__(self, config: KubeConfig, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        url = urllib.parse.urlsplit(config.server)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        ctx = ssl.create_default_context(cafile=config.ca_file)
        if config.cert_file:
            ctx.load_cert_chain(config.cert_file, config.key_file)
        self.ssl = ctx
        self._local = threading.local()

    @classmethod
    def from_kubeconfig(cls, path: Path | str, timeout: float = 30.0) -> KubeClient:
        return cls(KubeConfig.load(path), timeout)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "agentrun-local-node"}
        if self.config.token:
            h["Authorization"] = f"Bearer {self.config.token}"
        if content_type:
            h["Content-Type"] = content_type
        return h

    def _connect(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        data = json.dumps(body).encode() if body is not None else None
        headers = self._headers(content_type if data is not None else None)
        for attempt in (0, 1):
            conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect(self.timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read().decode()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
                continue
            if resp.status >= 400:
                raise ApiError(resp.status, raw, method, path)
            return json.loads(raw) if raw else {}
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> JSON:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: JSON, **params: Any) -> JSON:
        return self.request("POST", path, body, params=params or None)

    def put(self, path: str, body: JSON) -> JSON:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: JSON, kind: str = "merge") -> JSON:
        """PATCH with ``kind`` "merge" (JSON merge patch) or "strategic"."""
        ctype = {"merge": "merge-patch", "strategic": "strategic-merge-patch"}[kind]
        return self.request("PATCH", path, body, content_type=f"application/{ctype}+json")

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", path, body)

    def watch(self, path: str, timeout_seconds: int = 300, **params: Any) -> Iterator[JSON]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends it."""
        params = {
            **params,
            "watch": "true",
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true",
        }
        full = f"{path}?{urllib.parse.urlencode(params)}"
        conn = self._connect(timeout_seconds + 30)
        try:
            conn.request("GET", full, headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(), "WATCH", full)
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
