"""`agentrun-operator`: runs the operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import os
import random
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentrun-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[ns for ns in os.environ.get("AGENTRUN_NAMESPACES", "").split(",") if ns],
        help="namespace to watch (repeatable); all namespaces when none is given",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("AGENTRUN_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="kopf health endpoint URL ('' to disable)",
    )
    parser.add_argument(
        "--metrics",
        default=os.environ.get("AGENTRUN_METRICS", "0.0.0.0:9090"),
        help="host:port of the Prometheus /metrics endpoint ('' to disable)",
    )
    parser.add_argument(
        "--peering",
        default=os.environ.get("AGENTRUN_PEERING", ""),
        help="kopf peering name: run as one of several replicas, the highest priority active",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(os.environ.get("AGENTRUN_PRIORITY", "0")) or random.randint(1, 2**30),
        help="peering priority (default: random, so exactly one replica is active)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    os.environ["AGENTRUN_METRICS"] = args.metrics  # read by the startup handler
    from . import handlers  # imported late: kopf registers handlers on import

    handlers.run(args.namespace, args.liveness or None, args.verbose, args.peering, args.priority)
    return 0


if __name__ == "__main__":
    sys.exit(main())
