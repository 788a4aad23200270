"""Status writes: the one place a run's status reaches the apiserver.

The write-ahead rule, for every effect of the adapter: status is the write-ahead log. The
status decide() returns is written (onto the version it was decided from; a 409 decides
again) before any of its actions changes the cluster, so a new operator resumes every run
from status alone, with no Job created twice (Job names are deterministic) and no write
without its recorded approval. The Job a write records is created right after it, in the
same worker thread (`then`); its Events, notifications and other actions run after it.

One exception, for speed, changes nothing in the cluster: a model call may start together
with the status write that asks for it (if the write fails, its answer is dropped, or reused
by the round decided again), and a quick answer is written in that same write (see
runner.Runner._coalesce). Raw-output ConfigMaps are created while the write that links them
is in flight: a ConfigMap nobody links is harmless, a link to one never created is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from agentrun.api import AgentRunStatus
from agentrun.kube import client as kube


def version(body: dict[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


def newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """resourceVersions are etcd revisions; if one is not a number, the latest arrival wins."""
    if than is None:
        return True
    try:
        return int(version(body)) > int(version(than))
    except ValueError:
        return True


def to_wire(value: Any) -> Any:
    """Drops None and empty strings: absent is how Kubernetes spells both (omitempty)."""
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `before` into `after`: changed keys only, None
    for a removed key, at every depth, since a merge patch merges nested objects (a key left
    out of a nested object is kept, not dropped). Lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    for key in before:
        if key not in after:
            patch[key] = None
    return patch


def status_patch(body: dict[str, Any], status: AgentRunStatus) -> dict[str, Any]:
    """The merge patch from the body's status to `status` (empty: nothing to write)."""
    before = to_wire(body.get("status") or {})
    before.pop("kopf", None)  # kopf's own, when it kept progress in status
    patch: dict[str, Any] = merge_patch(before, to_wire(status.model_dump(mode="json")))
    return patch


async def write_status(
    api: k8s.ApiClient,
    body: dict[str, Any],
    status: AgentRunStatus,
    wrote: Callable[[dict[str, Any]], None],
    then: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Writes status, only onto the version decided from; the new body, None on a 409.
    `wrote` is told of the new body before anything else happens (also when `then` fails).
    `then` runs in the same worker thread once the write succeeded: one trip through the
    event loop fewer for the effect the write records; if it fails, the write stands and its
    error is raised (the effect is retried from the written status)."""
    patch = status_patch(body, status)
    if not patch:
        if then is not None:
            await asyncio.to_thread(then)
        return body
    meta = body["metadata"]
    ns, name, at = meta["namespace"], meta["name"], version(body)

    def write() -> tuple[dict[str, Any], Exception | None]:
        done = kube.patch_run_status(api, ns, name, patch, at)
        try:
            if then is not None:
                then()
        except Exception as err:
            return done, err
        return done, None

    try:
        written, failed = await asyncio.to_thread(write)
    except ApiException as err:
        if err.status == 409:
            return None
        raise
    wrote(written)
    if failed is not None:
        raise failed
    return written
