"""``python -m tests.cluster up|down|status``: a detached local cluster for the demo and
for reuse by the tests (``AGENTRUN_KUBECONFIG=.local/cluster/kubeconfig``).

State (PIDs, logs, PKI, kubeconfig) lives in ``$AGENTRUN_CLUSTER_DIR`` (default
``.local/cluster`` in the repository, git-ignored).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .cluster import REPO, ClusterError, LocalCluster


def default_workdir() -> Path:
    return Path(os.environ.get("AGENTRUN_CLUSTER_DIR") or REPO / ".local" / "cluster")


def up(workdir: Path) -> int:
    existing = LocalCluster.from_state(workdir)
    if existing is not None:
        if all(existing.running().values()):
            print(f"cluster already running: {existing.api_url}")
            print(f"export KUBECONFIG={existing.kubeconfig}")
            return 0
        print("cleaning up a partly stopped cluster", file=sys.stderr)
        existing.stop()
    cluster = LocalCluster(workdir, detached=True)
    t0 = time.monotonic()
    try:
        cluster.start()
    except ClusterError as e:
        print(f"cluster failed to start: {e}", file=sys.stderr)
        return 1
    took = time.monotonic() - t0
    print(f"cluster ready in {took:.1f}s: {cluster.api_url} (logs: {cluster.logs_dir})")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


def down(workdir: Path) -> int:
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
    print(f"api: {cluster.api_url}")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0 if all(running.values()) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    workdir = (args.workdir or default_workdir()).resolve()
    return {"up": up, "down": down, "status": status}[args.command](workdir)


if __name__ == "__main__":
    sys.exit(main())
