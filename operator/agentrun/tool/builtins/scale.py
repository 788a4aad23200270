"""scale: set the replicas of a Deployment or StatefulSet, never above a bound.

The bound is enforced twice: the AgentTool's JSON schema (`maximum` of replicas) refuses a
larger call before it is even proposed, and the tool itself refuses anything above
AGENTRUN_SCALE_MAX (default DEFAULT_MAX), whatever schema a copied AgentTool carries.
"""

from __future__ import annotations

import os
from typing import Any

from kubernetes.client.exceptions import ApiException

from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    get_object,
    preconditions,
    request,
)

ARGUMENTS = frozenset({"kind", "name", "namespace", "replicas"})
TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "name": str,
    "namespace": str,
    "replicas": int,
}
MAX_ENV = "AGENTRUN_SCALE_MAX"
DEFAULT_MAX = 20  # = the maximum of replicas in tools/scale.yaml (tested)
PLURALS = {"deployment": "deployments", "statefulset": "statefulsets"}
KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet"}


def scale_max() -> int:
    raw = os.environ.get(MAX_ENV, "")
    try:
        return max(0, int(raw)) if raw.strip() else DEFAULT_MAX
    except ValueError:
        return 0  # a broken bound allows nothing rather than anything


def check_replicas(replicas: Any, bound: int) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ToolError("replicas must be an integer")
    if replicas < 0:
        raise ToolError("replicas must be 0 or more")
    if replicas > bound:
        raise ToolError(
            f"refused: {replicas} replicas is over this tool's maximum of {bound} "
            f"({MAX_ENV}); ask a human to scale further"
        )
    return replicas


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"name", "namespace", "replicas"})
    key = str(args.get("kind") or "Deployment").strip().lower()
    if key not in KINDS:
        raise ToolError(f"kind must be Deployment or StatefulSet, got {args['kind']!r}")
    kind, plural = KINDS[key], PLURALS[key]
    replicas = check_replicas(args["replicas"], scale_max())
    name, namespace = str(args["name"]), str(args["namespace"])
    what = f"{kind} {name} in namespace {namespace}"
    path = api_path("apps/v1", plural, namespace, name)
    before = get_object(path, what)
    old = (before.get("spec") or {}).get("replicas")
    bound = preconditions()
    if "fromReplicas" in bound and bound["fromReplicas"] != old:
        raise ToolError(
            f"{what} has {old} replicas, not {bound['fromReplicas']} as when scaling to "
            f"{replicas} was proposed; nothing was changed, look again"
        )
    try:
        after = request(
            "PATCH",
            f"{path}/scale",
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        raise api_error(exc, f"the scale of {what}") from exc
    new = (after.get("spec") or {}).get("replicas")
    note = "no change" if old == new else f"scaled from {old} to {new} replicas"
    return {
        "summary": f"{kind} {namespace}/{name}: {note}; pods follow, check with k8s-describe. "
        "A HorizontalPodAutoscaler on it, if any, may change this again.",
        "kind": kind,
        "name": name,
        "namespace": namespace,
        "from": old,
        "to": new,
        "readyReplicas": (before.get("status") or {}).get("readyReplicas", 0),
    }
