"""The agentrun stack on a local cluster: CRDs, tool RBAC, tools, and the operator process.

Shared by the integration tests and the demo, so both exercise exactly the same set-up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CREDENTIALS_NAMESPACE = "agentrun-system"  # where the test operator reads opted-in Secrets
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    """Polls until check() returns something truthy; fails naming what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("agentruns", "agents", "agenttools", "mcpservers"):
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{crd}.agentrun.dev", "--timeout=30s"
        )
    cluster.kubectl("apply", "-f", str(ROOT / "tools" / "rbac.yaml"))


def tool_manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "tools").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "AgentTool"]
    return docs


def namespace_manifests(namespace: str) -> list[dict[str, Any]]:
    """The namespace with its tool ServiceAccounts, their RoleBindings, and the tool catalog."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    ]
    for role in ("read", "write"):
        sa = f"agentrun-tool-{role}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": namespace},
            }
        )
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": sa, "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": sa,
                },
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
            }
        )
    for tool in tool_manifests():
        docs.append({**tool, "metadata": {**tool["metadata"], "namespace": namespace}})
    return docs


def apply(cluster: LocalCluster, docs: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def prepare_namespace(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace_manifests(namespace))
    wait_for(lambda: _has_token(cluster, namespace), 30, f"ServiceAccount tokens in {namespace}")


def _has_token(cluster: LocalCluster, namespace: str) -> bool:
    out = cluster.kubectl("get", "sa", "-n", namespace, "-o", "json").stdout
    items = json.loads(out)["items"]
    names = {i["metadata"]["name"] for i in items}
    return {"default", "agentrun-tool-read", "agentrun-tool-write"} <= names


def credential_secret(
    cluster: LocalCluster,
    name: str,
    data: dict[str, str],
    namespace: str = CREDENTIALS_NAMESPACE,
    labelled: bool = True,
) -> None:
    """A Secret as an admin provides a model key or webhook URL: in the credentials namespace
    (created if missing), labelled agentrun.dev/credentials=true to opt in."""
    if namespace == CREDENTIALS_NAMESPACE:
        apply(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    labels = {"agentrun.dev/credentials": "true"} if labelled else {}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": data,
    }
    apply(cluster, [secret])


def agent_manifest(
    name: str,
    namespace: str,
    model: str,
    base_url: str | None,
    tools: list[str],
    api_key_secret: str | None = None,
    limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec_model: dict[str, Any] = {"name": model, "timeoutSeconds": 30, "maxRetries": 2}
    if base_url:
        spec_model["baseURL"] = base_url
    if api_key_secret:
        spec_model["apiKeySecretRef"] = {"name": api_key_secret, "key": "api-key"}
    spec: dict[str, Any] = {"model": spec_model, "prompt": {"name": "sre-agent"}, "tools": tools}
    if limits:
        spec["limits"] = limits
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def run_manifest(name: str, namespace: str, agent: str, task: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"agentRef": agent, "input": {"task": task}, **spec},
    }


def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


class OperatorProcess:
    """agentrun-operator as a local process, as a user runs it against a kubeconfig."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        namespaces: list[str] | None = None,
        args: list[str] | None = None,
    ):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.namespaces = namespaces or []
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0

    def start(self, timeout: float = 30) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "AGENTRUN_PROMPTS_DIR": str(ROOT / "prompts"),
            "PYTHONUNBUFFERED": "1",
            # The admin policy of a local test stack: the scripted model and notification
            # receivers listen on loopback ports; credentials live in agentrun-system.
            "AGENTRUN_ALLOWED_MODEL_URLS": "http://127.0.0.1:*",
            "AGENTRUN_ALLOWED_NOTIFY_URLS": "http://127.0.0.1:*",
            "AGENTRUN_ALLOWED_MCP_URLS": "http://127.0.0.1:*",
            "AGENTRUN_CREDENTIALS_NAMESPACE": CREDENTIALS_NAMESPACE,
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "agentrun-operator"),
                "--liveness",
                f"http://127.0.0.1:{self.port}/healthz",
                "--metrics",
                f"127.0.0.1:{self.metrics_port}",
                *[arg for ns in self.namespaces for arg in ("-n", ns)],
                *self.args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._healthy, timeout, f"the operator's health endpoint (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
