"""The operator's per-step overhead on the local control plane (`make bench-step`).

The model is the scripted local server (it answers at once) and each run does two read tool
calls (`k8s-get` on a Deployment, then on the namespace's pods) and `done`. What is measured
is the time the operator adds around each step, with the tool Job's own run time taken out:

  apply -> model       AgentRun create returned (here) -> step 1 received (model server)
  answer -> Job        step k answered (model server) -> Job ADDED seen by our watch
  Job done -> model    tool pod Succeeded (or Job Complete, the first) seen by our watch
                       -> step k+1 received (model server)

Every timestamp is time.time() in this one process (the model server runs in a thread of
it), so they share one clock. The two Job-side figures include the watch's delivery latency
(apiserver -> this process); the baseline section measures that latency separately, next to
a raw status merge-PATCH round trip on an AgentRun, so the figures also read as ratios.

    python -m benchmarks.step_overhead [--runs 20] [--concurrent K] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from agentrun.kube import client as agentrun_kube
from tests.cluster import LocalCluster
from tests.modelserver import ScriptedModelServer
from tests.support import stack

NS = "bench"
BASELINE_NS = "bench-baseline"
MODEL = "scripted-bench-steps"
AGENT = "bench-agent"
GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
LABEL_RUN, LABEL_STEP = "agentrun.dev/run", "agentrun.dev/step"
TERMINAL = ("Succeeded", "Failed", "Cancelled")

SCRIPT: list[dict[str, Any]] = [
    {"tool": "k8s-get", "arguments": {"kind": "Deployment", "name": "web", "namespace": NS}},
    {"tool": "k8s-get", "arguments": {"kind": "Pod", "namespace": NS}},
    {"done": "Benchmark run: the Deployment and the pods were read."},
]
TOOL_STEPS = (1, 2)  # the steps answered with a read tool call
MODEL_STEPS = len(SCRIPT)


def say(text: str = "") -> None:
    print(text, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: everything stops


# ---------------------------------------------------------------- statistics


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


# ---------------------------------------------------------------- watching


class Watcher:
    """Watches one list endpoint in a thread and records when each event arrived here.

    `on_event(type, object, arrived)` runs in the watch thread for every event. Events are
    plain JSON (no typed deserialisation, which would add its own latency).
    """

    def __init__(
        self,
        name: str,
        api: k8s.ApiClient,
        list_call: Callable[..., Any],
        args: tuple[Any, ...],
        on_event: Callable[[str, dict[str, Any], float], None],
        label_selector: str | None = None,
    ) -> None:
        self.name = name
        self.api = api
        self.list_call = list_call
        self.args = args
        self.on_event = on_event
        self.label_selector = label_selector
        self._stop = threading.Event()
        self._watch: Any = None  # k8s_watch.Watch, whose methods are untyped
        self._thread = threading.Thread(target=self._loop, name=f"watch-{name}", daemon=True)
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def start(self) -> Watcher:
        self._thread.start()
        if not self.ready.wait(30):
            raise TimeoutError(f"the {self.name} watch did not start within 30s")
        if self.error is not None:
            raise RuntimeError(f"the {self.name} watch failed: {self.error}")
        return self

    def _kwargs(self) -> dict[str, Any]:
        return {"label_selector": self.label_selector} if self.label_selector else {}

    def _loop(self) -> None:
        try:
            listing = self.list_call(*self.args, _preload_content=False, **self._kwargs())
            rv = json.loads(listing.data)["metadata"]["resourceVersion"]
        except BaseException as e:  # reported by start()
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        while not self._stop.is_set():
            self._watch = k8s_watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in self._watch.stream(
                    self.list_call,
                    *self.args,
                    resource_version=rv,
                    timeout_seconds=5,  # short server-side timeout: stop() ends within 5 s
                    allow_watch_bookmarks=True,
                    deserialize=False,
                    **self._kwargs(),
                ):
                    arrived = time.time()
                    obj = event.get("object") or {}
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") != "BOOKMARK":
                        self.on_event(event["type"], obj, arrived)
                    if self._stop.is_set():
                        break
            except Exception as e:
                if self._stop.is_set():
                    break
                if getattr(e, "status", None) == 410:  # expired: relist (events may be lost)
                    self.error = e
                    return
                time.sleep(0.2)  # a dropped connection: resume from rv

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=10)


@dataclass
class JobSeen:
    added: float | None = None
    finished: float | None = None  # the Job's Complete/Failed condition seen
    condition: str = ""
    pod_done: float | None = None  # its pod seen Succeeded/Failed

    @property
    def done(self) -> float | None:
        """When the tool's end was first visible: its pod finished, or the Job's condition
        (which the job controller sets after the pod, seconds later under load)."""
        seen = [t for t in (self.finished, self.pod_done) if t is not None]
        return min(seen) if seen else None


def _step_key(obj: dict[str, Any]) -> tuple[str, int] | None:
    """(run, step) from a tool Job's or pod's labels."""
    labels = obj.get("metadata", {}).get("labels") or {}
    run, step = labels.get(LABEL_RUN), labels.get(LABEL_STEP, "")
    return (run, int(step)) if run and step.isdigit() else None


@dataclass
class Observed:
    """What the watches saw, keyed by run name; guarded by `cond`."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    jobs: dict[tuple[str, int], JobSeen] = field(default_factory=dict)
    phase: dict[str, tuple[str, float]] = field(default_factory=dict)

    def job_event(self, type_: str, job: dict[str, Any], arrived: float) -> None:
        key = _step_key(job)
        if key is None:
            return
        with self.cond:
            seen = self.jobs.setdefault(key, JobSeen())
            if seen.added is None:
                # ADDED normally; a MODIFIED first means the ADDED was missed (then later)
                seen.added = arrived
            for c in (job.get("status") or {}).get("conditions") or []:
                done = c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                if done and seen.finished is None:
                    seen.finished, seen.condition = arrived, c["type"]
            self.cond.notify_all()

    def pod_event(self, type_: str, pod: dict[str, Any], arrived: float) -> None:
        key = _step_key(pod)
        if key is None or (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            return
        with self.cond:
            seen = self.jobs.setdefault(key, JobSeen())
            if seen.pod_done is None:
                seen.pod_done = arrived
            self.cond.notify_all()

    def run_event(self, type_: str, run: dict[str, Any], arrived: float) -> None:
        name = run.get("metadata", {}).get("name", "")
        phase = (run.get("status") or {}).get("phase", "")
        with self.cond:
            if phase in TERMINAL and name not in self.phase:
                self.phase[name] = (phase, arrived)
                self.cond.notify_all()

    def wait_terminal(self, name: str, timeout: float) -> tuple[str, float]:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.phase, timeout):
                raise TimeoutError(f"AgentRun {NS}/{name} did not finish within {timeout:.0f}s")
            return self.phase[name]


