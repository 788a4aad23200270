"""`kubectl agentrun export RUN --case NAME`: a finished run as an eval case (pure).

What `make eval` replays (docs/eval.md) is rebuilt from the run as the cluster holds it: the
model's answer per step from its thread, each tool call's raw output from its ConfigMap (the
thread's compacted text when that is gone), the human decisions from its approvals and
answers, the Agent it ran as and the tools it was offered, and an `expected.yaml` drafted
from what happened, for a human to review. Every value goes through the tool runner's
redaction, so no credential reaches the case. The caller (cli.main) does the reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from agentrun.api import AgentRunStatus, AgentSpec, Decision, EventType, ThreadEvent
from agentrun.api.naming import canonical_json
from agentrun.tool.envelope import ENVELOPE_KEY
from agentrun.tool.redaction import redact_value

INPUT_TOOL = "request_human_input"  # llm.toolcall.INPUT_TOOL (the CLI stays off the llm layer)
_QUESTION = re.compile(r"^\[(low|normal|high)\] (.*)$", re.S)
_OUTCOMES = (EventType.TOOL_RESULT, EventType.ERROR)
MAX_FINDINGS = 5


class ExportRefused(ValueError):
    """The run cannot be exported (not finished, or no thread); the message says why."""


@dataclass(frozen=True)
class Case:
    """The files of the case directory, as text."""

    files: dict[str, str]
    notes: list[str]


def _events(status: AgentRunStatus, step: int) -> list[ThreadEvent]:
    return [e for e in status.thread if e.step == step]


def model_entries(status: AgentRunStatus, notes: list[str]) -> list[dict[str, Any]]:
    """The model's answer of each step 1..N, in the scripted model's entry format. The first
    event of a step is its answer (a failed model request is recorded at the step before)."""
    entries: list[dict[str, Any]] = []
    answer = status.result.answer if status.result is not None else ""
    together = _replies_of_several(status.thread)
    for step in range(1, status.step + 1):
        events = _events(status, step)
        first = events[0] if events else None
        # A reply of several reads: every call at its first step, to run together again.
        calls = together.get(step) or [e for e in events if e.type is EventType.TOOL_CALL]
        if together.get(step) == []:  # a later call of that reply took this step
            entries.append({"text": f"(step {step} ran a call of an earlier reply)"})
        elif first is None:
            notes.append(f"step {step}: not in the thread (dropped for size); replayed as text")
            entries.append({"text": f"(step {step} was not kept in the run's thread)"})
        elif first.type is EventType.TOOL_CALL and len(calls) > 1:
            raw = [{"name": c.tool, "arguments": c.arguments or {}} for c in calls]
            entries.append({"raw_tool_calls": raw})
        elif first.type is EventType.TOOL_CALL:
            entries.append({"tool": first.tool, "arguments": first.arguments or {}})
        elif first.type is EventType.DONE:
            entries.append({"done": answer or first.content})
        elif first.type is EventType.QUESTION:
            m = _QUESTION.match(first.content)
            urgency, question = (m.group(1), m.group(2)) if m else ("normal", first.content)
            args = {"question": question, "urgency": urgency}
            entries.append({"tool": INPUT_TOOL, "arguments": args})
        else:
            notes.append(f"step {step}: an invalid reply, replayed as the error it gave")
            entries.append({"invalid": first.content})
    return entries


def _replies_of_several(thread: list[ThreadEvent]) -> dict[int, list[ThreadEvent]]:
    """Read calls one reply asked for together (status.batch): their ToolCall events stand
    next to each other at consecutive steps, before any result. The first step -> the calls;
    each later step of the reply -> [] (a replay asks the model once for all of them)."""
    out: dict[int, list[ThreadEvent]] = {}
    run: list[ThreadEvent] = []
    for event in [*thread, None]:
        if (
            event is not None
            and event.type is EventType.TOOL_CALL
            and event.step > 0
            and (not run or event.step == run[-1].step + 1)
        ):
            run.append(event)
            continue
        if len(run) > 1:
            out[run[0].step] = list(run)
            out.update({c.step: [] for c in run[1:]})
        run = [event] if event is not None and event.type is EventType.TOOL_CALL else []
    return out


def _outcome(events: list[ThreadEvent], call: ThreadEvent) -> ThreadEvent | None:
    after = events[events.index(call) + 1 :]
    return next((e for e in after if e.type in _OUTCOMES and e.tool == call.tool), None)


def _recorded(
    outcome: ThreadEvent, outputs: dict[str, dict[str, str]], notes: list[str]
) -> dict[str, Any]:
    """A call's result: the raw envelope from its ConfigMap, else the thread's text (an
    output with no ConfigMap was short enough for the thread to keep it whole)."""
    if outcome.outputRef is None and outcome.type is EventType.TOOL_RESULT:
        return _whole(outcome.content)
    data = outputs.get(outcome.outputRef or "") or {}
    env = _envelope(data.get("output.json") or data.get("output.txt") or "")
    if env is not None:
        out: dict[str, Any] = {"ok": env.get("ok") is True}
        for key in ("output", "error"):
            if env.get(key) is not None:
                out[key] = env[key]
        if env.get("truncated"):
            out["truncated"] = True
        return out
    if "output.txt" in data:
        return {"ok": True, "output": data["output.txt"]}
    notes.append(
        f"step {outcome.step} {outcome.tool}: its raw output is gone; recorded from the "
        "thread's compacted text"
    )
    if outcome.type is EventType.TOOL_RESULT:
        return {"ok": True, "output": outcome.content}
    return {"ok": False, "error": outcome.content}


def _whole(content: str) -> dict[str, Any]:
    """A result the thread holds whole (see jobs.compact_result): its error line, then its
    output as the tool gave it (JSON text back to the value)."""
    ok, body = True, content
    if content.startswith("error: "):
        ok = False
        error, _, body = content.removeprefix("error: ").partition("\n")
    try:
        output: Any = json.loads(body) if body else None
    except ValueError:
        output = body
    out: dict[str, Any] = {"ok": ok, "output": output}
    if not ok:
        out["error"] = error
    return out


def _envelope(text: str) -> dict[str, Any] | None:
    """The tool runner's result envelope in a stored output (the last JSON line that is one;
    the operator keeps the pod's whole log when it is more than the envelope)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{") or ENVELOPE_KEY not in line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and ENVELOPE_KEY in value:
            return value
    try:
        whole = json.loads(text)
    except ValueError:
        return None
    return whole if isinstance(whole, dict) and ENVELOPE_KEY in whole else None


