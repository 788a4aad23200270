"""A real Prometheus and Alertmanager on loopback (Debian packages), and the receiver in a thread.

Installed by tests/setup/prometheus.sh (idempotent). Both run as plain local processes with
their own state directories; Alertmanager's cluster gossip is off so nothing binds 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.request
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import yaml

from tests.support.stack import ROOT, free_port, wait_for

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


def ensure_installed() -> None:
    if shutil.which(PROMETHEUS) and shutil.which(ALERTMANAGER):
        return
    subprocess.run(["bash", str(ROOT / "tests" / "setup" / "prometheus.sh")], check=True)


def _get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except OSError:
        return 0, b""


class _Process:
    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, argv: list[str], timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        wait_for(self._ready, timeout, f"{self.name} to be ready (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
        return _get(f"{self.url}/-/ready")[0] == 200

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Alertmanager(_Process):
    name = "alertmanager"

    def start(self, webhook_url: str, token: str, repeat: str = "2s") -> None:
        config = {
            "route": {
                "receiver": "agentrun",
                "group_by": ["alertname", "namespace"],
                "group_wait": "1s",
                "group_interval": "2s",
                "repeat_interval": repeat,
            },
            "receivers": [
                {
                    "name": "agentrun",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {"authorization": {"credentials": token}},
                        }
                    ],
                }
            ],
        }
        path = self.workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config))
        self._start(
            [
                ALERTMANAGER,
                f"--config.file={path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ]
        )

    def alerts(self) -> list[dict[str, Any]]:
        status, body = _get(f"{self.url}/api/v2/alerts")
        return list(json.loads(body)) if status == 200 else []


class Prometheus(_Process):
    name = "prometheus"

    def start(self, alertmanager_url: str, rules: list[dict[str, Any]]) -> None:
        self.rules_path = self.workdir / "rules.yml"
        self.write_rules(rules)
        config = {
            "global": {"evaluation_interval": "1s", "scrape_interval": "15s"},
            "rule_files": [str(self.rules_path)],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [alertmanager_url.split("//", 1)[1]]}]}
                ]
            },
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self._start(
            [
                PROMETHEUS,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={self.url}",
                "--web.enable-lifecycle",
                # Without it the first alert goes out before the Alertmanager is discovered
                # and the next waits a minute.
                "--rules.alert.resend-delay=2s",
            ]
        )

    def write_rules(self, rules: list[dict[str, Any]]) -> None:
        doc = {"groups": [{"name": "agentrun-test", "interval": "1s", "rules": rules}]}
        self.rules_path.write_text(yaml.safe_dump(doc))

    def reload(self) -> None:
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def firing(self) -> list[dict[str, Any]]:
        status, body = _get(f"{self.url}/api/v1/alerts")
        if status != 200:
            return []
        alerts = json.loads(body)["data"]["alerts"]
        return [a for a in alerts if a.get("state") == "firing"]


class ReceiverThread:
    """agentrun.receiver.server.serve in a thread with its own loop, on a free loopback port."""

    def __init__(self, config: dict[str, Any], kubeconfig: Path, as_user: str = "") -> None:
        from kubernetes import config as k8s_config

        from agentrun.receiver import routing

        self.config = routing.load_config({**config, "listen": "127.0.0.1:0"})
        self.api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        if as_user:
            # The apiserver authenticates the admin and then authorizes (RBAC, webhooks) as
            # this user, e.g. the receiver's ServiceAccount, as if it held its token.
            self.api.set_default_header("Impersonate-User", as_user)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: Any = None
        self.port = 0

    def start(self) -> None:
        from agentrun.receiver import server as receiver

        self.thread.start()
        future: Future[Any] = asyncio.run_coroutine_threadsafe(
            receiver.serve(self.config, self.api), self.loop
        )
        self.runner = future.result(15)
        self.port = receiver.bound_port(self.runner)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> int:
        from agentrun.receiver import server as receiver

        return receiver.receiver_of(self.runner).metrics.get(name, **labels)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.api.close()