# ---------------------------------------------------------------- one run


@dataclass
class RunResult:
    name: str
    ok: bool
    error: str = ""
    apply_to_model: float = float("nan")
    answer_to_job: list[float] = field(default_factory=list)
    job_to_model: list[float] = field(default_factory=list)
    job_runtime: list[float] = field(default_factory=list)
    wall: float = float("nan")
    retries: int = 0


class Bench:
    def __init__(
        self,
        cluster: LocalCluster,
        server: ScriptedModelServer,
        operator: stack.OperatorProcess,
        timeout: float,
    ) -> None:
        self.cluster = cluster
        self.server = server
        self.operator = operator
        self.timeout = timeout
        self.observed = Observed()
        self._local = threading.local()

    def api(self) -> k8s.ApiClient:
        """One ApiClient per thread (the generated client is not thread-safe to share)."""
        if not hasattr(self._local, "api"):
            self._local.api = new_api(self.cluster.kubeconfig)
        api: k8s.ApiClient = self._local.api
        return api

    def one_run(self, name: str) -> RunResult:
        body = stack.run_manifest(name, NS, AGENT, "Benchmark: read the web Deployment and pods.")
        custom = k8s.CustomObjectsApi(self.api())
        try:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, NS, PLURAL, body, _preload_content=False
            )
            created = time.time()
            phase, finished = self.observed.wait_terminal(name, self.timeout)
        except Exception as e:
            return RunResult(name, ok=False, error=f"{type(e).__name__}: {e}")
        result = RunResult(name, ok=phase == "Succeeded", wall=finished - created)
        if not result.ok:
            result.error = f"phase {phase}"
            return result
        return self._analyse(result, created)

    def _analyse(self, result: RunResult, created: float) -> RunResult:
        name = result.name
        records = [r for r in self.server.requests if r["run"] == f"{NS}/{name}"]
        by_step: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            by_step[int(r["step"])].append(r)
        problems = []
        if sorted(by_step) != list(range(1, MODEL_STEPS + 1)):
            problems.append(f"model steps seen {sorted(by_step)}, expected 1..{MODEL_STEPS}")
        result.retries = sum(len(v) - 1 for v in by_step.values())
        with self.observed.cond:
            jobs = {s: self.observed.jobs.get((name, s)) for s in TOOL_STEPS}
        for s, seen in jobs.items():
            if seen is None or seen.added is None or seen.done is None:
                problems.append(f"Job of step {s} not seen created and finished: {seen}")
            elif seen.condition == "Failed":
                problems.append(f"Job of step {s} ended {seen.condition}")
        if problems:
            result.ok, result.error = False, "; ".join(problems)
            return result
        first = {s: min(v, key=lambda r: r["received"]) for s, v in by_step.items()}
        answered = {
            s: max((r for r in v if r.get("status") == 200), key=lambda r: r["received"])
            for s, v in by_step.items()
        }
        result.apply_to_model = first[1]["received"] - created
        for s in TOOL_STEPS:
            seen = jobs[s]
            assert seen is not None and seen.added is not None and seen.done is not None
            result.answer_to_job.append(seen.added - answered[s]["answered"])
            assert seen.done is not None
            result.job_to_model.append(first[s + 1]["received"] - seen.done)
            result.job_runtime.append(seen.done - seen.added)
        return result

    def many(self, prefix: str, count: int, in_flight: int) -> tuple[list[RunResult], float]:
        names = [f"{prefix}-{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(count)]
        started = time.time()
        if in_flight <= 1:
            results = []
            for n in names:
                results.append(self.one_run(n))
                if not results[-1].ok:
                    say(f"  run {n} FAILED: {results[-1].error}")
        else:
            with ThreadPoolExecutor(max_workers=in_flight) as pool:
                results = list(pool.map(self.one_run, names))
            for r in results:
                if not r.ok:
                    say(f"  run {r.name} FAILED: {r.error}")
        return results, time.time() - started


# ---------------------------------------------------------------- baselines


def new_api(kubeconfig: Path) -> k8s.ApiClient:
    api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


def baseline_patch(cluster: LocalCluster, samples: int) -> list[float]:
    """Raw status merge-PATCH round trips on an AgentRun, as the operator sends them
    (agentrun.kube.client.patch_run_status), before the operator runs (nothing reacts to them)."""
    api = new_api(cluster.kubeconfig)
    custom = k8s.CustomObjectsApi(api)
    name = "baseline-patch"
    body = stack.run_manifest(name, BASELINE_NS, AGENT, "baseline: never run")
    custom.create_namespaced_custom_object(
        GROUP, VERSION, BASELINE_NS, PLURAL, body, _preload_content=False
    )
    times = []
    try:
        for i in range(samples + 5):  # 5 warm-up round trips, not counted
            t = time.perf_counter()
            agentrun_kube.patch_run_status(api, BASELINE_NS, name, {"step": i})
            if i >= 5:
                times.append(time.perf_counter() - t)
    finally:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, BASELINE_NS, PLURAL, name, _preload_content=False
        )
    return times


