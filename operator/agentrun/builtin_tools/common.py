"""What the built-in tools share: the API client, raw JSON requests, readable errors."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


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
    api = api_client()
    headers = {"Accept": "application/json", "Content-Type": content_type}
    req = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    resp: Any = api.call_api(*req, _request_timeout=30)
    resp.read()
    if not 200 <= resp.status <= 299:
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    value = json.loads(resp.data)
    if not isinstance(value, dict):
        raise ToolError(f"unexpected API response for {path}")
    return value


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
