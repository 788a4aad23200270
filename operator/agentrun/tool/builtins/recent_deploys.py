"""recent-deploys: the rollout history of a workload and what changed in its last rollout.

Deployments keep one ReplicaSet per revision (annotation deployment.kubernetes.io/revision);
StatefulSets and DaemonSets keep ControllerRevisions. The pod templates of the last two
revisions are compared: images, env var names (never values: they may come from Secrets),
resources, command/args, and any other template field that changed.
"""

from __future__ import annotations

from typing import Any

from .common import (
    ToolError,
    api_path,
    arguments,
    get_object,
    int_arg,
    namespace_of,
    owned_by,
    selector_string,
)

ARGUMENTS = frozenset({"kind", "name", "namespace", "limit"})
TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "name": str,
    "namespace": str,
    "limit": int,
}
KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet"}
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
for _k in list(KINDS):
    KINDS[_k + "s"] = KINDS[_k]
KINDS |= {"deploy": "Deployment", "sts": "StatefulSet", "ds": "DaemonSet"}
DEFAULT_LIMIT, MAX_LIMIT = 5, 20
REVISION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE = "kubernetes.io/change-cause"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HASH_LABELS = ("pod-template-hash", "controller-revision-hash", "pod-template-generation")


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"name"})
    kind = KINDS.get(str(args.get("kind") or "Deployment").strip().lower())
    if kind is None:
        raise ToolError(f"kind must be Deployment, StatefulSet or DaemonSet, got {args['kind']!r}")
    namespace, name = namespace_of(args), str(args["name"])
    limit = int_arg(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    workload = get_object(
        api_path("apps/v1", PLURALS[kind], namespace, name),
        f"{kind} {name} in namespace {namespace}",
    )
    return of_workload(kind, workload, namespace, limit)


def of_workload(kind: str, workload: dict[str, Any], namespace: str, limit: int) -> dict[str, Any]:
    """The history of a workload already read (Deployment, StatefulSet or DaemonSet)."""
    uid = (workload.get("metadata") or {}).get("uid", "")
    selector = selector_string((workload.get("spec") or {}).get("selector"))
    plural = "replicasets" if kind == "Deployment" else "controllerrevisions"
    listing = get_object(
        api_path("apps/v1", plural, namespace),
        f"{plural} in namespace {namespace}",
        query=[("labelSelector", selector)] if selector else None,
    )
    owned = [o for o in listing.get("items") or [] if owned_by(o, uid)]
    revisions = replicaset_revisions(owned) if kind == "Deployment" else controller_revisions(owned)
    return history(kind, workload, revisions, limit)


# ---------------------------------------------------------------- pure parts


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def replicaset_revisions(replicasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ReplicaSet: revision, name, time, template, replicas; newest first."""
    rows = []
    for rs in replicasets:
        meta, spec, status = rs.get("metadata") or {}, rs.get("spec") or {}, rs.get("status") or {}
        annotations = meta.get("annotations") or {}
        rows.append(
            {
                "revision": _int(annotations.get(REVISION)),
                "name": meta.get("name"),
                "created": meta.get("creationTimestamp"),
                "changeCause": annotations.get(CHANGE_CAUSE),
                "replicas": f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)} ready",
                "template": spec.get("template") or {},
            }
        )
    return sorted(rows, key=lambda r: r["revision"], reverse=True)


def controller_revisions(revisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ControllerRevision (StatefulSet/DaemonSet); its data is a template patch."""
    rows = []
    for cr in revisions:
        meta = cr.get("metadata") or {}
        data = cr.get("data") or {}
        template = dict((data.get("spec") or {}).get("template") or {})
        template.pop("$patch", None)
        rows.append(
            {
                "revision": _int(cr.get("revision")),
                "name": meta.get("name"),
                "created": meta.get("creationTimestamp"),
                "changeCause": (meta.get("annotations") or {}).get(CHANGE_CAUSE),
                "template": template,
            }
        )
    return sorted(rows, key=lambda r: r["revision"], reverse=True)


def images(template: dict[str, Any]) -> dict[str, str]:
    spec = template.get("spec") or {}
    return {
        str(c.get("name")): str(c.get("image"))
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    }


def _env_source(e: dict[str, Any]) -> Any:
    """What an env var's value is, for comparison only: never shown."""
    return e.get("valueFrom") if e.get("valueFrom") is not None else e.get("value", "")


def _by_name(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c.get("name")): c
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    }


def _env_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[str]]:
    """Which env vars of one container changed, by name only: values never leave."""
    a_env = {str(e.get("name")): _env_source(e) for e in a.get("env") or []}
    b_env = {str(e.get("name")): _env_source(e) for e in b.get("env") or []}
    change: dict[str, list[str]] = {
        "added": sorted(set(b_env) - set(a_env)),
        "removed": sorted(set(a_env) - set(b_env)),
        "changed": sorted(k for k in set(a_env) & set(b_env) if a_env[k] != b_env[k]),
    }
    if a.get("envFrom") != b.get("envFrom"):
        change["envFromNow"] = [
            f"{'Secret' if 'secretRef' in e else 'ConfigMap'} "
            f"{(e.get('secretRef') or e.get('configMapRef') or {}).get('name')}"
            for e in b.get("envFrom") or []
        ] or ["(none)"]
    return {k: v for k, v in change.items() if v}


