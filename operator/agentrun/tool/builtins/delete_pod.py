"""delete-pod: delete one pod, exactly the one that was looked at (uid precondition).

Says whether a controller replaces it: a bare pod is gone for good.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    get_object,
    int_arg,
    preconditions,
    request,
)

ARGUMENTS = frozenset({"name", "namespace", "gracePeriodSeconds"})
TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "namespace": str,
    "gracePeriodSeconds": int,
}
MAX_GRACE = 300


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"name", "namespace"})
    name, namespace = str(args["name"]), str(args["namespace"])
    what = f"Pod {name} in namespace {namespace}"
    path = api_path("v1", "pods", namespace, name)
    pod = get_object(path, what)
    meta = pod.get("metadata") or {}
    # The pod the approver was shown (its uid when proposed), else the one just read.
    uid = preconditions().get("podUID") or meta.get("uid")
    if uid != meta.get("uid"):
        raise ToolError(
            f"{what} was replaced since the delete was proposed (uid {uid} approved, now "
            f"{meta.get('uid')}); nothing deleted"
        )
    body: dict[str, Any] = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": uid},
    }
    if args.get("gracePeriodSeconds") is not None:
        body["gracePeriodSeconds"] = int_arg(
            args, "gracePeriodSeconds", 30, 0, MAX_GRACE, clamp=False
        )
    try:
        request("DELETE", path, body=body)
    except ApiException as exc:
        if exc.status == 409:
            msg = f"{what} was replaced meanwhile (uid changed); nothing deleted"
            raise ToolError(msg) from exc
        raise api_error(exc, what) from exc
    return {"summary": f"{what} deleted; {replacement(pod)}", "pod": name, "namespace": namespace}


def replacement(pod: dict[str, Any]) -> str:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    owner = next((r for r in refs if r.get("controller")), None)
    if owner is None:
        return "it has no controller, so NOTHING recreates it"
    return f"its controller {owner.get('kind')}/{owner.get('name')} creates a replacement"
