"""`kubectl agentrun diff RUN_A RUN_B`: where two runs diverge (pure).

A run's actions are read from its thread: a step's first event is the model's answer for
that step (a tool call, the final answer, a question, or an invalid reply). Two runs are
compared step by step from step 1: the first step whose action differs, each side's actions
from there on, the approvals each asked for, the final answers, tokens and model calls.
Works on plain AgentRun dicts, like view.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentrun.api.naming import canonical_json
from agentrun.cli import view

Run = dict[str, Any]


@dataclass(frozen=True)
class Action:
    step: int
    kind: str  # call | done | question | invalid | missing
    text: str  # what it did, one line
    outcome: str = ""  # approved, rejected, failed, ... (not part of the comparison)

    def key(self) -> tuple[str, str]:
        return (self.kind, "" if self.kind in ("done", "invalid") else self.text)


def _line(text: str, limit: int = 100) -> str:
    first = " ".join(str(text).split())
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _outcome(events: list[dict[str, Any]], tool: str) -> str:
    for e in events[1:]:
        kind = e.get("type")
        if kind == "Approval":
            return "approved"
        if kind == "Rejection":
            return "rejected"
        if kind == "Error" and e.get("tool") == tool:
            return "failed"
    return ""


def actions(run: Run) -> list[Action]:
    """The model's action of each step 1..status.step, from the thread."""
    status = run.get("status") or {}
    thread = [e for e in status.get("thread") or [] if isinstance(e, dict)]
    out = []
    for step in range(1, int(status.get("step") or 0) + 1):
        events = [e for e in thread if e.get("step") == step]
        if not events:
            out.append(Action(step, "missing", "(not in the thread: dropped for size)"))
            continue
        first = events[0]
        kind = first.get("type")
        if kind == "ToolCall":
            tool = str(first.get("tool") or "")
            text = f"{tool} {canonical_json(first.get('arguments') or {})}"
            out.append(Action(step, "call", text, _outcome(events, tool)))
        elif kind == "Done":
            out.append(Action(step, "done", "done: " + _line(first.get("content", ""), 80)))
        elif kind == "Question":
            out.append(Action(step, "question", "asks: " + _line(first.get("content", ""), 80)))
        else:
            out.append(Action(step, "invalid", "invalid reply: " + _line(first.get("content", ""))))
    return out


def _name(run: Run) -> str:
    meta = run.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _summary(label: str, run: Run) -> str:
    spec, status = run.get("spec") or {}, run.get("status") or {}
    prompt = status.get("promptRef") or {}
    model = spec.get("model") or "the Agent's"
    ran = f"prompt {prompt.get('name')} v{prompt.get('version')}" if prompt else "no prompt yet"
    return (
        f"{label}: {_name(run)}   {view.phase_of(run)}, step {status.get('step', 0)}; "
        f"agent {spec.get('agentRef', '')}, model {model}, {ran}"
    )


def _relation(a: Run, b: Run) -> str | None:
    for child, parent, x, y in ((b, a, "B", "A"), (a, b, "A", "B")):
        fork = (child.get("spec") or {}).get("forkOf") or {}
        parent_meta = parent.get("metadata") or {}
        if fork and fork.get("uid") == parent_meta.get("uid"):
            at = fork.get("step")
            return f"{x} is a fork of {y} from step {at} (steps 0-{at} inherited)"
    fa = ((a.get("spec") or {}).get("forkOf") or {}).get("uid")
    fb = ((b.get("spec") or {}).get("forkOf") or {}).get("uid")
    if fa and fa == fb:
        return "A and B are forks of the same run"
    return None


def _render_actions(label: str, items: list[Action]) -> list[str]:
    if not items:
        return [f"  {label}: (no more steps)"]
    lines = []
    for i, act in enumerate(items):
        head = f"  {label}: " if i == 0 else "     "
        outcome = f"   [{act.outcome}]" if act.outcome else ""
        lines.append(f"{head}step {act.step:<3} {_line(act.text)}{outcome}")
    return lines


def _approvals(label: str, run: Run) -> list[str]:
    records = [r for r in (run.get("status") or {}).get("approvals") or [] if isinstance(r, dict)]
    pending = (run.get("status") or {}).get("pendingAction")
    lines = [
        f"step {r.get('step', '?')} {r.get('tool', '')} {r.get('decision', '')}"
        + (f": {r['reason']}" if r.get("reason") else "")
        for r in records
    ]
    if isinstance(pending, dict) and pending.get("tool"):
        lines.append(f"step {pending.get('step', '?')} {pending['tool']} waiting")
    return [f"  {label}: {'; '.join(lines) if lines else 'none'}"]


def _answer(label: str, run: Run) -> list[str]:
    result = (run.get("status") or {}).get("result") or {}
    answer = str(result.get("answer") or "")
    if not answer:
        return [f"  {label}: (none; phase {view.phase_of(run)})"]
    first, *rest = answer.strip().splitlines() or [""]
    more = f" [+{len(rest)} lines]" if rest else ""
    return [f"  {label}: {_line(first)}{more}"]


def _usage(label: str, run: Run) -> str:
    u = (run.get("status") or {}).get("usage") or {}
    return (
        f"  {label}: {u.get('totalTokens', 0)} tokens ({u.get('promptTokens', 0)} prompt + "
        f"{u.get('completionTokens', 0)} completion), {u.get('modelCalls', 0)} model calls"
    )


def render_diff(a: Run, b: Run) -> str:
    """The comparison of two runs, as `kubectl agentrun diff` prints it."""
    ours, theirs = actions(a), actions(b)
    out = [_summary("A", a), _summary("B", b)]
    relation = _relation(a, b)
    if relation:
        out.append(relation)
    diverge = next(
        (
            i
            for i in range(max(len(ours), len(theirs)))
            if i >= len(ours) or i >= len(theirs) or ours[i].key() != theirs[i].key()
        ),
        None,
    )
    out.append("")
    if diverge is None:
        out.append(f"Same actions in all {len(ours)} steps.")
    else:
        step = diverge + 1
        same = f"Same actions in steps 1-{step - 1}; " if step > 1 else ""
        out.append(f"{same}first divergence at step {step}:")
        out += _render_actions("A", ours[diverge:])
        out += _render_actions("B", theirs[diverge:])
    out += ["", "Approvals asked:", *_approvals("A", a), *_approvals("B", b)]
    out += ["", "Final answers:", *_answer("A", a), *_answer("B", b)]
    out += ["", "Tokens and model calls:", _usage("A", a), _usage("B", b)]
    return "\n".join(out) + "\n"
