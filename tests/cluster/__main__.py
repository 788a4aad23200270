"""``python -m tests.cluster up [--node real]|down|status``: a detached local cluster for
the demo and for reuse by the tests (``AGENTRUN_KUBECONFIG=.local/cluster/kubeconfig``).

State (PIDs, logs, PKI, kubeconfig) lives in ``$AGENTRUN_CLUSTER_DIR`` (default
``.local/cluster`` in the repository, git-ignored); a real node's in its ``realnode/``.
``--node real`` joins a real kubelet node (``realnode.py``) instead of the stand-in.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .cluster import REPO, ClusterError, LocalCluster
from .realnode import RealNode, unsupported


def default_workdir() -> Path:
    return Path(os.environ.get("AGENTRUN_CLUSTER_DIR") or REPO / ".local" / "cluster")


def up(workdir: Path, node: str = "local") -> int:
    real = node == "real"
    if real and (why := unsupported()):
        print(f"a real node cannot run here: {why}", file=sys.stderr)
        return 1
    existing = LocalCluster.from_state(workdir)
    existing_node = RealNode.from_state(workdir / "realnode")
    if existing is not None:
        node_ok = existing_node is not None and all(existing_node.running().values())
        if all(existing.running().values()) and existing.local_node != real and node_ok == real:
            print(f"cluster already running: {existing.api_url}")
            print(f"export KUBECONFIG={existing.kubeconfig}")
            return 0
        print("stopping the recorded cluster first", file=sys.stderr)
        down(workdir)
    cluster = LocalCluster(workdir, detached=True, local_node=not real)
    t0 = time.monotonic()
    try:
        cluster.start()
        if real:
            realnode = RealNode(workdir / "realnode", cluster, detached=True)
            realnode.start()
    except ClusterError as e:
        print(f"cluster failed to start: {e}", file=sys.stderr)
        cluster.stop()
        return 1
    took = time.monotonic() - t0
    print(f"cluster ready in {took:.1f}s: {cluster.api_url} (logs: {cluster.logs_dir})")
    if real:
        print(f"real node {realnode.name} Ready at {realnode.node_ip}; image {realnode.image}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def down(workdir: Path) -> int:
    realnode = RealNode.from_state(workdir / "realnode")
    if realnode is not None:
        realnode.stop()
        print(f"real node {realnode.name} stopped")
    cluster = LocalCluster.from_state(workdir)
    if cluster is None:
        print("no cluster recorded in", workdir)
        return 0
    pids = [p.pid for p in cluster.procs]
    cluster.stop()
    # Detached processes were re-parented to PID 1; give it a moment to reap the zombies so
    # that `ps` right after `make cluster-down` shows nothing.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"cluster stopped ({len(pids)} processes and their children)")
    return 0


def status(workdir: Path) -> int:
    cluster = LocalCluster.from_state(workdir)
    if cluster is None:
        print("not running")
        return 1
    running = cluster.running()
    for p in cluster.procs:
        print(f"{p.name:<24} pid {p.pid:<8} {'running' if running[p.name] else 'DEAD'}")
    realnode = RealNode.from_state(workdir / "realnode")
    if realnode is not None:
        node_running = realnode.running()
        running.update({f"realnode/{k}": v for k, v in node_running.items()})
        for name, ok in node_running.items():
            print(f"{'realnode/' + name:<24} {'running' if ok else 'DEAD'}")
    print(f"api: {cluster.api_url}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0 if all(running.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--node",
        choices=["local", "real"],
        default="local",
        help="up: the Python stand-in node (default) or a real kubelet node (root)",
    )
    args = ap.parse_args(argv)
    workdir = (args.workdir or default_workdir()).resolve()
    if args.command == "up":
        return up(workdir, args.node)
    return {"down": down, "status": status}[args.command](workdir)


if __name__ == "__main__":
    sys.exit(main())
