"""Deterministic names and hashes: a repeated create is a harmless 409, never a second Job."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def action_hash(
    run_uid: str,
    step: int,
    tool: str,
    arguments: dict[str, Any],
    spec_digest: str = "",
    preconditions: dict[str, Any] | None = None,
) -> str:
    """sha256 over the tool, its canonical arguments, the digest of everything it runs (its
    frozen snapshot), the target state it was proposed on, and the run and step.

    Binding the run and step in means an approval can never approve a later action, even an
    identical one, nor the same action on another run; binding the snapshot in means it
    approves exactly the image, command, ServiceAccount and settings that were shown.
    """
    payload = canonical_json(
        {
            "run": run_uid,
            "step": step,
            "tool": tool,
            "arguments": arguments,
            "spec": spec_digest,
            "preconditions": preconditions or {},
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def job_name(run_name: str, run_uid: str, step: int, prefetch: int | None = None) -> str:
    """A DNS-1123 label (<= 63 chars) unique per run (uid) and step (or prefetch call)."""
    slot = f"p{prefetch}" if prefetch is not None else f"s{step}"
    key = f"{run_uid}/{step}" if prefetch is None else f"{run_uid}/prefetch/{prefetch}"
    suffix = hashlib.sha256(key.encode()).hexdigest()[:6]
    base = re.sub(r"[^a-z0-9-]", "-", run_name[:40]).strip("-") or "run"
    return f"{base}-{slot}-{suffix}"


def trace_id(run_uid: str) -> str:
    """A run's OpenTelemetry trace id (32 hex digits): from its uid, so every operator, after
    any restart, and the receiver that created it, put its spans in the same trace."""
    return hashlib.sha256(f"trace/{run_uid}".encode()).hexdigest()[:32]


RUN_SPAN = "run"  # span_id's part for the run's own span (invoke_agent)


def span_id(run_uid: str, part: str) -> str:
    """The span id (16 hex digits) of a part of a run known before its span ends: the run's
    own span ("run") and each tool Job's (its name), the parents of spans made elsewhere."""
    return hashlib.sha256(f"span/{run_uid}/{part}".encode()).hexdigest()[:16]


def traceparent(run_uid: str, part: str) -> str:
    """The W3C traceparent of a part of a run (sampled)."""
    return f"00-{trace_id(run_uid)}-{span_id(run_uid, part)}-01"


def output_name(job: str) -> str:
    """The ConfigMap holding a step's raw tool output."""
    return f"{job}-out"


MCP_PREFIX = "mcp:"
_MCP_REF = re.compile(r"^mcp:([a-z0-9]([-a-z0-9]*[a-z0-9])?)/(.+)$")


def parse_mcp_ref(name: str) -> tuple[str, str] | None:
    """("kubernetes", "pods_list") for an Agent's "mcp:kubernetes/pods_list"; else None."""
    m = _MCP_REF.match(name)
    return (m.group(1), m.group(3)) if m else None


def mcp_model_name(server: str, tool: str) -> str:
    """The name the model, the thread and the approval show for an MCP tool."""
    return f"mcp__{server}__{tool}"


def offered_name(listed: str) -> str:
    """An Agent's spec.tools entry as the run names it: mcp:S/T becomes mcp__S__T."""
    ref = parse_mcp_ref(listed)
    return mcp_model_name(*ref) if ref else listed