def tool_recordings(
    status: AgentRunStatus, outputs: dict[str, dict[str, str]], notes: list[str]
) -> list[dict[str, Any]]:
    """Each tool call that ran (prefetch included), once per tool and arguments."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for event in status.thread:
        if event.type is not EventType.TOOL_CALL or not event.tool:
            continue
        outcome = _outcome(_events(status, event.step), event)
        key = f"{event.tool} {canonical_json(event.arguments or {})}"
        if outcome is None or key in seen:
            continue  # rejected (never ran), or the same call again
        seen.add(key)
        recorded = _recorded(outcome, outputs, notes)
        out.append({"tool": event.tool, "arguments": event.arguments or {}, **recorded})
    return out


def decisions(status: AgentRunStatus) -> list[dict[str, Any]]:
    kept = (Decision.APPROVED, Decision.REJECTED)
    return [
        {"approve": True} if r.decision is Decision.APPROVED else {"reject": r.reason}
        for r in status.approvals
        if r.decision in kept
    ]


def _approval(status: AgentRunStatus) -> dict[str, Any] | None:
    """The first write the run asked approval for: its tool and arguments."""
    for record in status.approvals:
        for e in _events(status, record.step):
            if e.type is EventType.TOOL_CALL and e.tool == record.tool:
                return {"tool": e.tool, "arguments": e.arguments or {}}
    return None


def draft_findings(run: dict[str, Any], status: AgentRunStatus) -> list[str]:
    """Names the final answer mentions that the alert or a tool call also named: a start
    for the reviewer, who should add what the answer must conclude."""
    answer = (status.result.answer if status.result else "").lower()
    alert = ((run.get("spec") or {}).get("input") or {}).get("context") or {}
    candidates: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and 3 <= len(value) <= 60 and "\n" not in value:
            candidates.append(value)

    walk(alert.get("alert", alert) if isinstance(alert, dict) else {})
    for e in status.thread:
        if e.type is EventType.TOOL_CALL and e.step > 0:
            walk({k: v for k, v in (e.arguments or {}).items() if k != "namespace"})
    found: list[str] = []
    for c in candidates:
        if c.lower() in answer and c not in found:
            found.append(c)
    return found[:MAX_FINDINGS]


def _full(agent: dict[str, Any]) -> dict[str, Any]:
    """The Agent's spec with its defaults spelled out (an empty prefetch too), so the case
    replays as this Agent, not as the chart's default where a field was left unset."""
    try:
        return AgentSpec.model_validate(agent).model_dump(mode="json", exclude_none=True)
    except ValueError:
        return dict(agent)


