"""The thin Kubernetes I/O adapter: sync calls on a shared ApiClient, plain dicts out.

The runner calls these through asyncio.to_thread. Requests go through the client's raw
param_serialize/call_api: the typed methods validate every body and response through the
client's pydantic models, which is slow and drops fields those models do not know.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agentrun.api import GROUP, VERSION
from agentrun.engine.policy import CREDENTIALS_LABEL
from agentrun.kube import raw as rawapi
from agentrun.kube.events import Correlator

COMPONENT = "agentrun-operator"
AGENTRUNS, AGENTS, AGENTTOOLS = "agentruns", "agents", "agenttools"
MAX_EVENT_MESSAGE = 1024
MERGE_PATCH = "application/merge-patch+json"
_EVENTS = Correlator()  # one per process, as client-go has one per recorder
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def _send(api: client.ApiClient, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    return rawapi.send(api, method, path, body, **kw)


def _json(
    api: client.ApiClient, method: str, path: str, body: Any = None, **kw: Any
) -> dict[str, Any]:
    value = json.loads(_send(api, method, path, body, **kw).data)
    assert isinstance(value, dict)
    return value


def object_missing(exc: ApiException) -> bool:
    """A 404 that says the object does not exist (a Status with reason NotFound). Right after
    an apiserver restart, custom resource paths answer a bare "404 page not found" for a
    moment: that is not a deleted object."""
    if exc.status != 404:
        return False
    try:
        return bool(json.loads(exc.body or "{}").get("reason") == "NotFound")
    except (ValueError, AttributeError):
        return False


def _absent(exc: ApiException, *ok: int) -> None:
    """Swallows the listed statuses (404 absent, 409 exists); re-raises anything else."""
    if exc.status not in ok or (exc.status == 404 and not object_missing(exc)):
        raise exc


def _ns_path(prefix: str, ns: str, plural: str, name: str = "") -> str:
    path = f"{prefix}/namespaces/{quote(ns)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def _crd(ns: str, plural: str, name: str = "") -> str:
    return _ns_path(f"/apis/{GROUP}/{VERSION}", ns, plural, name)


def _create(api: client.ApiClient, path: str, manifest: dict[str, Any]) -> None:
    """Create-or-get: names are deterministic, so 409 means it was already created."""
    try:
        _send(api, "POST", path, manifest)
    except ApiException as exc:
        _absent(exc, 409)


def create_job(api: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The created Job; None when one of that name already existed (409)."""
    path = _ns_path("/apis/batch/v1", manifest["metadata"]["namespace"], "jobs")
    try:
        return _json(api, "POST", path, manifest)
    except ApiException as exc:
        _absent(exc, 409)
        return None


