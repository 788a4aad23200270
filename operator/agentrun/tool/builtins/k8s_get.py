"""k8s-get: one object (or a bounded list) shaped for a model, with its recent events.

Secrets are refused here whatever RBAC says: a model's context is no place for them.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from .common import ToolError, api_error, check_arguments, request

ARGUMENTS = frozenset({"kind", "name", "namespace", "labelSelector", "apiVersion"})
MAX_ITEMS = 20
MAX_EVENTS = 10

# Kind -> (apiVersion, plural, namespaced, short names)
KINDS: dict[str, tuple[str, str, bool, tuple[str, ...]]] = {
    "Pod": ("v1", "pods", True, ("po",)),
    "Service": ("v1", "services", True, ("svc",)),
    "ConfigMap": ("v1", "configmaps", True, ("cm",)),
    "Endpoints": ("v1", "endpoints", True, ("ep",)),
    "Event": ("v1", "events", True, ("ev",)),
    "ServiceAccount": ("v1", "serviceaccounts", True, ("sa",)),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True, ("pvc",)),
    "ResourceQuota": ("v1", "resourcequotas", True, ("quota",)),
    "LimitRange": ("v1", "limitranges", True, ("limits",)),
    "Node": ("v1", "nodes", False, ("no",)),
    "Namespace": ("v1", "namespaces", False, ("ns",)),
    "PersistentVolume": ("v1", "persistentvolumes", False, ("pv",)),
    "Deployment": ("apps/v1", "deployments", True, ("deploy",)),
    "ReplicaSet": ("apps/v1", "replicasets", True, ("rs",)),
    "StatefulSet": ("apps/v1", "statefulsets", True, ("sts",)),
    "DaemonSet": ("apps/v1", "daemonsets", True, ("ds",)),
    "Job": ("batch/v1", "jobs", True, ()),
    "CronJob": ("batch/v1", "cronjobs", True, ("cj",)),  # batch/v1beta1 before 1.21
    "Ingress": ("networking.k8s.io/v1", "ingresses", True, ("ing",)),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies", True, ("netpol",)),
    "HorizontalPodAutoscaler": ("autoscaling/v1", "horizontalpodautoscalers", True, ("hpa",)),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets", True, ("pdb",)),
}
ALIASES = {
    alias: kind
    for kind, (_, plural, _, short) in KINDS.items()
    for alias in (kind.lower(), plural, *short)
}
SECRET_NAMES = frozenset({"secret", "secrets"})

NOISY_KEYS = frozenset(
    {
        "managedFields",
        "selfLink",
        "resourceVersion",
        "uid",
        "generateName",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "schedulerName",
        "dnsPolicy",
        "enableServiceLinks",
        "preemptionPolicy",
    }
)
NOISY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
TOKEN_VOLUMES = ("kube-api-access-", "default-token-")
DEFAULT_TOLERATIONS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def refuse_secrets(kind: str) -> None:
    if kind.strip().lower() in SECRET_NAMES:
        raise ToolError("refused: Secrets are never read by agentrun tools")


def run(args: dict[str, Any]) -> Any:
    check_arguments(args, ARGUMENTS, {"kind"})
    refuse_secrets(args["kind"])  # before any API call
    kind, api_version, plural, namespaced = _resolve(args["kind"], args.get("apiVersion"))
    refuse_secrets(kind)
    refuse_secrets(plural)
    namespace = args.get("namespace") or os.environ.get("AGENTRUN_NAMESPACE") or "default"
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    base = (
        f"{prefix}/namespaces/{quote(namespace)}/{plural}" if namespaced else f"{prefix}/{plural}"
    )
    where = f" in namespace {namespace}" if namespaced else ""
    name = args.get("name")
    if name:
        what = f"{kind} {name}{where}"
        try:
            obj = request("GET", f"{base}/{quote(name)}")
        except ApiException as exc:
            raise api_error(exc, what) from exc
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        shaped = compact(obj)
        if kind != "Event":
            shaped["events"] = object_events(kind, name, namespace if namespaced else None)
        return shaped
    query = [("limit", str(MAX_ITEMS))]
    if args.get("labelSelector"):
        query.append(("labelSelector", args["labelSelector"]))
    try:
        listing = request("GET", base, query=query)
    except ApiException as exc:
        raise api_error(exc, f"{plural}{where}") from exc
    items = listing.get("items") or []
    meta = listing.get("metadata") or {}
    return {
        "kind": f"{kind}List",
        "namespace": namespace if namespaced else None,
        "labelSelector": args.get("labelSelector"),
        "count": len(items),
        "more": bool(meta.get("continue")),  # the list stops at MAX_ITEMS
        "items": [summary(kind, item) for item in items],
    }


def _resolve(kind: str, api_version: str | None) -> tuple[str, str, str, bool]:
    """(Kind, apiVersion, plural, namespaced), from the table or the API's discovery."""
    known = ALIASES.get(kind.strip().lower())
    if known is not None:
        default_version, plural, namespaced, _ = KINDS[known]
        return known, api_version or default_version, plural, namespaced
    if not api_version:
        raise ToolError(
            f"unknown kind {kind!r}: pass apiVersion (e.g. 'monitoring.coreos.com/v1'), "
            f"or use one of {sorted(KINDS)}"
        )
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        resources = request("GET", path).get("resources") or []
    except ApiException as exc:
        raise api_error(exc, f"API version {api_version}") from exc
    for r in resources:
        names = {r.get("kind", "").lower(), r.get("name", ""), *r.get("shortNames", [])}
        if "/" not in r.get("name", "") and kind.strip().lower() in names:
            return r["kind"], api_version, r["name"], bool(r.get("namespaced"))
    raise ToolError(f"kind {kind!r} is not served by {api_version}")