def baseline_watch(cluster: LocalCluster, samples: int) -> tuple[list[float], list[float]]:
    """ConfigMap creates: (create round trip, create sent -> ADDED seen by a watch like ours)."""
    api = new_api(cluster.kubeconfig)
    core = k8s.CoreV1Api(api)
    seen: dict[str, float] = {}
    cond = threading.Condition()

    def on_event(type_: str, obj: dict[str, Any], arrived: float) -> None:
        if type_ == "ADDED":
            with cond:
                seen.setdefault(obj["metadata"]["name"], arrived)
                cond.notify_all()

    watcher = Watcher(
        "configmaps",
        new_api(cluster.kubeconfig),
        core.list_namespaced_config_map,
        (BASELINE_NS,),
        on_event,
        label_selector="bench=watch",
    ).start()
    rtt, delivery = [], []
    try:
        for i in range(samples + 3):
            name = f"watch-{i}"
            cm: Any = {  # the client sends a dict body as is, typed V1ConfigMap or not
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"bench": "watch"}},
            }
            sent = time.time()
            core.create_namespaced_config_map(BASELINE_NS, cm, _preload_content=False)
            returned = time.time()

            def delivered(n: str = name) -> bool:
                return n in seen

            with cond:
                if not cond.wait_for(delivered, 10):
                    raise TimeoutError(f"watch never delivered ConfigMap {name}")
            if i >= 3:
                rtt.append(returned - sent)
                delivery.append(seen[name] - sent)
    finally:
        watcher.stop()
    return rtt, delivery


