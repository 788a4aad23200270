"""A bare kopf operator: the reference step cycle for `benchmarks/scale.py`.

One handler on a tiny custom resource (`BenchObject`, group bench.agentrun.dev, CRD in
`CRD` below): on create and on every spec change it copies `spec.value` into
`status.observed` through kopf's own `patch`. The benchmark patches `spec.value` and times
how long until a watch sees `status.observed` equal to it: spec PATCH sent -> kopf's watch
event -> handler -> kopf's PATCH(es) -> the benchmark's watch event. Nothing else.

    python -m benchmarks.bare_kopf --namespace NS [--storage default|status]

`--storage default` keeps kopf 1.45's defaults (diff-base and progress in annotations, so a
cycle writes the object and its status: two PATCHes); `--storage status` uses
`kopf.StatusDiffBaseStorage()` and `kopf.StatusProgressStorage()` (one PATCH per cycle).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import kopf

GROUP, VERSION, PLURAL, KIND = "bench.agentrun.dev", "v1", "benchobjects", "BenchObject"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "benchobject", "kind": KIND},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}

STORAGE = "default"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    if STORAGE == "status":
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage()
        settings.persistence.progress_storage = kopf.StatusProgressStorage()


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def copy_value(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["observed"] = spec.get("value")


def main(argv: list[str] | None = None) -> int:
    global STORAGE
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_kopf", description=__doc__)
    parser.add_argument("--namespace", "-n", required=True)
    parser.add_argument("--storage", choices=("default", "status"), default="default")
    parser.add_argument("--liveness", default=None, help="kopf health endpoint URL")
    args = parser.parse_args(argv)
    STORAGE = args.storage
    kopf.configure(verbose=False)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # no per-cycle log lines
    asyncio.run(
        kopf.operator(
            standalone=True,
            namespaces=[args.namespace],
            liveness_endpoint=args.liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