def ensure_configmap(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    _create(api, _ns_path("/api/v1", manifest["metadata"]["namespace"], "configmaps"), manifest)


def get_run(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    return _get(api, _crd(ns, AGENTRUNS, name))


def read_job(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return _json(api, "GET", _ns_path("/apis/batch/v1", ns, "jobs", name))
    except ApiException as exc:
        _absent(exc, 404)
        return None


def find_job_pod(api: client.ApiClient, ns: str, job_name: str) -> dict[str, Any] | None:
    """The Job's newest pod (backoffLimit 0 means one, unless it was evicted and replaced)."""
    path = _ns_path("/api/v1", ns, "pods")
    query = [("labelSelector", f"job-name={job_name}")]
    # resourceVersion=0 is served from the apiserver's watch cache, not a read of every pod in
    # the namespace from etcd; a cache that has not seen the pod yet falls back to a quorum read.
    items: list[dict[str, Any]] = (
        _json(api, "GET", path, query=[*query, ("resourceVersion", "0")]).get("items") or []
    )
    if not items:
        items = _json(api, "GET", path, query=query).get("items") or []
    if not items:
        return None
    return max(items, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "")


def read_pod_log(
    api: client.ApiClient, ns: str, pod: str, limit_bytes: int, container: str = "tool"
) -> str:
    """The last limit_bytes of the log: the result envelope is its last line, so keep the tail."""
    path = _ns_path("/api/v1", ns, "pods", pod) + "/log"
    resp = _send(api, "GET", path, query=[("container", container)], stream=True)
    buf = bytearray()
    try:
        for chunk in resp.stream(64 * 1024):
            buf += chunk
            if len(buf) > 2 * limit_bytes:
                del buf[: len(buf) - limit_bytes]
    finally:
        resp.release_conn()
    return bytes(buf[-limit_bytes:]).decode("utf-8", errors="replace")


def pod_log(api: client.ApiClient, ns: str, pod: str, container: str = "tool") -> str:
    """The whole log of one container."""
    path = _ns_path("/api/v1", ns, "pods", pod) + "/log"
    # The log is plain text whatever is asked; the apiserver refuses Accept: text/plain (406).
    data: bytes = _send(api, "GET", path, query=[("container", container)]).data
    return data.decode("utf-8", errors="replace")


def get_configmap(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    return _get(api, _ns_path("/api/v1", ns, "configmaps", name))


def list_configmaps(api: client.ApiClient, ns: str, selector: str) -> list[dict[str, Any]]:
    return _items(api, _ns_path("/api/v1", ns, "configmaps"), selector)


def list_pods(api: client.ApiClient, ns: str, selector: str) -> list[dict[str, Any]]:
    return _items(api, _ns_path("/api/v1", ns, "pods"), selector)


def _items(api: client.ApiClient, path: str, selector: str | None) -> list[dict[str, Any]]:
    query = [("labelSelector", selector)] if selector else []
    items: list[dict[str, Any]] = _json(api, "GET", path, query=query).get("items") or []
    return items


def delete_job(api: client.ApiClient, ns: str, name: str) -> None:
    """Background propagation so the pod goes too; a Job already gone is fine."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    try:
        _send(api, "DELETE", _ns_path("/apis/batch/v1", ns, "jobs", name), body)
    except ApiException as exc:
        _absent(exc, 404)


def patch_run_status(
    api: client.ApiClient,
    ns: str,
    name: str,
    status: dict[str, Any],
    resource_version: str | None = None,
) -> dict[str, Any]:
    """A merge patch on the status subresource; returns the updated AgentRun. With
    resource_version it applies only to that version of the run (409 Conflict otherwise)."""
    path = _crd(ns, AGENTRUNS, name) + "/status"
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return _json(api, "PATCH", path, body, content_type=MERGE_PATCH)


def remove_annotations(
    api: client.ApiClient, ns: str, name: str, keys: list[str]
) -> dict[str, Any] | None:
    """Returns the updated AgentRun; None when it is gone."""
    body = {"metadata": {"annotations": dict.fromkeys(keys)}}  # null deletes in a merge patch
    try:
        return _json(api, "PATCH", _crd(ns, AGENTRUNS, name), body, content_type=MERGE_PATCH)
    except ApiException as exc:
        _absent(exc, 404)
        return None


def list_runs(
    api: client.ApiClient, ns: str | None, selector: str | None = None
) -> list[dict[str, Any]]:
    """AgentRuns of a namespace (None: every namespace), optionally by label selector."""
    path = _crd(ns, AGENTRUNS) if ns is not None else f"/apis/{GROUP}/{VERSION}/{AGENTRUNS}"
    return _items(api, path, selector)


def post_run(api: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    """Creates an AgentRun; any refusal (409 included) is raised."""
    return _json(api, "POST", _crd(manifest["metadata"]["namespace"], AGENTRUNS), manifest)


def create_run(api: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Creates an AgentRun; None when one of that name exists (a deterministic name raced)."""
    try:
        return post_run(api, manifest)
    except ApiException as exc:
        if exc.status == 409:
            return None
        raise


def annotate_run(api: client.ApiClient, ns: str, name: str, annotations: dict[str, str]) -> None:
    body = {"metadata": {"annotations": annotations}}
    _send(api, "PATCH", _crd(ns, AGENTRUNS, name), body, content_type=MERGE_PATCH)


def record_event(
    api: client.ApiClient, run: dict[str, Any], type_: str, reason: str, message: str
) -> None:
    """A core/v1 Event on the AgentRun; run is its body, or a ref of metadata-style keys.
    A repeat on the same run is counted on the Event it repeats (see events.py)."""
    meta = run.get("metadata") or run
    name, ns = meta["name"], meta.get("namespace") or "default"
    now = time.time()
    key, emit = _EVENTS.next(ns, str(meta.get("uid") or name), type_, reason, message, now)
    stamp = _stamp(now)
    existing = emit.existing
    if existing is not None:
        update = {
            "count": emit.count,
            "lastTimestamp": stamp,
            "message": emit.message[:MAX_EVENT_MESSAGE],
        }
        try:
            _send(
                api,
                "PATCH",
                _ns_path("/api/v1", ns, "events", existing),
                update,
                content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            _absent(exc, 404)
            _EVENTS.forget(key)  # expired: a new Event below
            key, emit = _EVENTS.next(ns, str(meta.get("uid") or name), type_, reason, message, now)
        else:
            _EVENTS.sent(key, existing, emit, now)
            return
    event_name = f"{name[:200]}.{secrets.token_hex(8)}"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": {
            "apiVersion": run.get("apiVersion", f"{GROUP}/{VERSION}"),
            "kind": run.get("kind", "AgentRun"),
            "name": name,
            "namespace": ns,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": emit.message[:MAX_EVENT_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
        "firstTimestamp": _stamp(emit.first_seconds),
        "lastTimestamp": stamp,
        "count": emit.count,
    }
    _send(api, "POST", _ns_path("/api/v1", ns, "events"), event)
    _EVENTS.sent(key, event_name, emit, now)


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(api: client.ApiClient, path: str) -> dict[str, Any] | None:
    try:
        return _json(api, "GET", path)
    except ApiException as exc:
        _absent(exc, 404)
        return None


def _prefix(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def get_object(
    api: client.ApiClient, api_version: str, ns: str, plural: str, name: str
) -> dict[str, Any] | None:
    """Any namespaced object (e.g. "apps/v1", "deployments"); None when it does not exist."""
    return _get(api, _ns_path(_prefix(api_version), ns, plural, name))


def list_objects(
    api: client.ApiClient, api_version: str, ns: str, plural: str, selector: str = ""
) -> list[dict[str, Any]]:
    query = [("labelSelector", selector)] if selector else None
    items: list[dict[str, Any]] = (
        _json(api, "GET", _ns_path(_prefix(api_version), ns, plural), query=query).get("items")
        or []
    )
    return items


def get_agent(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    return _get(api, _crd(ns, AGENTS, name))


def get_tool(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    return _get(api, _crd(ns, AGENTTOOLS, name))


def get_mcp_server(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    return _get(api, _crd(ns, "mcpservers", name)) if name else None


def patch_mcp_server_status(
    api: client.ApiClient, ns: str, name: str, status: dict[str, Any]
) -> None:
    _send(
        api,
        "PATCH",
        _crd(ns, "mcpservers", name) + "/status",
        {"status": status},
        content_type="application/merge-patch+json",
    )


def create_access_review(api: client.ApiClient, review: dict[str, Any]) -> dict[str, Any]:
    """POSTs a SubjectAccessReview; returns it with the apiserver's status (allowed, reason)."""
    return _json(api, "POST", SAR_PATH, review)


class CredentialError(Exception):
    """A credential the operator may not or cannot use; the message names the Secret, never
    its data."""


def read_credential(api: client.ApiClient, ns: str, name: str, key: str) -> str:
    """One key of a Secret that opted in (label agentrun.dev/credentials: "true"), read from
    ns: the operator's credentials namespace, never the namespace of the run that names it.
    An Agent author names a Secret; without the opt-in they could make the operator send any
    Secret the operator can read (a database password) to a model or webhook endpoint."""
    where = f"Secret {ns}/{name}"
    try:
        secret = _get(api, _ns_path("/api/v1", ns, "secrets", name))
    except ApiException as exc:
        raise CredentialError(f"cannot read {where}: HTTP {exc.status} {exc.reason}") from None
    if secret is None:
        raise CredentialError(
            f"{where} not found (credentials are read from the operator's credentials "
            f"namespace {ns!r} only)"
        )
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(CREDENTIALS_LABEL) != "true":
        raise CredentialError(
            f'{where} is not labelled {CREDENTIALS_LABEL}="true"; the operator uses only '
            "Secrets that opt in"
        )
    value = (secret.get("data") or {}).get(key)
    if value is None:
        raise CredentialError(f"{where} has no key {key!r}")
    try:
        return str(base64.b64decode(value).decode("utf-8")).strip()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialError(f"{where} key {key!r} is not UTF-8 text") from None


def get_config_map(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    return _get(api, _ns_path("/api/v1", ns, "configmaps", name))


def annotate_run_at(
    api: client.ApiClient,
    ns: str,
    name: str,
    annotations: dict[str, str | None],
    resource_version: str,
) -> dict[str, Any]:
    """A merge patch of annotations on exactly that version of the run (409 Conflict when it
    changed since): a decision made on what a person saw, not on what the run became."""
    body = {"metadata": {"annotations": annotations, "resourceVersion": resource_version}}
    return _json(api, "PATCH", _crd(ns, AGENTRUNS, name), body, content_type=MERGE_PATCH)