# ---------------------------------------------------------------- apiserver request counts


_SAMPLE = re.compile(
    r"^(apiserver_request_total|apiserver_request_duration_seconds_(?:sum|count))"
    r"\{([^}]*)\} ([0-9.e+]+)$"
)
Sample = tuple[str, tuple[str, str], float]  # metric, (verb, resource[/subresource]), value


def request_samples(api: k8s.ApiClient) -> list[Sample]:
    """The apiserver's per-request counters and durations, one read of /metrics."""
    resp: Any = api.call_api(
        *api.param_serialize("GET", "/metrics", header_params={}, auth_settings=["BearerToken"])
    )
    resp.read()
    samples: list[Sample] = []
    for line in resp.data.decode().splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        res = labels.get("resource", "")
        if labels.get("subresource"):
            res += "/" + labels["subresource"]
        samples.append((m.group(1), (labels.get("verb", ""), res), float(m.group(3))))
    return samples


def request_counts(samples: list[Sample]) -> Counter[tuple[str, str]]:
    """apiserver_request_total by (verb, resource[/subresource])."""
    counts: Counter[tuple[str, str]] = Counter()
    for metric, key, value in samples:
        if metric == "apiserver_request_total":
            counts[key] += int(value)
    return counts


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu}{mem}; "
        f"Linux {platform.release()}; Python {platform.python_version()}; "
        "local control plane Kubernetes v1.20.2"
    )


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def table(title: str, results: list[RunResult], elapsed: float, patch_median: float) -> None:
    ok = [r for r in results if r.ok]
    say(
        f"\n{title}: {len(ok)}/{len(results)} runs succeeded, {elapsed:.1f}s in all "
        f"(load average now {loadavg()})"
    )
    if not ok:
        return
    rows: list[tuple[str, list[float], bool]] = [
        ("apply -> model request (step 1)", [r.apply_to_model for r in ok], True),
        ("model answer -> Job ADDED seen*", [x for r in ok for x in r.answer_to_job], True),
        ("tool done seen* -> next model req", [x for r in ok for x in r.job_to_model], True),
        ("(excluded) tool Job ADDED -> done", [x for r in ok for x in r.job_runtime], False),
        ("wall time per run (apply -> Succeeded)", [r.wall for r in ok], False),
    ]
    say(f"  {'':40} {'n':>4} {'median ms':>10} {'p90 ms':>9} {'x PATCH':>8}")
    for label, values, ratio in rows:
        r = f"{statistics.median(values) / patch_median:7.1f}x" if ratio else ""
        say(
            f"  {label:40} {len(values):4d} {ms(statistics.median(values)):>10} "
            f"{ms(pct(values, 0.9)):>9} {r:>8}"
        )
    per_run = statistics.median([r.wall for r in ok])
    overhead = statistics.median(
        [r.apply_to_model + sum(r.answer_to_job) + sum(r.job_to_model) for r in ok]
    )
    say(
        f"  steps/second: {MODEL_STEPS / per_run:.2f} per run (median wall), "
        f"{MODEL_STEPS * len(ok) / elapsed:.2f} aggregate; "
        f"operator overhead per run (median of sums) {overhead * 1000:.0f} ms = "
        f"{overhead / per_run:.0%} of the wall time"
    )
    retries = sum(r.retries for r in ok)
    if retries:
        say(f"  note: {retries} model request retries were seen (first request timed)")


