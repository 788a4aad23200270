"""Pure rendering for the CLI / kubectl plugin: tables, timelines, durations. No I/O here.

Everything works on plain AgentRun dicts as the API server returns them, so a CLI talking
to an operator of another version still shows what it can instead of failing validation.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentrun.api import LABEL_FORK_OF, NAME_PATTERN
from agentrun.api.naming import canonical_json
from agentrun.engine import actionview

Run = dict[str, Any]

LIST_HEADERS = ("NAME", "PHASE", "STEP", "AGENT", "PENDING", "WAITING", "AGE")
CONTENT_LINES = 8  # lines of an event's content shown without --full
WRAP = 86  # content lines, so indented they stay within 100 columns
INDENT = " " * 10
LABEL = 16  # width of a pending action's labels ("ServiceAccount: ")

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}
_PHASE_COLOURS = {
    "Succeeded": "green",
    "Failed": "red",
    "Cancelled": "dim",
    "AwaitingApproval": "yellow",
    "AwaitingInput": "yellow",
    "Running": "cyan",
}
_EVENT_COLOURS = {
    "Error": "red",
    "Rejection": "red",
    "Approval": "green",
    "Done": "green",
    "Question": "yellow",
    "Answer": "yellow",
    "ToolCall": "blue",
}


@dataclass(frozen=True)
class Style:
    """ANSI colours, or none (when stdout is not a TTY or NO_COLOR is set)."""

    colour: bool = False

    def paint(self, text: str, *names: str) -> str:
        codes = [_CODES[n] for n in names if n in _CODES]
        if not self.colour or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def phase(self, phase: str) -> str:
        return self.paint(phase, _PHASE_COLOURS.get(phase, ""))

    def bold(self, text: str) -> str:
        return self.paint(text, "bold")

    def dim(self, text: str) -> str:
        return self.paint(text, "dim")


PLAIN = Style(False)


# ---------------------------------------------------------------- times


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (as Kubernetes and the operator write them), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's AGE format (apimachinery's HumanDuration): 45s, 3m12s, 5h, 3d4h, 2y."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def since(value: Any, now: datetime) -> str:
    """How long ago a timestamp was, kubectl style; "" when there is none."""
    then = parse_time(value)
    return human_duration((now - then).total_seconds()) if then else ""


def span(start: Any, end: Any) -> str:
    """The precise duration between two timestamps: 0s, 42s, 3m12s, 2h5m7s."""
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None:
        return ""
    total = max(0, int((b - a).total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def offset(start: Any, value: Any) -> str:
    """A thread event's time relative to the run's start: +0s, +1m3s."""
    text = span(start, value)
    return f"+{text}" if text else ""


# ---------------------------------------------------------------- list


def _meta(run: Run) -> dict[str, Any]:
    meta = run.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _status(run: Run) -> dict[str, Any]:
    status = run.get("status")
    return status if isinstance(status, dict) else {}


def _spec(run: Run) -> dict[str, Any]:
    spec = run.get("spec")
    return spec if isinstance(spec, dict) else {}


def phase_of(run: Run) -> str:
    return str(_status(run).get("phase") or "Pending")


def pending_of(run: Run) -> tuple[str, str | None]:
    """What a run waits for a human on (a tool name, or "input: ..."), and since when."""
    status = _status(run)
    action = status.get("pendingAction")
    if isinstance(action, dict) and action.get("tool"):
        return str(action["tool"]), action.get("requestedTime")
    asked = status.get("pendingInput")
    if isinstance(asked, dict):
        return "input", asked.get("requestedTime")
    return "", None


def list_row(run: Run, now: datetime, all_namespaces: bool = False) -> list[str]:
    meta, status = _meta(run), _status(run)
    tool, requested = pending_of(run)
    row = [
        str(meta.get("name", "")),
        phase_of(run),
        str(status.get("step", 0)),
        str(_spec(run).get("agentRef", "")),
        tool or "<none>",
        since(requested, now) if requested else "",
        since(meta.get("creationTimestamp"), now),
    ]
    return [str(meta.get("namespace", "")), *row] if all_namespaces else row


def render_list(
    runs: Iterable[Run], now: datetime, all_namespaces: bool = False, style: Style = PLAIN
) -> str:
    """Like `kubectl get agentruns`, plus what each run waits on and for how long."""
    headers = ["NAMESPACE", *LIST_HEADERS] if all_namespaces else list(LIST_HEADERS)
    ordered = sorted(runs, key=lambda r: (_meta(r).get("namespace", ""), _meta(r).get("name", "")))
    rows = [list_row(r, now, all_namespaces) for r in ordered]
    phase_col = headers.index("PHASE")
    return render_table(headers, rows, paint={phase_col: style.phase})


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    paint: dict[int, Callable[[str], str]] | None = None,
) -> str:
    """kubectl's table layout: left-aligned columns, three spaces apart, no trailing blanks.

    ``paint`` colours cells of a column after padding, so colours never break alignment.
    """
    paint = paint or {}
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for index, row in enumerate([list(headers), *map(list, rows)]):
        cells = []
        for i, cell in enumerate(row):
            padded = cell.ljust(widths[i]) if i < len(row) - 1 else cell
            if index and i in paint and cell:
                padded = paint[i](cell) + padded[len(cell) :]
            cells.append(padded)
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- show


def short(digest: Any, n: int = 12) -> str:
    return str(digest or "")[:n]


arguments_text = actionview.arguments_text


def _indent_content(text: str, full: bool) -> list[str]:
    lines: list[str] = []
    for raw in text.strip("\n").splitlines() or [""]:
        lines += textwrap.wrap(raw, WRAP, break_long_words=True, replace_whitespace=False) or [""]
    if not full and len(lines) > CONTENT_LINES:
        hidden = len(lines) - CONTENT_LINES
        lines = [*lines[:CONTENT_LINES], f"[... {hidden} more lines; --full shows all]"]
    return [INDENT + line if line else "" for line in lines]


def _conditions_summary(status: dict[str, Any]) -> str:
    parts = []
    for cond in status.get("conditions") or []:
        if not isinstance(cond, dict):
            continue
        reason = f" ({cond['reason']})" if cond.get("reason") else ""
        parts.append(f"{cond.get('type')}={cond.get('status')}{reason}")
    return ", ".join(parts) or "<none>"


def _failure_message(status: dict[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if not isinstance(cond, dict) or cond.get("type") != "Succeeded":
            continue
        if cond.get("status") == "False" and cond.get("message"):
            return str(cond["message"])
    return ""


def render_event(event: dict[str, Any], start: Any, style: Style, full: bool) -> list[str]:
    type_ = str(event.get("type", "?"))
    tool = event.get("tool") or ""
    args = event.get("arguments")
    step = f"step {event.get('step', '?')}"
    head = f"{step:<8}{style.paint(f'{type_:<11}', _EVENT_COLOURS.get(type_, ''))}"
    detail = str(tool)
    if args is not None:
        detail = f"{tool} {arguments_text(args)}".strip()
    when = offset(start, event.get("time"))
    inherited = event.get("inheritedFrom")
    mark = f"  {style.paint(f'[inherited from {inherited}]', 'dim')}" if inherited else ""
    when = "" if inherited else when  # the source's times, not this run's
    lines = [f"  {head} {detail}".rstrip() + mark + (f"  {style.dim(when)}" if when else "")]
    content = str(event.get("content") or "")
    # A tool call's content merely repeats the tool and its arguments.
    if content and not (args is not None and content == f"{tool} {canonical_json(args)}"):
        lines += ["  " + line if line else "" for line in _indent_content(content, full)]
    links = []
    if event.get("jobRef"):
        links.append(f"job/{event['jobRef']}")
    if event.get("outputRef"):
        links.append(f"configmap/{event['outputRef']}")
    if links:
        lines.append("  " + INDENT + style.dim("  ".join(links)))
    return lines


def render_pending(run: Run, now: datetime, style: Style = PLAIN) -> list[str]:
    """The pending write exactly as it would run (the frozen snapshot: image, command,
    ServiceAccount, ...), the state it was proposed on, and the commands that decide it."""
    action = _status(run).get("pendingAction")
    if not isinstance(action, dict):
        return []
    meta = _meta(run)
    name, ns = meta.get("name", ""), meta.get("namespace", "")
    waited = since(action.get("requestedTime"), now)
    lines = [
        style.bold(f"Pending action (step {action.get('step', '?')}, waiting {waited or '?'})")
    ]
    for label, text in actionview.action_rows(action):
        if label == "Tool":
            text = style.paint(text, "yellow", "bold")
        elif label == "What runs":
            text = style.paint(text, "red")
        elif label == "Expires":
            text += _expiry(action.get("expiresTime"), now)
        lines.append(f"  {label + ':':<{LABEL}}{text}")
    return [
        *lines,
        f"  {'Approve:':<{LABEL}}{action.get('approveCommand', '')}",
        f"  {'or:':>{LABEL - 1}} kubectl agentrun approve {name} -n {ns}",
        f"  {'Reject:':<{LABEL}}kubectl agentrun reject {name} -n {ns} --reason '<why>'",
    ]


def _expiry(value: Any, now: datetime) -> str:
    then = parse_time(value)
    if then is None:
        return ""
    left = (then - now).total_seconds()
    return f" (in {human_duration(left)})" if left > 0 else " (expired)"


def render_pending_input(run: Run, now: datetime, style: Style = PLAIN) -> list[str]:
    asked = _status(run).get("pendingInput")
    if not isinstance(asked, dict):
        return []
    meta = _meta(run)
    waited = since(asked.get("requestedTime"), now)
    return [
        style.bold(f"Question (step {asked.get('step', '?')}, waiting {waited or '?'})"),
        f"  Urgency:    {asked.get('urgency', 'normal')}",
        *[f"  {line}" for line in _indent_content(str(asked.get("question", "")), True)],
        f"  Answer:     kubectl agentrun answer {meta.get('name', '')} "
        f"-n {meta.get('namespace', '')} '<your answer>'",
    ]


def _render_header(run: Run, now: datetime, style: Style) -> list[str]:
    """The run's identity, input, progress and times, one line each."""
    meta, spec, status = _meta(run), _spec(run), _status(run)
    usage = status.get("usage") or {}
    prompt = status.get("promptRef") or {}
    out = [
        f"{style.bold('AgentRun')} {meta.get('namespace', '')}/{meta.get('name', '')}   "
        f"{style.phase(phase_of(run))}",
        f"  Agent:       {spec.get('agentRef', '')}",
    ]
    task = str((spec.get("input") or {}).get("task", ""))
    if task:
        first, *more = task.strip().splitlines() or [""]
        out.append(f"  Task:        {first[:WRAP]}{' ...' if more or len(first) > WRAP else ''}")
    if prompt:
        out.append(
            f"  Prompt:      {prompt.get('name', '')} v{prompt.get('version', '?')} "
            f"(sha256 {short(prompt.get('sha256'))})"
        )
    out += _render_fork(spec, status)
    out.append(f"  Step:        {status.get('step', 0)}")
    out.append(
        f"  Tokens:      {usage.get('totalTokens', 0)} "
        f"({usage.get('promptTokens', 0)} prompt + {usage.get('completionTokens', 0)} completion,"
        f" {usage.get('modelCalls', 0)} model calls)"
    )
    created = meta.get("creationTimestamp")
    out.append(f"  Created:     {created or '?'} ({since(created, now)} ago)")
    out += _render_times(status, now)
    out.append(f"  Conditions:  {_conditions_summary(status)}")
    out += render_trace(status, os.environ.get(TRACE_URL_ENV, ""))
    failure = _failure_message(status)
    if failure:
        out.append(f"  Reason:      {style.paint(failure, 'red')}")
    return out


