"""What the on-call engineer feels: alert -> evidence -> proposed fix (`make bench`, issue 17).

For each size N (default 1, 100, 500 and 2,000 incidents at once) the benchmark prepares a
fresh namespace `incident-N` (tool ServiceAccounts, the tool catalog, a Deployment `web`), an
Agent that prefetches four read tools before its first model call and a fresh operator
watching only that namespace, and fires N alerts at once (8 threads; at N=1, 10 incidents
one after another). An alert is an Alertmanager webhook (version 4, a group of its own) made
into the AgentRun the receiver would create (`routing.run_manifest`), created directly; with
`--alert receiver` it is POSTed to `agentrun-receiver` (its own process, as the chart deploys
it), which creates the run.

The Agent's four prefetch calls, filled from the alert's labels:

    runbook         {alert: <alertname>}                        the team's runbook
    k8s-events      {namespace: <namespace>, type: Warning}     what the cluster says
    recent-deploys  {name: <deployment>, namespace: ...}        did something ship?
    k8s-describe    {kind: Deployment, name: <deployment>, ...} the workload now

then the scripted model (answers at once) proposes `rollout-restart` of the Deployment: the
run waits in phase AwaitingApproval, which ends the incident here (nobody approves). With
`--tools echo` (default) the four tools keep their names, read effect, ServiceAccount and
image, and each prints a fixed result envelope with `sh -c`, so that thousands of tool pods
stay cheap on the local node; `--tools builtin` runs the shipped tools (`agentrun-tool`,
about 1 CPU-second per call on this machine, so at 100 incidents and more the tool processes
fill a 2-core machine and every figure measures them).

Per incident, with time.time() in this one process (* = arrival at our own watch):

  alert -> created              create (or POST) sent -> answered: the run exists
  alert -> first model request  sent -> the model server receives step 1
  alert -> write proposed       sent -> the run's phase AwaitingApproval seen*
  created -> first model req.   the operator's share (the receiver's queue taken out)

The unit is one Job round trip measured in the same run: a bare Job like one tool call's
(same command, ServiceAccount, security context; labels the operator ignores), created and
watched until its pod succeeded* (or the Job Complete*, if first), which is when the
operator may step. It is measured idle before each size (the unit at N=1, where the
incidents run one after another) and during the load, three at a time, each back to back
(`--job-probes`; the unit at N>1: they wait in the same queues as the tool Jobs). Idle Jobs
and the incidents at N=1 each start after a random pause of up to `--jitter` seconds (1 by
default), out of step with a real kubelet's once-a-second relist.

Also per size: apiserver_request_total from the apiserver's own /metrics before and after
the load, by verb and resource, per step (a step = one tool call or one model call) and per
incident, with the unit sampler's own Jobs taken out (their cost measured idle); apiserver
time by request; the Events made, by component and reason; the operator's RSS (VmRSS with
all N runs parked in AwaitingApproval, and VmHWM) and its growth per run in flight, also as
the slope between the two largest sizes; CPU seconds per component.

    python -m benchmarks.incident [--sizes 1,100,500,2000] [--tools echo|builtin]
                                  [--node standin|real] [--alert create|receiver]
                                  [--operator-env KEY=VALUE ...]

`--node real` runs every tool pod as a container from the project's image on a real kubelet
(containerd, runc; `make node-bin image`), so the unit is what a user's cluster pays for a
Job; the default stand-in runs a pod as a local process, a Job round trip of tens of ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from agentrun.receiver import routing
from benchmarks.scale import RssSampler, proc_cpu, proc_mem, request_seconds
from benchmarks.step_overhead import (
    LABEL_RUN,
    Watcher,
    loadavg,
    machine,
    new_api,
    pct,
    request_counts,
    request_samples,
)
from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode, not_built, unsupported
from tests.modelserver import ScriptedModelServer
from tests.support import stack

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
AGENT = "incident-agent"
ALERTNAME = "KubeDeploymentReplicasMismatch"
DEPLOYMENT = "web"
WRITE_TOOL = "rollout-restart"
PROPOSED = "AwaitingApproval"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
LABEL_BARE = "bench.agentrun.dev/job-rtt"
BACKGROUND = ("leases", "nodes/status", "nodes")  # heartbeats: not a bare Job's cost
RUNBOOKS = stack.ROOT / "tools" / "runbooks"

_LABEL = "{{ input.context.alert.labels.%s }}"
PREFETCH: list[dict[str, Any]] = [
    {"tool": "runbook", "arguments": {"alert": _LABEL % "alertname"}},
    {"tool": "k8s-events", "arguments": {"namespace": _LABEL % "namespace", "type": "Warning"}},
    {
        "tool": "recent-deploys",
        "arguments": {"name": _LABEL % "deployment", "namespace": _LABEL % "namespace"},
    },
    {
        "tool": "k8s-describe",
        "arguments": {
            "kind": "Deployment",
            "name": _LABEL % "deployment",
            "namespace": _LABEL % "namespace",
        },
    },
]
READ_TOOLS = [str(p["tool"]) for p in PREFETCH]


def say(text: str = "") -> None:
    print(text, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: everything stops


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f}"


def envelope(tool: str) -> str:
    return json.dumps(
        {
            "agentrunEnvelope": 1,
            "tool": tool,
            "ok": True,
            "output": f"{tool}: nothing unusual (benchmark)",
            "error": None,
            "truncated": False,
        }
    )


# ---------------------------------------------------------------- manifests


def model_name(n: int) -> str:
    return f"scripted-incident-{n}"


def script(namespace: str) -> list[dict[str, Any]]:
    """The model: after the prefetched evidence, one write proposal (step 1)."""
    return [
        {
            "text": "The ReplicaSet is stuck; a rolling restart should clear it.",
            "tool": WRITE_TOOL,
            "arguments": {"name": DEPLOYMENT, "namespace": namespace},
        }
    ]


def agent_manifest(namespace: str, n: int, base_url: str) -> dict[str, Any]:
    agent = stack.agent_manifest(
        AGENT, namespace, model_name(n), base_url, [*READ_TOOLS, WRITE_TOOL]
    )
    agent["spec"]["prefetch"] = PREFETCH
    return agent


def tool_overrides(namespace: str, tools: str) -> list[dict[str, Any]]:
    """The read tools of this namespace: the shipped ones (the runbook tool pointed at the
    shipped runbook tree), or the same four names printing a fixed envelope."""
    catalog = {t["metadata"]["name"]: t for t in stack.tool_manifests()}
    out = []
    for name in READ_TOOLS:
        tool = json.loads(json.dumps(catalog[name]))
        tool["metadata"] = {"name": name, "namespace": namespace}
        if tools == "echo":
            tool["spec"]["command"] = ["sh", "-c", f"echo '{envelope(name)}'"]
        elif name == "runbook":
            tool["spec"]["env"] = [{"name": "AGENTRUN_RUNBOOKS_DIR", "value": str(RUNBOOKS)}]
        out.append(tool)
    return out


def deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": namespace, "labels": {"app": DEPLOYMENT}},
        "spec": {
            "replicas": 0,  # nothing for the local node to run: only the tools run
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {
                    "containers": [{"name": DEPLOYMENT, "image": "web:1", "command": ["true"]}]
                },
            },
        },
    }


def notification(namespace: str, incident: str) -> dict[str, Any]:
    """An Alertmanager webhook (version 4): one firing alert in a group of its own."""
    labels = {
        "alertname": ALERTNAME,
        "namespace": namespace,
        "deployment": DEPLOYMENT,
        "severity": "warning",
        "incident": incident,
    }
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERTNAME}", incident="{incident}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "agentrun",
        "groupLabels": {"alertname": ALERTNAME, "incident": incident},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.bench.local",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {
                    "summary": f"Deployment {namespace}/{DEPLOYMENT} has not matched its "
                    "expected replicas for 15 minutes.",
                },
                "startsAt": now,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.bench.local/graph",
                "fingerprint": hashlib.sha256(incident.encode()).hexdigest()[:16],
            }
        ],
    }


def receiver_config(namespace: str, port: int) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "defaultNamespace": namespace,
        "auth": {"allowUnauthenticated": True},
        "default": {
            "agent": AGENT,
            "namespace": namespace,
            "rateLimit": {"runs": 10000, "perSeconds": 1},
        },
        "api": {"enabled": False},
    }


def bare_job(namespace: str, name: str, tools: str, shape: dict[str, Any]) -> dict[str, Any]:
    """One tool call's Job as the operator builds it (operator/jobs.py build_job: command,
    ServiceAccount, security context, deadline, and `shape`: the image and resources of one
    call's container in the warm-up's Job), the runbook call, but labelled so that the
    operator ignores it."""
    if tools == "echo":
        command, args = ["sh", "-c", f"echo '{envelope('runbook')}'"], []
    else:
        command, args = ["agentrun-tool"], ["runbook", json.dumps({"alert": ALERTNAME})]
    env = [
        {"name": "AGENTRUN_RUNBOOKS_DIR", "value": str(RUNBOOKS)},
        {"name": "AGENTRUN_RUN", "value": name},
        {"name": "AGENTRUN_NAMESPACE", "value": namespace},
        {"name": "AGENTRUN_STEP", "value": "0"},
        {"name": "AGENTRUN_OUTPUT_LIMIT", "value": "65536"},
    ]
    labels = {LABEL_BARE: "true"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 300,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "agentrun-tool-read",
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "tool",
                            "image": shape["image"],
                            "resources": shape.get("resources") or {},
                            "command": command,
                            "args": args,
                            "env": env,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


# ---------------------------------------------------------------- what the watches saw


@dataclass
class JobTimes:
    run: str = ""
    tool: str = ""
    added: float | None = None
    complete: float | None = None  # the Job's Complete/Failed condition seen
    failed: bool = False
    pod_done: float | None = None  # its pod seen Succeeded/Failed

    @property
    def done(self) -> float | None:
        seen = [t for t in (self.complete, self.pod_done) if t is not None]
        return min(seen) if seen else None


@dataclass
class Seen:
    """Runs' phases and Jobs as our watches saw them; guarded by `cond`."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    proposed: dict[str, float] = field(default_factory=dict)  # run -> AwaitingApproval seen
    ended: dict[str, str] = field(default_factory=dict)  # run -> terminal phase
    jobs: dict[str, JobTimes] = field(default_factory=dict)  # Job name -> times

    def run_event(self, type_: str, run: dict[str, Any], arrived: float) -> None:
        name = run.get("metadata", {}).get("name", "")
        phase = (run.get("status") or {}).get("phase", "")
        with self.cond:
            if phase == PROPOSED and name not in self.proposed:
                self.proposed[name] = arrived
                self.cond.notify_all()
            elif phase in TERMINAL and name not in self.ended:
                self.ended[name] = phase
                self.cond.notify_all()

    def job_event(self, type_: str, job: dict[str, Any], arrived: float) -> None:
        meta = job.get("metadata") or {}
        labels = meta.get("labels") or {}
        with self.cond:
            seen = self.jobs.setdefault(meta.get("name", ""), JobTimes())
            seen.run = labels.get(LABEL_RUN, "") or seen.run
            seen.tool = labels.get("agentrun.dev/tool", "") or seen.tool
            if seen.added is None:
                seen.added = arrived
            for c in (job.get("status") or {}).get("conditions") or []:
                done = c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                if done and seen.complete is None:
                    seen.complete, seen.failed = arrived, c["type"] == "Failed"
            self.cond.notify_all()

    def pod_event(self, type_: str, pod: dict[str, Any], arrived: float) -> None:
        status = pod.get("status") or {}
        job = ((pod.get("metadata") or {}).get("labels") or {}).get("job-name")
        if not job or status.get("phase") not in ("Succeeded", "Failed"):
            return
        with self.cond:
            seen = self.jobs.setdefault(job, JobTimes())
            if seen.pod_done is None:
                seen.pod_done = arrived
                seen.failed = seen.failed or status.get("phase") == "Failed"
            self.cond.notify_all()

    def job_done(self, name: str) -> float | None:
        seen = self.jobs.get(name)
        return seen.done if seen is not None else None


