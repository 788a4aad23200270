"""alert-workload: the workload an alert is about, found from its labels, and described.

kube-prometheus alerts name what they are about in different labels: KubePodCrashLooping
and KubePodNotReady a `pod`, KubeDeploymentReplicasMismatch a `deployment`, KubeStatefulSet*
a `statefulset`, KubeDaemonSet* a `daemonset`, KubeJobFailed a `job_name`,
KubePersistentVolumeFillingUp a `persistentvolumeclaim`, TargetDown a `service`. They are
tried from the most specific (a pod) to the least (a Service), because `pod`, `service` and
`job` can also be the labels of the exporter that was scraped (kube-state-metrics): the
first that names something wins. From there owner references are walked up to the top
controller (Pod -> ReplicaSet -> Deployment), and the answer holds the alerting pod's state
(or the least healthy pod of the workload), the workload (replicas, failing conditions, what
its pods run) and its recent rollouts.

A missing label is not an error, nor is a label that names nothing: the answer says under
`unresolved` what could not be resolved and why, and is still a result (a prefetch never
fails on it). This runs in the tool Job under its read ServiceAccount, so resolving an alert
costs the operator no reads of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import k8s_describe, recent_deploys
from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    clip,
    namespace_of,
    request,
    selector_string,
)
from .pod_logs import rank_pods

ARGUMENTS = frozenset({"labels", "namespace"})
TYPES: dict[str, type | tuple[type, ...]] = {"labels": dict, "namespace": str}
# The labels that name what an alert is about, most specific first.
ORDER = (
    "pod",
    "deployment",
    "statefulset",
    "daemonset",
    "job_name",
    "persistentvolumeclaim",
    "service",
)
MAX_LABELS = 64
MAX_VALUE = 253
MAX_OWNER_DEPTH = 4
MAX_PODS = 500
REVISIONS = 3
# kind -> (apiVersion, plural)
PATHS = {
    "Pod": ("v1", "pods"),
    "Service": ("v1", "services"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "Job": ("batch/v1", "jobs"),
    "CronJob": ("batch/v1", "cronjobs"),
}
WITH_HISTORY = ("Deployment", "StatefulSet", "DaemonSet")
# Pod names as their controllers make them: <deployment>-<template hash>-<5>,
# <statefulset>-<ordinal>, <daemonset>-<5>.
POD_NAME_GUESSES = (
    ("Deployment", re.compile(r"^(.+)-[a-z0-9]{6,10}-[a-z0-9]{5}$")),
    ("StatefulSet", re.compile(r"^(.+)-\d+$")),
    ("DaemonSet", re.compile(r"^(.+)-[a-z0-9]{5}$")),
)


@dataclass
class Found:
    """What a label resolved to: the chain from the object named up to its top controller."""

    via: str
    chain: list[dict[str, Any]]
    pod: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, {"labels"})
    labels = clean_labels(args["labels"])
    namespace = str(args.get("namespace") or labels.get("namespace") or namespace_of({}))
    unresolved: list[str] = []
    found = None
    for key in ORDER:
        value = labels.get(key)
        if not value:
            continue
        try:
            found = RESOLVERS[key](namespace, key, value, unresolved)
        except ToolError as exc:  # forbidden, API errors: say so, try the next label
            unresolved.append(f"{key}={value}: {exc}")
            continue
        if found is not None:
            break
    return report(labels, namespace, found, unresolved)


def clean_labels(raw: dict[str, Any]) -> dict[str, str]:
    """String labels only, bounded: the alert's labels are data, not instructions."""
    out: dict[str, str] = {}
    for key, value in list(raw.items())[:MAX_LABELS]:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                out[str(key)[:MAX_VALUE]] = text[:MAX_VALUE]
    return out


# ---------------------------------------------------------------- API walks


