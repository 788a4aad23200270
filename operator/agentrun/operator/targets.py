"""A write's target, read when the write is proposed (adapter, I/O).

The approver sees the state the write was proposed on (the pod uid a delete hits, the
revision an undo goes to, the replicas a scale changes); the action hash covers it, and the
tool refuses to run when the target is no longer in that state.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from agentrun.kube import client as kube
from agentrun.tool.builtins.common import PRECONDITIONS_ENV, ToolError, owned_by, selector_string
from agentrun.tool.builtins.rollout_undo import plan

__all__ = ["PRECONDITIONS_ENV", "TargetError", "resolve"]
SCALE_KINDS = {"deployment": "deployments", "statefulset": "statefulsets"}


class TargetError(Exception):
    """The write cannot be proposed as asked (its target is missing or has no such state)."""


def _get(
    api: client.ApiClient, api_version: str, plural: str, ns: str, name: str, what: str
) -> dict[str, Any]:
    found = kube.get_object(api, api_version, ns, plural, name)
    if found is None:
        raise TargetError(f"{what} not found")
    return found


def resolve(
    api: client.ApiClient, builtin: str, arguments: dict[str, Any], namespace: str
) -> dict[str, Any]:
    """The preconditions of a write built-in's call; {} for tools without a target state."""
    ns = str(arguments.get("namespace") or namespace)
    name = str(arguments.get("name") or "")
    if not name:
        return {}
    if builtin == "delete-pod":
        pod = _get(api, "v1", "pods", ns, name, f"Pod {name} in namespace {ns}")
        return {"podUID": (pod.get("metadata") or {}).get("uid")}
    if builtin == "scale":
        plural = SCALE_KINDS.get(str(arguments.get("kind") or "Deployment").lower())
        if plural is None:
            return {}
        obj = _get(api, "apps/v1", plural, ns, name, f"{plural[:-1]} {name} in {ns}")
        old = (obj.get("spec") or {}).get("replicas")
        return {"fromReplicas": old, "toReplicas": arguments.get("replicas")}
    if builtin == "rollout-undo":
        what = f"Deployment {name} in namespace {ns}"
        dep = _get(api, "apps/v1", "deployments", ns, name, what)
        selector = selector_string((dep.get("spec") or {}).get("selector"))
        replicasets = kube.list_objects(api, "apps/v1", ns, "replicasets", selector)
        uid = (dep.get("metadata") or {}).get("uid", "")
        owned = [rs for rs in replicasets if owned_by(rs, uid)]
        try:
            _, info = plan(dep, owned, int(arguments.get("toRevision") or 0))
        except ToolError as err:
            raise TargetError(str(err)) from err
        return {"fromRevision": info["fromRevision"], "toRevision": info["toRevision"]}
    return {}