def watchers(api: k8s.ApiClient, ns: str, seen: Seen, selector: str) -> list[Watcher]:
    """Jobs and their pods (by label), and the namespace's AgentRuns."""
    batch, core, custom = k8s.BatchV1Api(api), k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
    out = [
        Watcher(
            f"jobs-{ns}-{selector}",
            batch.api_client,
            batch.list_namespaced_job,
            (ns,),
            seen.job_event,
            label_selector=selector,
        ).start(),
        Watcher(
            f"pods-{ns}-{selector}",
            core.api_client,
            core.list_namespaced_pod,
            (ns,),
            seen.pod_event,
            label_selector=selector,
        ).start(),
    ]
    if selector == LABEL_RUN:
        out.append(
            Watcher(
                f"agentruns-{ns}",
                custom.api_client,
                custom.list_namespaced_custom_object,
                (GROUP, VERSION, ns, PLURAL),
                seen.run_event,
            ).start()
        )
    return out


# ---------------------------------------------------------------- the Job round trip


class Jitter:
    """A random pause before each sample taken one after another (idle Jobs, the incidents at
    N=1). A real kubelet reports a pod's end at its next relist, once a second: samples sent
    back to back start at the same phase of that beat, so a whole run lands on one side of it
    (all 1.0 s or all 2.0 s); alerts do not arrive in step with a node's clock."""

    def __init__(self, seconds: float, seed: int = 17) -> None:
        self.seconds = seconds
        self._rng = random.Random(seed)

    def pause(self) -> None:
        if self.seconds > 0:
            time.sleep(self._rng.uniform(0.0, self.seconds))


