"""A real node beside the local control plane: kubelet and kube-proxy v1.20.2 (``build.sh
node``), containerd and runc (Debian), pods from images built by ``make image``.

Everything lives in namespaces the node creates and that vanish with its processes:

- a **network namespace**, joined to the host's by one veth pair (``arrnS`` on the host,
  10.201.S.1/30; ``eth0`` in the node, 10.201.S.2, the node's InternalIP; S is a free
  slot, so several nodes can run at once). The apiserver keeps listening on the host's
  loopback only: a forwarder (``fwd.py``) listens on the apiserver's port inside the node's
  namespace. Pods get a CNI bridge inside that namespace, with no route out of it, and
  iptables there drops anything forwarded or newly sent out of ``eth0``: pod traffic never
  leaves the node. kube-proxy programs iptables in that namespace only.
- a **mount namespace** (a slave of the host's) where the kubelet's kernel tunables
  (``/proc/sys/vm/overcommit_memory`` ...) are files of the node's own, so the kubelet
  finds them as it wants them and writes nothing machine-wide, and where ``/run``,
  ``/var/log`` and ``/var/lib`` are directories of the node's own (containerd and the
  kubelet use fixed paths under them).

``stop()`` kills every process the node started (the kubelet, kube-proxy, containerd, its
shims and their containers, the forwarder) and waits until the veth is gone: the host's
addresses, routes, iptables and sysctls are as they were before ``start()``
(``tests/realnode/test_realnode.py`` checks it). See docs/local-cluster.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .cluster import (
    BUILD_SH,
    REPO,
    ClusterError,
    LocalCluster,
    default_bin_dir,
    tail,
    write_kubeconfig,
)
from .kube import ApiError, KubeClient
from .pki import Pki, client_cert, serving_cert
from .procs import alive, kill_tree, start_time

IMAGE_SH = REPO / "tests" / "image" / "build.sh"
DEPS_SH = REPO / "tests" / "setup" / "realnode-deps.sh"
SLOTS = 16
CNI_BIN = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"
# What the kubelet sets at start (pkg/kubelet/cm/container_manager_linux.go, with
# protectKernelDefaults false): the node's mount namespace shows it these values.
KUBELET_TUNABLES = {
    "vm/overcommit_memory": 1,
    "vm/panic_on_oom": 0,
    "kernel/panic": 10,
    "kernel/panic_on_oops": 1,
    "kernel/keys/root_maxkeys": 1000000,
    "kernel/keys/root_maxbytes": 25000000,
}
# Fixed paths the kubelet, containerd and the CNI plugins use whatever their root dirs:
# directories of the node's own in its mount namespace.
PRIVATE_DIRS = ("/run", "/var/log", "/var/lib")
CGROUPS = Path("/sys/fs/cgroup")
CGROUP_PARENT = "k8s.io"  # containerd's for pods without a cgroup parent (cgroupsPerQOS off)


def _pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def unsupported() -> str | None:
    """Why this machine cannot run a real node (None when it can)."""
    if sys.platform != "linux":
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node needs root (network and mount namespaces, containerd, iptables)"
    cg = Path("/sys/fs/cgroup")
    if not (cg / "memory").is_dir() and not (cg / "cgroup.controllers").exists():
        return "no memory cgroup controller mounted at /sys/fs/cgroup"
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "slave", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot create network and mount namespaces: {probe.stderr.strip()}"
    return None


def not_built(bin_dir: Path | None = None) -> str | None:
    """What a real node would have to install or build first (None when nothing): the
    Debian packages, kubelet and kube-proxy, the images for this tree. Builds nothing, so a
    caller can choose the stand-in instead of minutes of building (``make demo``)."""
    env = {**os.environ, "AGENTRUN_K8S_BIN": str(bin_dir or default_bin_dir())}
    checks = (
        ([str(DEPS_SH), "--check"], "the Debian packages (containerd, runc, buildah, ...)"),
        ([str(BUILD_SH), "node", "--check"], "kubelet and kube-proxy (make node-bin)"),
        ([str(IMAGE_SH), "--check"], "the image of this tree (make image)"),
    )
    missing = [
        what
        for argv, what in checks
        if subprocess.run(["bash", *argv], capture_output=True, env=env, check=False).returncode
    ]
    return f"not built yet: {', '.join(missing)}" if missing else None


@dataclass(frozen=True)
class Image:
    ref: str
    archive: Path


def _run_script(argv: list[str], log: Path) -> str:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as err:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv)} failed (exit {proc.returncode}); tail of {log}:\n{tail(log)}"
        )
    return proc.stdout.decode()


def ensure_images(log: Path) -> dict[str, Image]:
    """``make image`` (cached by content: 0.1 s when built): {"agentrun": ..., "pause": ...}."""
    out = _run_script(["bash", str(IMAGE_SH)], log)
    images: dict[str, Image] = {}
    for line in out.splitlines():
        name, ref, archive = line.split()
        images[name] = Image(ref, Path(archive))
    return images


def ensure_node_binaries(bin_dir: Path, log: Path) -> None:
    """kubelet and kube-proxy (``build.sh node``) and the Debian packages the node runs."""
    _run_script(["bash", str(DEPS_SH)], log)
    env = {**os.environ, "AGENTRUN_K8S_BIN": str(bin_dir)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        rc = subprocess.call(["bash", str(BUILD_SH), "node"], stdout=fh, stderr=fh, env=env)
    if rc != 0:
        raise ClusterError(f"build.sh node failed (exit {rc}); tail of {log}:\n{tail(log)}")


@dataclass
class NodeProc:
    name: str
    pid: int
    started: int | None
    log: str

    def alive(self) -> bool:
        return alive(self.pid, self.started)


def _ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class RealNode:
    """A kubelet node registered with ``cluster``; its files (configs, logs, containerd's
    and the kubelet's state, ``state.json``) live in ``workdir``.

    ``start()`` builds what is missing, brings the node up and returns once it is Ready and
    kube-proxy routes the ``kubernetes`` Service; ``stop()`` takes everything down again.
    """

    def __init__(
        self,
        workdir: Path,
        cluster: LocalCluster | None = None,
        *,
        name: str = "realnode",
        bin_dir: Path | None = None,
        detached: bool = False,
        timeout: float = 120.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.cluster = cluster
        self.name = name
        self.bin_dir = bin_dir or default_bin_dir()
        self.detached = detached
        self.timeout = timeout
        self.procs: list[NodeProc] = []
        self.slot: int | None = None
        self.holder: NodeProc | None = None
        self.netns = ""
        self.mntns = ""
        self.images: dict[str, Image] = {}
        self.cgroups_created: list[str] = []  # CGROUP_PARENT dirs that did not exist before
        self.timings: dict[str, float] = {}
        self._t0 = 0.0

    # ---- names and paths ---------------------------------------------------------------
    @property
    def veth(self) -> str:
        return f"arrn{self.slot}"

    @property
    def host_ip(self) -> str:
        return f"10.201.{self.slot}.1"

    @property
    def node_ip(self) -> str:
        return f"10.201.{self.slot}.2"

    @property
    def pod_subnet(self) -> str:
        return f"10.88.{self.slot}.0/24"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def image(self) -> str:
        """The agentrun image's reference (imported into the node's containerd)."""
        return self.images["agentrun"].ref

    def _in_node(self) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-n", "-m", "--"]

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """``ctr -n k8s.io ARGS`` against the node's containerd."""
        argv = ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args]
        return _sh(*argv, check=check, timeout=timeout).stdout

    # ---- state -------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "name": self.name,
            "slot": self.slot,
            "netns": self.netns,
            "mntns": self.mntns,
            "holder": asdict(self.holder) if self.holder else None,
            "processes": [asdict(p) for p in self.procs],
            "images": {k: [v.ref, str(v.archive)] for k, v in self.images.items()},
            "cgroups_created": self.cgroups_created,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    @classmethod
    def from_state(cls, workdir: Path) -> RealNode | None:
        """The node recorded in ``workdir/state.json`` (by a detached start), if any."""
        self = cls(workdir)
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        self.name = state["name"]
        self.slot = state["slot"]
        self.netns = state["netns"]
        self.mntns = state["mntns"]
        self.holder = NodeProc(**state["holder"]) if state["holder"] else None
        self.procs = [NodeProc(**p) for p in state["processes"]]
        self.images = {k: Image(r, Path(a)) for k, (r, a) in state["images"].items()}
        self.cgroups_created = state.get("cgroups_created", [])
        return self

    def running(self) -> dict[str, bool]:
        procs = [self.holder, *self.procs] if self.holder else self.procs
        return {p.name: p.alive() for p in procs}

    # ---- start -------------------------------------------------------------------------
    def start(self) -> None:
        if self.cluster is None:
            raise ClusterError("RealNode.start needs the cluster it joins")
        self._t0 = time.monotonic()
        try:
            self._start(self.cluster)
        except BaseException:
            self.stop()
            raise

    def _mark(self, what: str) -> None:
        self.timings[what] = round(time.monotonic() - self._t0, 2)

    def _start(self, cluster: LocalCluster) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        build_log = self.workdir / "build.log"
        ensure_node_binaries(self.bin_dir, build_log)
        self.images = ensure_images(build_log)
        self._mark("binaries and images")
        for sub in ("logs", "containerd", "cni", "kubelet", "fs", "sysctl"):
            subprocess.run(["rm", "-rf", str(self.workdir / sub)], check=True)
        self.logs_dir.mkdir()
        api_port = int(cluster.api_url.rsplit(":", 1)[1])
        self._certs(cluster)
        self._start_holder()
        self._plumb()
        self._mark("namespaces and veth")
        fwd = self._spawn(
            "forwarder",
            [
                sys.executable,
                "-m",
                "tests.cluster.fwd",
                f"/proc/{self._holder().pid}/ns/net",
                f"0.0.0.0:{api_port}",
                f"127.0.0.1:{api_port}",
            ],
            in_node=False,
        )
        self._wait(fwd, lambda: "listening" in Path(fwd.log).read_text(), "forwarder listening")
        self._start_containerd()
        self._import_images()
        self._mark("containerd and images")
        api = KubeClient.from_kubeconfig(cluster.kubeconfig, timeout=5)
        self._start_kubelet(cluster.pki)
        self._wait(self._proc("kubelet"), lambda: self._node_ready(api), f"Node {self.name} Ready")
        self._kubernetes_endpoints(api, api_port)
        self._start_kube_proxy()
        self._wait(
            self._proc("kube-proxy"),
            lambda: "default/kubernetes:https" in self._iptables_nat(),
            "kube-proxy routes the kubernetes Service",
        )
        self._save()

    def _holder(self) -> NodeProc:
        assert self.holder is not None
        return self.holder

    def _proc(self, name: str) -> NodeProc:
        return next(p for p in self.procs if p.name == name)

    def _certs(self, cluster: LocalCluster) -> None:
        pki = cluster.pki
        n = self.name
        client_cert(pki, n, f"/O=system:nodes/CN=system:node:{n}")
        client_cert(pki, f"{n}-proxy", "/CN=system:kube-proxy")
        # the slot is not known yet: the serving cert names every address a node may have
        sans = [f"IP:10.201.{s}.2" for s in range(SLOTS)]
        serving_cert(pki, f"{n}-serving", n, [f"DNS:{n}", "IP:127.0.0.1", *sans])
        for who, user in ((n, f"system:node:{n}"), (f"{n}-proxy", "system:kube-proxy")):
            write_kubeconfig(
                self.workdir / f"{who}.kubeconfig",
                cluster.api_url,
                pki,
                who,
                embed=False,
                user=user,
            )

    def _start_holder(self) -> None:
        """A process holding the node's network and mount namespaces (``sleep``), with the
        kubelet's tunables and the fixed directories replaced by the node's own."""
        d = self.workdir
        mounts: list[str] = []
        for key, value in KUBELET_TUNABLES.items():
            f = d / "sysctl" / key.replace("/", ".")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"{value}\n")
            mounts.append(f"mount --bind {f} /proc/sys/{key}")
        for target in PRIVATE_DIRS:
            src = d / "fs" / target.strip("/").replace("/", "-")
            src.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {src} {target}")
        ready = d / "holder.ready"
        ready.unlink(missing_ok=True)
        script = " && ".join([*mounts, f"touch {ready}", "exec sleep infinity"])
        holder = self._spawn(
            "holder",
            ["unshare", "--net", "--mount", "--propagation", "slave", "--", "sh", "-c", script],
            in_node=False,
            record=False,
        )
        self.holder = holder
        self._wait(holder, ready.exists, "node namespaces")
        self.netns = _ns(holder.pid, "net") or ""
        self.mntns = _ns(holder.pid, "mnt") or ""
        if not self.netns or self.netns == _ns(os.getpid(), "net"):
            raise ClusterError("the node's holder process has no network namespace of its own")
        self._save()

    def _plumb(self) -> None:
        """The veth pair in a free slot, and the node side's addresses and firewall."""
        pid = str(self._holder().pid)
        for slot in range(SLOTS):
            self.slot = slot
            if Path(f"/sys/class/net/{self.veth}").exists():
                continue
            add = _sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                      "netns", pid, check=False)  # fmt: skip
            if add.returncode == 0:
                break
            if "exists" not in add.stderr:
                raise ClusterError(f"ip link add {self.veth}: {add.stderr.strip()}")
        else:
            raise ClusterError(f"no free slot for a real node's veth (arrn0..arrn{SLOTS - 1})")
        self._save()
        # host side: one address, no IPv6 (the interface's own sysctl; gone with it)
        Path(f"/proc/sys/net/ipv6/conf/{self.veth}/disable_ipv6").write_text("1\n")
        _sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.veth)
        _sh("ip", "link", "set", self.veth, "up")
        # the apiserver reaches pods (webhooks and aggregated APIs behind Services) by their
        # IPs; the route goes with the veth
        _sh("ip", "route", "add", self.pod_subnet, "via", self.node_ip, "dev", self.veth)
        script = "; ".join(
            [
                "set -e",
                "ip link set lo up",
                "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6",
                f"ip addr add {self.node_ip}/30 dev eth0",
                "ip link set eth0 up",
                # pods (forwarded) and the node (new connections) never send out of eth0,
                # only answer; mangle, because kube-proxy puts ACCEPT rules first in filter
                "iptables -t mangle -A FORWARD -o eth0 -m conntrack"
                " --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -t mangle -A FORWARD -o eth0 -j DROP",
                "iptables -t mangle -A OUTPUT -o eth0 -m conntrack --ctstate NEW -j DROP",
                "iptables -A FORWARD -o eth0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -A FORWARD -o eth0 -j DROP",
            ]
        )
        _sh(*self._in_node(), "sh", "-c", script)

    def _start_containerd(self) -> None:
        d = self.workdir
        self.cgroups_created = [
            str(h / CGROUP_PARENT)
            for h in sorted(CGROUPS.iterdir())
            if h.is_dir() and not (h / CGROUP_PARENT).exists()
        ]
        for sub in ("containerd/root", "containerd/state", "containerd/opt", "cni/net.d"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        config = d / "containerd" / "config.toml"
        gateway = self.pod_subnet.replace(".0/24", ".1")
        config.write_text(
            CONTAINERD_CONFIG.format(
                dir=d, sock=self.socket, pause=self.images["pause"].ref, cni_bin=CNI_BIN, runc=RUNC
            )
        )
        (d / "cni" / "net.d" / "10-agentrun.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "agentrun",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": str(d / "cni" / "ipam"),
                                "ranges": [[{"subnet": self.pod_subnet, "gateway": gateway}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        }
                    ],
                },
                indent=1,
            )
        )
        proc = self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait(
            proc,
            lambda: self.socket.exists() and self.ctr("version", check=False) != "",
            "containerd answering",
        )

    def _import_images(self) -> None:
        for image in self.images.values():
            self.ctr("images", "import", str(image.archive), timeout=300)
        have = set(self.ctr("images", "ls", "-q").split())
        missing = [i.ref for i in self.images.values() if i.ref not in have]
        if missing:
            raise ClusterError(f"images not in containerd after import: {missing} (have {have})")

    def _start_kubelet(self, pki: Pki) -> None:
        d = self.workdir
        ca = pki.ca
        (d / "kubelet").mkdir(exist_ok=True)
        config = d / "kubelet-config.yaml"
        config.write_text(
            KUBELET_CONFIG.format(
                ip=self.node_ip,
                ca=ca,
                crt=pki.crt(f"{self.name}-serving"),
                key=pki.key(f"{self.name}-serving"),
                plugins=d / "kubelet" / "volume-plugins",
            )
        )
        sock = f"unix://{self.socket}"
        self._spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                "--container-runtime=remote",
                f"--container-runtime-endpoint={sock}",
                f"--image-service-endpoint={sock}",
                f"--kubeconfig={d / f'{self.name}.kubeconfig'}",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={d / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--node-labels=agentrun.dev/node=real",
                "--register-node=true",
                "--v=1",
            ],
        )

    def _kubernetes_endpoints(self, api: KubeClient, api_port: int) -> None:
        """The apiserver runs no endpoint reconciler (its address is loopback): point the
        ``kubernetes`` Service at the forwarder on the node's address, for kube-proxy."""
        port = {"name": "https", "port": api_port, "protocol": "TCP"}
        endpoints = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": self.node_ip}], "ports": [port]}],
        }
        # kube-proxy 1.20 reads EndpointSlices; no controller mirrors them here
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1beta1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.node_ip], "conditions": {"ready": True}}],
            "ports": [port],
        }
        objs: list[tuple[str, dict[str, Any]]] = [
            ("/api/v1/namespaces/default/endpoints", endpoints),
            ("/apis/discovery.k8s.io/v1beta1/namespaces/default/endpointslices", slice_),
        ]
        for base, obj in objs:
            try:
                api.post(base, obj)
            except ApiError as e:
                if e.status != 409:
                    raise
                current = api.get(f"{base}/kubernetes")
                obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                api.put(f"{base}/kubernetes", obj)

    def _start_kube_proxy(self) -> None:
        d = self.workdir
        config = d / "kube-proxy-config.yaml"
        config.write_text(
            KUBE_PROXY_CONFIG.format(
                kubeconfig=d / f"{self.name}-proxy.kubeconfig",
                name=self.name,
                ip=self.node_ip,
                cidr=self.pod_subnet,
            )
        )
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"])

    def expose(self, port: int) -> str:
        """Make ``127.0.0.1:port`` of the host (a test's server) reachable from pods at the
        returned ``NODE_IP:port``: a forwarder, like the apiserver's. The only way out."""
        name = f"forwarder-{port}"
        fwd = self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "tests.cluster.fwd",
                f"/proc/{self._holder().pid}/ns/net",
                f"{self.node_ip}:{port}",
                f"127.0.0.1:{port}",
            ],
            in_node=False,
        )
        self._wait(fwd, lambda: "listening" in Path(fwd.log).read_text(), f"{name} listening")
        return f"{self.node_ip}:{port}"

    # ---- processes and readiness ---------------------------------------------------------
    def _spawn(
        self, name: str, argv: list[str], *, in_node: bool = True, record: bool = True
    ) -> NodeProc:
        log = self.logs_dir / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        env.pop("KUBECONFIG", None)
        with log.open("ab") as fh:
            popen = subprocess.Popen(
                [*self._in_node(), *argv] if in_node else argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=None if self.detached else _pdeathsig,
            )
        proc = NodeProc(name, popen.pid, start_time(popen.pid), str(log))
        if record:
            self.procs.append(proc)
            self._save()
        return proc

    def _wait(self, proc: NodeProc, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for p in [self.holder, *self.procs]:
                if p is not None and not p.alive():
                    raise ClusterError(
                        f"{p.name} exited while waiting for {what}; "
                        f"tail of {p.log}:\n{tail(Path(p.log))}"
                    )
            if check():
                self._mark(what)
                return
            time.sleep(0.1)
        raise ClusterError(
            f"timed out after {self.timeout:.0f}s waiting for {what}; "
            f"tail of {proc.log}:\n{tail(Path(proc.log))}"
        )

    def _node_ready(self, api: KubeClient) -> bool:
        try:
            node = api.get(f"/api/v1/nodes/{self.name}")
        except (ApiError, OSError):
            return False
        conds = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def _iptables_nat(self) -> str:
        return _sh(*self._in_node(), "iptables-save", "-t", "nat", check=False).stdout

    # ---- stop --------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything the node started and wait until its namespaces and veth are
        gone. Safe to call twice, and after a failed or partial start."""
        by_name = {p.name: p for p in self.procs}
        for name in ("kube-proxy", "kubelet"):
            if name in by_name:
                kill_tree([(by_name[name].pid, by_name[name].started)], grace=5)
        containers: list[str] = []
        if "containerd" in by_name and by_name["containerd"].alive():
            containers = self._remove_containers()
        if "containerd" in by_name:
            kill_tree([(by_name["containerd"].pid, by_name["containerd"].started)], grace=5)
        # whatever else still lives in the node's namespaces (shims and their containers
        # outlive containerd by design), then the forwarder and the holder
        strays = self._processes_in_namespaces()
        kill_tree([(pid, start_time(pid)) for pid in strays], grace=3)
        rest = [(p.pid, p.started) for p in self.procs]
        if self.holder is not None:
            rest.append((self.holder.pid, self.holder.started))
        kill_tree(rest, grace=3)
        self._remove_cgroups(containers)
        self._wait_veth_gone()
        self.procs = []
        self.holder = None
        self.state_file.unlink(missing_ok=True)

    def _remove_containers(self) -> list[str]:
        """Kill and delete every container task (runc removes their cgroups); returns the
        ids of all containers, for the cgroups left behind should that fail."""
        try:
            ids = self.ctr("containers", "ls", "-q", check=False, timeout=10).split()
            tasks = self.ctr("tasks", "ls", "-q", check=False, timeout=10).split()
            for task in tasks:
                self.ctr("tasks", "kill", "-s", "SIGKILL", "--all", task, check=False, timeout=10)
            for task in tasks:
                self.ctr("tasks", "delete", "--force", task, check=False, timeout=20)
        except subprocess.TimeoutExpired:
            return []  # the processes are killed below all the same
        return ids

    def _remove_cgroups(self, containers: list[str]) -> None:
        """The pods' cgroups (empty once their processes are gone), and the parent
        directories this node created; a parent still in use by another node stays."""
        parents = [h / CGROUP_PARENT for h in CGROUPS.iterdir() if h.is_dir()]
        for parent in parents:
            for cid in containers:
                with contextlib.suppress(OSError):
                    (parent / cid).rmdir()
        for created in self.cgroups_created:
            with contextlib.suppress(OSError):
                Path(created).rmdir()

    def _processes_in_namespaces(self) -> list[int]:
        if not self.netns and not self.mntns:
            return []
        holder = self.holder.pid if self.holder else -1
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in (holder, os.getpid()):
                continue
            pid = int(entry.name)
            if (self.netns and _ns(pid, "net") == self.netns) or (
                self.mntns and _ns(pid, "mnt") == self.mntns
            ):
                found.append(pid)
        return found

    def _wait_veth_gone(self) -> None:
        if self.slot is None:
            return
        link = Path(f"/sys/class/net/{self.veth}")
        deadline = time.monotonic() + 15
        while link.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if link.exists():
            # the namespace is kept by something unknown: take the veth down at least
            _sh("ip", "link", "del", self.veth, check=False)


CONTAINERD_CONFIG = """\
# Generated by tests/cluster/realnode.py
version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # the node's processes lack CAP_SYS_RESOURCE: runc cannot lower oom_score_adj
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{dir}/cni/net.d"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    disable_snapshot_annotations = true

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
"""

KUBELET_CONFIG = """\
# Generated by tests/cluster/realnode.py
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: {crt}
tlsPrivateKeyFile: {key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
# no QoS or node-allocatable cgroups: nothing is created outside the pods' own
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
oomScoreAdj: 0
protectKernelDefaults: false
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
clusterDomain: cluster.local
# No DNS server runs: pods' resolv.conf names the node's own address, where nothing answers on
# 53, so a lookup fails at once; without it the kubelet posts a MissingClusterDNS Warning for
# every pod, which crowds the workloads' own Warnings out of `k8s-events`.
clusterDNS: [{ip}]
resolvConf: /etc/resolv.conf
volumePluginDir: {plugins}
serializeImagePulls: false
# reports Ready 2 s after registering rather than 10 s
nodeStatusUpdateFrequency: 2s
"""

KUBE_PROXY_CONFIG = """\
# Generated by tests/cluster/realnode.py
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: iptables
hostnameOverride: {name}
bindAddress: {ip}
clusterCIDR: {cidr}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
# Services from their Endpoints, which the endpoint controller keeps (no EndpointSlice
# controller runs): with slices, only `kubernetes` (whose slice the node writes) would route.
featureGates:
  EndpointSliceProxying: false
# zeros: kube-proxy leaves the machine-wide conntrack settings alone
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"""