TRACE_URL_ENV = "AGENTRUN_TRACE_URL"  # e.g. http://jaeger:16686/trace/{trace_id}


def render_trace(status: dict[str, Any], url: str = "") -> list[str]:
    """The run's trace id (when the operator exports traces), and a link to it when
    AGENTRUN_TRACE_URL gives the tracing UI's address with {trace_id} in it."""
    trace = status.get("traceID")
    if not isinstance(trace, str) or not trace:
        return []
    link = f"   {url.replace('{trace_id}', trace)}" if "{trace_id}" in url else ""
    return [f"  Trace:       {trace}{link}"]


def _render_fork(spec: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """For a fork: its source and step, how many events it inherited, what it overrides."""
    fork = spec.get("forkOf")
    if not isinstance(fork, dict):
        return []
    inherited = sum(
        1 for e in status.get("thread") or [] if isinstance(e, dict) and e.get("inheritedFrom")
    )
    left = int(status.get("threadDropped") or fork.get("omitted") or 0)
    out = [
        f"  Fork of:     {fork.get('name', '?')} (uid {short(fork.get('uid'))}) from step "
        f"{fork.get('step', '?')}: {inherited} events inherited"
        + (f", {left} left out for size" if left else "")
    ]
    changed = [f"model {spec['model']}"] if spec.get("model") else []
    prompt = spec.get("prompt")
    if isinstance(prompt, dict):
        changed.append(f"prompt {prompt_text(prompt)}")
    if changed:
        out.append(f"  Overrides:   {', '.join(changed)}")
    return out


def _render_times(status: dict[str, Any], now: datetime) -> list[str]:
    """Started, Completed and Duration lines, those that apply."""
    out = []
    start = status.get("startTime")
    end = status.get("completionTime")
    if start:
        out.append(f"  Started:     {start}")
    if end:
        out.append(f"  Completed:   {end}")
    if start:
        duration = span(start, end or now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.append(f"  Duration:    {duration}{'' if end else ' (still going)'}")
    return out


def _render_timeline(status: dict[str, Any], style: Style, full: bool) -> list[str]:
    thread = [e for e in status.get("thread") or [] if isinstance(e, dict)]
    out = ["", style.bold("Timeline")]
    dropped = int(status.get("threadDropped") or 0)
    if dropped:
        out.append(style.dim(f"  [{dropped} earlier events dropped for size]"))
    if not thread:
        out.append("  <no events yet>")
    live = False
    for event in thread:
        if not live and not event.get("inheritedFrom") and thread[0].get("inheritedFrom"):
            out.append(style.dim(f"  --- live from step {event.get('step', '?')} ---"))
        live = live or not event.get("inheritedFrom")
        out += render_event(event, status.get("startTime"), style, full)
    return out


def _render_waiting(run: Run, now: datetime, style: Style) -> list[str]:
    """What the run waits for: a running tool Job, an approval, or an answer."""
    out: list[str] = []
    current = _status(run).get("currentAction")
    if isinstance(current, dict) and current.get("state") != "AwaitingApproval":
        out += [
            "",
            style.bold(f"Running (step {current.get('step', '?')})"),
            f"  {current.get('tool', '')} {arguments_text(current.get('arguments', {}))}",
            f"  job/{current.get('jobRef', '')}  since {since(current.get('requestedTime'), now)}",
        ]
    out += _render_batch(_status(run).get("batch"), now, style)
    pending = render_pending(run, now, style)
    if pending:
        out += ["", *pending]
    asked = render_pending_input(run, now, style)
    if asked:
        out += ["", *asked]
    return out


def _render_batch(batch: Any, now: datetime, style: Style) -> list[str]:
    """The calls running together (prefetch, or several reads from one reply): each with its
    Job (and container, when calls share one), and whether its result is in."""
    calls = [c for c in batch or [] if isinstance(c, dict)]
    if not calls:
        return []
    done = sum(1 for c in calls if c.get("result"))
    kind = "prefetch" if all(c.get("prefetch") for c in calls) else "read calls"
    out = ["", style.bold(f"Running together ({kind}, {done} of {len(calls)} done)")]
    for call in calls:
        result = call.get("result")
        state = "running"
        if isinstance(result, dict):
            state = "error" if result.get("type") == "Error" else "done"
        where = f"job/{call.get('jobRef', '')}"
        if call.get("container"):
            where += f" container {call['container']}"
        out += [
            f"  step {call.get('step', '?'):<3} {state:<8} {call.get('tool', '')} "
            f"{arguments_text(call.get('arguments', {}))}",
            f"               {where}  since {since(call.get('requestedTime'), now)}",
        ]
    return out


def _render_approvals(status: dict[str, Any], style: Style) -> list[str]:
    approvals = [a for a in status.get("approvals") or [] if isinstance(a, dict)]
    if not approvals:
        return []
    out = ["", style.bold("Approvals")]
    for record in approvals:
        decision = str(record.get("decision", ""))
        colour = {"Approved": "green", "Rejected": "red", "Refused": "red"}.get(decision, "")
        by = f" by {record['approver']}" if record.get("approver") else ""
        reason = f": {record['reason']}" if record.get("reason") else ""
        out.append(
            f"  step {record.get('step', '?'):<3} {style.paint(f'{decision:<9}', colour)} "
            f"{record.get('tool', '')} {short(record.get('actionHash'))}{by} "
            f"at {record.get('time', '?')}{reason}"
        )
    return out


def _render_result(status: dict[str, Any], style: Style) -> list[str]:
    result = status.get("result")
    if not (isinstance(result, dict) and result.get("answer")):
        return []
    return [
        "",
        style.bold("Result"),
        *["  " + line if line else "" for line in _indent_content(result["answer"], True)],
    ]


def render_run(run: Run, now: datetime, style: Style = PLAIN, full: bool = False) -> str:
    """`show NAME`: the run's header, its timeline, what it waits for, and its result."""
    status = _status(run)
    out = [
        *_render_header(run, now, style),
        *_render_timeline(status, style, full),
        *_render_waiting(run, now, style),
        *_render_approvals(status, style),
        *_render_result(status, style),
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- run


class InputError(ValueError):
    """The input document or flags of `agentrun run` do not make a valid run input."""


def build_input(doc: Any, task: str | None) -> dict[str, Any]:
    """spec.input from an input document and/or --task.

    The document is either ``{"task": ..., "context": {...}}`` or, with --task, just the
    context (an object). --task overrides a task in the document.
    """
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InputError("the input must be a JSON object")
    wrapped = bool(doc) and set(doc) <= {"task", "context"}
    if wrapped:
        context = doc.get("context", {})
        task = task or doc.get("task")
    elif task:
        context = doc
    else:
        raise InputError(
            'the input must be {"task": "...", "context": {...}}, or give --task and the '
            "input holds just the context"
        )
    if not isinstance(task, str) or not task.strip():
        raise InputError('no task: give --task TEXT or a "task" string in the input')
    if not isinstance(context, dict):
        raise InputError('"context" must be a JSON object')
    return {"task": task, "context": context}


def run_manifest(
    agent: str, namespace: str, spec_input: dict[str, Any], name: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = f"{agent[:50].rstrip('-.')}-"
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": meta,
        "spec": {"agentRef": agent, "input": spec_input},
    }


def parse_prompt(text: str) -> dict[str, str]:
    """`NAME[@VERSION]` (fork --prompt) as spec.prompt."""
    name, _, version = text.partition("@")
    if not re.fullmatch(NAME_PATTERN, name) or (_ and not version):
        raise InputError(f"--prompt {text!r}: expected NAME or NAME@VERSION (e.g. sre-agent@3)")
    return {"name": name, "version": version} if version else {"name": name}


def prompt_text(prompt: dict[str, Any]) -> str:
    version = f"@{prompt['version']}" if prompt.get("version") else ""
    return f"{prompt.get('name', '')}{version}"


def fork_manifest(
    source: Run,
    fork_of: dict[str, Any],
    *,
    name: str | None = None,
    agent: str | None = None,
    model: str | None = None,
    prompt: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The fork of `source`: its input and limits, with another agent, model or prompt.

    What is not changed is the source's: its model override, and, unless another agent is
    given, the very prompt version it ran with (so a fork differs only in what was asked)."""
    meta, spec = _meta(source), _spec(source)
    out: dict[str, Any] = {"agentRef": agent or spec.get("agentRef"), "input": spec.get("input")}
    if spec.get("limits"):
        out["limits"] = spec["limits"]
    if model or spec.get("model"):
        out["model"] = model or spec.get("model")
    ran = fork_of.get("promptRef") or {}
    if prompt is None and agent is None:
        prompt = spec.get("prompt") or (
            {"name": ran["name"], "version": ran["version"]} if ran.get("name") else None
        )
    if prompt:
        out["prompt"] = prompt
    out["forkOf"] = fork_of
    src = str(meta.get("name", "run"))
    new_meta: dict[str, Any] = {"namespace": meta.get("namespace")}
    if name:
        new_meta["name"] = name
    else:
        new_meta["generateName"] = f"{src[:50].rstrip('-.')}-fork-"
    if len(src) <= 63:
        new_meta["labels"] = {LABEL_FORK_OF: src}
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": new_meta,
        "spec": out,
    }


def outcome(run: Run, now: datetime, style: Style = PLAIN) -> str:
    """What `run --wait` prints when it stops following a run."""
    meta, status = _meta(run), _status(run)
    phase = phase_of(run)
    lines = [f"{meta.get('name', '')}: {style.phase(phase)}"]
    if phase == "AwaitingApproval":
        lines += render_pending(run, now, style)
    elif phase == "AwaitingInput":
        lines += render_pending_input(run, now, style)
    else:
        failure = _failure_message(status)
        if failure:
            lines.append(f"  {failure}")
        result = status.get("result")
        if isinstance(result, dict) and result.get("answer"):
            lines.append(str(result["answer"]))
    return "\n".join(lines) + "\n"


def dump(value: Any, fmt: str) -> str:
    """-o json / -o yaml, as kubectl prints them."""
    if fmt == "json":
        return json.dumps(value, indent=4, ensure_ascii=False) + "\n"
    import yaml

    text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return text