def _containers_diff(
    old_c: dict[str, dict[str, Any]], new_c: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Containers added or removed, and image, env, resources and command of the rest."""
    out: dict[str, Any] = {}
    added = sorted(set(new_c) - set(old_c))
    removed = sorted(set(old_c) - set(new_c))
    if added:
        out["containersAdded"] = added
    if removed:
        out["containersRemoved"] = removed
    img: dict[str, Any] = {}
    env: dict[str, Any] = {}
    res: dict[str, Any] = {}
    cmd: dict[str, Any] = {}
    for name in sorted(set(old_c) & set(new_c)):
        a, b = old_c[name], new_c[name]
        if a.get("image") != b.get("image"):
            img[name] = {"from": a.get("image"), "to": b.get("image")}
        env_change = _env_diff(a, b)
        if env_change:
            env[name] = env_change
        if (a.get("resources") or {}) != (b.get("resources") or {}):
            res[name] = {"from": a.get("resources") or {}, "to": b.get("resources") or {}}
        for key in ("command", "args"):
            if a.get(key) != b.get(key):
                cmd.setdefault(name, {})[key] = {"from": a.get(key), "to": b.get(key)}
    for key, value in (("images", img), ("env", env), ("resources", res), ("commandArgs", cmd)):
        if value:
            out[key] = value
    return out


def _metadata_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A restart, and which pod annotations and labels changed (hash labels aside)."""
    out: dict[str, Any] = {}
    old_ann = (old.get("metadata") or {}).get("annotations") or {}
    new_ann = (new.get("metadata") or {}).get("annotations") or {}
    if old_ann.get(RESTARTED_AT) != new_ann.get(RESTARTED_AT) and new_ann.get(RESTARTED_AT):
        out["restartedAt"] = new_ann[RESTARTED_AT]
    ann_keys = sorted(
        k
        for k in set(old_ann) | set(new_ann)
        if k != RESTARTED_AT and old_ann.get(k) != new_ann.get(k)
    )
    if ann_keys:
        out["podAnnotationsChanged"] = ann_keys
    old_labels = {
        k: v
        for k, v in ((old.get("metadata") or {}).get("labels") or {}).items()
        if k not in HASH_LABELS
    }
    new_labels = {
        k: v
        for k, v in ((new.get("metadata") or {}).get("labels") or {}).items()
        if k not in HASH_LABELS
    }
    if old_labels != new_labels:
        out["podLabelsChanged"] = sorted(
            k for k in set(old_labels) | set(new_labels) if old_labels.get(k) != new_labels.get(k)
        )
    return out


def _other_fields(
    old_spec: dict[str, Any],
    new_spec: dict[str, Any],
    old_c: dict[str, dict[str, Any]],
    new_c: dict[str, dict[str, Any]],
) -> list[str]:
    """Anything else in the pod spec (volumes, serviceAccountName, nodeSelector, ...)."""
    container_keys = ("containers", "initContainers")
    other = sorted(
        k
        for k in set(old_spec) | set(new_spec)
        if k not in container_keys and old_spec.get(k) != new_spec.get(k)
    )
    seen = {"name", "image", "env", "envFrom", "resources", "command", "args"}
    for name in sorted(set(old_c) & set(new_c)):
        a, b = old_c[name], new_c[name]
        for k in sorted(set(a) | set(b)):
            if k not in seen and a.get(k) != b.get(k):
                other.append(f"{name}.{k}")
    return other


def template_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from old to new pod template, safe to show: no env values."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    old_c, new_c = _by_name(old_spec), _by_name(new_spec)
    out = {**_containers_diff(old_c, new_c), **_metadata_diff(old, new)}
    other = _other_fields(old_spec, new_spec, old_c, new_c)
    if other:
        out["otherFieldsChanged"] = other
    return out


def _describe_change(diff: dict[str, Any]) -> str:
    parts = []
    for name, change in (diff.get("images") or {}).items():
        parts.append(f"image of {name} {change['from']} -> {change['to']}")
    if diff.get("env"):
        parts.append("env of " + ", ".join(sorted(diff["env"])))
    if diff.get("resources"):
        parts.append("resources of " + ", ".join(sorted(diff["resources"])))
    if diff.get("commandArgs"):
        parts.append("command/args of " + ", ".join(sorted(diff["commandArgs"])))
    if diff.get("restartedAt"):
        parts.append(f"a restart (restartedAt {diff['restartedAt']})")
    for key, label in (
        ("containersAdded", "containers added"),
        ("containersRemoved", "containers removed"),
        ("podAnnotationsChanged", "pod annotations"),
        ("podLabelsChanged", "pod labels"),
        ("otherFieldsChanged", "other fields"),
    ):
        if diff.get(key):
            parts.append(f"{label}: {', '.join(map(str, diff[key]))}")
    return "; ".join(parts) or "no difference in the pod template"


def current_revision(kind: str, workload: dict[str, Any], revisions: list[dict[str, Any]]) -> int:
    meta, status = workload.get("metadata") or {}, workload.get("status") or {}
    if kind == "Deployment":
        rev = _int((meta.get("annotations") or {}).get(REVISION))
        if rev:
            return rev
    if kind == "StatefulSet" and status.get("updateRevision"):
        for r in revisions:
            if r["name"] == status["updateRevision"]:
                return int(r["revision"])
    return int(revisions[0]["revision"]) if revisions else 0


def history(
    kind: str, workload: dict[str, Any], revisions: list[dict[str, Any]], limit: int
) -> dict[str, Any]:
    meta = workload.get("metadata") or {}
    ident = f"{kind} {meta.get('namespace')}/{meta.get('name')}"
    if not revisions:
        return {"summary": f"{ident} has no recorded revisions yet", "revisions": []}
    current = current_revision(kind, workload, revisions)
    rows = []
    for r in revisions[:limit]:
        row = {
            "revision": r["revision"],
            "current": r["revision"] == current or None,
            "created": r.get("created"),
            "images": images(r["template"]),
            "changeCause": r.get("changeCause"),
            "replicas": r.get("replicas"),
            "name": r.get("name"),
        }
        rows.append({k: v for k, v in row.items() if v is not None})
    out: dict[str, Any] = {}
    newest = revisions[0]
    if len(revisions) >= 2:
        previous = revisions[1]
        diff = template_diff(previous["template"], newest["template"])
        out["summary"] = (
            f"{ident}: revision {newest['revision']} (created {newest.get('created')}) "
            f"replaced revision {previous['revision']} (created {previous.get('created')}); "
            f"changed: {_describe_change(diff)}"
        )
        out["lastChange"] = {"from": previous["revision"], "to": newest["revision"], **diff}
    else:
        out["summary"] = (
            f"{ident}: only revision {newest['revision']} (created {newest.get('created')}), "
            "nothing to compare"
        )
    if newest["revision"] != current:
        out["summary"] += f"; NOTE: the workload is at revision {current}, not the newest"
    out["currentRevision"] = current
    out["revisions"] = rows
    if len(revisions) > limit:
        out["note"] = f"showing the newest {limit} of {len(revisions)} revisions"
    return out
