"""The local node: a stand-in for the kubelet that runs pods as local processes.

Containers cannot run on these machines, so this registers a Ready ``Node`` and, for each
pod the scheduler binds to it, runs the first container's ``command`` + ``args`` as a
local process (the image is ignored) with:

- the pod's env (literal values, ``fieldRef``, ``secretKeyRef``/``configMapKeyRef``,
  ``envFrom``; ``$(VAR)`` references expanded as the kubelet does),
- the pod's OWN ServiceAccount credentials, when the pod would have its token mounted:
  a TokenRequest bound to the pod, written to ``<pod dir>/kubeconfig`` (namespace set to
  the pod's) and passed as ``KUBECONFIG``; ``KUBERNETES_SERVICE_HOST``/``PORT`` are set
  too. When ``automountServiceAccountToken`` is false (pod or ServiceAccount) the process
  gets no credentials at all,
- ``PATH`` = the venv's bin, then the node's ``PATH`` (console scripts resolve),
  ``HOME`` = a fresh directory per pod.

It reports status like the kubelet (Pending -> Running -> Succeeded/Failed, container
states, exit codes, ``FallbackToLogsOnError`` termination messages), restarts containers
for ``restartPolicy`` Always/OnFailure, honours ``activeDeadlineSeconds`` and deletion
(kill, then delete the pod with grace 0), and serves
``GET /containerLogs/{namespace}/{pod}/{container}`` over HTTPS so ``kubectl logs`` works.

Run: ``python -m tests.cluster.node --kubeconfig K --workdir D --port P --tls-cert C
--tls-key K [--client-ca CA]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.server
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from .kube import JSON, ApiError, KubeClient
from .procs import kill_tree, start_time

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 86400
MAX_LOG_MESSAGE = 4096
CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "200Gi"}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(msg: str) -> None:
    print(f"{dt.datetime.now():%H:%M:%S.%f} {msg}", flush=True)


class PodError(Exception):
    """The pod cannot start; ``reason`` is a kubelet-style reason."""

    def __init__(self, reason: str, message: str, exit_code: int = 128) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes, unknown references stay)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, value)


class PodRunner(threading.Thread):
    """Runs one pod to completion, reporting status: its first container, or all of them at
    once for a pod of several containers that is never restarted (a grouped tool Job)."""

    def __init__(self, node: LocalNode, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.node = node
        self.pod = pod
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.container: JSON = pod["spec"]["containers"][0]
        self.cname: str = self.container["name"]
        self.dir = node.workdir / "pods" / self.ns / f"{self.pod_name}_{self.uid[:8]}"
        self.log_path = self.dir / f"{self.cname}.log"
        self.stop_event = threading.Event()
        self.delete_after_stop = False
        self.grace = 10.0
        self.finished = threading.Event()
        self.start_time = now()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_count = 0
        self.last_state: JSON = {}

    # ---- public, called from the watch thread ---------------------------------------------
    def terminate(self, grace: float, delete: bool) -> None:
        self.grace = max(0.0, min(grace, 10.0))
        self.delete_after_stop = self.delete_after_stop or delete
        self.stop_event.set()

    # ---- status ------------------------------------------------------------------------------
    def _conditions(self, ready: bool, reason: str | None = None) -> list[JSON]:
        t = now()
        conds: list[JSON] = []
        for ctype, ok in (
            ("Initialized", True),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", True),
        ):
            c: JSON = {
                "type": ctype,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": t,
            }
            if not ok and reason:
                c["reason"] = reason
            conds.append(c)
        return conds

    def _container_status(self, state: JSON, ready: bool) -> JSON:
        cs: JSON = {
            "name": self.cname,
            "image": self.container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": "running" in state,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            cs["containerID"] = f"local://{self.proc.pid}"
        return cs

    def report(
        self,
        phase: str,
        state: JSON,
        *,
        ready: bool = False,
        reason: str | None = None,
        message: str | None = None,
        statuses: list[JSON] | None = None,
    ) -> None:
        status: JSON = {
            "phase": phase,
            "conditions": self._conditions(
                ready,
                None
                if ready
                else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"),
            ),
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses or [self._container_status(state, ready)],
            "reason": reason,
            "message": message,
        }
        # A kubelet keeps reporting until the apiserver hears it: retry while it is away.
        for attempt in range(60):
            try:
                self.node.api.patch(
                    f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}/status",
                    {"metadata": {"uid": self.uid}, "status": status},
                )
                return
            except ApiError as e:
                if e.status in (404, 409):
                    return
                log(f"{self.name}: status update failed: {e}")
                if e.status < 500:
                    return
            except OSError as e:
                log(f"{self.name}: status update failed (attempt {attempt + 1}): {e}")
            time.sleep(1)

    # ---- environment -------------------------------------------------------------------------
    def _lookup(self, kind: str, name: str) -> JSON | None:
        try:
            return self.node.api.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _ref_value(self, kind: str, ref: JSON) -> str | None:
        obj = self._lookup(kind, ref["name"])
        optional = bool(ref.get("optional"))
        label = "secret" if kind == "secrets" else "configmap"
        if obj is None:
            if optional:
                return None
            raise PodError("CreateContainerConfigError", f'{label} "{ref["name"]}" not found')
        data = obj.get("data") or {}
        if ref["key"] not in data:
            if optional:
                return None
            raise PodError(
                "CreateContainerConfigError",
                f"couldn't find key {ref['key']} in {label} {self.ns}/{ref['name']}",
            )
        value: str = data[ref["key"]]
        return base64.b64decode(value).decode() if kind == "secrets" else value

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        values = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.ns,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
        }
        return str(values.get(path, ""))

    def _pod_env(self, base: dict[str, str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in self.container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                if key not in src:
                    continue
                obj = self._lookup(kind, src[key]["name"])
                if obj is None:
                    if src[key].get("optional"):
                        continue
                    raise PodError(
                        "CreateContainerConfigError", f'{kind[:-1]} "{src[key]["name"]}" not found'
                    )
                for k, v in (obj.get("data") or {}).items():
                    env[prefix + k] = base64.b64decode(v).decode() if kind == "secrets" else v
        for var in self.container.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), {**base, **env})
                continue
            vf = var["valueFrom"]
            value: str | None
            if "fieldRef" in vf:
                value = self._field(vf["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in vf:
                value = self._ref_value("secrets", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                value = self._ref_value("configmaps", vf["configMapKeyRef"])
            elif "resourceFieldRef" in vf:
                value = "0"
            else:
                value = None
            if value is not None:
                env[name] = value
        return env

    def _wants_token(self) -> bool:
        if self.pod["spec"].get("automountServiceAccountToken") is False:
            return False
        # The ServiceAccount admission plugin mounts the token exactly when neither the pod
        # nor its ServiceAccount opts out: its mount is the signal.
        return any(m.get("mountPath") == SA_MOUNT for m in self.container.get("volumeMounts") or [])

    def _credentials(self) -> dict[str, str]:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.uid,
                },
            },
        }
        deadline = time.monotonic() + 15
        while True:
            try:
                resp = self.node.api.post(
                    f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body
                )
                break
            except ApiError as e:
                # the Node authorizer learns of pod -> ServiceAccount edges asynchronously
                if e.status in (403, 404) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise PodError(
                    "CreateContainerConfigError",
                    f"TokenRequest for serviceaccount {self.ns}/{sa}: {e.message}",
                ) from e
        token: str = resp["status"]["token"]
        sadir = self.dir / "serviceaccount"
        sadir.mkdir(parents=True, exist_ok=True)
        ca = sadir / "ca.crt"
        shutil.copyfile(self.node.ca_file, ca)
        (sadir / "token").write_text(token)
        (sadir / "namespace").write_text(self.ns)
        kubeconfig = self.dir / "kubeconfig"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.node.api.config.server,
                        "certificate-authority": str(ca),
                    },
                }
            ],
            "users": [{"name": f"system:serviceaccount:{self.ns}:{sa}", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "local",
                    "context": {
                        "cluster": "local",
                        "user": f"system:serviceaccount:{self.ns}:{sa}",
                        "namespace": self.ns,
                    },
                }
            ],
            "current-context": "local",
        }
        kubeconfig.write_text(yaml.safe_dump(doc, sort_keys=False))
        kubeconfig.chmod(0o600)
        return {"KUBECONFIG": str(kubeconfig)}

    def _environment(self) -> dict[str, str]:
        home = self.dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": self.node.path,
            "HOME": str(home),
            "HOSTNAME": self.pod_name,
            "KUBERNETES_SERVICE_HOST": self.node.api.host,
            "KUBERNETES_SERVICE_PORT": str(self.node.api.port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.node.api.port),
        }
        for k in ("LANG", "LC_ALL", "TZ", "TMPDIR"):
            if k in os.environ:
                env[k] = os.environ[k]
        if self._wants_token():
            env.update(self._credentials())
        env.update(self._pod_env(env))
        return env

    # ---- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # never leave a pod hanging silently
            log(f"{self.name}: {traceback.format_exc()}")
            self.report(
                "Failed",
                {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "Error",
                        "message": str(e),
                        "finishedAt": now(),
                    }
                },
                reason="NodeError",
                message=str(e),
            )
        finally:
            self._kill()
            self.finished.set()
            if self.delete_after_stop:
                self.node.delete_pod(self.ns, self.pod_name, self.uid)

    def _fail_start(self, err: PodError) -> None:
        log(f"{self.name}: cannot start: {err.reason}: {err.message}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as fh:
            fh.write(f"{err.reason}: {err.message}\n")
        if self.pod["spec"].get("restartPolicy", "Always") == "Always":
            # like the kubelet: the pod stays Pending, the container waiting
            self.report(
                "Pending",
                {"waiting": {"reason": err.reason, "message": err.message}},
                reason=err.reason,
                message=err.message,
            )
            return
        self.report(
            "Failed",
            {
                "terminated": {
                    "exitCode": err.exit_code,
                    "reason": err.reason,
                    "message": err.message,
                    "startedAt": None,
                    "finishedAt": now(),
                }
            },
            reason=err.reason,
            message=err.message,
        )

    def _run(self) -> None:
        spec = self.pod["spec"]
        self.dir.mkdir(parents=True, exist_ok=True)
        if len(spec["containers"]) > 1 and spec.get("restartPolicy", "Always") == "Never":
            self._run_many()
            return
        policy = spec.get("restartPolicy", "Always")
        deadline_s = spec.get("activeDeadlineSeconds")
        deadline = time.monotonic() + deadline_s if deadline_s is not None else None
        try:
            env = self._environment()
            argv = [
                expand(a, env)
                for a in (self.container.get("command") or []) + (self.container.get("args") or [])
            ]
            if not argv:
                raise PodError(
                    "ContainerCannotRun",
                    "the local node runs only containers with an explicit command; "
                    f"image entrypoint of {self.container.get('image')!r} unknown",
                )
            exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env["PATH"])
            if exe is None or not os.access(exe, os.X_OK):
                raise PodError(
                    "ContainerCannotRun",
                    f'exec: "{argv[0]}": executable file not found in $PATH '
                    f"on the local node (PATH={env['PATH']})",
                    exit_code=127,
                )
        except PodError as e:
            self._fail_start(e)
            return
        cwd = self.container.get("workingDir")
        if not cwd or not os.path.isdir(cwd):
            cwd = str(self.dir)
        backoff = 1.0
        while True:
            started_at = now()
            with self.log_path.open("ab") as out:
                self.proc = subprocess.Popen(
                    [exe, *argv[1:]],
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._proc_started = start_time(self.proc.pid)
            log(f"{self.name}: started pid {self.proc.pid}: {argv}")
            self.report("Running", {"running": {"startedAt": started_at}}, ready=True)
            why = self._wait(deadline)
            code = self.proc.returncode if self.proc.returncode is not None else 137
            self._kill()
            if code < 0:
                code = 128 - code  # killed by signal N -> 128+N
            log(f"{self.name}: exited {code} ({why})")
            if why == "deleted":
                return
            terminated: JSON = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started_at,
                "finishedAt": now(),
                "containerID": f"local://{self.proc.pid}",
            }
            msg = self._termination_message(code)
            if msg:
                terminated["message"] = msg
            if why == "deadline":
                self.report(
                    "Failed",
                    {"terminated": terminated},
                    reason="DeadlineExceeded",
                    message="Pod was active on the node longer than the specified deadline",
                )
                return
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                self.report("Succeeded" if code == 0 else "Failed", {"terminated": terminated})
                return
            self.restart_count += 1
            self.last_state = {"terminated": terminated}
            self.report(
                "Running",
                {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {backoff:.0f}s restarting failed container",
                    }
                },
            )
            if self.stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, 60.0)

    # ---- a pod of several containers (restartPolicy Never: tool Jobs of grouped calls) ------
    def _run_many(self) -> None:
        """Every container at once, each its own process, log and exit code, as a kubelet
        runs them; the pod is Succeeded when all exited 0, else Failed; past its deadline
        the ones still running are killed."""
        containers: list[JSON] = self.pod["spec"]["containers"]
        deadline_s = self.pod["spec"].get("activeDeadlineSeconds")
        deadline = time.monotonic() + deadline_s if deadline_s is not None else None
        base: dict[str, str] | None = None
        procs: list[tuple[JSON, subprocess.Popen[bytes], str]] = []
        states: dict[str, JSON] = {}
        try:
            for c in containers:
                if base is None:  # the pod's token once, for its ServiceAccount; no one's env
                    self.container = {**c, "env": [], "envFrom": []}
                    base = self._environment()
                self.container, self.cname = c, c["name"]
                env = {**base, **self._pod_env(base)}
                argv = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
                exe = argv[0] if argv and "/" in argv[0] else None
                if argv and exe is None:
                    exe = shutil.which(argv[0], path=env["PATH"])
                if exe is None or not os.access(exe, os.X_OK):
                    raise PodError("ContainerCannotRun", f"cannot run {argv[:1]}", exit_code=127)
                started = now()
                with (self.dir / f"{c['name']}.log").open("ab") as out:
                    proc = subprocess.Popen(
                        [exe, *argv[1:]],
                        env=env,
                        cwd=str(self.dir),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                procs.append((c, proc, started))
                states[c["name"]] = {"running": {"startedAt": started}}
        except PodError as e:
            for _, proc, _ in procs:
                self._kill_proc(proc, 0.0)
            self._fail_start(e)
            return
        log(f"{self.name}: started {len(procs)} containers")
        self._report_many("Running", containers, states)
        why = ""
        while any(p.poll() is None for _, p, _ in procs):
            time.sleep(0.2)
            if self.stop_event.is_set():
                why = "deleted"
            elif deadline is not None and time.monotonic() >= deadline:
                why = "deadline"
            if why:
                for _, proc, _ in procs:
                    self._kill_proc(proc, min(self.grace, 5.0))
                break
        if why == "deleted":
            return
        for c, proc, started in procs:
            code = proc.returncode if proc.returncode is not None else 137
            code = 128 - code if code < 0 else code
            self._kill_proc(proc, 0.0)
            terminated: JSON = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now(),
                "containerID": f"local://{proc.pid}",
            }
            self.container, self.cname = c, c["name"]
            self.log_path = self.dir / f"{c['name']}.log"
            msg = self._termination_message(code)
            if msg:
                terminated["message"] = msg
            states[c["name"]] = {"terminated": terminated}
        ok = all(st["terminated"]["exitCode"] == 0 for st in states.values())
        if why == "deadline":
            self._report_many(
                "Failed",
                containers,
                states,
                reason="DeadlineExceeded",
                message="Pod was active on the node longer than the specified deadline",
            )
            return
        self._report_many("Succeeded" if ok else "Failed", containers, states)

    def _report_many(
        self,
        phase: str,
        containers: list[JSON],
        states: dict[str, JSON],
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        statuses = []
        for c in containers:
            self.container, self.cname = c, c["name"]
            statuses.append(self._container_status(states[c["name"]], phase == "Running"))
        self.report(
            phase, {}, ready=phase == "Running", reason=reason, message=message, statuses=statuses
        )

    def _kill_proc(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM if grace else signal.SIGKILL)
        kill_tree([(proc.pid, None)], grace=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def _wait(self, deadline: float | None) -> str:
        assert self.proc is not None
        while True:
            try:
                self.proc.wait(timeout=0.5)
                return "exited"
            except subprocess.TimeoutExpired:
                pass
            if self.stop_event.is_set():
                self._kill(self.grace)
                return "deleted"
            if deadline is not None and time.monotonic() >= deadline:
                grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
                self._kill(min(grace, 5.0))
                return "deadline"

    def _kill(self, grace: float = 0.0) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM if grace else signal.SIGKILL)
        kill_tree([(proc.pid, getattr(self, "_proc_started", None))], grace=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the container's group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def _termination_message(self, code: int) -> str:
        policy = self.container.get("terminationMessagePolicy", "File")
        if policy != "FallbackToLogsOnError" or code == 0:
            return ""
        try:
            data = self.log_path.read_bytes()[-MAX_LOG_MESSAGE:]
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-80:])


class LogHandler(http.server.BaseHTTPRequestHandler):
    server: LogServer
    # Keep-alive, as a kubelet: the apiserver reuses its connection for the next log read
    # instead of a TLS handshake per request. A follow stream has no length: it closes.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _error(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if url.path in ("/healthz", "/readyz"):
            return self._error(200, "ok")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._error(404, f"not found: {url.path}")
        _, ns, pod, container = parts
        if q.get("previous", ["false"])[0] in ("true", "1"):
            return self._error(
                400, f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        found = self.server.node.find_log(ns, pod, container)
        if found is None:
            return self._error(
                404, f'container "{container}" in pod "{pod}" is not known to the local node'
            )
        path, runner = found
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        if "tailLines" in q:
            n = int(q["tailLines"][0])
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        limit = int(q["limitBytes"][0]) if "limitBytes" in q else None
        if limit is not None:
            data = data[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        follow = q.get("follow", ["false"])[0] in ("true", "1") and runner is not None
        if follow:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if not follow:
            return
        assert runner is not None
        pos = path.stat().st_size if path.exists() else 0
        with contextlib.suppress(OSError):
            while True:
                done = runner.finished.is_set()
                size = path.stat().st_size if path.exists() else 0
                if size > pos:
                    with path.open("rb") as fh:
                        fh.seek(pos)
                        chunk = fh.read(size - pos)
                    pos = size
                    self.wfile.write(chunk)
                    self.wfile.flush()
                elif done:
                    return
                else:
                    time.sleep(0.2)


class LogServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, node: LocalNode, port: int, ctx: ssl.SSLContext) -> None:
        self.node = node
        self.ctx = ctx
        super().__init__(("127.0.0.1", port), LogHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


class LocalNode:
    def __init__(
        self,
        api: KubeClient,
        name: str,
        workdir: Path,
        port: int,
        ssl_ctx: ssl.SSLContext,
        path_prepend: list[str],
    ) -> None:
        self.api = api
        self.name = name
        self.workdir = workdir
        self.port = port
        self.ssl_ctx = ssl_ctx
        self.path = ":".join([*path_prepend, os.environ.get("PATH", "/usr/bin:/bin")])
        assert api.config.ca_file
        self.ca_file = api.config.ca_file
        self.runners: dict[str, PodRunner] = {}
        self.by_name: dict[tuple[str, str], PodRunner] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.deleting: set[str] = set()

    # ---- node object -------------------------------------------------------------------------
    def _conditions(self) -> list[JSON]:
        t = now()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return [
            {
                "type": c,
                "status": s,
                "reason": r,
                "message": "agentrun local node",
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }
            for c, s, r in conds
        ]

    def _node_status(self) -> JSON:
        return {
            "capacity": CAPACITY,
            "allocatable": CAPACITY,
            "conditions": self._conditions(),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "agentrun-local",
                "systemUUID": "agentrun-local",
                "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release,
                "osImage": "agentrun local node",
                "containerRuntimeVersion": "local://0.1",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "agentrun.dev/local-node": "true",
                },
            },
            "spec": {},
            "status": self._node_status(),
        }
        try:
            self.api.post("/api/v1/nodes", node)
        except ApiError as e:
            if e.status != 409:
                raise
        # status set on create is kept, but patch it anyway for a pre-existing Node
        self.api.patch(
            f"/api/v1/nodes/{self.name}/status", {"status": self._node_status()}, kind="strategic"
        )
        log(f"node {self.name} registered (log server on 127.0.0.1:{self.port})")

    def heartbeat(self) -> None:
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        last_status = time.monotonic()
        while not self.stopping.wait(10):
            try:
                spec = {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": 40,
                    "renewTime": now_micro(),
                }
                try:
                    self.api.patch(lease_path, {"spec": spec})
                except ApiError as e:
                    if e.status != 404:
                        raise
                    self.api.post(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                        {
                            "apiVersion": "coordination.k8s.io/v1",
                            "kind": "Lease",
                            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
                            "spec": spec,
                        },
                    )
                if time.monotonic() - last_status > 50:
                    self.api.patch(
                        f"/api/v1/nodes/{self.name}/status",
                        {"status": {"conditions": self._conditions()}},
                        kind="strategic",
                    )
                    last_status = time.monotonic()
            except (ApiError, OSError) as e:
                log(f"heartbeat failed: {e}")

    # ---- pods ---------------------------------------------------------------------------------
    def delete_pod(self, ns: str, name: str, uid: str) -> None:
        with self.lock:
            if uid in self.deleting:
                return
            self.deleting.add(uid)
        try:
            self.api.delete(
                f"/api/v1/namespaces/{ns}/pods/{name}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": uid},
                },
            )
            log(f"pod {ns}/{name}: deleted")
        except ApiError as e:
            if e.status not in (404, 409):
                log(f"pod {ns}/{name}: delete failed: {e}")
                with self.lock:
                    self.deleting.discard(uid)

    def sync(self, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            runner = self.runners.get(uid)
        if meta.get("deletionTimestamp"):
            if runner is not None and not runner.finished.is_set():
                runner.terminate(float(meta.get("deletionGracePeriodSeconds") or 0), True)
            else:
                threading.Thread(
                    target=self.delete_pod, daemon=True, args=(meta["namespace"], meta["name"], uid)
                ).start()
            return
        if runner is not None:
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        if not pod["spec"].get("containers"):
            return
        runner = PodRunner(self, pod)
        with self.lock:
            self.runners[uid] = runner
            self.by_name[(runner.ns, runner.pod_name)] = runner
        runner.start()

    def gone(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            runner = self.runners.pop(uid, None)
            self.deleting.discard(uid)
        if runner is not None and not runner.finished.is_set():
            runner.terminate(0, False)

    def find_log(self, ns: str, pod: str, container: str) -> tuple[Path, PodRunner | None] | None:
        with self.lock:
            runner = self.by_name.get((ns, pod))
        names = [] if runner is None else [c["name"] for c in runner.pod["spec"]["containers"]]
        if runner is not None and len(names) > 1 and container in names:
            return runner.dir / f"{container}.log", runner
        if runner is not None and runner.cname == container:
            return runner.log_path, runner
        if runner is not None:
            return None
        candidates = sorted(
            (self.workdir / "pods" / ns).glob(f"{pod}_*/{container}.log"),
            key=lambda p: p.stat().st_mtime,
        )
        return (candidates[-1], None) if candidates else None

    def watch_pods(self) -> None:
        path = "/api/v1/pods"
        selector = f"spec.nodeName={self.name}"
        rv: str | None = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    lst = self.api.get(path, fieldSelector=selector)
                    rv = lst["metadata"]["resourceVersion"]
                    present = {p["metadata"]["uid"] for p in lst["items"]}
                    for pod in lst["items"]:
                        self.sync(pod)
                    with self.lock:
                        lost = [r for u, r in self.runners.items() if u not in present]
                    for r in lost:
                        self.gone(r.pod)
                for ev in self.api.watch(path, fieldSelector=selector, resourceVersion=rv):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        log(f"watch error: {obj.get('message')}")
                        rv = None
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] == "DELETED":
                        self.gone(obj)
                    elif ev["type"] in ("ADDED", "MODIFIED"):
                        self.sync(obj)
            except (ApiError, OSError, ValueError) as e:
                if self.stopping.is_set():
                    return
                log(f"pod watch failed, relisting: {e}")
                rv = None
                time.sleep(1)

    # ---- main -----------------------------------------------------------------------------------
    def run(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server = LogServer(self, self.port, self.ssl_ctx)
        threading.Thread(target=server.serve_forever, name="logs", daemon=True).start()
        deadline = time.monotonic() + 120
        while True:  # the apiserver may still be starting
            try:
                self.register()
                break
            except (ApiError, OSError) as e:
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise
                if not isinstance(e, OSError):
                    log(f"registering: {e}")
                time.sleep(0.1)
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.watch_pods, name="watch", daemon=True).start()
        self.stopping.wait()
        log("stopping: killing pod processes")
        with self.lock:
            runners = list(self.runners.values())
        for r in runners:
            r.terminate(0, False)
        for r in runners:
            r.finished.wait(10)
        server.shutdown()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--kubeconfig", required=True, type=Path)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--name", default="agentrun-node")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--client-ca", help="require client certs signed by this CA")
    ap.add_argument("--path-prepend", action="append", default=[])
    args = ap.parse_args(argv)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    api = KubeClient.from_kubeconfig(args.kubeconfig)
    node = LocalNode(api, args.name, args.workdir.resolve(), args.port, ctx, args.path_prepend)

    def on_signal(signum: int, frame: Any) -> None:
        node.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.run()
    log("stopped")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
