"""Whether a tool's ServiceAccount can change its namespace (adapter: SubjectAccessReviews).

A read tool runs without approval, so its ServiceAccount must only read. Its spec cannot be
trusted to say so: RBAC can. The operator asks the apiserver, as the ServiceAccount, whether
it may do any of a set of writes that matter in a namespace; if it may, the tool is a write.
Answers are cached per (namespace, ServiceAccount) for a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agentrun.kube import client as kube

log = logging.getLogger("agentrun.operator.access")

CACHE_SECONDS = 60.0
# (group, resource, subresource, verb): the writes that change what runs, what it may read,
# or who may do what. Any one allowed makes the ServiceAccount a writer.
PROBES: tuple[tuple[str, str, str, str], ...] = (
    ("", "pods", "", "create"),
    ("", "pods", "", "delete"),
    ("", "pods", "exec", "create"),
    ("", "configmaps", "", "update"),
    ("", "secrets", "", "create"),
    ("", "services", "", "patch"),
    ("apps", "deployments", "", "patch"),
    ("apps", "deployments", "scale", "patch"),
    ("apps", "statefulsets", "", "patch"),
    ("apps", "daemonsets", "", "patch"),
    ("batch", "jobs", "", "create"),
    ("rbac.authorization.k8s.io", "rolebindings", "", "create"),
)


def _review(namespace: str, sa: str, probe: tuple[str, str, str, str]) -> dict[str, Any]:
    group, resource, subresource, verb = probe
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{sa}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "namespace": namespace,
                "group": group,
                "resource": resource,
                "subresource": subresource,
                "verb": verb,
            },
        },
    }


class WriteAccess:
    def __init__(self, api: client.ApiClient, ttl: float = CACHE_SECONDS) -> None:
        self.api = api
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    async def can_write(self, namespace: str, sa: str) -> bool:
        hit = self._cache.get((namespace, sa))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        answers = await asyncio.gather(
            *(asyncio.to_thread(self._allowed, namespace, sa, p) for p in PROBES)
        )
        writes = any(answers)
        if writes:
            log.warning(
                "ServiceAccount %s/%s can change the namespace; its tools are treated as writes",
                namespace,
                sa,
            )
        self._cache[(namespace, sa)] = (time.monotonic() + self.ttl, writes)
        return writes

    def _allowed(self, namespace: str, sa: str, probe: tuple[str, str, str, str]) -> bool:
        try:
            review = kube.create_access_review(self.api, _review(namespace, sa, probe))
        except ApiException as err:
            if err.status in (401, 403):
                # The operator may not ask: assume the worst (every call waits for a human)
                # rather than run an unchecked ServiceAccount's tools unapproved.
                log.error("Could not check ServiceAccount %s/%s: %s", namespace, sa, err.reason)
                return True
            raise
        return bool((review.get("status") or {}).get("allowed"))