def _get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object, or None when it does not exist; ToolError on any other failure."""
    version, plural = PATHS[kind]
    try:
        obj = request("GET", api_path(version, plural, namespace, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise api_error(exc, f"{kind} {name} in namespace {namespace}") from exc
    obj.setdefault("kind", kind)
    return obj


def _pods(namespace: str, selector: str | None) -> list[dict[str, Any]]:
    query = [("limit", str(MAX_PODS))]
    if selector:
        query.append(("labelSelector", selector))
    try:
        listing = request("GET", api_path("v1", "pods", namespace), query=query)
    except ApiException as exc:
        raise api_error(exc, f"pods in namespace {namespace}") from exc
    pods = list(listing.get("items") or [])
    for p in pods:
        p.setdefault("kind", "Pod")
    return pods


def owners(obj: dict[str, Any], namespace: str, notes: list[str]) -> list[dict[str, Any]]:
    """The controllers above obj, nearest first (ReplicaSet, then Deployment)."""
    chain: list[dict[str, Any]] = []
    current = obj
    for _ in range(MAX_OWNER_DEPTH):
        refs = (current.get("metadata") or {}).get("ownerReferences") or []
        ref = next((r for r in refs if r.get("controller")), None)
        if ref is None:
            break
        kind, name = str(ref.get("kind")), str(ref.get("name"))
        if kind not in PATHS:
            notes.append(f"owned by {kind}/{name}, which this tool does not read")
            break
        try:
            parent = _get(kind, namespace, name)
        except ToolError as exc:
            notes.append(f"owner {kind}/{name} not read: {exc}")
            break
        if parent is None:
            notes.append(f"owner {kind}/{name} no longer exists")
            break
        chain.append(parent)
        current = parent
    return chain


def _least_healthy_pod(obj: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    selector = selector_string((obj.get("spec") or {}).get("selector"))
    if not selector:
        return None
    pods = rank_pods(_pods(namespace, selector))
    return pods[0] if pods else None


def resolve_pod(namespace: str, key: str, name: str, unresolved: list[str]) -> Found | None:
    pod = _get("Pod", namespace, name)
    if pod is not None:
        notes: list[str] = []
        return Found(f"{key}={name}", [pod, *owners(pod, namespace, notes)], pod, notes=notes)
    # A crash-looping pod is often replaced by the time anyone looks: its controller's name
    # is in its own.
    for kind, pattern in POD_NAME_GUESSES:
        m = pattern.match(name)
        if m is None:
            continue
        workload = _get(kind, namespace, m.group(1))
        if workload is not None:
            found = _workload(f"{key}={name}", workload, namespace)
            found.notes.insert(
                0, f"Pod {name} no longer exists; {kind} {m.group(1)} is named like it"
            )
            return found
    unresolved.append(
        f"{key}={name}: Pod {namespace}/{name} not found, and no Deployment, StatefulSet or "
        "DaemonSet is named like it"
    )
    return None


def _workload(via: str, obj: dict[str, Any], namespace: str) -> Found:
    notes: list[str] = []
    chain = [obj, *owners(obj, namespace, notes)]
    pod = _least_healthy_pod(obj, namespace)
    if pod is None:
        notes.append(f"no pod of {obj.get('kind')} {(obj.get('metadata') or {}).get('name')}")
    return Found(via, chain, pod, notes=notes)


def _named(kind: str) -> Callable[[str, str, str, list[str]], Found | None]:
    def resolve(namespace: str, key: str, name: str, unresolved: list[str]) -> Found | None:
        obj = _get(kind, namespace, name)
        if obj is None:
            unresolved.append(f"{key}={name}: {kind} {namespace}/{name} not found")
            return None
        return _workload(f"{key}={name}", obj, namespace)

    return resolve


def resolve_claim(namespace: str, key: str, claim: str, unresolved: list[str]) -> Found | None:
    def mounts(pod: dict[str, Any]) -> bool:
        volumes = (pod.get("spec") or {}).get("volumes") or []
        return any(
            (v.get("persistentVolumeClaim") or {}).get("claimName") == claim for v in volumes
        )

    pods = rank_pods([p for p in _pods(namespace, None) if mounts(p)])
    if not pods:
        unresolved.append(
            f"{key}={claim}: no pod in namespace {namespace} mounts PersistentVolumeClaim {claim}"
        )
        return None
    pod = pods[0]
    notes: list[str] = []
    if len(pods) > 1:
        notes.append(f"{len(pods)} pods mount {claim}; the least healthy is shown")
    return Found(f"{key}={claim}", [pod, *owners(pod, namespace, notes)], pod, notes=notes)


def resolve_service(namespace: str, key: str, name: str, unresolved: list[str]) -> Found | None:
    svc = _get("Service", namespace, name)
    if svc is None:
        unresolved.append(
            f"{key}={name}: Service {namespace}/{name} not found (on kube-state-metrics and "
            "node alerts this label names the scraped exporter, not the workload)"
        )
        return None
    selector = ",".join(
        f"{k}={v}" for k, v in sorted(((svc.get("spec") or {}).get("selector") or {}).items())
    )
    if not selector:
        unresolved.append(f"{key}={name}: Service {namespace}/{name} has no pod selector")
        return None
    pods = rank_pods(_pods(namespace, selector))
    if not pods:
        # A Service with no pods behind it is the finding itself (TargetDown).
        return Found(f"{key}={name}", [svc], None, svc, [f"no pod matches selector {selector}"])
    notes: list[str] = []
    pod = pods[0]
    return Found(f"{key}={name}", [pod, *owners(pod, namespace, notes)], pod, svc, notes)


RESOLVERS: dict[str, Callable[[str, str, str, list[str]], Found | None]] = {
    "pod": resolve_pod,
    "deployment": _named("Deployment"),
    "statefulset": _named("StatefulSet"),
    "daemonset": _named("DaemonSet"),
    "job_name": _named("Job"),
    "persistentvolumeclaim": resolve_claim,
    "service": resolve_service,
}


# ---------------------------------------------------------------- the answer


def _ident(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _top(chain: list[dict[str, Any]]) -> dict[str, Any]:
    """The workload to describe: the top controller, but a CronJob's Job (the run failed)."""
    top = chain[-1]
    if top.get("kind") == "CronJob" and len(chain) > 1:
        return chain[-2]
    return top


