"""One raw Kubernetes API request on a shared ApiClient (no typed models: faster, and no
field is dropped). Imports only the kubernetes client, so the tool runner stays quick."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


def send(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    stream: bool = False,
    timeout: float | None = None,
) -> Any:
    """Raises ApiException on non-2xx; returns the urllib3 response, read (so its connection
    goes back to the pool) unless `stream`."""
    request = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Accept": accept, "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    resp: Any = api.call_api(*request, _request_timeout=timeout)
    if not 200 <= resp.status <= 299:
        resp.read()  # the exception carries the body (a Status with the message)
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    if not stream:
        resp.read()
    return resp.response