def _dump(value: Any) -> str:
    text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)
    return text


def build_case(
    run: dict[str, Any],
    agent: dict[str, Any] | None,
    tools: dict[str, dict[str, Any]],
    outputs: dict[str, dict[str, str]],
) -> Case:
    """The case directory of a finished run. `agent`: the Agent's spec as it is now (None if
    gone); `tools`: the AgentTools' specs by name; `outputs`: ConfigMap data by name."""
    meta, spec = run.get("metadata") or {}, run.get("spec") or {}
    status = AgentRunStatus.model_validate(run.get("status") or {})
    name = meta.get("name", "")
    if status.completionTime is None:
        raise ExportRefused(
            f"run {name} has not finished (phase {status.phase.value}): export it once it has"
        )
    if not status.thread:
        raise ExportRefused(f"run {name} has no thread: there is nothing to replay")
    notes: list[str] = []
    if status.threadDropped:
        notes.append(f"{status.threadDropped} early events were dropped for size by the run")
    identity = {
        "name": name,
        "namespace": meta.get("namespace", "default"),
        "uid": meta.get("uid", ""),
        "agentRef": spec.get("agentRef", ""),
        "input": spec.get("input") or {},
    }
    if spec.get("limits"):
        identity["limits"] = spec["limits"]
    agent_spec = {k: v for k, v in _full(agent or {}).items() if k not in ("model", "notify")}
    if agent is None:
        notes.append(f"Agent {spec.get('agentRef')} is gone: the case runs as the chart's default")
    if spec.get("prompt"):
        agent_spec["prompt"] = spec["prompt"]
    recording: dict[str, Any] = {
        "model": model_entries(status, notes),
        "tools": tool_recordings(status, outputs, notes),
        "decisions": decisions(status),
        "answers": [e.content for e in status.thread if e.type is EventType.ANSWER],
        "agent": agent_spec,
        "agentTools": {
            n: {k: t[k] for k in ("description", "effect", "parameters") if k in t}
            for n, t in sorted(tools.items())
        },
    }
    expected = {
        "tools": [e.tool for e in status.thread if e.type is EventType.TOOL_CALL and e.step > 0],
        "approval": _approval(status),
        "findings": draft_findings(run, status),
        "phase": status.phase.value,
    }
    source = f"{identity['namespace']}/{name} (uid {identity['uid']})"
    head = f"# Exported by `kubectl agentrun export` from run {source}; credentials redacted.\n"
    notes_text = "".join(f"# note: {n}\n" for n in notes)
    review = (
        "# DRAFT: review before committing. `findings` are names the final answer mentions "
        "that the alert\n# or a tool call also named: add what the answer must conclude.\n"
    )
    files = {
        "run.yaml": head + _dump(redact_value(identity)),
        "recording.yaml": head + notes_text + _dump(redact_value(recording)),
        "expected.yaml": head + review + _dump(redact_value(expected)),
    }
    return Case(files=files, notes=notes)
