"""Many runs in flight on one local control plane (`make bench`): overhead, requests, RSS.

For each size N (default 100, 200, 500) the benchmark creates N AgentRuns at once in a
fresh namespace, with a fresh operator watching only that namespace, and waits for all of
them. Each run is 3 model steps: two calls of a no-op read tool (a Job whose pod is
`sh -c 'echo <envelope>'`, cheap on the local node) and `done`; the scripted model answers
at once. Per step it measures the time the operator adds, with model and tool time taken
out, from timestamps all taken with time.time() in this one process:

  trigger -> model request   run created (create returned) or the previous step's tool
                             done (its pod Succeeded, or the Job Complete if that came
                             first, seen by our watch)  ->  step received (model server)
  model answer -> effect     step answered (model server)  ->  its Job `ADDED` seen by our
                             watch, or, for `done`, the run's `Succeeded` status seen

  per-step overhead = the sum of the two; excluded: received -> answered (model) and
  Job ADDED -> tool done as seen by our watch (job controller, scheduler, local node, pod).
  (Before the operator stepped on a pod's success, "done" was the Job's Complete condition,
  which the job controller sets seconds after the pod under load.)

Watch delivery (apiserver -> this process) is included in the figures, as it is in the
reference: a bare kopf operator (benchmarks/bare_kopf.py, a subprocess) whose handler
copies spec.value into status, timed from our spec PATCH sent to its status seen by our
watch, with kopf's default storages and with status storages, idle before each size and
sampled during the load. Also: apiserver_request_total delta per step (all clients),
operator RSS (VmHWM and VmRSS from /proc), CPU seconds per component, steps per second,
and the wait distribution (p99 of creation -> first model request, of per-step overhead).

    python -m benchmarks.scale [--sizes 100,200,500] [--operator-env KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s

from agentrun.kube import raw as rawapi
from agentrun.kube.client import MERGE_PATCH
from benchmarks import bare_kopf
from benchmarks.step_overhead import (
    LABEL_RUN,
    Observed,
    Sample,
    Watcher,
    loadavg,
    machine,
    new_api,
    pct,
    request_counts,
    request_samples,
)
from tests.cluster import LocalCluster
from tests.modelserver import ScriptedModelServer
from tests.support import stack

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
MODEL, AGENT, TOOL = "scripted-scale", "scale-agent", "noop"
ENVELOPE = json.dumps(
    {
        "agentrunEnvelope": 1,
        "tool": TOOL,
        "ok": True,
        "output": "ok",
        "error": None,
        "truncated": False,
    }
)
SCRIPT: list[dict[str, Any]] = [
    {"tool": TOOL, "arguments": {"n": 1}},
    {"tool": TOOL, "arguments": {"n": 2}},
    {"done": "Scale benchmark run: two no-op tool calls made."},
]
TOOL_STEPS = (1, 2)
STEPS = len(SCRIPT)
BARE_MODES = ("default", "status")
COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "node")
CLK = os.sysconf("SC_CLK_TCK")


def say(text: str = "") -> None:
    print(text, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: everything stops


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def merge_patch(api: k8s.ApiClient, path: str, body: dict[str, Any]) -> None:
    rawapi.send(api, "PATCH", path, body, content_type=MERGE_PATCH)


def request_seconds(samples: list[Sample]) -> dict[tuple[str, str], list[float]]:
    """apiserver_request_duration_seconds [sum, count] by (verb, resource[/subresource])."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for metric, key, value in samples:
        if metric.startswith("apiserver_request_duration_seconds_"):
            out[key][0 if metric.endswith("_sum") else 1] += value
    return out


# ---------------------------------------------------------------- /proc


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system; with reaped children's when asked) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK


