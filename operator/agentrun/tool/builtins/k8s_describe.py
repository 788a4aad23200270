"""k8s-describe: one object like `kubectl describe`, compact: what is wrong first.

A one-line summary, the conditions (failing ones first), the owner chain up to the top
controller, kind-specific status (pods: container states; workloads: replica counts and
their pods' template; Deployments: their ReplicaSets), then the object's recent events
deduplicated. Secrets are refused whatever RBAC says.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from . import k8s_events
from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    clip,
    env_summary,
    get_object,
    namespace_of,
    owned_by,
    request,
    selector_string,
)
from .k8s_get import _conditions, _pod_summary, _prune, _resolve, compact, refuse_secrets

ARGUMENTS = frozenset({"kind", "name", "namespace", "apiVersion"})
TYPES: dict[str, type | tuple[type, ...]] = {k: str for k in ARGUMENTS}
MAX_OWNER_DEPTH = 4
MAX_EVENTS = 10
MAX_REPLICASETS = 5
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"kind", "name"})
    refuse_secrets(args["kind"])
    kind, api_version, plural, namespaced = _resolve(args["kind"], args.get("apiVersion"))
    refuse_secrets(kind)
    refuse_secrets(plural)
    namespace = namespace_of(args) if namespaced else None
    name = str(args["name"])
    where = f" in namespace {namespace}" if namespace else ""
    obj = get_object(api_path(api_version, plural, namespace, name), f"{kind} {name}{where}")
    obj.setdefault("kind", kind)
    obj.setdefault("apiVersion", api_version)
    out = describe(obj)
    out["ownerChain"] = owner_chain(obj, namespace)
    if kind == "Deployment":
        out["replicaSets"] = deployment_replicasets(obj, namespace or "")
    events = k8s_events.fetch(namespace, kind=kind, name=name)
    if isinstance(events, str):
        out["events"] = events
    else:
        rows = k8s_events.dedup(events)
        out["events"] = [{k: v for k, v in r.items() if k != "object"} for r in rows[:MAX_EVENTS]]
        if len(rows) > MAX_EVENTS:
            out["events"].append({"note": f"{len(rows) - MAX_EVENTS} older events not shown"})
        if not rows:
            out["events"] = "no events (events expire after 1 hour by default)"
    return {k: v for k, v in out.items() if v not in (None, "", [], {})}


# ---------------------------------------------------------------- pure shaping


def conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Conditions, the unhealthy ones first (False for most types, True for *Pressure etc.)."""
    rows = []
    for c in status.get("conditions") or []:
        row = {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": clip(str(c.get("message") or ""), 300),
            "since": c.get("lastTransitionTime") or c.get("lastUpdateTime"),
        }
        rows.append({k: v for k, v in row.items() if v not in (None, "")})
    return sorted(rows, key=lambda r: 0 if condition_bad(r) else 1)


BAD_WHEN_TRUE = ("Pressure", "Unavailable", "Failed", "Failure", "ReplicaFailure", "Stalled")


def condition_bad(c: dict[str, Any]) -> bool:
    type_, status = str(c.get("type", "")), c.get("status")
    if type_.endswith(BAD_WHEN_TRUE) or type_ == "Failed":
        return bool(status == "True")
    return status != "True"


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod template's containers: what runs, with env names (never Secret values)."""
    rows = []
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        row: dict[str, Any] = {
            "name": c.get("name"),
            "image": c.get("image"),
            "command": c.get("command"),
            "args": c.get("args"),
            "ports": [
                f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" for p in c.get("ports") or []
            ],
            "resources": c.get("resources"),
            "env": env_summary(c.get("env")),
            "envFrom": [
                f"{'Secret' if 'secretRef' in e else 'ConfigMap'} "
                f"{(e.get('secretRef') or e.get('configMapRef') or {}).get('name')}"
                for e in c.get("envFrom") or []
            ],
            "probes": [p for p in ("livenessProbe", "readinessProbe", "startupProbe") if c.get(p)],
        }
        if c in (spec.get("initContainers") or []):
            row["init"] = True
        rows.append({k: v for k, v in row.items() if v not in (None, "", [], {})})
    return rows