def pod_part(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": k8s_describe.summary_line(pod),
        "containers": k8s_describe.container_states(pod),
    }


def workload_part(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    conditions = k8s_describe.conditions(obj.get("status") or {})
    failing = [c for c in conditions if k8s_describe.condition_bad(c)]
    out: dict[str, Any] = {
        "summary": k8s_describe.summary_line(obj),
        "failingConditions": failing,
        "containers": k8s_describe.containers(template),
    }
    if obj.get("kind") == "Service":
        ports = [f"{p.get('port')}->{p.get('targetPort')}" for p in spec.get("ports") or []]
        out["ports"] = ports
        out["selector"] = spec.get("selector")
    return {k: v for k, v in out.items() if v not in (None, [], {})}


def deploys_part(obj: dict[str, Any], namespace: str, notes: list[str]) -> dict[str, Any] | None:
    kind = str(obj.get("kind"))
    if kind not in WITH_HISTORY:
        return None
    try:
        history = recent_deploys.of_workload(kind, obj, namespace, REVISIONS)
    except ToolError as exc:
        notes.append(f"recent deploys not read: {exc}")
        return None
    keep = ("summary", "currentRevision", "revisions", "note")
    return {k: history[k] for k in keep if k in history}


def report(
    labels: dict[str, str], namespace: str, found: Found | None, unresolved: list[str]
) -> dict[str, Any]:
    if found is None:
        tried = [k for k in ORDER if labels.get(k)]
        reason = (
            "; ".join(unresolved)
            if unresolved
            else f"the alert has none of the labels {', '.join(ORDER)}"
        )
        nothing: dict[str, Any] = {
            "summary": f"No workload found in namespace {namespace} from the alert's labels: "
            + reason,
            "labelsTried": tried,
        }
        return {**nothing, "unresolved": unresolved} if unresolved else nothing
    top = _top(found.chain)
    notes = list(found.notes)
    chain = [_ident(o) for o in found.chain]
    out: dict[str, Any] = {
        "summary": f"{k8s_describe.summary_line(top)} (from {found.via}: {' -> '.join(chain)})",
        "resolvedFrom": found.via,
        "ownerChain": chain,
        "pod": pod_part(found.pod) if found.pod is not None else None,
        "workload": workload_part(top) if top.get("kind") != "Pod" else None,
        "service": workload_part(found.service)
        if found.service is not None and found.service is not top
        else None,
        "recentDeploys": deploys_part(top, namespace, notes),
        "notes": [clip(n, 300) for n in notes] or None,
        "unresolved": unresolved or None,
    }
    return {k: v for k, v in out.items() if v is not None}
