"""What the built-in tools share: the API client, raw JSON requests, readable errors."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from agentrun.kube import raw as rawapi
from agentrun.text import clip as clip_text
from agentrun.tool.redaction import MASK as MASK
from agentrun.tool.redaction import redact as redact
from agentrun.tool.redaction import redact_value as redact_value
from agentrun.tool.redaction import sensitive_name as sensitive_name


class ToolError(Exception):
    """A failure the model should read (ok=false), not a crash."""


@cache
def api_client() -> client.ApiClient:
    """KUBECONFIG when set (tests, the local node), else the pod's ServiceAccount."""
    loaders: Any = config  # untyped in the client
    if os.environ.get("KUBECONFIG"):
        loaders.load_kube_config()
    else:
        loaders.load_incluster_config()
    return client.ApiClient()


def request(
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """A raw API request returning the JSON body; ApiException on non-2xx."""
    resp = rawapi.send(
        api_client(), method, path, body, query, content_type=content_type, timeout=30
    )
    value = json.loads(resp.data)
    if not isinstance(value, dict):
        raise ToolError(f"unexpected API response for {path}")
    return value


def request_text(path: str, *, query: list[tuple[str, str]] | None = None) -> str:
    """A raw GET returning the body as text (pod logs); ApiException on non-2xx."""
    resp = rawapi.send(api_client(), "GET", path, query=query, accept="text/plain, */*", timeout=30)
    data = resp.data
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)


def api_error(exc: ApiException, what: str) -> ToolError:
    """A one-line error the model can act on, from the API's Status message."""
    message = ""
    try:
        message = str(json.loads(exc.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        message = str(exc.body or "")[:300]
    if exc.status == 404:
        return ToolError(f"{what} not found" + (f": {message}" if message else ""))
    if exc.status == 403:
        return ToolError(f"forbidden: the tool's ServiceAccount may not access {what}: {message}")
    return ToolError(f"{what}: API error {exc.status} {exc.reason}: {message}".rstrip(": "))


def check_arguments(args: dict[str, Any], allowed: frozenset[str], required: set[str]) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ToolError(f"unknown arguments {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(k for k in required if not args.get(k))
    if missing:
        raise ToolError(f"missing required arguments {missing}")
    for key, value in args.items():
        if value is not None and not isinstance(value, str):
            raise ToolError(f"argument {key!r} must be a string")


def arguments(
    args: dict[str, Any],
    types: dict[str, type | tuple[type, ...]],
    required: set[str],
) -> None:
    """check_arguments for tools whose arguments are not all strings (ints, booleans)."""
    unknown = sorted(set(args) - set(types))
    if unknown:
        raise ToolError(f"unknown arguments {unknown}; allowed: {sorted(types)}")
    missing = sorted(k for k in required if args.get(k) in (None, ""))
    if missing:
        raise ToolError(f"missing required arguments {missing}")
    for key, value in args.items():
        if value is None:
            continue
        want = types[key]
        wanted = want if isinstance(want, tuple) else (want,)
        # bool is an int in Python, never in JSON schema
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in wanted)
            raise ToolError(f"argument {key!r} must be {names}")


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}


def int_arg(
    args: dict[str, Any], key: str, default: int, low: int, high: int, *, clamp: bool = True
) -> int:
    """An integer argument within [low, high]; clamped (reads) or refused (writes)."""
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError(f"argument {key!r} must be an integer")
    if low <= value <= high:
        return value
    if clamp:
        return max(low, min(high, value))
    raise ToolError(f"argument {key!r} must be between {low} and {high}, got {value}")


def namespace_of(args: dict[str, Any]) -> str:
    """The namespace argument, else the run's namespace (the Job runs in it)."""
    return str(args.get("namespace") or os.environ.get("AGENTRUN_NAMESPACE") or "default")


def api_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    base = f"{prefix}/namespaces/{quote(namespace)}/{plural}" if namespace else f"{prefix}/{plural}"
    return f"{base}/{quote(name)}" if name else base


def get_object(path: str, what: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    try:
        return request("GET", path, query=query)
    except ApiException as exc:
        raise api_error(exc, what) from exc


def selector_string(selector: dict[str, Any] | None) -> str:
    """A label selector (matchLabels/matchExpressions) as the API's query string."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


PRECONDITIONS_ENV = "AGENTRUN_PRECONDITIONS"


def preconditions() -> dict[str, Any]:
    """The target state the approved write was proposed on (set by the operator); {} if none."""
    raw = os.environ.get(PRECONDITIONS_ENV, "")
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ToolError(f"{PRECONDITIONS_ENV} is not JSON; nothing was changed") from exc
    if not isinstance(value, dict):
        raise ToolError(f"{PRECONDITIONS_ENV} is not a JSON object; nothing was changed")
    return value


def clip(text: str, limit: int) -> str:
    """Cuts a string at limit chars and says how many more there were."""
    return clip_text(text, limit, "...[{dropped} more chars]", room=0)


def env_summary(env: list[dict[str, Any]] | None) -> list[str]:
    """Env vars as names and where they come from; values only when literal and harmless.

    Never a value from a Secret (a secretKeyRef has none here anyway), nor a literal value
    whose name looks like a credential.
    """
    out = []
    for e in env or []:
        name = str(e.get("name"))
        ref = e.get("valueFrom") or {}
        if "secretKeyRef" in ref:
            r = ref["secretKeyRef"]
            out.append(f"{name} (from Secret {r.get('name')} key {r.get('key')})")
        elif "configMapKeyRef" in ref:
            r = ref["configMapKeyRef"]
            out.append(f"{name} (from ConfigMap {r.get('name')} key {r.get('key')})")
        elif "fieldRef" in ref:
            out.append(f"{name} (from field {ref['fieldRef'].get('fieldPath')})")
        elif "resourceFieldRef" in ref:
            out.append(f"{name} (from resource {ref['resourceFieldRef'].get('resource')})")
        elif sensitive_name(name):
            out.append(f"{name}={MASK}")
        else:
            out.append(f"{name}={clip(redact(str(e.get('value', ''))), 200)}")
    return out
