"""`make demo`: an alert in, evidence gathered by a Job, a fix approved with kubectl, done.

Starts the local control plane and the operator, applies an Agent, the tool catalog and an
AgentRun for a crash-looping Deployment, and follows the run to the end. Without
OPENAI_API_KEY the model is the local scripted server (a replay, and labelled as one); with
it, the model named by AGENTRUN_MODEL at OPENAI_BASE_URL is used.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import LocalCluster
from tests.modelserver import ScriptedModelServer
from tests.support import stack

NS = "demo"
RUN = "checkout-crashloop"
SCRIPTED_MODEL = "scripted-demo-crashloop"

# What the scripted model answers, step by step: the same calls a good model makes.
SCRIPT: list[dict[str, Any]] = [
    {"tool": "k8s-get", "arguments": {"kind": "Deployment", "name": "checkout", "namespace": NS}},
    {
        "tool": "k8s-get",
        "arguments": {"kind": "Pod", "namespace": NS, "labelSelector": "app=checkout"},
    },
    {"tool": "rollout-restart", "arguments": {"name": "checkout", "namespace": NS}},
    {
        "done": (
            "Root cause: the checkout container exits at start with 'cannot connect to "
            "payments-db:5432: connection refused' (see the pod's last state), so the Deployment "
            "has 0 available replicas. The pods were stuck in a restart back-off after the "
            "database outage; I restarted the rollout (approved) so they retry now. If they keep "
            "failing, check the payments-db Service and its endpoints."
        )
    },
]


def say(text: str) -> None:
    print(text, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the cluster and operator are stopped


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    live = bool(os.environ.get("OPENAI_API_KEY"))
    workdir = stack.ROOT / ".local" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    say("== agentrun demo: KubePodCrashLooping -> evidence -> approval -> fix ==")
    say(
        "Model: "
        + (
            f"LIVE {os.environ.get('AGENTRUN_MODEL', 'gpt-4o-mini')} at "
            f"{os.environ.get('OPENAI_BASE_URL', 'https://api.openai.com/v1')}"
            if live
            else "REPLAY of a scripted model (local OpenAI-compatible server; set "
            "OPENAI_API_KEY to use a real one)"
        )
    )
    started = time.monotonic()
    with LocalCluster(workdir=workdir / "cluster") as cluster:
        say(
            f"Local control plane ready in {time.monotonic() - started:.1f}s "
            f"(kubeconfig {cluster.kubeconfig})"
        )
        server = None if live else ScriptedModelServer(scripts={SCRIPTED_MODEL: SCRIPT})
        # A live model's endpoint is allowed as an admin would allow it (the chart value).
        endpoint = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        env = {"AGENTRUN_ALLOWED_MODEL_URLS": endpoint} if live else {}
        operator = stack.OperatorProcess(cluster.kubeconfig, workdir / "operator.log", env=env)
        try:
            if server is not None:
                server.start()
            return _run(cluster, server, operator, workdir)
        finally:
            operator.stop()
            if server is not None:
                server.stop()


def _run(
    cluster: LocalCluster,
    server: ScriptedModelServer | None,
    operator: stack.OperatorProcess,
    workdir: Path,
) -> int:
    stack.install_crds(cluster)
    stack.prepare_namespace(cluster, NS)
    workload = yaml.safe_load((stack.ROOT / "docs/examples/crashloop-workload.yaml").read_text())
    workload["metadata"]["namespace"] = NS
    stack.apply(cluster, [workload])
    if server is not None:
        agent = stack.agent_manifest(
            "sre-agent", NS, SCRIPTED_MODEL, server.base_url, ["k8s-get", "rollout-restart"]
        )
    else:
        # Where an admin keeps model keys: the operator's namespace, opted in by label.
        stack.credential_secret(cluster, "model-api-key", {"api-key": os.environ["OPENAI_API_KEY"]})
        agent = stack.agent_manifest(
            "sre-agent",
            NS,
            os.environ.get("AGENTRUN_MODEL", "gpt-4o-mini"),
            os.environ.get("OPENAI_BASE_URL"),
            ["k8s-get", "rollout-restart"],
            api_key_secret="model-api-key",
        )
    stack.apply(cluster, [agent])
    stack.wait_for(lambda: _pod_crashed(cluster), 60, "the checkout pod to crash")
    say("\n$ kubectl get pods -n demo")
    say(cluster.kubectl("get", "pods", "-n", NS).stdout.rstrip())

    operator.start()
    say(f"\nOperator started (log {operator.log_path})")
    run = yaml.safe_load((stack.ROOT / "docs/examples/agentrun-crashloop.yaml").read_text())
    run["metadata"]["namespace"] = NS
    say("$ kubectl apply -f docs/examples/agentrun-crashloop.yaml -n demo")
    stack.apply(cluster, [run])
    return _follow(cluster, operator)


def _pod_crashed(cluster: LocalCluster) -> bool:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses", []):
            if (
                cs.get("restartCount", 0) > 0
                or "terminated" in cs.get("state", {})
                or (cs.get("lastState", {}).get("terminated"))
            ):
                return True
    return False


def _follow(cluster: LocalCluster, operator: stack.OperatorProcess) -> int:
    phase, seen, shown_jobs, approved = "", 0, False, False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = stack.get(cluster, "agentrun", RUN, NS) or {}
        status = body.get("status", {})
        if status.get("phase", "") != phase:
            phase = status.get("phase", "")
            say(f"\n[phase] {phase}  (step {status.get('step', 0)})")
        thread = status.get("thread", [])
        for event in thread[seen:]:
            text = event.get("content", "").replace("\n", " ")
            say(f"  step {event['step']} {event['type']:<10} {text[:150]}")
            if event["type"] == "ToolResult" and not shown_jobs:
                shown_jobs = True
                say("\n$ kubectl get jobs -n demo -l agentrun.dev/run=" + RUN)
                say(
                    cluster.kubectl(
                        "get", "jobs", "-n", NS, "-l", f"agentrun.dev/run={RUN}"
                    ).stdout.rstrip()
                )
        seen = len(thread)
        if phase == "AwaitingApproval" and not approved:
            pending = status["pendingAction"]
            say(f"\nThe agent wants to run {pending['tool']} {json.dumps(pending['arguments'])}")
            snap = pending.get("snapshot") or {}
            command, account = json.dumps(snap.get("command")), snap.get("serviceAccountName")
            say(
                f"  what runs (frozen): image {snap.get('image')}, command {command}, "
                f"serviceAccount {account}, timeout {snap.get('timeoutSeconds')}s; "
                f"approval expires {pending.get('expiresTime')}"
            )
            say(f"Approving exactly that action (hash {pending['actionHash'][:12]}...):")
            say(f"$ {pending['approveCommand']}")
            args = shlex.split(pending["approveCommand"])[1:]
            say(cluster.kubectl(*args).stdout.rstrip())
            approved = True
        if phase in ("Succeeded", "Failed", "Cancelled"):
            break
        time.sleep(0.3)
    say("\n$ kubectl get agentruns -n demo")
    say(cluster.kubectl("get", "agentruns", "-n", NS).stdout.rstrip())
    say("\n$ kubectl get jobs -n demo")
    say(cluster.kubectl("get", "jobs", "-n", NS).stdout.rstrip())
    if phase != "Succeeded":
        body = stack.get(cluster, "agentrun", RUN, NS) or {}
        say(f"\nRun did not succeed (phase {phase or 'unknown'}). Conditions:")
        say(yaml.safe_dump(body.get("status", {}).get("conditions", [])))
        say("Operator log (tail):\n" + operator.log_tail())
        return 1
    result = status.get("result", {}).get("answer", "")
    usage = status.get("usage", {})
    say(f"\nFinal answer:\n  {result}")
    say(
        f"\nTokens: {usage.get('totalTokens', 0)} over {usage.get('modelCalls', 0)} model calls;"
        f" prompt {status.get('promptRef', {}).get('name')} "
        f"v{status.get('promptRef', {}).get('version')}"
    )
    say("\nDemo succeeded.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