class JobClock:
    """Bare Jobs created and watched to completion (the unit of the ratios): one at a time
    idle; during the load, `probes` at a time, each back to back."""

    def __init__(self, cluster: LocalCluster, ns: str, tools: str, shape: dict[str, Any]) -> None:
        self.cluster, self.ns, self.tools, self.shape = cluster, ns, tools, shape
        self.seen = Seen()
        self.watchers = watchers(new_api(cluster.kubeconfig), ns, self.seen, LABEL_BARE)
        self.count = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # one ApiClient per thread
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.under_load: list[float] = []
        self.errors = 0

    def round_trip(self, timeout: float = 900) -> float:
        with self._lock:
            self.count += 1
            name = f"job-rtt-{self.count:04d}"
        if not hasattr(self._local, "api"):
            self._local.api = new_api(self.cluster.kubeconfig)
        body: Any = bare_job(self.ns, name, self.tools, self.shape)
        batch: Any = k8s.BatchV1Api(self._local.api)
        sent = time.time()
        batch.create_namespaced_job(self.ns, body, _preload_content=False)

        def done() -> bool:
            return self.seen.job_done(name) is not None or self._stop.is_set()

        with self.seen.cond:
            self.seen.cond.wait_for(done, timeout)
            finished = self.seen.job_done(name)
            if finished is None:
                what = "was cut short" if self._stop.is_set() else f"timed out ({timeout:.0f}s)"
                raise TimeoutError(f"bare Job {name} {what}")
            if self.seen.jobs[name].failed:
                raise RuntimeError(f"bare Job {name} failed")
        return finished - sent

    def sample(self, count: int, jitter: Jitter) -> list[float]:
        out = []
        for _ in range(count):
            jitter.pause()
            out.append(self.round_trip())
        return out

    def burst(self, count: int, threads: int, timeout: float = 1800) -> list[float]:
        """`count` bare Jobs sent at once (`threads` creates in flight, as the alerts), each
        timed from its create to its pod done*: what the cluster takes for a Job when a
        burst of that size arrives, with no operator in the way."""
        with self._lock:
            first, self.count = self.count + 1, self.count + count
        names = [f"job-rtt-{i:04d}" for i in range(first, first + count)]
        sent: dict[str, float] = {}

        def create(name: str) -> None:
            if not hasattr(self._local, "api"):
                self._local.api = new_api(self.cluster.kubeconfig)
            batch: Any = k8s.BatchV1Api(self._local.api)
            body: Any = bare_job(self.ns, name, self.tools, self.shape)
            sent[name] = time.time()
            batch.create_namespaced_job(self.ns, body, _preload_content=False)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(create, names))
        with self.seen.cond:
            self.seen.cond.wait_for(
                lambda: all(self.seen.job_done(n) is not None for n in names), timeout
            )
            done = {n: self.seen.job_done(n) for n in names}
        return [d - sent[n] for n, d in done.items() if d is not None]

    def start_sampling(self, probes: int) -> None:
        self._stop.clear()
        self.under_load = []
        self._threads = [
            threading.Thread(target=self._loop, name=f"job-rtt-{i}", daemon=True)
            for i in range(probes)
        ]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rtt = self.round_trip()
            except Exception:
                if not self._stop.is_set():
                    self.errors += 1
                    self._stop.wait(1.0)
                continue
            if not self._stop.is_set():  # a Job cut short by the end of the load is not kept
                with self._lock:
                    self.under_load.append(rtt)

    def stop_sampling(self) -> list[float]:
        self._stop.set()
        with self.seen.cond:
            self.seen.cond.notify_all()
        for t in self._threads:
            t.join(30)
        return self.under_load

    def close(self) -> None:
        self._stop.set()
        for w in self.watchers:
            w.stop()


# ---------------------------------------------------------------- the alert receiver