def container_states(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    rows = []
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        [(state_name, detail)] = list(state.items())[:1] or [("unknown", {})]
        row: dict[str, Any] = {
            "name": cs.get("name"),
            "ready": cs.get("ready"),
            "restarts": cs.get("restartCount", 0),
            "state": state_name,
            "reason": (detail or {}).get("reason"),
            "exitCode": (detail or {}).get("exitCode"),
            "message": clip(str((detail or {}).get("message") or ""), 500),
            "since": (detail or {}).get("startedAt") or (detail or {}).get("finishedAt"),
        }
        last = (cs.get("lastState") or {}).get("terminated")
        if last:
            row["lastTerminated"] = {
                k: v
                for k, v in {
                    "reason": last.get("reason"),
                    "exitCode": last.get("exitCode"),
                    "finishedAt": last.get("finishedAt"),
                    "message": clip(str(last.get("message") or ""), 300),
                }.items()
                if v not in (None, "")
            }
        rows.append({k: v for k, v in row.items() if v not in (None, "")})
    return rows


def summary_line(obj: dict[str, Any]) -> str:
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    ident = f"{kind} {ns}{meta.get('name')}"
    if meta.get("deletionTimestamp"):
        ident += f" (being deleted since {meta['deletionTimestamp']})"
    if kind == "Pod":
        s = _pod_summary(obj)
        problems = "; ".join(s["problems"]) if s["problems"] else "no container problems"
        return (
            f"{ident}: {s['phase']}, ready {s['ready']}, {s['restarts']} restarts, "
            f"node {s.get('node') or 'none (unscheduled)'}; {problems}"
        )
    if kind in ("Deployment", "StatefulSet", "ReplicaSet"):
        want = spec.get("replicas", 1)
        return (
            f"{ident}: {status.get('readyReplicas', 0)}/{want} ready, "
            f"{status.get('updatedReplicas', status.get('replicas', 0))} updated, "
            f"{status.get('availableReplicas', 0)} available"
            + (", PAUSED" if spec.get("paused") else "")
        )
    if kind == "DaemonSet":
        return (
            f"{ident}: {status.get('numberReady', 0)}/{status.get('desiredNumberScheduled', 0)} "
            f"ready, {status.get('numberUnavailable', 0)} unavailable"
        )
    if kind == "Job":
        return (
            f"{ident}: {status.get('succeeded', 0)} succeeded, {status.get('failed', 0)} failed, "
            f"{status.get('active', 0)} active"
        )
    bad = [c for c in conditions(status) if condition_bad(c)]
    if bad:
        return f"{ident}: " + ", ".join(f"{c['type']}={c['status']}" for c in bad)
    return ident


def describe(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without its events or owner chain (those need the API)."""
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    spec, status = dict(obj.get("spec") or {}), dict(obj.get("status") or {})
    out: dict[str, Any] = {
        "summary": summary_line(obj),
        "conditions": conditions(status),
        "created": meta.get("creationTimestamp"),
        "labels": meta.get("labels"),
    }
    annotations = {
        k: clip(str(v), 300)
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    out["annotations"] = annotations
    if kind == "Pod":
        out["containers"] = container_states(obj)
        out["node"] = spec.get("nodeName")
        out["serviceAccount"] = spec.get("serviceAccountName")
        out["qosClass"] = status.get("qosClass")
        out["spec"] = containers(spec)
        return out
    template = (spec.get("template") or {}).get("spec")
    if kind in WORKLOADS and isinstance(template, dict):
        status.pop("conditions", None)
        out["status"] = status
        out["selector"] = selector_string(spec.get("selector")) or None
        out["strategy"] = spec.get("strategy") or spec.get("updateStrategy")
        out["replicas"] = spec.get("replicas")
        out["paused"] = spec.get("paused")
        out["template"] = {
            "serviceAccount": template.get("serviceAccountName"),
            "containers": containers(template),
            "annotations": ((spec.get("template") or {}).get("metadata") or {}).get("annotations"),
        }
        return out
    shaped = compact(obj)
    shaped_status = dict(shaped.get("status") or {})
    shaped_status.pop("conditions", None)
    out["status"] = shaped_status
    out["spec"] = shaped.get("spec")
    if kind == "Node":
        out["conditions"] = _conditions(status)
    for key, value in shaped.items():  # data of a ConfigMap, subsets of Endpoints, ...
        if key not in ("kind", "apiVersion", "metadata", "status", "spec"):
            out[key] = value
    return dict(_prune(out))


def replicaset_row(rs: dict[str, Any]) -> dict[str, Any]:
    meta, spec, status = rs.get("metadata") or {}, rs.get("spec") or {}, rs.get("status") or {}
    tmpl = (spec.get("template") or {}).get("spec") or {}
    return {
        "name": meta.get("name"),
        "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision"),
        "replicas": f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)} ready",
        "images": [c.get("image") for c in tmpl.get("containers") or []],
        "created": meta.get("creationTimestamp"),
    }


def _revision(row: dict[str, Any]) -> int:
    try:
        return int(row.get("revision") or 0)
    except ValueError:
        return 0


# ---------------------------------------------------------------- API walks


def deployment_replicasets(dep: dict[str, Any], namespace: str) -> Any:
    uid = (dep.get("metadata") or {}).get("uid", "")
    selector = selector_string((dep.get("spec") or {}).get("selector"))
    try:
        items = request(
            "GET",
            api_path("apps/v1", "replicasets", namespace),
            query=[("labelSelector", selector)] if selector else None,
        ).get("items")
    except ApiException as exc:
        return f"replicasets unavailable: {api_error(exc, 'replicasets')}"
    rows = sorted(
        (replicaset_row(rs) for rs in items or [] if owned_by(rs, uid)),
        key=_revision,
        reverse=True,
    )
    if len(rows) > MAX_REPLICASETS:
        rows = [*rows[:MAX_REPLICASETS], {"note": f"{len(rows) - MAX_REPLICASETS} older not shown"}]
    return rows


def owner_chain(obj: dict[str, Any], namespace: str | None) -> list[str]:
    """Kind/name of each controller up the chain, e.g. [ReplicaSet/web-5d8, Deployment/web]."""
    chain: list[str] = []
    current = obj
    for _ in range(MAX_OWNER_DEPTH):
        refs = (current.get("metadata") or {}).get("ownerReferences") or []
        if not refs:
            break
        ref = next((r for r in refs if r.get("controller")), refs[0])
        kind, name = str(ref.get("kind")), str(ref.get("name"))
        chain.append(f"{kind}/{name}")
        if kind.lower() in ("secret", "secrets"):
            break
        try:
            _, version, plural, namespaced = _resolve(kind, ref.get("apiVersion"))
            current = request(
                "GET", api_path(version, plural, namespace if namespaced else None, name)
            )
        except (ApiException, ToolError) as exc:
            reason = exc.reason if isinstance(exc, ApiException) else str(exc)
            chain.append(f"(stopped: cannot read {kind}/{name}: {reason})")
            break
    return chain
