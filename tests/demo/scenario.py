"""What `make demo` shows on either node (tests/demo/__main__.py picks it): the alert as
Alertmanager sends it, agentrun-receiver, the run's thread as it grows, the approval.

A crash-looping Deployment; a kube-prometheus-shaped KubePodCrashLooping notification POSTed
to `agentrun-receiver` exactly as Alertmanager sends it (labels namespace, pod, container,
the exporter's job and service; the runbook_url annotation); the receiver creates the run for
the chart's default Agent (charts/agentrun/agents/sre-agent.yaml, its model swapped); the
prefetch Jobs gather the runbook, the workload resolved from the pod label, and the Warning
events; then the model's read step, the approval of its write with kubectl, and the fix.
Without OPENAI_API_KEY the model is the local scripted server (a replay, and labelled as
one); with it, the model named by AGENTRUN_MODEL at OPENAI_BASE_URL.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from tests.cluster import LocalCluster
from tests.support import stack

NS = "demo"
SCRIPTED_MODEL = "scripted-demo-crashloop"
AGENT_FILE = stack.ROOT / "charts" / "agentrun" / "agents" / "sre-agent.yaml"
RUNBOOKS = stack.ROOT / "tests" / "fixtures" / "runbooks"
RUNBOOK_URL = "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping"
TOKEN = "demo-receiver-token"

# What the scripted model answers, step by step: the calls a good model makes once the
# prefetched runbook, workload and events are in its first prompt.
SCRIPT: list[dict[str, Any]] = [
    {"tool": "pod-logs", "arguments": {"namespace": NS, "deployment": "checkout", "tailLines": 20}},
    {"tool": "rollout-restart", "arguments": {"name": "checkout", "namespace": NS}},
    {
        "done": (
            "Root cause: the checkout container exits at start with 'FATAL: cannot connect to "
            "payments-db:5432: connection refused' (step 1 pod-logs), so Deployment "
            "demo/checkout has no ready replica (prefetched workload: pod crash-looping, "
            "only revision 1, so no rollout preceded it). The runbook the alert links to "
            "(kubernetes/KubePodCrashLooping) says: a dependency that was down and is back, "
            "restart the rollout so the pods stop backing off. I restarted it (approved). If "
            "the pods keep failing, check the payments-db Service and its endpoints."
        )
    },
]

ROUTE: dict[str, Any] = {
    "name": "crashloop",
    "matchers": ["alertname=KubePodCrashLooping", 'severity=~"warning|critical"'],
    "agent": "sre-agent",
    "namespace": NS,
    "task": "Pod {{ alert.labels.pod }} in namespace {{ alert.labels.namespace }} is crash "
    "looping: {{ alert.annotations.description }} Find out why and propose the smallest "
    "safe fix.",
    "limits": {"maxSteps": 10, "timeoutSeconds": 600},
}


def say(text: str) -> None:
    print(text, flush=True)


class AlertSink(Protocol):
    """Where the demo's Alertmanager posts: a receiver process, or the chart's receiver pod."""

    url: str

    def post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]: ...

    def log_tail(self) -> str: ...


def post_alert(url: str, token: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /alertmanager as Alertmanager does: JSON and the bearer token."""
    req = urllib.request.Request(
        f"{url}/alertmanager",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


class Receiver:
    """agentrun-receiver as its own process next to the operator, with the admin's
    kubeconfig: one route for KubePodCrashLooping to the default Agent, a bearer token."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.port = stack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "receiver.log"

    def start(self) -> None:
        token_file = self.workdir / "receiver-token"
        token_file.write_text(TOKEN + "\n")
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "defaultNamespace": NS,
            "auth": {"tokenFile": str(token_file)},
            "routes": [ROUTE],
        }
        path = self.workdir / "receiver.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(stack.VENV_BIN / "agentrun-receiver"), "--config", str(path)],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        stack.wait_for(self._healthy, 30, f"the receiver (log: {self.log_path})")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"receiver exited: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return post_alert(self.url, TOKEN, payload)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def alert_payload(pod: str) -> dict[str, Any]:
    """KubePodCrashLooping as kube-prometheus's rule and Alertmanager's webhook (v4) make it:
    kube-state-metrics' labels (the pod, not the Deployment), the scrape's job and service."""
    labels = {
        "alertname": "KubePodCrashLooping",
        "container": "app",
        "endpoint": "http",
        "instance": "10.244.1.17:8080",
        "job": "kube-state-metrics",
        "namespace": NS,
        "pod": pod,
        "prometheus": "monitoring/k8s",
        "reason": "CrashLoopBackOff",
        "service": "kube-state-metrics",
        "severity": "warning",
    }
    annotations = {
        "description": f'Pod {NS}/{pod} (app) is in waiting state (reason: "CrashLoopBackOff").',
        "runbook_url": RUNBOOK_URL,
        "summary": "Pod is crash looping.",
    }
    group = {"alertname": "KubePodCrashLooping", "namespace": NS}
    return {
        "receiver": "agentrun",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus-k8s-0:9090/graph?g0.expr=kube_pod_container_status_waiting_reason",
                "fingerprint": "3f1c2d4e5b6a7c8d",
            }
        ],
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager-main-0:9093",
        "version": "4",
        "groupKey": '{}:{alertname="KubePodCrashLooping", namespace="demo"}',
        "truncatedAlerts": 0,
    }


def _crashed_pod(cluster: LocalCluster) -> str | None:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses", []):
            if (
                cs.get("restartCount", 0) > 0
                or "terminated" in cs.get("state", {})
                or (cs.get("lastState", {}).get("terminated"))
            ):
                return str(pod["metadata"]["name"])
    return None


def _shown(event: dict[str, Any]) -> str:
    """One line of a thread event; a prefetched result by what it found."""
    text = str(event.get("content", ""))
    if event["type"] == "ToolResult":
        try:
            out = json.loads(text)
        except ValueError:
            out = None
        if isinstance(out, dict) and event.get("tool") == "runbook":
            return f"{out.get('title')} ({out.get('source')}; matched by {out.get('matchedBy')})"
        if isinstance(out, dict) and event.get("tool") == "alert-workload":
            unresolved = f"; unresolved: {out['unresolved']}" if out.get("unresolved") else ""
            return f"{out.get('summary')}{unresolved}"
        if isinstance(out, dict) and event.get("tool") == "k8s-events":
            rows = out.get("events") or []
            found = [f"{r.get('reason')} {r.get('object')} x{r.get('count')}" for r in rows[:3]]
            return "; ".join(found) or str(out.get("summary"))
        if isinstance(out, dict) and event.get("tool") == "pod-logs":
            last = str(out.get("log") or "").strip().splitlines()[-1:]
            return f"pod {out.get('pod')}, last line: {last[0] if last else '(empty)'}"
    return text.replace("\n", " ")[:150]


def _jobs(cluster: LocalCluster, run: str) -> None:
    say(f"\n$ kubectl get jobs -n demo -l agentrun.dev/run={run}")
    say(cluster.kubectl("get", "jobs", "-n", NS, "-l", f"agentrun.dev/run={run}").stdout.rstrip())


def model_line(live: bool) -> str:
    if live:
        model = os.environ.get("AGENTRUN_MODEL", "gpt-4o-mini")
        return f"LIVE {model} at {os.environ.get('OPENAI_BASE_URL', 'https://api.openai.com/v1')}"
    return (
        "REPLAY of a scripted model (local OpenAI-compatible server; set OPENAI_API_KEY to "
        "use a real one)"
    )


def crashing_workload(image: str | None = None) -> dict[str, Any]:
    """docs/examples/crashloop-workload.yaml in the demo namespace; on the real node in an
    image it has (the demo's image: its sh, nothing pulled)."""
    workload: dict[str, Any] = yaml.safe_load(
        (stack.ROOT / "docs/examples/crashloop-workload.yaml").read_text()
    )
    workload["metadata"]["namespace"] = NS
    if image is not None:
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        container |= {"image": image, "imagePullPolicy": "Never"}
    return workload


def alert_to_run(cluster: LocalCluster, receiver: AlertSink, log_tail: Callable[[], str]) -> int:
    """Waits for the pod to crash, POSTs the alert to the receiver, follows the run."""
    pod = stack.wait_for(lambda: _crashed_pod(cluster), 90, "the checkout pod to crash")
    say("\n$ kubectl get pods -n demo")
    say(cluster.kubectl("get", "pods", "-n", NS).stdout.rstrip())

    payload = alert_payload(pod)
    say("\nAlertmanager notifies the receiver (kube-prometheus's KubePodCrashLooping):")
    say(f"$ curl -H 'Authorization: Bearer ...' -d @alert.json {receiver.url}/alertmanager")
    say("  labels: " + json.dumps(payload["alerts"][0]["labels"]))
    say(f"  runbook_url: {RUNBOOK_URL}")
    code, answer = receiver.post(payload)
    say(f"  -> {code} {json.dumps(answer)}")
    if code != 200 or not answer.get("created"):
        say("The receiver created no run. Receiver log:\n" + receiver.log_tail())
        return 1
    run = answer["created"][0]["name"]
    return follow(cluster, run, log_tail)


def follow(cluster: LocalCluster, run: str, log_tail: Callable[[], str]) -> int:
    say(f"\nThe receiver created AgentRun {run}; the operator runs it.")
    phase, seen, shown_prefetch, shown_reads, approved = "", 0, False, False, False
    status: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = stack.get(cluster, "agentrun", run, NS) or {}
        status = body.get("status", {})
        if status.get("phase", "") != phase:
            phase = status.get("phase", "")
            say(f"\n[phase] {phase}  (step {status.get('step', 0)})")
        thread = status.get("thread", [])
        for event in thread[seen:]:
            if event["step"] >= 1 and not shown_prefetch:
                shown_prefetch = True
                say("  (step 0 is the prefetch: evidence gathered before the model is asked)")
                _jobs(cluster, run)
            where = "prefetch" if event["step"] == 0 else f"step {event['step']}"
            tool = f"{event.get('tool')}: " if event["type"] == "ToolResult" else ""
            say(f"  {where:<8} {event['type']:<10} {tool}{_shown(event)}"[:400])
            if event["type"] == "ToolResult" and event["step"] >= 1 and not shown_reads:
                shown_reads = True
                _jobs(cluster, run)
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
    _jobs(cluster, run)
    if phase != "Succeeded":
        say(f"\nRun did not succeed (phase {phase or 'unknown'}). Conditions:")
        say(yaml.safe_dump(status.get("conditions", [])))
        say("Operator log (tail):\n" + log_tail())
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