def print_counts(delta: Counter[tuple[str, str]], runs: int) -> None:
    say(f"\napiserver requests per run (all clients, /metrics delta over {runs} runs / {runs}):")
    rows = sorted(((n / runs, v, r) for (v, r), n in delta.items() if n), reverse=True)
    for per_run, verb, res in rows[:18]:
        say(f"  {per_run:6.1f}  {verb:8} {res}")
    say(f"  {sum(delta.values()) / runs:6.1f}  total")


# ---------------------------------------------------------------- main


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", "-n", type=int, default=20, help="runs per mode (default 20)")
    parser.add_argument(
        "--concurrent",
        "-k",
        type=int,
        default=0,
        metavar="K",
        help="also do --runs runs with K in flight at once",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--run-timeout", type=float, default=120, help="seconds per run")
    parser.add_argument("--baseline-samples", type=int, default=50)
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator, e.g. AGENTRUN_IO_THREADS=64 (repeatable)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=stack.ROOT / ".local" / "bench",
        help="cluster state, operator log (default .local/bench)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.runs < 1 or args.concurrent < 0:
        parser.error("--runs must be >= 1 and --concurrent >= 0")
    if any("=" not in kv for kv in args.operator_env):
        parser.error("--operator-env takes KEY=VALUE")
    operator_env = dict(kv.split("=", 1) for kv in args.operator_env)
    signal.signal(signal.SIGTERM, _terminate)

    args.workdir.mkdir(parents=True, exist_ok=True)
    say("== agentrun step overhead benchmark ==")
    say(f"Machine: {machine()}")
    say(f"Load average at start: {loadavg()} (other work on this machine skews the figures)")
    if operator_env:
        say(f"Operator environment: {operator_env}")
    say(
        f"Model: local scripted server (answers at once); script: {MODEL_STEPS} steps, "
        f"two k8s-get tool calls then done"
    )
    t0 = time.monotonic()
    with LocalCluster(workdir=args.workdir / "cluster") as cluster:
        say(f"Local control plane ready in {time.monotonic() - t0:.1f}s")
        server = ScriptedModelServer(scripts={MODEL: SCRIPT})
        operator_log = args.workdir / "operator.log"
        operator_log.unlink(missing_ok=True)
        operator = stack.OperatorProcess(cluster.kubeconfig, operator_log, env=operator_env)
        watchers: list[Watcher] = []
        try:
            server.start()
            return _bench(args, cluster, server, operator, watchers)
        finally:
            for w in watchers:
                w.stop()
            operator.stop()
            server.stop()


def _bench(
    args: argparse.Namespace,
    cluster: LocalCluster,
    server: ScriptedModelServer,
    operator: stack.OperatorProcess,
    watchers: list[Watcher],
) -> int:
    stack.install_crds(cluster)
    stack.prepare_namespace(cluster, NS)
    stack.apply(
        cluster,
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BASELINE_NS}},
            stack.agent_manifest(AGENT, NS, MODEL, server.base_url, ["k8s-get"]),
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}},
                "spec": {
                    "replicas": 0,  # nothing for the local node to run: only the tools run
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "containers": [{"name": "web", "image": "web:1", "command": ["true"]}]
                        },
                    },
                },
            },
        ],
    )

    say(
        "\nBaseline on this apiserver (before the operator starts; "
        f"{args.baseline_samples} samples):"
    )
    patches = baseline_patch(cluster, args.baseline_samples)
    patch_median = statistics.median(patches)
    say(
        f"  AgentRun status merge-PATCH round trip: median {patch_median * 1000:.2f} ms, "
        f"p90 {pct(patches, 0.9) * 1000:.2f} ms"
    )
    rtt, delivery = baseline_watch(cluster, 20)
    say(
        f"  ConfigMap create round trip: median {statistics.median(rtt) * 1000:.2f} ms; "
        f"create sent -> watch ADDED here: median {statistics.median(delivery) * 1000:.2f} ms, "
        f"p90 {pct(delivery, 0.9) * 1000:.2f} ms  (* watch delivery included below)"
    )

    operator.start()
    say(f"\nOperator started (log {operator.log_path})")
    bench = Bench(cluster, server, operator, args.run_timeout)
    batch = k8s.BatchV1Api(new_api(cluster.kubeconfig))
    custom = k8s.CustomObjectsApi(new_api(cluster.kubeconfig))
    watchers.append(
        Watcher(
            "jobs",
            batch.api_client,
            batch.list_namespaced_job,
            (NS,),
            bench.observed.job_event,
            label_selector=LABEL_RUN,
        ).start()
    )
    core_api = k8s.CoreV1Api(new_api(cluster.kubeconfig))
    watchers.append(
        Watcher(
            "pods",
            core_api.api_client,
            core_api.list_namespaced_pod,
            (NS,),
            bench.observed.pod_event,
            label_selector=LABEL_RUN,
        ).start()
    )
    watchers.append(
        Watcher(
            "agentruns",
            custom.api_client,
            custom.list_namespaced_custom_object,
            (GROUP, VERSION, NS, PLURAL),
            bench.observed.run_event,
        ).start()
    )

    failed = 0
    if args.warmup:
        results, _ = bench.many("warmup", args.warmup, 1)
        failed += sum(not r.ok for r in results)
        if failed:
            say("Warm-up failed; operator log (tail):\n" + operator.log_tail())
            return 1

    metrics_api = new_api(cluster.kubeconfig)
    before = request_counts(request_samples(metrics_api))
    say(f"\nSequential: {args.runs} runs, one at a time")
    results, elapsed = bench.many("seq", args.runs, 1)
    after = request_counts(request_samples(metrics_api))
    failed += sum(not r.ok for r in results)
    table("Sequential", results, elapsed, patch_median)
    print_counts(after - before, args.runs)

    if args.concurrent:
        say(f"\nConcurrent: {args.runs} runs, {args.concurrent} in flight")
        cresults, celapsed = bench.many(f"con{args.concurrent}", args.runs, args.concurrent)
        failed += sum(not r.ok for r in cresults)
        table(f"Concurrent (K={args.concurrent})", cresults, celapsed, patch_median)

    say(
        "\n* seen by this process's watch: includes the apiserver -> watcher delivery latency "
        "(see the baseline).\n  x PATCH = median / median raw AgentRun status PATCH round trip."
    )
    if failed:
        say(f"\n{failed} run(s) failed; operator log (tail):\n{operator.log_tail()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