def proc_mem(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


class RssSampler:
    """Samples a process's VmRSS every `every` seconds; keeps the largest and the last."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid, self.every = pid, every
        self.peak_rss = 0.0
        self.last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            mem = proc_mem(self.pid)
            if mem:
                self.last = mem
                self.peak_rss = max(self.peak_rss, mem.get("VmRSS", 0.0))
            self._stop.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        mem = proc_mem(self.pid) or self.last
        self.peak_rss = max(self.peak_rss, mem.get("VmRSS", 0.0))
        return mem


# ---------------------------------------------------------------- the bare kopf reference


class BareKopf:
    """benchmarks/bare_kopf.py in a subprocess, and a driver timing its step cycle."""

    def __init__(self, cluster: LocalCluster, storage: str, workdir: Path) -> None:
        self.cluster = cluster
        self.storage = storage
        self.ns = f"bench-bare-{storage}"
        self.log_path = workdir / f"bare-kopf-{storage}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = new_api(cluster.kubeconfig)
        self.path = (
            f"/apis/{bare_kopf.GROUP}/{bare_kopf.VERSION}/namespaces/{self.ns}/"
            f"{bare_kopf.PLURAL}/cycle"
        )
        self._cond = threading.Condition()
        self._observed: dict[int, float] = {}
        self._watcher: Watcher | None = None
        self._value = 0
        self._lock = threading.Lock()  # one cycle at a time

    def start(self) -> BareKopf:
        stack.apply(
            self.cluster,
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.ns}}],
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "PYTHONPATH": str(stack.ROOT)
            + (f":{os.environ['PYTHONPATH']}" if os.environ.get("PYTHONPATH") else ""),
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bare_kopf",
                    "--namespace",
                    self.ns,
                    "--storage",
                    self.storage,
                ],
                env=env,
                cwd=stack.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        custom = k8s.CustomObjectsApi(new_api(self.cluster.kubeconfig))
        self._watcher = Watcher(
            f"bare-{self.storage}",
            custom.api_client,
            custom.list_namespaced_custom_object,
            (bare_kopf.GROUP, bare_kopf.VERSION, self.ns, bare_kopf.PLURAL),
            self._on_event,
        ).start()
        custom.create_namespaced_custom_object(
            bare_kopf.GROUP,
            bare_kopf.VERSION,
            self.ns,
            bare_kopf.PLURAL,
            {
                "apiVersion": f"{bare_kopf.GROUP}/{bare_kopf.VERSION}",
                "kind": bare_kopf.KIND,
                "metadata": {"name": "cycle"},
                "spec": {"value": 0},
            },
            _preload_content=False,
        )
        self._wait(0, 60, "the bare kopf operator's first handler call (on create)")
        return self

    def _on_event(self, type_: str, obj: dict[str, Any], arrived: float) -> None:
        observed = (obj.get("status") or {}).get("observed")
        if isinstance(observed, int):
            with self._cond:
                self._observed.setdefault(observed, arrived)
                self._cond.notify_all()

    def _wait(self, value: int, timeout: float, what: str) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: value in self._observed, timeout):
                if self.proc is not None and self.proc.poll() is not None:
                    what += f" (bare kopf exited {self.proc.returncode}; log {self.log_path})"
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            return self._observed[value]

    def cycle(self, timeout: float = 30) -> float:
        """One spec PATCH -> handler -> status PATCH seen by our watch, in seconds."""
        with self._lock:
            self._value += 1
            value = self._value
            sent = time.time()
            merge_patch(self.api, self.path, {"spec": {"value": value}})
            return self._wait(value, timeout, f"bare kopf ({self.storage}) cycle {value}") - sent

    def sample(self, count: int, warmup: int = 3) -> list[float]:
        for _ in range(warmup):
            self.cycle()
        return [self.cycle() for _ in range(count)]

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class LoadSampler:
    """Bare kopf cycles back to back (with a pause) while the load runs."""

    def __init__(self, bare: BareKopf, pause: float = 0.25) -> None:
        self.bare, self.pause = bare, pause
        self.samples: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bare-under-load", daemon=True)

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.pause):
            try:
                self.samples.append(self.bare.cycle(timeout=60))
            except Exception:
                self.errors += 1

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(70)
        return self.samples


# ---------------------------------------------------------------- one size


@dataclass
class SizeResult:
    n: int
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    elapsed: float = float("nan")
    trigger_first: list[float] = field(default_factory=list)  # created -> step 1 request
    trigger_job: list[float] = field(default_factory=list)  # tool done* -> next request
    effect_job: list[float] = field(default_factory=list)  # answer -> Job ADDED*
    effect_done: list[float] = field(default_factory=list)  # answer -> Succeeded*
    step_overhead: list[float] = field(default_factory=list)
    steady_overhead: list[float] = field(default_factory=list)  # steps 2.. (after a Job)
    model_time: list[float] = field(default_factory=list)
    tool_time: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    retries: int = 0
    bare_idle: dict[str, list[float]] = field(default_factory=dict)
    bare_load: list[float] = field(default_factory=list)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    rss_peak: float = float("nan")  # VmHWM
    rss_sampled_peak: float = float("nan")
    rss_end: float = float("nan")
    load_start: str = ""
    load_end: str = ""
    log_problems: int = 0
    probe: dict[str, float] = field(default_factory=dict)
    raw: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.ok * STEPS

    def overhead_ratio(self, mode: str) -> float:
        return statistics.median(self.step_overhead) / statistics.median(self.bare_idle[mode])


def tool_manifest(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentTool",
        "metadata": {"name": TOOL, "namespace": namespace},
        "spec": {
            "effect": "read",
            "description": "Does nothing; answers ok (benchmark).",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}},
            "command": ["sh", "-c", f"echo '{ENVELOPE}'"],
            "timeoutSeconds": 300,
        },
    }


class Scale:
    def __init__(
        self,
        cluster: LocalCluster,
        server: ScriptedModelServer,
        bare: dict[str, BareKopf],
        args: argparse.Namespace,
        operator_env: dict[str, str],
    ) -> None:
        self.cluster, self.server, self.bare, self.args = cluster, server, bare, args
        self.operator_env = operator_env
        self._local = threading.local()
        self.operator: stack.OperatorProcess | None = None
        self.watchers: list[Watcher] = []

    def api(self) -> k8s.ApiClient:
        if not hasattr(self._local, "api"):
            self._local.api = new_api(self.cluster.kubeconfig)
        api: k8s.ApiClient = self._local.api
        return api

    def cpu_now(self) -> dict[str, float]:
        out = {p.name: proc_cpu(p.pid, children=p.name == "node") for p in self.cluster.procs}
        if self.operator is not None and self.operator.proc is not None:
            out["operator"] = proc_cpu(self.operator.proc.pid)
        t = os.times()
        out["benchmark (model server, watches)"] = t.user + t.system
        for mode, b in self.bare.items():
            if b.proc is not None:
                out[f"bare kopf ({mode})"] = proc_cpu(b.proc.pid)
        return out

    def _profile(self, pid: int, n: int) -> subprocess.Popen[bytes] | None:
        """py-spy sampling the operator during the load (--profile), as collapsed stacks."""
        if not self.args.profile:
            return None
        out = self.args.workdir / f"operator-{n}.pyspy.txt"
        say(f"  profiling the operator with {self.args.profile} into {out}")
        return subprocess.Popen(
            [
                self.args.profile,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--nonblocking",
                "--threads",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _probe(self, ns: str, run: str) -> dict[str, float]:
        """After the load: round trips of the calls the runner makes per step, now that the
        namespace holds this size's pods (the runner finds a Job's pod with a LIST by label,
        which the apiserver answers from etcd, reading every pod of the namespace)."""
        api = self.api()
        # Untyped on purpose: with _preload_content=False the client returns the raw response.
        core: Any = k8s.CoreV1Api(api)
        batch: Any = k8s.BatchV1Api(api)
        pods = len(json.loads(core.list_namespaced_pod(ns, _preload_content=False).data)["items"])
        job = f"{run}-s1"
        for item in json.loads(batch.list_namespaced_job(ns, _preload_content=False).data)["items"]:
            if item["metadata"]["name"].startswith(job):
                job = item["metadata"]["name"]
                break

        def timed(call: Any, count: int = 20) -> float:
            times = []
            for _ in range(count):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            return statistics.median(times)

        selector = f"job-name={job}"
        return {
            "pods": pods,
            "list_pods_by_label": timed(
                lambda: (
                    core.list_namespaced_pod(
                        ns, label_selector=selector, _preload_content=False
                    ).data
                )
            ),
            "list_pods_by_label_rv0": timed(
                lambda: (
                    core.list_namespaced_pod(
                        ns, label_selector=selector, resource_version="0", _preload_content=False
                    ).data
                )
            ),
            "get_run": timed(
                lambda: (
                    cast(
                        Any,
                        k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                            GROUP, VERSION, ns, PLURAL, run, _preload_content=False
                        ),
                    ).data
                )
            ),
        }

    def run_size(self, n: int) -> SizeResult:
        ns = f"scale-{n}"
        res = SizeResult(n)
        stack.prepare_namespace(self.cluster, ns)
        stack.apply(
            self.cluster,
            [
                stack.agent_manifest(AGENT, ns, MODEL, self.server.base_url, [TOOL]),
                tool_manifest(ns),
            ],
        )
        for mode, b in self.bare.items():
            res.bare_idle[mode] = b.sample(self.args.bare_samples)
        say(
            "  bare kopf cycle, idle: "
            + "; ".join(
                f"{m} storage median {fmt_ms(statistics.median(v))} ms, p90 {fmt_ms(pct(v, 0.9))}"
                for m, v in res.bare_idle.items()
            )
        )

        log = self.args.workdir / f"operator-{n}.log"
        log.unlink(missing_ok=True)
        self.operator = op = stack.OperatorProcess(
            self.cluster.kubeconfig, log, env=self.operator_env, namespaces=[ns]
        )
        op.start(timeout=60)
        assert op.proc is not None
        rss = RssSampler(op.proc.pid).start()
        observed = Observed()
        batch = k8s.BatchV1Api(new_api(self.cluster.kubeconfig))
        custom = k8s.CustomObjectsApi(new_api(self.cluster.kubeconfig))
        core = k8s.CoreV1Api(new_api(self.cluster.kubeconfig))
        self.watchers = [
            Watcher(
                f"jobs-{n}",
                batch.api_client,
                batch.list_namespaced_job,
                (ns,),
                observed.job_event,
                label_selector=LABEL_RUN,
            ).start(),
            Watcher(
                f"pods-{n}",
                core.api_client,
                core.list_namespaced_pod,
                (ns,),
                observed.pod_event,
                label_selector=LABEL_RUN,
            ).start(),
            Watcher(
                f"agentruns-{n}",
                custom.api_client,
                custom.list_namespaced_custom_object,
                (GROUP, VERSION, ns, PLURAL),
                observed.run_event,
            ).start(),
        ]
        created: dict[str, float] = {}
        errors: dict[str, str] = {}
        # Untimed warm-up runs: the operator's first model call, Job, pod log and so on pay
        # one-off costs (imports, client set-up) that would otherwise land on the first wave.
        warm = [f"warmup{n}-{i}" for i in range(self.args.warmup)]
        for name in warm:
            body = stack.run_manifest(name, ns, AGENT, "Scale benchmark: warm-up.")
            k8s.CustomObjectsApi(self.api()).create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, body, _preload_content=False
            )
        with observed.cond:
            if not observed.cond.wait_for(lambda: all(w in observed.phase for w in warm), 120):
                raise TimeoutError(f"warm-up runs {warm} did not finish within 120s")
        bad = [w for w in warm if observed.phase[w][0] != "Succeeded"]
        if bad:
            say(f"  warm-up run(s) {bad} did not succeed; operator log tail:\n{op.log_tail(30)}")
            res.failed += [f"{w}: warm-up {observed.phase[w][0]}" for w in bad]
        time.sleep(1.0)  # let the warm-up's trailing events settle
        metrics_api = new_api(self.cluster.kubeconfig)
        names = [f"r{n}-{i:04d}" for i in range(n)]
        res.load_start = loadavg()
        before = request_samples(metrics_api)
        before_req, before_sec = request_counts(before), request_seconds(before)
        before_cpu = self.cpu_now()
        under_load = LoadSampler(self.bare["status"]).start()
        profiler = self._profile(op.proc.pid, n)

        def create(name: str) -> None:
            body = stack.run_manifest(name, ns, AGENT, "Scale benchmark: call noop twice.")
            try:
                k8s.CustomObjectsApi(self.api()).create_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, body, _preload_content=False
                )
                created[name] = time.time()
            except Exception as e:
                errors[name] = f"create failed: {type(e).__name__}: {e}"

        t0 = time.time()
        try:
            with ThreadPoolExecutor(max_workers=self.args.create_threads) as pool:
                list(pool.map(create, names))
            say(f"  {len(created)} runs created in {time.time() - t0:.1f}s; waiting for them")
            deadline = (
                time.monotonic() + self.args.size_timeout_base + self.args.size_timeout_per_run * n
            )
            last_report = time.monotonic()
            with observed.cond:
                while True:
                    done = sum(1 for x in created if x in observed.phase)
                    if done >= len(created):
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    observed.cond.wait(min(left, 5.0))
                    if time.monotonic() - last_report >= 30:
                        last_report = time.monotonic()
                        say(
                            f"  ... {done}/{len(created)} runs finished after "
                            f"{time.time() - t0:.0f}s (load average {loadavg()}, operator RSS "
                            f"{rss.last.get('VmRSS', 0):.0f} MiB)"
                        )
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
                    profiler.wait(5)
            res.bare_load = under_load.stop()
            after_cpu = self.cpu_now()
            after = request_samples(metrics_api)
            after_req, after_sec = request_counts(after), request_seconds(after)
            res.load_end = loadavg()
            mem = rss.stop()
            res.rss_peak = mem.get("VmHWM", float("nan"))
            res.rss_end = mem.get("VmRSS", float("nan"))
            res.rss_sampled_peak = rss.peak_rss
            for w in self.watchers:
                w.stop()
            self.watchers = []
            op.stop()
            self.operator = None
        try:
            res.probe = self._probe(ns, names[0])
        except Exception as e:  # a diagnostic only: never fails the benchmark
            say(f"  (probe after the load failed: {type(e).__name__}: {e})")
        res.requests = after_req - before_req
        for key, (total, count) in after_sec.items():
            prev = before_sec.get(key, [0.0, 0.0])
            if count - prev[1] >= 1:
                res.latency[key] = ((total - prev[0]) / (count - prev[1]), count - prev[1])
        dump = self.args.workdir / f"requests-{n}.json"
        dump.write_text(
            json.dumps({f"{v} {r}": c for (v, r), c in res.requests.most_common() if c}, indent=1)
        )
        res.cpu = {k: after_cpu.get(k, float("nan")) - v for k, v in before_cpu.items()}
        with observed.cond:
            phases = dict(observed.phase)
            jobs = dict(observed.jobs)
        ends = [phases[x][1] for x in created if x in phases]
        res.elapsed = (max(ends) if ends else time.time()) - t0
        text = log.read_text(errors="replace") if log.exists() else ""
        res.log_problems = sum(
            1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line
        )
        self._analyse(res, ns, names, created, errors, phases, jobs)
        (self.args.workdir / f"steps-{n}.json").write_text(json.dumps(res.raw))
        if res.failed:
            say(f"  operator log ({log}) tail:\n{op.log_tail(30)}")
        return res

    def _analyse(
        self,
        res: SizeResult,
        ns: str,
        names: list[str],
        created: dict[str, float],
        errors: dict[str, str],
        phases: dict[str, tuple[str, float]],
        jobs: dict[tuple[str, int], Any],
    ) -> None:
        by_run: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        prefix = f"{ns}/"
        for r in self.server.requests:
            if r["run"].startswith(prefix):
                by_run[r["run"][len(prefix) :]][int(r["step"])].append(r)
        for name in names:
            if name in errors:
                res.failed.append(f"{name}: {errors[name]}")
                continue
            if name not in phases:
                res.failed.append(f"{name}: not finished (timeout)")
                continue
            phase, finished = phases[name]
            if phase != "Succeeded":
                res.failed.append(f"{name}: phase {phase}")
                continue
            steps = by_run[name]
            if sorted(steps) != list(range(1, STEPS + 1)):
                res.failed.append(f"{name}: model steps seen {sorted(steps)}")
                continue
            seen: dict[int, Any] = {s: jobs.get((name, s)) for s in TOOL_STEPS}
            bad = [
                s
                for s, j in seen.items()
                if j is None or j.added is None or j.done is None or j.condition == "Failed"
            ]
            if bad:
                res.failed.append(f"{name}: Job of step(s) {bad} not seen created and done")
                continue
            first = {s: min(v, key=lambda r: r["received"]) for s, v in steps.items()}
            answered = {}
            for s, v in steps.items():
                good = [r for r in v if r.get("status") == 200 and "answered" in r]
                answered[s] = max(good, key=lambda r: r["received"]) if good else first[s]
            res.retries += sum(len(v) - 1 for v in steps.values())
            res.ok += 1
            c = created[name]
            res.wall.append(finished - c)
            for s in range(1, STEPS + 1):
                if s == 1:
                    trig = first[1]["received"] - c
                    res.trigger_first.append(trig)
                else:
                    trig = first[s]["received"] - seen[s - 1].done
                    res.trigger_job.append(trig)
                if s in TOOL_STEPS:
                    eff = seen[s].added - answered[s]["answered"]
                    res.effect_job.append(eff)
                    res.tool_time.append(seen[s].done - seen[s].added)
                else:
                    eff = finished - answered[s]["answered"]
                    res.effect_done.append(eff)
                res.step_overhead.append(trig + eff)
                if s > 1:
                    res.steady_overhead.append(trig + eff)
                res.raw.append({"run": name, "step": s, "trigger": trig, "effect": eff})
                res.model_time.append(answered[s]["answered"] - first[s]["received"])


# ---------------------------------------------------------------- report


HEADER = (
    f"  {'(ms; * = seen by our watch)':44} {'n':>5} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9}"
)


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:44} {0:5d}"
    return (
        f"  {label:44} {len(values):5d} {fmt_ms(statistics.median(values)):>9} "
        f"{fmt_ms(pct(values, 0.9)):>9} {fmt_ms(pct(values, 0.99)):>9} {fmt_ms(max(values)):>9}"
    )


def report(res: SizeResult) -> None:
    say(
        f"\nN={res.n}: {res.ok}/{res.n} runs Succeeded, last one {res.elapsed:.1f}s after the "
        f"first create; load average {res.load_start} at start, {res.load_end} at end"
    )
    for f in res.failed[:10]:
        say(f"  FAILED {f}")
    if len(res.failed) > 10:
        say(f"  ... and {len(res.failed) - 10} more failures")
    if not res.ok:
        return
    say(HEADER)
    say(row("trigger -> model request", res.trigger_first + res.trigger_job))
    say(row("  created -> step 1 request", res.trigger_first))
    say(row("  tool done* -> next step request", res.trigger_job))
    say(row("model answer -> effect seen*", res.effect_job + res.effect_done))
    say(row("  answer -> Job ADDED*", res.effect_job))
    say(row("  answer (done) -> run Succeeded*", res.effect_done))
    say(row("PER-STEP OPERATOR OVERHEAD (sum)", res.step_overhead))
    say(row("  of steps 2-3 (after the creation burst)", res.steady_overhead))
    say(row("(excluded) model received -> answered", res.model_time))
    say(row("(excluded) tool Job ADDED* -> done*", res.tool_time))
    say(row("run wall time (created -> Succeeded*)", res.wall))
    for mode in BARE_MODES:
        say(row(f"bare kopf cycle, idle, {mode} storage", res.bare_idle[mode]))
    say(row("bare kopf cycle, under this load, status", res.bare_load))
    med = statistics.median(res.step_overhead)
    ratios = ", ".join(f"{res.overhead_ratio(m):.1f}x the {m}-storage cycle" for m in BARE_MODES)
    load_ratio = (
        f"; {med / statistics.median(res.bare_load):.1f}x the bare cycle under the same load"
        if res.bare_load
        else ""
    )
    say(f"  overhead median {fmt_ms(med)} ms = {ratios} (idle){load_ratio}")
    total = sum(res.requests.values())
    say(
        f"  steps: {res.steps} in {res.elapsed:.1f}s = {res.steps / res.elapsed:.1f} steps/s "
        f"overall; apiserver requests (all clients) {total} = {total / max(res.steps, 1):.1f} "
        f"per step"
    )
    rows = sorted(((c, v, r) for (v, r), c in res.requests.items() if c), reverse=True)
    say(
        "  top requests per step (the 1.20 apiserver counts a custom resource GET as LIST): "
        + ", ".join(f"{v} {r} {c / res.steps:.2f}" for c, v, r in rows[:12])
    )
    slow = sorted(
        ((v[0] * v[1], k, v) for k, v in res.latency.items() if k[0] != "WATCH"), reverse=True
    )
    say(
        "  apiserver time by request (mean ms x count; the most total time first): "
        + ", ".join(f"{k[0]} {k[1]} {v[0] * 1000:.0f} x {v[1]:.0f}" for _, k, v in slow[:8])
    )
    say(
        f"  operator RSS: peak (VmHWM) {res.rss_peak:.0f} MiB, at end {res.rss_end:.0f} MiB "
        f"(largest sampled VmRSS {res.rss_sampled_peak:.0f} MiB); operator log "
        f"ERROR/Traceback lines: {res.log_problems}"
    )
    cpu = sorted(res.cpu.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else 0)
    say(
        "  CPU seconds during the load (ms per step): "
        + ", ".join(f"{k} {v:.1f} ({v / res.steps * 1000:.0f})" for k, v in cpu)
    )
    if res.probe:
        p = res.probe
        say(
            f"  idle after the load, {p['pods']:.0f} pods in the namespace: LIST pods by "
            f"job-name label (as the runner does per tool step) {fmt_ms(p['list_pods_by_label'])}"
            f" ms; the same with resourceVersion=0 (watch cache) "
            f"{fmt_ms(p['list_pods_by_label_rv0'])} ms; GET run {fmt_ms(p['get_run'])} ms"
        )
    say(
        f"  waits: created -> first model request p99 {fmt_ms(pct(res.trigger_first, 0.99))} ms "
        f"(max {fmt_ms(max(res.trigger_first))}); per-step overhead p99 "
        f"{fmt_ms(pct(res.step_overhead, 0.99))} ms (max {fmt_ms(max(res.step_overhead))}); "
        f"model retries {res.retries}"
    )


def summary(results: list[SizeResult]) -> None:
    say("\n== Summary ==")
    say(f"Machine: {machine()}")
    say(
        f"{'N':>4} {'ok':>5} {'wall s':>7} {'steps/s':>7} {'ovh med':>8} {'ovh p90':>8} "
        f"{'stdy med':>8} "
        f"{'bare def':>8} {'bare st':>8} {'x def':>6} {'x st':>6} {'bare ld':>8} "
        f"{'req/st':>6} {'RSS pk':>6} {'RSS end':>7} {'p99 1st':>8} {'p99 stp':>8}  load"
    )
    for r in results:
        if not r.ok:
            say(f"{r.n:4d} {r.ok:5d}  (no successful runs)")
            continue
        bl = statistics.median(r.bare_load) if r.bare_load else float("nan")
        say(
            f"{r.n:4d} {r.ok:5d} {r.elapsed:7.1f} {r.steps / r.elapsed:7.1f} "
            f"{fmt_ms(statistics.median(r.step_overhead)):>8} "
            f"{fmt_ms(pct(r.step_overhead, 0.9)):>8} "
            f"{fmt_ms(statistics.median(r.steady_overhead or [float('nan')])):>8} "
            f"{fmt_ms(statistics.median(r.bare_idle['default'])):>8} "
            f"{fmt_ms(statistics.median(r.bare_idle['status'])):>8} "
            f"{r.overhead_ratio('default'):6.1f} {r.overhead_ratio('status'):6.1f} "
            f"{fmt_ms(bl):>8} {sum(r.requests.values()) / r.steps:6.1f} {r.rss_peak:6.0f} "
            f"{r.rss_end:7.0f} {fmt_ms(pct(r.trigger_first, 0.99)):>8} "
            f"{fmt_ms(pct(r.step_overhead, 0.99)):>8}  {r.load_start} -> {r.load_end}"
        )
    say(
        "ms unless noted; ovh = per-step operator overhead (trigger -> model request + answer "
        "-> effect seen, model and tool time out); stdy = the same for steps 2-3 only (not "
        "behind the creation burst); bare def/st = bare kopf cycle idle with "
        "default/status storage; x = ovh median / bare median; bare ld = bare cycle (status) "
        "sampled during the load; req/st = apiserver requests per step, all clients; RSS in "
        "MiB (peak = VmHWM); p99 1st = created -> first model request; p99 stp = per-step "
        "overhead. Targets: x <= 5, RSS < 300 MiB at 500."
    )


# ---------------------------------------------------------------- main


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", default="100,200,500", help="runs in flight, comma-separated")
    parser.add_argument("--bare-samples", type=int, default=30)
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each size")
    parser.add_argument(
        "--size-timeout-base", type=float, default=120, help="seconds allowed per size, plus"
    )
    parser.add_argument(
        "--size-timeout-per-run", type=float, default=1.5, help="... this many per run"
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator, e.g. AGENTRUN_IO_THREADS=8 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        metavar="PY_SPY",
        default="",
        help="path of a py-spy binary: sample the operator during each load "
        "(collapsed stacks in the workdir)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=stack.ROOT / ".local" / "bench-scale",
        help="cluster state and logs (default .local/bench-scale)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes integers, e.g. 100,200,500")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes must be positive")
    if any("=" not in kv for kv in args.operator_env):
        parser.error("--operator-env takes KEY=VALUE")
    operator_env = dict(kv.split("=", 1) for kv in args.operator_env)
    signal.signal(signal.SIGTERM, _terminate)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)

    say("== agentrun scale benchmark ==")
    say(f"Machine: {machine()}")
    say(f"Load average at start: {loadavg()} (shared machine: other work skews the figures)")
    if operator_env:
        say(f"Operator environment: {operator_env}")
    say(
        f"Sizes {sizes}; each run: {STEPS} model steps (noop tool twice, then done), the "
        "scripted model answering at once; a fresh namespace and operator per size"
    )
    t0 = time.monotonic()
    results: list[SizeResult] = []
    with LocalCluster(workdir=args.workdir / "cluster") as cluster:
        say(f"Local control plane ready in {time.monotonic() - t0:.1f}s")
        server = ScriptedModelServer(scripts={MODEL: SCRIPT})
        bare: dict[str, BareKopf] = {}
        scale: Scale | None = None
        try:
            server.start()
            stack.install_crds(cluster)
            stack.apply(cluster, [bare_kopf.CRD])
            cluster.kubectl(
                "wait",
                "--for=condition=Established",
                f"crd/{bare_kopf.PLURAL}.{bare_kopf.GROUP}",
                "--timeout=30s",
            )
            for mode in BARE_MODES:
                bare[mode] = BareKopf(cluster, mode, args.workdir).start()
            scale = Scale(cluster, server, bare, args, operator_env)
            for n in sizes:
                say(f"\n-- {n} runs in flight (load average {loadavg()}) --")
                results.append(scale.run_size(n))
                report(results[-1])
        finally:
            if scale is not None:
                for w in scale.watchers:
                    w.stop()
                if scale.operator is not None:
                    scale.operator.stop()
            for b in bare.values():
                b.stop()
            server.stop()
    summary(results)
    say(f"Total time {time.monotonic() - t0:.0f}s")
    failed = sum(len(r.failed) for r in results)
    if failed:
        say(f"\n{failed} run(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
