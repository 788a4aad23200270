"""The incident workflow as shipped: the chart's default Agent, served by the operator, on
alerts shaped like kube-prometheus's, with real prefetch Jobs under the tool accounts.

An alert with a pod label and a runbook_url gets, before the model is asked anything, the
runbook the URL points to (mapped onto a tree in the public collection's layout), the
workload (pod -> ReplicaSet -> Deployment) and the Warning events. An alert with none of
those labels still runs: the prefetch says what it could not resolve, and the run goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.integration.spine import Spine, done
from tests.support import stack

ROOT = Path(__file__).resolve().parents[2]
AGENT_FILE = ROOT / "charts" / "agentrun" / "agents" / "sre-agent.yaml"
RUNBOOKS = ROOT / "tests" / "fixtures" / "runbooks"
RUNBOOK_URL = "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping"


def default_agent(spine: Spine) -> dict[str, Any]:
    agent: dict[str, Any] = yaml.safe_load(AGENT_FILE.read_text())
    agent["metadata"] = {"name": "sre-agent", "namespace": spine.namespace}
    agent["spec"]["model"] = {"name": spine.model, "baseURL": spine.server.base_url}
    return agent


def alert_run(
    spine: Spine, name: str, labels: dict[str, str], **annotations: str
) -> dict[str, Any]:
    run = stack.run_manifest(name, spine.namespace, "sre-agent", f"Alert {labels['alertname']}.")
    alert = {"status": "firing", "labels": labels, "annotations": annotations}
    run["spec"]["input"]["context"] = {"source": "alertmanager", "alert": alert}
    return run


def prefetched(status: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """tool -> (event type, parsed result) of the step-0 results."""
    out: dict[str, tuple[str, Any]] = {}
    for event in status["thread"]:
        if event["step"] == 0 and event["type"] in ("ToolResult", "Error"):
            try:
                value: Any = json.loads(event["content"])
            except ValueError:
                value = event["content"]
            out[event["tool"]] = (event["type"], value)
    return out


def test_the_default_agent_prefetches_from_whatever_labels_the_alert_has(spine: Spine) -> None:
    spine.setup([done("Looked at the prefetched evidence.")])
    tools = [t for t in stack.tool_manifests() if t["metadata"]["name"] == "runbook"]
    runbook = {**tools[0], "metadata": {"name": "runbook", "namespace": spine.namespace}}
    runbook["spec"] = {
        **runbook["spec"],
        "env": [{"name": "AGENTRUN_RUNBOOKS_DIR", "value": str(RUNBOOKS)}],
    }
    stack.apply(spine.cluster, [runbook, default_agent(spine)])
    pod = spine.wait(
        lambda: json.loads(
            spine.cluster.kubectl(
                "get", "pods", "-n", spine.namespace, "-l", "app=web", "-o", "json"
            ).stdout
        )["items"],
        "the web pod",
    )[0]["metadata"]["name"]
    ksm = {"job": "kube-state-metrics", "service": "kube-state-metrics"}
    crashing = {
        "alertname": "KubePodCrashLooping",
        "namespace": spine.namespace,
        "pod": pod,
        "container": "web",
        **ksm,
    }
    stack.apply(
        spine.cluster,
        [
            alert_run(spine, "crash", crashing, runbook_url=RUNBOOK_URL),
            alert_run(spine, "bare", {"alertname": "Watchdog", **ksm}),
        ],
    )

    status = spine.wait_phase("Succeeded", "Failed", name="crash", timeout=90)
    assert status["phase"] == "Succeeded", status.get("conditions")
    calls = [e["tool"] for e in status["thread"] if e["step"] == 0 and e["type"] == "ToolCall"]
    assert calls == ["runbook", "alert-workload", "k8s-events"]
    found = prefetched(status)
    kind, book = found["runbook"]
    assert kind == "ToolResult" and book["matchedBy"] == f"runbook_url {RUNBOOK_URL}"
    assert book["source"].endswith("content/runbooks/kubernetes/KubePodCrashLooping.md")
    kind, workload = found["alert-workload"]
    assert kind == "ToolResult" and workload["resolvedFrom"] == f"pod={pod}"
    assert workload["ownerChain"][0] == f"Pod/{pod}"
    assert workload["ownerChain"][-1] == "Deployment/web"
    assert found["k8s-events"][0] == "ToolResult"
    # All of it is in the first model request, before the model chose anything.
    [first] = [r for r in spine.model_requests(step=1) if pod in json.dumps(r)]
    text = json.dumps(first["messages"])
    assert "Deployment/web" in text and "Kube Pod Crash Looping" in text

    # No namespace, no workload label, no runbook: said in the thread, and the run goes on.
    status = spine.wait_phase("Succeeded", "Failed", name="bare", timeout=90)
    assert status["phase"] == "Succeeded", status.get("conditions")
    found = prefetched(status)
    kind, book = found["runbook"]
    # A tool that ran and found nothing gave evidence: a result, not an error of the run.
    assert kind == "ToolResult" and book.startswith("error: no runbook for alert 'Watchdog'")
    assert status["consecutiveErrors"] == 0
    kind, workload = found["alert-workload"]
    assert kind == "ToolResult" and workload["summary"].startswith(
        f"No workload found in namespace {spine.namespace}"
    )
    assert workload["unresolved"][0].startswith("service=kube-state-metrics: Service")
    events_call = next(
        e for e in status["thread"] if e["type"] == "ToolCall" and e["tool"] == "k8s-events"
    )
    assert events_call["arguments"]["namespace"] == spine.namespace  # default(run.namespace)
    assert found["k8s-events"][0] == "ToolResult"
