"""The demo on the Python stand-in node: every pod (the crash-looping workload, each tool Job)
is a local process run with its pod's own ServiceAccount token; the operator and the receiver
are local processes with the admin's kubeconfig. Needs only the control-plane binaries."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import LocalCluster
from tests.modelserver import ScriptedModelServer
from tests.support import stack

from .scenario import (
    AGENT_FILE,
    NS,
    RUNBOOKS,
    SCRIPT,
    SCRIPTED_MODEL,
    Receiver,
    alert_to_run,
    crashing_workload,
    say,
)


def run(workdir: Path, live: bool) -> int:
    started = time.monotonic()
    with LocalCluster(workdir=workdir / "cluster") as cluster:
        ready = time.monotonic()
        say(
            f"Local control plane ready in {ready - started:.1f}s (kubeconfig {cluster.kubeconfig})"
        )
        server = None if live else ScriptedModelServer(scripts={SCRIPTED_MODEL: SCRIPT})
        # A live model's endpoint is allowed as an admin would allow it (the chart value).
        endpoint = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        env = {"AGENTRUN_ALLOWED_MODEL_URLS": endpoint} if live else {}
        operator = stack.OperatorProcess(cluster.kubeconfig, workdir / "operator.log", env=env)
        receiver = Receiver(cluster.kubeconfig, workdir)
        try:
            if server is not None:
                server.start()
            code = _run(cluster, server, operator, receiver)
        finally:
            receiver.stop()
            operator.stop()
            if server is not None:
                server.stop()
        say(f"\n(the workflow took {time.monotonic() - ready:.1f}s after the cluster was up)")
        return code


def _run(
    cluster: LocalCluster,
    server: ScriptedModelServer | None,
    operator: stack.OperatorProcess,
    receiver: Receiver,
) -> int:
    stack.install_crds(cluster)
    stack.apply(cluster, namespace_docs())
    stack.wait_for(lambda: stack._has_token(cluster, NS), 30, f"ServiceAccount tokens in {NS}")
    stack.apply(cluster, [crashing_workload()])
    if server is None:
        # Where an admin keeps model keys: the operator's namespace, opted in by label.
        stack.credential_secret(cluster, "model-api-key", {"api-key": os.environ["OPENAI_API_KEY"]})
    say("\nThe chart's default Agent (charts/agentrun/agents/sre-agent.yaml), its model swapped:")
    say("$ kubectl apply -f charts/agentrun/agents/sre-agent.yaml -n demo")
    stack.apply(cluster, [agent_manifest(server)])
    operator.start()
    receiver.start()
    say(f"Operator (log {operator.log_path}) and agentrun-receiver on {receiver.url} started")
    return alert_to_run(cluster, receiver, operator.log_tail)


def agent_manifest(server: ScriptedModelServer | None) -> dict[str, Any]:
    """The chart's default Agent, as the chart installs it, with the demo's model."""
    agent: dict[str, Any] = yaml.safe_load(AGENT_FILE.read_text())
    agent["metadata"] = {"name": agent["metadata"]["name"], "namespace": NS}
    model: dict[str, Any] = {"timeoutSeconds": 30, "maxRetries": 2}
    if server is not None:
        model |= {"name": SCRIPTED_MODEL, "baseURL": server.base_url}
    else:
        model["name"] = os.environ.get("AGENTRUN_MODEL", "gpt-4o-mini")
        if os.environ.get("OPENAI_BASE_URL"):
            model["baseURL"] = os.environ["OPENAI_BASE_URL"]
        model["apiKeySecretRef"] = {"name": "model-api-key", "key": "api-key"}
    agent["spec"]["model"] = model
    return agent


def namespace_docs() -> list[dict[str, Any]]:
    """The namespace, the tool ServiceAccounts and the catalog, with the runbook tool pointed
    at a runbook tree in the public collection's layout (tests/fixtures/runbooks; what a
    tool-admin sets with the chart value tools.env.runbook), onto which the alert's
    runbook_url is mapped."""
    docs = stack.namespace_manifests(NS)
    for doc in docs:
        if doc["kind"] == "AgentTool" and doc["metadata"]["name"] == "runbook":
            doc["spec"]["env"] = [{"name": "AGENTRUN_RUNBOOKS_DIR", "value": str(RUNBOOKS)}]
    return docs
