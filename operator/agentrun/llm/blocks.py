"""One event of a run's thread as a typed block, and the text helpers behind it (pure).

Tool output and alert text are untrusted: `neutralise` defuses our own tags inside them so a
block cannot be closed or forged from within.
"""

from __future__ import annotations

import html
import re

from agentrun.api import EventType, ThreadEvent
from agentrun.api.naming import canonical_json

SUMMARY_CHARS = 400  # what is kept of an older tool result
SUMMARY_LINES = 8
ERROR_LINE_CHARS = 200  # an earlier error of a run of consecutive errors

# How much of one event a block shows.
FULL, SUMMARY, LINE, HIDDEN, OMITTED = "full", "summary", "line", "hidden", "omitted"

_TAGS = (
    "task",
    "context",
    "tools",
    "prefetched",
    "thread",
    "note",
    "tool_call",
    "tool_result",
    "error",
    "approval",
    "rejection",
    "question",
    "answer",
    "done",
)
# "<tool_result", "</ error >", ... anywhere inside untrusted text.
_OUR_TAG = re.compile(r"<(\s*/?\s*)(" + "|".join(_TAGS) + r")\b", re.IGNORECASE)

_TAG_OF = {
    EventType.TOOL_CALL: "tool_call",
    EventType.TOOL_RESULT: "tool_result",
    EventType.ERROR: "error",
    EventType.APPROVAL: "approval",
    EventType.REJECTION: "rejection",
    EventType.QUESTION: "question",
    EventType.ANSWER: "answer",
    EventType.DONE: "done",
}


def render_event(event: ThreadEvent, mode: str = FULL, limit: int = SUMMARY_CHARS) -> str:
    """One typed block. `mode` summary keeps the first lines (up to `limit` characters) and
    says where the full output is; `line` keeps one line (an earlier consecutive error)."""
    tag = _TAG_OF.get(event.type, "event")
    attrs = _attributes(event)
    if event.type is EventType.TOOL_CALL and event.arguments is not None:
        body = canonical_json(event.arguments)
    else:
        body = event.content
    if mode == SUMMARY:
        attrs["summarised"] = "true"
        body = summary(body, limit, event.outputRef)
    elif mode == LINE:
        attrs["shortened"] = "true"
        body = one_line(body)
    head = tag + "".join(f' {k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
    if event.type is EventType.APPROVAL:
        return f"<{head}/>"
    body = neutralise(body)
    if "\n" in body:  # multi-line output reads better on its own lines
        return f"<{head}>\n{body}\n</{tag}>"
    return f"<{head}>{body}</{tag}>"


def _attributes(event: ThreadEvent) -> dict[str, str]:
    attrs = {"step": str(event.step)}
    if event.tool:
        attrs["tool"] = event.tool
    if event.type in (EventType.TOOL_RESULT, EventType.ERROR):
        attrs["untrusted"] = "true"  # both can carry tool output
    if event.outputRef:
        attrs["output"] = event.outputRef
    return attrs


def summary(text: str, limit: int = SUMMARY_CHARS, output_ref: str | None = None) -> str:
    """The first lines of a tool output, at most `limit` characters, and where the rest is."""
    kept: list[str] = []
    used = 0
    for line in text.splitlines()[: max(SUMMARY_LINES, limit // 50)]:
        if used + len(line) > limit:
            room = limit - used
            if room >= 40 or not kept:
                kept.append(line[: max(0, room)] + "...")
            break
        kept.append(line)
        used += len(line) + 1
    head = "\n".join(kept).strip("\n")
    if output_ref:
        where = f"full output in ConfigMap {output_ref}"
    else:
        where = f"{max(0, len(text) - used)} more characters not kept"
    return (head + "\n" if head else "") + f"[summarised; {where}]"


def one_line(text: str, limit: int = ERROR_LINE_CHARS) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    cut = len(first) > limit or len(lines) > 1
    return (first[:limit] + " [...]") if cut else first


def neutralise(text: str) -> str:
    """Defuses our own tags inside text so it cannot close its block or forge another one;
    everything else stays readable (YAML, JSON and logs are rarely full of '<')."""
    return _OUR_TAG.sub(lambda m: "&lt;" + m.group(1) + m.group(2), text)
