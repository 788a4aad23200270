"""pod-logs: the tail of a container's log, optionally grep-filtered, newest lines last.

The pod is named, or picked from a Deployment or a label selector: the least healthy pod
(not ready, most restarts) first, since that is the one worth reading. Log text is
untrusted data: it is returned as data, long lines are cut, credentials masked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kubernetes.client.exceptions import ApiException

from .common import (
    ToolError,
    api_error,
    api_path,
    arguments,
    get_object,
    int_arg,
    namespace_of,
    redact,
    request_text,
    selector_string,
)

ARGUMENTS = frozenset(
    {
        "namespace",
        "pod",
        "deployment",
        "labelSelector",
        "container",
        "tailLines",
        "previous",
        "grep",
        "sinceSeconds",
    }
)
TYPES: dict[str, type | tuple[type, ...]] = {
    "namespace": str,
    "pod": str,
    "deployment": str,
    "labelSelector": str,
    "container": str,
    "tailLines": int,
    "previous": bool,
    "grep": str,
    "sinceSeconds": int,
}
DEFAULT_TAIL, MAX_TAIL = 100, 1000
GREP_SCAN_LINES = 5000  # lines read to search when grep is given
MAX_LINE_CHARS = 500
MAX_LOG_CHARS = 48_000
MAX_PODS_LISTED = 10
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, set())
    namespace = namespace_of(args)
    chosen = [k for k in ("pod", "deployment", "labelSelector") if args.get(k)]
    if len(chosen) != 1:
        raise ToolError("pass exactly one of pod, deployment or labelSelector")
    tail = int_arg(args, "tailLines", DEFAULT_TAIL, 1, MAX_TAIL)
    since = int_arg(args, "sinceSeconds", 0, 0, 7 * 24 * 3600)
    pattern = compile_grep(args.get("grep"))
    previous = bool(args.get("previous"))

    others: list[dict[str, Any]] = []
    if args.get("pod"):
        pod_name = str(args["pod"])
        pod = get_object(
            api_path("v1", "pods", namespace, pod_name), f"Pod {pod_name} in {namespace}"
        )
    else:
        if args.get("deployment"):
            dep_name = str(args["deployment"])
            dep = get_object(
                api_path("apps/v1", "deployments", namespace, dep_name),
                f"Deployment {dep_name} in namespace {namespace}",
            )
            selector = selector_string((dep.get("spec") or {}).get("selector"))
        else:
            selector = str(args["labelSelector"])
        listing = get_object(
            api_path("v1", "pods", namespace),
            f"pods in namespace {namespace}",
            query=[("labelSelector", selector)],
        )
        pods = rank_pods(listing.get("items") or [])
        if not pods:
            raise ToolError(f"no pods in namespace {namespace} match the selector {selector!r}")
        pod, others = pods[0], [pod_row(p) for p in pods[1 : 1 + MAX_PODS_LISTED]]
        pod_name = pod["metadata"]["name"]
    container, names = pick_container(pod, args.get("container"))

    query = [("container", container), ("previous", "true" if previous else "false")]
    # One line more than asked: whether earlier lines exist is worth saying.
    query.append(("tailLines", str(GREP_SCAN_LINES if pattern else tail + 1)))
    if since:
        query.append(("sinceSeconds", str(since)))
    path = f"{api_path('v1', 'pods', namespace, pod_name)}/log"
    try:
        text = request_text(path, query=query)
    except ApiException as exc:
        raise log_error(exc, pod_name, container, previous) from exc

    out: dict[str, Any] = {
        "pod": pod_name,
        "container": container,
        "podStatus": pod_row(pod),
        "previous": previous or None,
        "sinceSeconds": since or None,
    }
    out.update(shape_log(text, tail=tail, pattern=pattern))
    if len(names) > 1:
        out["containers"] = names
    if others:
        out["otherPods"] = others
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- pure parts


def compile_grep(grep: str | None) -> re.Pattern[str] | None:
    if not grep:
        return None
    try:
        return re.compile(grep)
    except re.error as exc:
        raise ToolError(f"grep is not a valid regular expression: {exc}") from exc


def shape_log(text: str, *, tail: int, pattern: re.Pattern[str] | None) -> dict[str, Any]:
    """The last `tail` (matching) lines, each cut at MAX_LINE_CHARS, all within MAX_LOG_CHARS."""
    lines = text.splitlines()
    notes = []
    matched = lines
    if pattern is not None:
        matched = [line for line in lines if pattern.search(line)]
    kept = matched[-tail:]
    long_lines = sum(1 for line in kept if len(line) > MAX_LINE_CHARS)
    kept = [
        line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "...[line cut]"
        for line in kept
    ]
    while kept and sum(len(line) + 1 for line in kept) > MAX_LOG_CHARS:
        kept = kept[len(kept) // 4 or 1 :]
    if len(kept) < len(matched):
        if pattern is None:
            notes.append(f"showing the last {len(kept)} lines; earlier lines not shown")
        else:
            notes.append(f"showing the last {len(kept)} of {len(matched)} matching lines")
    if long_lines:
        notes.append(f"{long_lines} lines longer than {MAX_LINE_CHARS} chars were cut")
    out: dict[str, Any] = {"lines": len(kept)}
    if pattern is not None:
        out["grep"] = f"{len(matched)} of the last {len(lines)} lines match {pattern.pattern!r}"
    if notes:
        out["note"] = "; ".join(notes)
    if not lines:
        out["note"] = "the log is empty (for this window)"
    out["log"] = redact("\n".join(kept))
    return out


def _restarts(pod: dict[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(cs.get("restartCount") or 0) for cs in statuses)


def _ready(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(cs.get("ready") for cs in statuses)


def rank_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Least healthy first: not ready, then most restarts, then newest."""
    by_age = sorted(
        pods,
        key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""),
        reverse=True,
    )
    return sorted(by_age, key=lambda p: (_ready(p), -_restarts(p)))


def pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    reasons = []
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reasons.append(f"{cs.get('name')}: {waiting['reason']}")
    row = {
        "name": (pod.get("metadata") or {}).get("name"),
        "phase": status.get("phase"),
        "ready": _ready(pod),
        "restarts": _restarts(pod),
        "waiting": reasons or None,
    }
    return {k: v for k, v in row.items() if v is not None}


def pick_container(pod: dict[str, Any], wanted: str | None) -> tuple[str, list[str]]:
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    init = [c.get("name") for c in spec.get("initContainers") or []]
    if wanted:
        if wanted not in names + init:
            raise ToolError(f"pod has no container {wanted!r}; containers: {names + init}")
        return wanted, names + init
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER)
    if default in names:
        return str(default), names
    if not names:
        raise ToolError("the pod has no containers")
    return str(names[0]), names


def log_error(exc: ApiException, pod: str, container: str, previous: bool) -> ToolError:
    if exc.status == 400 and previous:
        return ToolError(
            f"no previous log for container {container} of pod {pod}: the container has not "
            "restarted, or its node does not keep the previous container's log "
            f"({_message(exc)}); ask again without previous, which shows the current log "
            "including lines written before a restart when the node appends to one file"
        )
    if exc.status == 400:
        return ToolError(f"cannot read the log of {pod}/{container}: {_message(exc)}")
    return api_error(exc, f"the log of Pod {pod} container {container}")


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", "")) or str(exc.reason)
    except ValueError:
        return str(exc.body or exc.reason)[:300]
