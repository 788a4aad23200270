"""helm 4.3.1 and kubectl 1.37.1 (tests/setup/helm.sh) and chart rendering for the chart tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agentrun"
FULL_VALUES = Path(__file__).with_name("values-full.yaml")
CR_KINDS = ("AgentRun", "Agent", "AgentTool", "MCPServer")
# kopf's peering objects (replicaCount > 1): custom resources of crds/kopf-peerings.yaml.
PEERING_KINDS = ("KopfPeering", "ClusterKopfPeering")
# Kinds of other projects' CRDs (Prometheus Operator, cert-manager), rendered only when enabled.
EXTERNAL_KINDS = ("ServiceMonitor", "Certificate", "Issuer")


def cache_dir() -> Path:
    return Path(os.environ.get("AGENTRUN_CACHE") or Path.home() / ".cache" / "agentrun") / "tools"


@cache
def tools_dir() -> Path:
    """The cached binaries; fetched once (helm.sh is idempotent and silent when cached)."""
    subprocess.run(["bash", str(ROOT / "tests" / "setup" / "helm.sh")], check=True)
    return cache_dir()


def helm_bin() -> str:
    return str(tools_dir() / "helm")


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": str(cache_dir() / "helm-cache")}
    env["HELM_CONFIG_HOME"] = str(cache_dir() / "helm-config")
    env["HELM_DATA_HOME"] = str(cache_dir() / "helm-data")
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = subprocess.run(
        [helm_bin(), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def value_args(
    full: bool = False, sets: Sequence[str] = (), set_json: Sequence[str] = ()
) -> list[str]:
    args = ["-f", str(FULL_VALUES)] if full else []
    for s in sets:
        args += ["--set", s]
    for s in set_json:
        args += ["--set-json", s]
    return args


def render(
    full: bool = False,
    sets: Sequence[str] = (),
    set_json: Sequence[str] = (),
    release: str = "agentrun",
    namespace: str = "agentrun-system",
) -> list[dict[str, Any]]:
    """`helm template` of the chart; every document, hooks and the Helm test included."""
    out = helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *value_args(full, sets, set_json),
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def source_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
