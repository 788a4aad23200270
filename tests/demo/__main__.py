"""`make demo`: the incident workflow as shipped, on a local control plane (tests/demo/scenario.py).

The node it runs on, said in the first lines of the output:

- ``--node real``: a real kubelet with containerd (tests/demo/real.py): the chart's operator
  and receiver and every tool Job are containers from the project's image. `make demo
  NODE=real` builds what is missing first (make node-bin image tools-bin: minutes on a fresh
  machine).
- ``--node standin``: the Python stand-in for the kubelet (tests/demo/standin.py): pods are
  local processes, the operator a local process.
- ``--node auto`` (the default): the real node when this machine can run one (root,
  namespaces, a memory cgroup) and everything it needs is already installed and built for
  this tree (the Debian packages, kubelet and kube-proxy, the image); otherwise the stand-in,
  saying why. It never builds them, so `make demo` on a fresh machine costs only the
  control-plane build. A live model (OPENAI_API_KEY) runs on the stand-in: pods on the real
  node reach nothing outside it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from tests.cluster.realnode import not_built, unsupported
from tests.support import stack

from . import real, standin
from .scenario import model_line, say

REAL = (
    "REAL: kubelet v1.20.2 with containerd; the Helm chart's operator and receiver and every "
    "tool Job run as containers from the image `make image` built (`make demo NODE=standin` "
    "for the stand-in)"
)
HELM_SH = stack.ROOT / "tests" / "setup" / "helm.sh"
STANDIN = (
    "STAND-IN: a Python stand-in for the kubelet runs each pod's command as a local process "
    "(no image, no securityContext); the operator is a local process"
)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the cluster, node and processes are stopped


def choose(asked: str, live: bool) -> tuple[str, str]:
    """(node, why): the node to run on and, for the stand-in under auto, why not the real one."""
    if asked == "standin":
        return "standin", "asked for (NODE=standin)"
    if live:
        if asked == "real":
            raise SystemExit(
                "make demo NODE=real runs the scripted model only: pods on the real node reach "
                "nothing outside it; a live model runs with NODE=standin"
            )
        return "standin", "a live model: pods on the real node reach nothing outside it"
    why = unsupported() or (None if asked == "real" else not_built() or _no_helm())
    if why is None:
        return "real", ""
    if asked == "real":
        raise SystemExit(f"make demo NODE=real: a real node cannot run here: {why}")
    return "standin", f"the real node is not used: {why} (`make demo NODE=real` builds it)"


def _no_helm() -> str | None:
    check = subprocess.run(["bash", str(HELM_SH), "--check"], capture_output=True, check=False)
    return "not fetched yet: helm (make tools-bin)" if check.returncode else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo", description=__doc__)
    # `local` as in `make cluster-up NODE=local`.
    parser.add_argument("--node", choices=["auto", "real", "standin", "local"], default="auto")
    args = parser.parse_args(argv)
    args.node = "standin" if args.node == "local" else args.node
    signal.signal(signal.SIGTERM, _terminate)
    live = bool(os.environ.get("OPENAI_API_KEY"))
    node, why = choose(args.node, live)
    workdir = stack.ROOT / ".local" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    say("== agentrun demo: an alert -> receiver -> prefetch -> evidence -> approval -> fix ==")
    say("Node: " + (REAL if node == "real" else f"{STANDIN}; {why}"))
    say("Model: " + model_line(live))
    return real.run(workdir) if node == "real" else standin.run(workdir, live)


if __name__ == "__main__":
    sys.exit(main())
