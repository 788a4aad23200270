"""k8s-events: recent events of a namespace or one object, deduplicated, newest first.

Events repeat (BackOff every few seconds, one per pod): they are merged by type, reason and
object with their counts summed, so a screenful says what happened and how often.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from .common import ToolError, api_error, arguments, clip, int_arg, namespace_of, request
from .k8s_get import _event_time, refuse_secrets

ARGUMENTS = frozenset({"namespace", "kind", "name", "type", "reason", "sinceMinutes", "limit"})
TYPES: dict[str, type | tuple[type, ...]] = {
    "namespace": str,
    "kind": str,
    "name": str,
    "type": str,
    "reason": str,
    "sinceMinutes": int,
    "limit": int,
}
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
FETCH_LIMIT = 1000  # events read from the API at most
TYPES_ALLOWED = ("Warning", "Normal")


def run(args: dict[str, Any]) -> Any:
    arguments(args, TYPES, set())
    namespace = namespace_of(args)
    kind, name = args.get("kind") or None, args.get("name") or None
    if kind:
        refuse_secrets(kind)
    type_ = args.get("type") or None
    if type_ is not None:
        type_ = type_.capitalize()
        if type_ not in TYPES_ALLOWED:
            raise ToolError(f"type must be one of {list(TYPES_ALLOWED)}, got {args['type']!r}")
    limit = int_arg(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    since = int_arg(args, "sinceMinutes", 0, 0, 7 * 24 * 60)
    events = fetch(namespace, kind=kind, name=name, type_=type_, reason=args.get("reason"))
    if isinstance(events, str):
        raise ToolError(events)
    return shape(
        events,
        namespace=namespace,
        target=f"{kind or '*'}/{name}" if name else None,
        type_=type_,
        limit=limit,
        since_minutes=since,
        now=datetime.now(UTC),
    )


def fetch(
    namespace: str | None,
    *,
    kind: str | None = None,
    name: str | None = None,
    type_: str | None = None,
    reason: str | None = None,
) -> list[dict[str, Any]] | str:
    """Events from the API (core v1), filtered server-side; a string says why there are none."""
    fields = []
    if kind:
        fields.append(f"involvedObject.kind={kind}")
    if name:
        fields.append(f"involvedObject.name={name}")
    if type_:
        fields.append(f"type={type_}")
    if reason:
        fields.append(f"reason={reason}")
    path = f"/api/v1/namespaces/{namespace}/events" if namespace else "/api/v1/events"
    query = [("limit", str(FETCH_LIMIT))]
    if fields:
        query.append(("fieldSelector", ",".join(fields)))
    try:
        items = request("GET", path, query=query).get("items") or []
    except ApiException as exc:
        where = f"events in {namespace}" if namespace else "events"
        return f"events unavailable: {api_error(exc, where)}"
    return list(items)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def dedup(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merges events by (type, reason, object); newest first, counts summed, newest message."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ev in sorted(events, key=_event_time, reverse=True):
        obj = ev.get("involvedObject") or {}
        target = f"{obj.get('kind')}/{obj.get('name')}"
        key = (str(ev.get("type")), str(ev.get("reason")), target)
        count = int(ev.get("count") or (ev.get("series") or {}).get("count") or 1)
        first = str(ev.get("firstTimestamp") or ev.get("eventTime") or _event_time(ev))
        row = groups.get(key)
        if row is None:
            source = ev.get("source") or {}
            groups[key] = {
                "lastSeen": _event_time(ev),
                "type": ev.get("type"),
                "reason": ev.get("reason"),
                "object": target,
                "count": count,
                "message": clip(str(ev.get("message") or "").strip(), 400),
                "firstSeen": first,
                "source": source.get("component") or ev.get("reportingComponent"),
            }
        else:
            row["count"] += count
            if first and (not row["firstSeen"] or first < row["firstSeen"]):
                row["firstSeen"] = first
    rows = list(groups.values())
    for row in rows:
        if row["firstSeen"] == row["lastSeen"]:
            row.pop("firstSeen")
    return [{k: v for k, v in r.items() if v not in (None, "")} for r in rows]


def shape(
    events: list[dict[str, Any]],
    *,
    namespace: str,
    target: str | None,
    type_: str | None,
    limit: int,
    since_minutes: int,
    now: datetime,
) -> dict[str, Any]:
    if type_:
        events = [e for e in events if e.get("type") == type_]
    if since_minutes:
        cutoff = now - timedelta(minutes=since_minutes)
        kept = []
        for e in events:
            seen = _parse_time(_event_time(e))
            if seen is None or seen >= cutoff:
                kept.append(e)
        events = kept
    rows = dedup(events)
    warnings = sum(r["count"] for r in rows if r.get("type") == "Warning")
    normal = sum(r["count"] for r in rows if r.get("type") == "Normal")
    out: dict[str, Any] = {
        "namespace": namespace,
        "object": target,
        "type": type_,
        "summary": (
            f"{len(events)} events ({warnings} Warning, {normal} Normal occurrences) "
            f"merged into {len(rows)} rows by type+reason+object, newest first"
        ),
        "events": rows[:limit],
    }
    if len(rows) > limit:
        out["note"] = (
            f"showing {limit} of {len(rows)} rows; narrow with type, reason, kind/name or "
            "sinceMinutes, or raise limit"
        )
    if not rows:
        out["summary"] = "no events match (events expire after 1 hour by default)"
    if len(events) >= FETCH_LIMIT:
        out["note"] = (
            out.get("note", "") + f"; only the first {FETCH_LIMIT} events were read"
        ).strip("; ")
    return {k: v for k, v in out.items() if v is not None}
