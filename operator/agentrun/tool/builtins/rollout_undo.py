"""rollout-undo: what `kubectl rollout undo deployment/X [--to-revision=N]` does.

The Deployment's pod template is replaced by the one of the ReplicaSet of the target
revision (the previous one by default), its pod-template-hash label dropped; the
Deployment controller then rolls out, and that ReplicaSet becomes the newest revision.
The patch carries a resourceVersion test, so a Deployment changed meanwhile is not undone.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client.exceptions import ApiException

from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    get_object,
    owned_by,
    preconditions,
    request,
    selector_string,
)
from .recent_deploys import REVISION, images, replicaset_revisions, template_diff

ARGUMENTS = frozenset({"name", "namespace", "toRevision"})
TYPES: dict[str, type | tuple[type, ...]] = {"name": str, "namespace": str, "toRevision": int}
# Annotations of a ReplicaSet that are the controller's own, not the Deployment's (as kubectl).
SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"name", "namespace"})
    name, namespace = str(args["name"]), str(args["namespace"])
    to_revision = args.get("toRevision") or 0
    if isinstance(to_revision, bool) or not isinstance(to_revision, int) or to_revision < 0:
        raise ToolError("toRevision must be a revision number (0 or absent: the previous one)")
    what = f"Deployment {name} in namespace {namespace}"
    path = api_path("apps/v1", "deployments", namespace, name)
    dep = get_object(path, what)
    selector = selector_string((dep.get("spec") or {}).get("selector"))
    listing = get_object(
        api_path("apps/v1", "replicasets", namespace),
        f"replicasets in namespace {namespace}",
        query=[("labelSelector", selector)] if selector else None,
    )
    uid = (dep.get("metadata") or {}).get("uid", "")
    owned = [rs for rs in listing.get("items") or [] if owned_by(rs, uid)]
    bound = preconditions()
    if "toRevision" in bound:
        # The approved target, resolved when proposed; the Deployment must still be where
        # it was then, or the undo would go somewhere nobody looked at.
        to_revision = int(bound["toRevision"])
        now = int(((dep.get("metadata") or {}).get("annotations") or {}).get(REVISION) or 0)
        if "fromRevision" in bound and now != int(bound["fromRevision"]):
            raise ToolError(
                f"{what} is at revision {now}, not {bound['fromRevision']} as when the undo "
                "was proposed; nothing was changed, look again"
            )
    patch, info = plan(dep, owned, to_revision)
    if patch is None:
        return info
    try:
        request("PATCH", path, body=patch, content_type="application/json-patch+json")
    except ApiException as exc:
        if exc.status == 422 and "test" in str(exc.body):
            msg = f"{what} changed while undoing; nothing was changed, look again"
            raise ToolError(msg) from exc
        raise api_error(exc, what) from exc
    return info


def plan(
    dep: dict[str, Any], replicasets: list[dict[str, Any]], to_revision: int
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """The JSON patch for the undo (None when there is nothing to do) and what it means."""
    meta = dep.get("metadata") or {}
    ident = f"Deployment {meta.get('namespace')}/{meta.get('name')}"
    if (dep.get("spec") or {}).get("paused"):
        raise ToolError(f"{ident} is paused; it must be resumed before a rollback")
    revisions = replicaset_revisions(replicasets)
    by_rev = {r["revision"]: r for r in revisions}
    current = int((meta.get("annotations") or {}).get(REVISION) or 0) or (
        revisions[0]["revision"] if revisions else 0
    )
    if to_revision:
        target = by_rev.get(to_revision)
        if target is None:
            raise ToolError(
                f"{ident} has no revision {to_revision}; revisions: {sorted(by_rev, reverse=True)}"
            )
    else:
        older = [r for r in revisions if r["revision"] < current]
        if not older:
            raise ToolError(f"{ident} has no revision before {current} to roll back to")
        target = older[0]
    template = copy.deepcopy(target["template"])
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop("pod-template-hash", None)
    template.setdefault("metadata", {})["labels"] = labels
    current_template = (dep.get("spec") or {}).get("template") or {}
    diff = template_diff(current_template, template)
    info: dict[str, Any] = {
        "deployment": meta.get("name"),
        "namespace": meta.get("namespace"),
        "fromRevision": current,
        "toRevision": target["revision"],
        "images": images(template),
        "changes": diff,
    }
    if target["revision"] == current or _without_hash(current_template) == template:
        info["summary"] = (
            f"{ident}: skipped, the pod template already equals revision {target['revision']}"
        )
        return None, info
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k != "deprecated.rollback"
    }
    rs_annotations = next(
        (
            (rs.get("metadata") or {}).get("annotations") or {}
            for rs in replicasets
            if (rs.get("metadata") or {}).get("name") == target["name"]
        ),
        {},
    )
    for k, v in rs_annotations.items():
        if k not in SKIP_ANNOTATIONS:
            annotations[k] = v
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]
    image_list = ", ".join(f"{k}={v}" for k, v in images(template).items())
    info["summary"] = (
        f"{ident} rolled back from revision {current} to the template of revision "
        f"{target['revision']} (images {image_list}); "
        "it rolls out as a new revision, check with recent-deploys or k8s-describe"
    )
    return patch, info


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(template)
    out.setdefault("metadata", {})
    labels = dict(out["metadata"].get("labels") or {})
    labels.pop("pod-template-hash", None)
    out["metadata"]["labels"] = labels
    return out