class ReceiverProcess:
    """agentrun-receiver as its own process (its own Deployment in the chart)."""

    def __init__(self, cluster: LocalCluster, ns: str, workdir: Path) -> None:
        self.port = stack.free_port()
        self.config = workdir / f"receiver-{ns}.yaml"
        self.config.write_text(yaml.safe_dump(receiver_config(ns, self.port)))
        self.log_path = workdir / f"receiver-{ns}.log"
        self.kubeconfig = cluster.kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> ReceiverProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(stack.VENV_BIN / "agentrun-receiver"), "--config", str(self.config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.wait_for(self._healthy, 30, f"the alert receiver (log {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the receiver exited {self.proc.returncode}; log {self.log_path}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def post(self, payload: dict[str, Any]) -> list[str]:
        """POST /alertmanager; the names of the runs it created."""
        req = urllib.request.Request(
            f"{self.url}/alertmanager",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"receiver answered {e.code}: {e.read()[:300]!r}") from None
        return [str(c["name"]) for c in body.get("created") or []]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def direct_manifest(namespace: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The AgentRun the receiver would create for this notification."""
    config = routing.load_config(receiver_config(namespace, 0))
    note = routing.Notification.model_validate(payload)
    parts, _ = routing.partition(note, config)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return routing.run_manifest(parts[0], note, 1, now)


# ---------------------------------------------------------------- one size


@dataclass
class Incident:
    sent: float
    created: float = float("nan")
    run: str = ""
    error: str = ""


@dataclass
class SizeResult:
    n: int
    rounds: int = 1
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    elapsed: float = float("nan")
    alert_created: list[float] = field(default_factory=list)
    alert_first: list[float] = field(default_factory=list)
    alert_proposed: list[float] = field(default_factory=list)
    created_first: list[float] = field(default_factory=list)
    answer_proposed: list[float] = field(default_factory=list)
    prefetch_span: list[float] = field(default_factory=list)  # first tool Job ADDED* -> last done*
    tool_jobs: list[int] = field(default_factory=list)  # tool Jobs per run before step 1
    evidence: Counter[str] = field(default_factory=Counter)  # prefetch results by thread type
    tool_time: list[float] = field(default_factory=list)  # tool Job ADDED* -> done*
    model_calls: int = 0
    job_idle: list[float] = field(default_factory=list)
    job_load: list[float] = field(default_factory=list)
    job_errors: int = 0
    job_burst: list[float] = field(default_factory=list)  # N bare Jobs at once (--burst)
    burst_at: str = "before"
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # sampler's out
    requests_raw: Counter[tuple[str, str]] = field(default_factory=Counter)
    job_cost: dict[tuple[str, str], float] = field(default_factory=dict)  # per bare Job
    bare_jobs: int = 0  # bare Jobs the sampler made during the load
    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    latency: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rss_idle: float = float("nan")
    rss_end: float = float("nan")
    rss_peak: float = float("nan")
    load_start: str = ""
    load_end: str = ""
    log_problems: int = 0

    @property
    def incidents(self) -> int:
        return self.n * self.rounds

    @property
    def steps(self) -> int:
        """Tool calls (the prefetch) and model calls of the runs that got there."""
        return self.ok * len(PREFETCH) + self.model_calls

    @property
    def job_ref(self) -> float:
        """The Job round trip of this size's conditions: idle at N=1, else under the load."""
        ref = self.job_load if self.n > 1 and self.job_load else self.job_idle
        return statistics.median(ref) if ref else float("nan")

    @property
    def ref_name(self) -> str:
        return "under load" if self.n > 1 and self.job_load else "idle"

    @property
    def burst_ref(self) -> float:
        """A Job round trip in a burst of N bare Jobs (p50); the idle unit at N=1."""
        ref = self.job_burst if self.n > 1 else self.job_idle
        return statistics.median(ref) if ref else float("nan")


class Bench:
    def __init__(
        self,
        cluster: LocalCluster,
        server: ScriptedModelServer,
        args: argparse.Namespace,
        operator_env: dict[str, str],
        node: RealNode | None = None,
    ) -> None:
        self.cluster, self.server, self.args = cluster, server, args
        self.operator_env = operator_env
        self.node = node
        self._local = threading.local()
        self.cleanup: list[Any] = []  # objects with stop() or close(), stopped in reverse

    def api(self) -> k8s.ApiClient:
        if not hasattr(self._local, "api"):
            self._local.api = new_api(self.cluster.kubeconfig)
        api: k8s.ApiClient = self._local.api
        return api

    def cpu_now(self, extra: dict[str, int]) -> dict[str, float]:
        out = {p.name: proc_cpu(p.pid, children=p.name == "node") for p in self.cluster.procs}
        for proc in self.node.procs if self.node is not None else []:
            out[proc.name] = proc_cpu(proc.pid)  # containerd's shims and runc not counted
        for name, pid in extra.items():
            out[name] = proc_cpu(pid)
        t = os.times()
        out["benchmark (model server, watches)"] = t.user + t.system
        return out

    def stop_all(self) -> None:
        while self.cleanup:
            obj = self.cleanup.pop()
            try:
                (obj.close if hasattr(obj, "close") else obj.stop)()
            except Exception as e:  # keep stopping the rest
                say(f"  (stopping {type(obj).__name__} failed: {e})")

    # ------------------------------------------------------------ set-up

    def prepare(self, n: int, ns: str) -> None:
        stack.prepare_namespace(self.cluster, ns)
        stack.apply(
            self.cluster,
            [
                *tool_overrides(ns, self.args.tools),
                deployment(ns),
                agent_manifest(ns, n, self.server.base_url),
            ],
        )
        self.server.set_scripts({model_name(n): script(ns)})

    def fire(
        self, ns: str, ids: list[str], receiver: ReceiverProcess | None
    ) -> dict[str, Incident]:
        """Sends one alert per id (create threads at once); returns id -> what happened."""
        out: dict[str, Incident] = {}

        def one(incident: str) -> None:
            payload = notification(ns, incident)
            manifest = None if receiver is not None else direct_manifest(ns, payload)
            rec = Incident(sent=time.time())
            out[incident] = rec
            try:
                if receiver is not None:
                    names = receiver.post(payload)
                    if len(names) != 1:
                        raise RuntimeError(f"the receiver created {names}")
                    rec.run = names[0]
                else:
                    assert manifest is not None
                    custom: Any = k8s.CustomObjectsApi(self.api())
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, ns, PLURAL, manifest, _preload_content=False
                    )
                    rec.run = manifest["metadata"]["name"]
                rec.created = time.time()
            except Exception as e:
                rec.error = f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(max_workers=self.args.create_threads) as pool:
            list(pool.map(one, ids))
        return out

    def wait_proposed(self, seen: Seen, runs: list[str], timeout: float, rss: RssSampler) -> None:
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        t0 = time.time()
        with seen.cond:
            while True:
                done = sum(1 for r in runs if r in seen.proposed or r in seen.ended)
                if done >= len(runs) or time.monotonic() > deadline:
                    return
                seen.cond.wait(min(5.0, max(0.1, deadline - time.monotonic())))
                if time.monotonic() - last >= 30:
                    last = time.monotonic()
                    say(
                        f"  ... {done}/{len(runs)} proposed after {time.time() - t0:.0f}s "
                        f"(load average {loadavg()}, operator RSS "
                        f"{rss.last.get('VmRSS', 0):.0f} MiB)"
                    )

    # ------------------------------------------------------------ one size

    def run_size(self, n: int) -> SizeResult:
        ns = f"incident-{n}"
        rounds = self.args.single_rounds if n == 1 else 1
        res = SizeResult(n, rounds=rounds, burst_at=self.args.burst)
        self.prepare(n, ns)
        receiver = None
        if self.args.alert == "receiver":
            receiver = ReceiverProcess(self.cluster, ns, self.args.workdir).start()
            self.cleanup.append(receiver)
        log = self.args.workdir / f"operator-{n}.log"
        log.unlink(missing_ok=True)
        op = stack.OperatorProcess(
            self.cluster.kubeconfig, log, env=self.operator_env, namespaces=[ns]
        )
        op.start(timeout=60)
        self.cleanup.append(op)
        assert op.proc is not None
        seen = Seen()
        for w in watchers(new_api(self.cluster.kubeconfig), ns, seen, LABEL_RUN):
            self.cleanup.append(w)

        # An untimed warm-up incident: one-off costs (imports, clients, the first Job).
        warm = self.fire(ns, [f"warmup-{n}"], receiver)[f"warmup-{n}"]
        if warm.error:
            raise RuntimeError(f"warm-up alert failed: {warm.error}")
        self.wait_proposed(seen, [warm.run], 300, RssSampler(op.proc.pid))
        if warm.run not in seen.proposed:
            raise RuntimeError(
                f"warm-up run {warm.run} did not propose its write "
                f"({seen.ended.get(warm.run, 'timeout')}); operator log tail:\n{op.log_tail(30)}"
            )
        shape = self._tool_shape(ns, warm.run)
        clock = JobClock(self.cluster, ns, self.args.tools, shape)
        self.cleanup.append(clock)
        metrics_api = new_api(self.cluster.kubeconfig)
        idle_before = request_counts(request_samples(metrics_api))
        res.job_idle = clock.sample(self.args.job_samples, Jitter(self.args.jitter))
        # What one bare Job costs the apiserver (all clients), to take the sampler's Jobs
        # during the load out of the load's requests.
        idle = request_counts(request_samples(metrics_api)) - idle_before
        res.job_cost = {
            k: v / len(res.job_idle)
            for k, v in idle.items()
            if k[0] != "WATCH" and k[1] not in BACKGROUND
        }
        say(
            f"  Job round trip, idle: median {fmt_s(statistics.median(res.job_idle))} s, "
            f"max {fmt_s(max(res.job_idle))} s ({len(res.job_idle)} bare Jobs one at a time)"
        )
        if self.args.burst == "before" and 1 < n <= self.args.burst_max:
            self._burst(res, ns, shape, clock.count, "operator idle")
            clock.count += n
            self._clear_bare_jobs(ns)
        time.sleep(1.0)  # let the warm-up's and the bare Jobs' trailing events settle
        rss = RssSampler(op.proc.pid).start()
        time.sleep(0.5)
        res.rss_idle = proc_mem(op.proc.pid).get("VmRSS", float("nan"))
        extra = {"operator": op.proc.pid}
        if receiver is not None and receiver.proc is not None:
            extra["receiver"] = receiver.proc.pid
        res.load_start = loadavg()
        before_samples = request_samples(metrics_api)
        before = request_counts(before_samples)
        before_cpu = self.cpu_now(extra)
        jobs_before = clock.count
        load_start = time.time()
        if n > 1:
            clock.start_sampling(self.args.job_probes)
        incidents: dict[str, Incident] = {}
        t0 = time.time()
        timeout = self.args.size_timeout_base + self.args.size_timeout_per_run * n
        jitter = Jitter(self.args.jitter if rounds > 1 else 0.0, seed=n)
        try:
            for r in range(rounds):
                jitter.pause()
                ids = [f"i{n}-{r:02d}-{i:04d}" for i in range(n)]
                batch = self.fire(ns, ids, receiver)
                incidents.update(batch)
                runs = [x.run for x in batch.values() if not x.error]
                if r == 0:
                    say(
                        f"  {len(runs)} alerts answered in {time.time() - t0:.1f}s; "
                        "waiting for the write proposals"
                    )
                self.wait_proposed(seen, runs, timeout, rss)
        finally:
            res.job_load = clock.stop_sampling()
            res.bare_jobs = clock.count - jobs_before
            res.job_errors = clock.errors
            with seen.cond:
                last = max(seen.proposed.values(), default=time.time())
            res.elapsed = last - t0
            time.sleep(self.args.settle)  # all parked: what the operator keeps for N runs
            after_cpu = self.cpu_now(extra)
            after_samples = request_samples(metrics_api)
            after = request_counts(after_samples)
            res.load_end = loadavg()
            mem = rss.stop()
            res.rss_end = mem.get("VmRSS", float("nan"))
            res.rss_peak = mem.get("VmHWM", float("nan"))
            self.stop_all()
        if self.args.burst == "after" and 1 < n <= self.args.burst_max:
            self._burst(res, ns, shape, clock.count, "operator stopped")
        res.requests_raw = after - before
        secs_before, secs_after = request_seconds(before_samples), request_seconds(after_samples)
        for key, (total, count) in secs_after.items():
            prev = secs_before.get(key, [0.0, 0.0])
            if count - prev[1] >= 1 and key[0] != "WATCH":
                res.latency[key] = ((total - prev[0]) / (count - prev[1]), count - prev[1])
        res.requests = Counter(
            {
                k: max(0, round(v - res.bare_jobs * res.job_cost.get(k, 0.0)))
                for k, v in res.requests_raw.items()
            }
        )
        try:
            res.evidence = self._evidence(ns, {x.run for x in incidents.values() if x.run})
            res.events = self._events(ns, load_start - 1.0)
        except Exception as e:  # a diagnostic only
            say(f"  (listing Events failed: {type(e).__name__}: {e})")
        res.cpu = {k: after_cpu.get(k, float("nan")) - v for k, v in before_cpu.items()}
        text = log.read_text(errors="replace") if log.exists() else ""
        res.log_problems = sum(
            1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line
        )
        self._analyse(res, ns, incidents, seen)
        (self.args.workdir / f"requests-{n}.json").write_text(
            json.dumps({f"{v} {r}": c for (v, r), c in res.requests.most_common() if c}, indent=1)
        )
        if res.failed:
            say(f"  operator log ({log}) tail:\n{op.log_tail(30)}")
        return res

    def _burst(self, res: SizeResult, ns: str, shape: dict[str, Any], count: int, how: str) -> None:
        """The same N Jobs' worth of work for the cluster alone, sent at once: what a Job
        costs when a burst of that size arrives (fresh watches)."""
        burst = JobClock(self.cluster, ns, self.args.tools, shape)
        burst.count = count
        try:
            res.job_burst = burst.burst(res.n, self.args.create_threads)
        finally:
            burst.close()
        say(
            f"  Job round trip in a burst of {res.n} bare Jobs ({how}): median "
            f"{fmt_s(statistics.median(res.job_burst))} s, p99 "
            f"{fmt_s(pct(res.job_burst, 0.99))} s"
        )

    def _clear_bare_jobs(self, ns: str, timeout: float = 900) -> None:
        """Deletes the bare Jobs and waits for their pods to be gone, so that the load meets
        a node as clear as the burst did."""
        batch: Any = k8s.BatchV1Api(self.api())
        core: Any = k8s.CoreV1Api(self.api())
        batch.delete_collection_namespaced_job(
            ns, label_selector=LABEL_BARE, propagation_policy="Background"
        )
        t0, first = time.monotonic(), None
        while time.monotonic() - t0 < timeout:
            left = len(core.list_namespaced_pod(ns, label_selector=LABEL_BARE).items)
            first = left if first is None else first
            if not left:
                say(f"  ({first} bare Jobs' pods deleted in {time.monotonic() - t0:.1f}s)")
                return
            time.sleep(0.5)
        raise TimeoutError(f"bare Jobs' pods still there after {timeout:.0f}s")

    def _evidence(self, ns: str, runs: set[str]) -> Counter[str]:
        """The prefetch results (step 0) the runs' threads hold, by type: what the model got."""
        custom: Any = k8s.CustomObjectsApi(self.api())
        data = custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, _preload_content=False
        ).data
        out: Counter[str] = Counter()
        for run in json.loads(data)["items"]:
            if run["metadata"]["name"] not in runs:
                continue
            for event in (run.get("status") or {}).get("thread") or []:
                if event.get("step") == 0 and event.get("type") in ("ToolResult", "Error"):
                    out[str(event["type"])] += 1
        return out

    def _events(self, ns: str, since: float) -> Counter[tuple[str, str, str]]:
        """Events of the namespace made during the load: (component, involved kind, reason)
        -> Event objects (a repeated Event counts once: its POST was one)."""
        core: Any = k8s.CoreV1Api(self.api())
        items = json.loads(core.list_namespaced_event(ns, _preload_content=False).data)["items"]
        out: Counter[tuple[str, str, str]] = Counter()
        for e in items:
            made = e["metadata"].get("creationTimestamp") or ""
            when = datetime.strptime(made, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            if when < since:
                continue
            component = (e.get("source") or {}).get("component") or e.get("reportingComponent", "?")
            kind = (e.get("involvedObject") or {}).get("kind", "?")
            out[(component or "?", kind, e.get("reason", "?"))] += 1
        return out

    def _tool_shape(self, ns: str, run: str) -> dict[str, Any]:
        """The image and resources of one call's container in the warm-up's tool Job: a bare
        Job asks the scheduler for what one tool call does (the stand-in ignores both)."""
        batch: Any = k8s.BatchV1Api(self.api())
        data = batch.list_namespaced_job(
            ns, label_selector=f"{LABEL_RUN}={run}", _preload_content=False
        ).data
        for job in json.loads(data)["items"]:
            for c in job["spec"]["template"]["spec"]["containers"]:
                return {"image": c.get("image") or "agentrun-tool", "resources": c.get("resources")}
        return {"image": "agentrun-tool"}

    def _analyse(
        self, res: SizeResult, ns: str, incidents: dict[str, Incident], seen: Seen
    ) -> None:
        first: dict[str, dict[str, Any]] = {}
        answered: dict[str, float] = {}
        steps: dict[str, set[int]] = defaultdict(set)
        prefix = f"{ns}/"
        for r in self.server.requests:
            if not r["run"].startswith(prefix):
                continue
            run = r["run"][len(prefix) :]
            steps[run].add(int(r["step"]))
            if run not in first or r["received"] < first[run]["received"]:
                first[run] = r
            if r.get("status") == 200 and "answered" in r:
                answered[run] = max(answered.get(run, 0.0), float(r["answered"]))
        with seen.cond:
            proposed, ended = dict(seen.proposed), dict(seen.ended)
            jobs_by_run: dict[str, list[JobTimes]] = defaultdict(list)
            for j in seen.jobs.values():
                jobs_by_run[j.run].append(j)
        for incident, rec in sorted(incidents.items()):
            if rec.error:
                res.failed.append(f"{incident}: {rec.error}")
                continue
            run = rec.run
            if run not in proposed:
                res.failed.append(f"{run}: {ended.get(run, 'no write proposed (timeout)')}")
                continue
            if run not in first:
                res.failed.append(f"{run}: proposed without a model request seen")
                continue
            res.ok += 1
            res.model_calls += len(steps[run])
            got = float(first[run]["received"])
            res.alert_created.append(rec.created - rec.sent)
            res.alert_first.append(got - rec.sent)
            res.alert_proposed.append(proposed[run] - rec.sent)
            res.created_first.append(got - rec.created)
            if run in answered:
                res.answer_proposed.append(proposed[run] - answered[run])
            before_model = [
                j for j in jobs_by_run.get(run, []) if j.added is not None and j.added < got
            ]
            res.tool_jobs.append(len(before_model))
            ends = [j.done for j in before_model if j.done is not None]
            starts = [j.added for j in before_model if j.added is not None]
            if starts and ends:
                res.prefetch_span.append(max(ends) - min(starts))
            res.tool_time += [
                j.done - j.added for j in before_model if j.done is not None and j.added is not None
            ]


# ---------------------------------------------------------------- report


def dist_row(label: str, values: list[float], ref: float) -> str:
    if not values:
        return f"  {label:40} {0:5d}"
    p50, p99 = statistics.median(values), pct(values, 0.99)
    return (
        f"  {label:40} {len(values):5d} {fmt_s(p50):>8} {fmt_s(p99):>8} {fmt_s(max(values)):>8}"
        f" {p50 / ref:7.2f}x {p99 / ref:7.2f}x"
    )


def request_table(requests: Counter[tuple[str, str]], steps: int, runs: int) -> list[str]:
    """apiserver requests (all clients) by verb and resource, per step and per run."""
    lines = [f"  {'verb':8} {'resource':34} {'per step':>9} {'per run':>9} {'count':>8}"]
    rows = sorted(((c, v, r) for (v, r), c in requests.items() if c), reverse=True)
    for c, v, r in rows:
        lines.append(f"  {v:8} {r:34} {c / max(steps, 1):9.2f} {c / max(runs, 1):9.2f} {c:8d}")
    total = sum(requests.values())
    lines.append(
        f"  {'total':43} {total / max(steps, 1):9.2f} {total / max(runs, 1):9.2f} {total:8d}"
    )
    return lines


def report(res: SizeResult) -> None:
    runs = f"{res.rounds} x 1 (one at a time)" if res.rounds > 1 else str(res.n)
    say(
        f"\nN={res.n}: {res.ok}/{res.incidents} incidents reached {PROPOSED} ({runs}); "
        f"last {res.elapsed:.1f}s after the first alert; load average {res.load_start} "
        f"-> {res.load_end}"
    )
    for f in res.failed[:10]:
        say(f"  FAILED {f}")
    if len(res.failed) > 10:
        say(f"  ... and {len(res.failed) - 10} more failures")
    if not res.ok:
        return
    ref = res.job_ref
    say(
        f"  Job round trip: idle median {fmt_s(statistics.median(res.job_idle))} s; under the "
        f"load median {fmt_s(statistics.median(res.job_load or [float('nan')]))} s, p90 "
        f"{fmt_s(pct(res.job_load, 0.9))} s ({len(res.job_load)} bare Jobs"
        f"{f', {res.job_errors} errors' if res.job_errors else ''}); unit: {fmt_s(ref)} s "
        f"({res.ref_name})"
    )
    say(
        f"  {'(s; * = seen by our watch)':40} {'n':>5} {'p50':>8} {'p99':>8} {'max':>8} "
        f"{'p50/Job':>8} {'p99/Job':>8}"
    )
    if res.job_burst:
        b50, b99 = statistics.median(res.job_burst), pct(res.job_burst, 0.99)
        say(
            f"  Job round trip in a burst of {res.n} bare Jobs (--burst {res.burst_at}): p50 "
            f"{fmt_s(b50)} s, p99 {fmt_s(b99)} s; alert -> first model request over it: p50 "
            f"{statistics.median(res.alert_first) / b50:.2f}x, p99 "
            f"{pct(res.alert_first, 0.99) / b99:.2f}x"
        )
    say(dist_row("alert -> first model request", res.alert_first, ref))
    say(dist_row("alert -> write proposed*", res.alert_proposed, ref))
    say(dist_row("alert -> run created", res.alert_created, ref))
    say(dist_row("created -> first model request", res.created_first, ref))
    say(dist_row("model answer -> write proposed*", res.answer_proposed, ref))
    say(dist_row("prefetch: first Job ADDED* -> last done*", res.prefetch_span, ref))
    say(dist_row("(a tool Job ADDED* -> done*)", res.tool_time, ref))
    jobs = Counter(res.tool_jobs)
    say(
        "  tool Jobs per run before its first model request: "
        + ", ".join(f"{k} ({v} runs)" for k, v in sorted(jobs.items()))
        + f"; model calls {res.model_calls} for {res.ok} runs"
    )
    say(
        "  prefetched evidence in the runs' threads: "
        + ", ".join(f"{v} {k}" for k, v in res.evidence.most_common())
        + f" (of {len(PREFETCH) * res.ok}; an Error is a call that failed or timed out)"
    )
    say(
        f"  apiserver requests, all clients (/metrics delta over the load; a step = one tool "
        f"call or one model call: {res.steps} steps, {res.ok} runs):"
    )
    for line in request_table(res.requests, res.steps, res.ok):
        say(line)
    if res.bare_jobs:
        raw = sum(res.requests_raw.values())
        say(
            f"  (the {res.bare_jobs} bare Jobs of the unit's sampler are taken out: "
            f"{sum(res.job_cost.values()):.1f} requests each, measured idle; with them "
            f"{raw / max(res.steps, 1):.2f} per step)"
        )
    slow = sorted(((m * c, k, m, c) for k, (m, c) in res.latency.items()), reverse=True)
    say(
        "  apiserver time by request, the most total time first (mean ms x count): "
        + ", ".join(f"{k[0]} {k[1]} {m * 1000:.0f} x {c:.0f}" for _, k, m, c in slow[:8])
    )
    if res.events:
        say(
            "  Events created during the load, per run (component, object, reason): "
            + ", ".join(
                f"{c} {k} {r} {v / res.ok:.2f}" for (c, k, r), v in res.events.most_common(12)
            )
        )
    # Per run only where the runs outweigh the allocator's noise (a few MiB).
    growth = (
        f" (+{(res.rss_end - res.rss_idle) * 1024 / res.n:.1f} KiB per run)" if res.n >= 100 else ""
    )
    say(
        f"  operator RSS: idle {res.rss_idle:.0f} MiB, with {res.n} runs parked "
        f"{res.rss_end:.0f} MiB{growth}, "
        f"peak (VmHWM) {res.rss_peak:.0f} MiB; operator log ERROR/Traceback lines: "
        f"{res.log_problems}"
    )
    cpu = sorted(res.cpu.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else 0)
    say(
        "  CPU seconds during the load (ms per step): "
        + ", ".join(f"{k} {v:.1f} ({v / max(res.steps, 1) * 1000:.0f})" for k, v in cpu)
    )


def summary(results: list[SizeResult], args: argparse.Namespace) -> None:
    say("\n== Summary ==")
    say(f"Machine: {machine()}; load average now {loadavg()}")
    say(
        f"Tools: {args.tools}; node: {args.node}; alerts: {args.alert}; "
        "unit = one Job round trip (see below)"
    )
    say(
        f"{'N':>5} {'ok':>5} {'Job s':>6} {'1st p50':>8} {'1st p99':>8} {'x p50':>6} "
        f"{'x p99':>6} {'wr p50':>8} {'wr p99':>8} {'x p50':>6} {'x p99':>6} {'c>1st p99':>9} "
        f"{'req/st':>6} {'req/run':>7} {'RSS MiB':>7} {'HWM':>5} {'burst s':>7} {'x b50':>6} "
        f"{'x b99':>6}  load"
    )
    for r in results:
        if not r.ok:
            say(f"{r.n:5d} {r.ok:5d}  (no incident reached {PROPOSED})")
            continue
        ref = r.job_ref
        f50, f99 = statistics.median(r.alert_first), pct(r.alert_first, 0.99)
        w50, w99 = statistics.median(r.alert_proposed), pct(r.alert_proposed, 0.99)
        total = sum(r.requests.values())
        b50 = r.burst_ref
        b99 = pct(r.job_burst, 0.99) if r.job_burst else b50
        say(
            f"{r.n:5d} {r.ok:5d} {ref:6.2f} {f50:8.2f} {f99:8.2f} {f50 / ref:6.2f} "
            f"{f99 / ref:6.2f} {w50:8.2f} {w99:8.2f} {w50 / ref:6.2f} {w99 / ref:6.2f} "
            f"{pct(r.created_first, 0.99):9.2f} {total / max(r.steps, 1):6.1f} "
            f"{total / r.ok:7.1f} {r.rss_end:7.0f} {r.rss_peak:5.0f} {b50:7.2f} "
            f"{f50 / b50:6.2f} {f99 / b99:6.2f}  {r.load_start} -> {r.load_end}"
        )
    say(
        "s unless noted; Job s = the unit: one bare Job's round trip (idle at N=1, sampled "
        "during the load at N>1); 1st = alert -> first model request; wr = alert -> write "
        "proposed; x = / the unit; c>1st = created -> first model request; req/st, req/run = "
        "apiserver requests (all clients) per step (tool call or model call) and per incident; "
        "RSS = operator VmRSS with all N runs parked, HWM = its peak; burst s = p50 round "
        "trip of N bare Jobs sent at once (--burst; the idle unit at N=1), "
        "x b50, x b99 = 1st p50 / burst p50, 1st p99 / burst p99. Targets (issue 17): "
        "1st p50 within 1.5 Job round trips at 1 and 100."
    )
    sized = sorted((r for r in results if r.ok and r.n > 1), key=lambda r: r.n)
    if len(sized) >= 2:
        lo, hi = sized[-2], sized[-1]
        span = hi.n - lo.n
        say(
            f"Operator memory per run in flight, slope between {lo.n} and {hi.n} runs: "
            f"{(hi.rss_end - lo.rss_end) * 1024 / span:.1f} KiB (VmRSS, all parked; "
            f"{lo.rss_end:.0f} -> {hi.rss_end:.0f} MiB), "
            f"{(hi.rss_peak - lo.rss_peak) * 1024 / span:.1f} KiB (VmHWM; "
            f"{lo.rss_peak:.0f} -> {hi.rss_peak:.0f} MiB). Target: at most 20 KiB. "
            f"p99 created -> first model request at {hi.n}: "
            f"{pct(hi.created_first, 0.99):.2f} s"
        )


# ---------------------------------------------------------------- main


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.incident",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default="1,100,500,2000",
        help="incidents at once, comma-separated (memory: the slope between the last two)",
    )
    parser.add_argument(
        "--tools",
        choices=("builtin", "echo"),
        default="echo",
        help="the four prefetch tools: the same names printing a fixed envelope (default: "
        "cheap, so the control plane and not the tool processes fill this machine), or the "
        "shipped ones (agentrun-tool, about 1 CPU-second each on the local node)",
    )
    parser.add_argument(
        "--alert",
        choices=("receiver", "create"),
        default="create",
        help="how an alert arrives: the receiver's AgentRun created directly (default), or a "
        "POST to agentrun-receiver (it handles one alert at a time: --create-threads alerts "
        "wait in its queue)",
    )
    parser.add_argument(
        "--node",
        choices=("standin", "real"),
        default="standin",
        help="where tool pods run: the Python stand-in for the kubelet (default: a pod is a "
        "local process, a Job round trip tens of ms idle), or a real kubelet with containerd "
        "running the project's image (`make node-bin image`; root, as the real-node tests)",
    )
    parser.add_argument(
        "--single-rounds", type=int, default=10, help="at N=1: incidents one after another"
    )
    parser.add_argument("--job-samples", type=int, default=10, help="idle Job round trips")
    parser.add_argument(
        "--jitter",
        type=float,
        default=1.0,
        help="seconds: a random pause up to this before each idle Job and each incident at "
        "N=1, so that they do not start in step with a real kubelet's 1 s relist (0: none)",
    )
    parser.add_argument(
        "--job-probes", type=int, default=3, help="bare Jobs in flight during the load (N>1)"
    )
    parser.add_argument(
        "--create-threads", type=int, default=8, help="alerts sent (runs created) at once"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds from the last write proposed to reading the operator's memory (its heap "
        "is given back up to ~10 s after a burst: docs/benchmarks.md, memory per parked run)",
    )
    parser.add_argument(
        "--burst-max",
        type=int,
        default=500,
        help="for each size N>1 up to this, N bare Jobs at once (see --burst): "
        "the cluster's own Job round trip in a burst of N (0: never)",
    )
    parser.add_argument(
        "--burst",
        choices=("before", "after"),
        default="before",
        help="when the burst of N bare Jobs runs: before the load, on a node cleared of the "
        "burst's pods before the incidents start (default), or after it, with the operator "
        "stopped and the incidents' pods still on the node",
    )
    parser.add_argument("--size-timeout-base", type=float, default=300)
    parser.add_argument("--size-timeout-per-run", type=float, default=3.0)
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator (repeatable)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=stack.ROOT / ".local" / "bench-incident",
        help="cluster state and logs (default .local/bench-incident)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes integers, e.g. 1,100,500")
    if (
        not sizes
        or min(sizes) < 1
        or args.single_rounds < 1
        or args.job_samples < 1
        or args.job_probes < 1
    ):
        parser.error("--sizes, --single-rounds, --job-samples and --job-probes must be positive")
    if args.jitter < 0:
        parser.error("--jitter must not be negative")
    if any("=" not in kv for kv in args.operator_env):
        parser.error("--operator-env takes KEY=VALUE")
    operator_env = dict(kv.split("=", 1) for kv in args.operator_env)
    if args.node == "real" and (why := unsupported() or not_built()):
        parser.error(f"--node real: {why}")
    signal.signal(signal.SIGTERM, _terminate)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)

    say("== agentrun incident benchmark: alert -> evidence -> proposed fix ==")
    say(f"Machine: {machine()}")
    say(f"Load average at start: {loadavg()} (shared machine: other work skews the figures)")
    if operator_env:
        say(f"Operator environment: {operator_env}")
    say(
        f"Sizes {sizes}; each incident: an alert ({args.alert}), {len(PREFETCH)} prefetch calls "
        f"({', '.join(READ_TOOLS)}; {args.tools}), then the scripted model proposes "
        f"{WRITE_TOOL} (answers at once); a fresh namespace and operator per size"
    )
    t0 = time.monotonic()
    results: list[SizeResult] = []
    real = args.node == "real"
    with LocalCluster(workdir=args.workdir / "cluster", local_node=not real) as cluster:
        server = ScriptedModelServer()
        bench: Bench | None = None
        node = RealNode(args.workdir / "node", cluster) if real else None
        try:
            if node is not None:
                node.start()
                # Tool pods run the image make image built (imported, never pulled).
                operator_env.setdefault("AGENTRUN_TOOL_IMAGE", node.image)
                say(f"Real node {node.name}: kubelet and containerd, tool image {node.image}")
            say(f"Local control plane ready in {time.monotonic() - t0:.1f}s")
            server.start()
            stack.install_crds(cluster)
            bench = Bench(cluster, server, args, operator_env, node)
            for n in sizes:
                say(f"\n-- {n} incident(s) at once (load average {loadavg()}) --")
                results.append(bench.run_size(n))
                report(results[-1])
        finally:
            if bench is not None:
                bench.stop_all()
            server.stop()
            if node is not None:
                node.stop()
    summary(results, args)
    say(f"Total time {time.monotonic() - t0:.0f}s")
    failed = sum(len(r.failed) for r in results)
    if failed:
        say(f"\n{failed} incident(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
