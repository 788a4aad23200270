"""rollout-restart: what `kubectl rollout restart deployment/X` does, and nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from .common import api_error, check_arguments, request

ARGUMENTS = frozenset({"name", "namespace"})
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def run(args: dict[str, Any]) -> Any:
    check_arguments(args, ARGUMENTS, {"name", "namespace"})
    name, namespace = args["name"], args["namespace"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    path = f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(name)}"
    try:
        dep = request(
            "PATCH", path, body=patch, content_type="application/strategic-merge-patch+json"
        )
    except ApiException as exc:
        raise api_error(exc, f"Deployment {name} in namespace {namespace}") from exc
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    generation = (dep.get("metadata") or {}).get("generation")
    rollout = (
        "it is paused, so nothing rolls out until it is resumed"
        if spec.get("paused")
        else "new pods roll out per its strategy; check progress with k8s-get"
    )
    return {
        "summary": f"Deployment {namespace}/{name} restarted at {now} "
        f"(generation {generation}); {rollout}.",
        "deployment": name,
        "namespace": namespace,
        "restartedAt": now,
        "generation": generation,
        "observedGeneration": status.get("observedGeneration"),
        "replicas": spec.get("replicas"),
        "readyReplicas": status.get("readyReplicas", 0),
        "paused": bool(spec.get("paused")),
    }