# ---------------------------------------------------------------- shaping


def _prune(value: Any) -> Any:
    """Drops noisy keys and empty values, recursively."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items() if k not in NOISY_KEYS}
        return {k: v for k, v in out.items() if v not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    meta = dict(meta)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in NOISY_ANNOTATIONS
    }
    meta["annotations"] = annotations
    meta["ownerReferences"] = [
        f"{o.get('kind')}/{o.get('name')}" for o in meta.get("ownerReferences") or []
    ]
    return dict(_prune(meta))


def _pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Drops the ServiceAccount token volume and the default tolerations every pod has."""
    spec = dict(spec)
    spec["volumes"] = [
        v for v in spec.get("volumes") or [] if not v.get("name", "").startswith(TOKEN_VOLUMES)
    ]
    spec["tolerations"] = [
        t for t in spec.get("tolerations") or [] if t.get("key") not in DEFAULT_TOLERATIONS
    ]
    for key in ("containers", "initContainers"):
        spec[key] = [
            {
                **c,
                "volumeMounts": [
                    m
                    for m in c.get("volumeMounts") or []
                    if not m.get("name", "").startswith(TOKEN_VOLUMES)
                ],
            }
            for c in spec.get(key) or []
        ]
    return spec


def compact(obj: dict[str, Any]) -> dict[str, Any]:
    """kind, metadata, then status before spec: what is wrong usually shows in status."""
    kind = obj.get("kind", "")
    status = dict(obj.get("status") or {})
    spec = dict(obj.get("spec") or {})
    if kind == "Node":
        status.pop("images", None)  # hundreds of lines of image digests
    if kind == "Pod":
        spec = _pod_spec(spec)
    template = spec.get("template")
    if isinstance(template, dict) and "spec" in template:
        spec["template"] = {**template, "spec": _pod_spec(template["spec"])}
    shaped: dict[str, Any] = {
        "kind": kind,
        "apiVersion": obj.get("apiVersion"),
        "metadata": _metadata(obj.get("metadata") or {}),
        "status": status,
        "spec": spec,
    }
    for key, value in obj.items():
        if key not in shaped:
            shaped[key] = value
    return dict(_prune(shaped))


def _conditions(status: dict[str, Any]) -> list[str]:
    return [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions") or []
    ]


def _pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    problems = []
    for cs in statuses:
        for state_name in ("waiting", "terminated"):
            state = (cs.get("state") or {}).get(state_name)
            if state and state.get("reason") not in (None, "Completed"):
                problems.append(f"{cs.get('name')}: {state.get('reason')}")
        last = (cs.get("lastState") or {}).get("terminated")
        if last:
            problems.append(
                f"{cs.get('name')} last exit: {last.get('reason')} ({last.get('exitCode')})"
            )
    return {
        "phase": status.get("phase"),
        "ready": f"{sum(1 for cs in statuses if cs.get('ready'))}/{len(statuses)}",
        "restarts": sum(int(cs.get("restartCount") or 0) for cs in statuses),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "problems": problems,
        "reason": status.get("reason"),
    }


def _node_summary(node: dict[str, Any]) -> dict[str, Any]:
    status = node.get("status") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    prefix = "node-role.kubernetes.io/"
    return {
        "conditions": _conditions(status),
        "roles": [k[len(prefix) :] for k in labels if k.startswith(prefix)],
        "version": (status.get("nodeInfo") or {}).get("kubeletVersion"),
        "unschedulable": (node.get("spec") or {}).get("unschedulable"),
    }


def event_summary(ev: dict[str, Any]) -> dict[str, Any]:
    source = ev.get("source") or {}
    obj = ev.get("involvedObject") or {}
    return dict(
        _prune(
            {
                "lastSeen": _event_time(ev),
                "type": ev.get("type"),
                "reason": ev.get("reason"),
                "object": f"{obj.get('kind')}/{obj.get('name')}",
                "message": ev.get("message"),
                "count": ev.get("count"),
                "source": source.get("component") or ev.get("reportingComponent"),
            }
        )
    )


def summary(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """One list row, like a `kubectl get` line: enough to pick what to get in full."""
    meta = item.get("metadata") or {}
    head = {"name": meta.get("name"), "created": meta.get("creationTimestamp")}
    if kind == "Pod":
        return dict(_prune({**head, **_pod_summary(item)}))
    if kind == "Node":
        return dict(_prune({**head, **_node_summary(item)}))
    if kind == "Event":
        return event_summary(item)
    status = dict(item.get("status") or {})
    if status.get("conditions"):
        status["conditions"] = _conditions(status)
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job"):
        spec = item.get("spec") or {}
        return dict(_prune({**head, "replicas": spec.get("replicas"), "status": status}))
    shaped = compact({**item, "kind": kind})
    shaped.pop("kind", None)
    shaped.pop("apiVersion", None)
    return shaped


def _event_time(ev: dict[str, Any]) -> str:
    return str(
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or (ev.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def object_events(kind: str, name: str, namespace: str | None) -> Any:
    """The object's newest events; their absence must not fail the whole get."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    path = f"/api/v1/namespaces/{quote(namespace)}/events" if namespace else "/api/v1/events"
    try:
        items = request("GET", path, query=[("fieldSelector", selector)]).get("items") or []
    except ApiException as exc:
        return f"events unavailable: {api_error(exc, 'events')}"
    items.sort(key=_event_time, reverse=True)
    shaped = [event_summary(ev) for ev in items[:MAX_EVENTS]]
    for ev in shaped:
        ev.pop("object", None)
    if len(items) > MAX_EVENTS:
        shaped.append({"note": f"{len(items) - MAX_EVENTS} older events not shown"})
    return shaped
