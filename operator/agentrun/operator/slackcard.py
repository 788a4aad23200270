"""Slack Block Kit cards for a run that needs a human, pure: built from the run's body (a dict,
as the API returns it), shared by the operator (posts and updates them) and the receiver
(replaces a card when its button decided).

- ``approval_card``: the action as the approver must see it (tool, arguments, what it runs
  and under which ServiceAccount, its preconditions and expiry, the evidence so far, the
  run), a Reason field, Approve and Reject buttons carrying the action hash.
- ``input_card``: the question, an answer field and an Answer button.
- ``settled_card``: the same card once the run moved on, buttons gone, saying who decided.
- ``check_limits``: what in a message breaks Slack's documented Block Kit limits.
"""

from __future__ import annotations

import json
from typing import Any

from agentrun.engine import actionview
from agentrun.operator import slacklimits as lim
from agentrun.receiver import slack as ids
from agentrun.text import clip
from agentrun.tool import redaction

check_limits = lim.check

EVIDENCE_ITEMS = 6


def mrkdwn(text: str) -> str:
    """Escapes the three characters Slack's mrkdwn treats as control sequences."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str, limit: int) -> str:
    """An inline code span (a backtick in the value would end it early)."""
    safe = text.replace("`", "'")
    return f"`{mrkdwn(clip(safe, limit))}`"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, lim.SECTION_TEXT)}}


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit), "emoji": True}


def _ref(run: dict[str, Any]) -> tuple[str, str]:
    meta = run.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _context(run: dict[str, Any], extra: str = "") -> dict[str, Any]:
    ns, name = _ref(run)
    status = run.get("status") or {}
    tokens = (status.get("usage") or {}).get("totalTokens", 0)
    agent = (run.get("spec") or {}).get("agentRef", "")
    text = (
        f"agent {agent} · step {status.get('step', 0)} · {tokens} tokens · "
        f"kubectl get agentrun {name} -n {ns}"
    )
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": clip(mrkdwn(text + extra), lim.CONTEXT_TEXT)}],
    }


def _task(run: dict[str, Any]) -> list[dict[str, Any]]:
    spec = run.get("spec") or {}
    # Masked as in the model's request: a credential in the input stays in the spec.
    task = redaction.redact(str((spec.get("input") or {}).get("task") or ""))
    blocks = [section(f"*Task:* {mrkdwn(clip(task, 1000))}")]
    alert = ((spec.get("input") or {}).get("context") or {}).get("alert")
    labels = alert.get("labels") if isinstance(alert, dict) else None
    if isinstance(labels, dict) and labels:
        pairs = redaction.redact_value({str(k): str(v) for k, v in list(labels.items())[:20]})
        shown = ", ".join(f"{k}={v}" for k, v in pairs.items())
        blocks.append(section(f"*Alert:* {code(shown, 1000)}"))
    return blocks


def _evidence(run: dict[str, Any]) -> dict[str, Any] | None:
    """The latest read results the model saw, one short line each."""
    thread = (run.get("status") or {}).get("thread") or []
    results = [e for e in thread if e.get("type") in ("ToolResult", "Error") and e.get("tool")]
    if not results:
        return None
    lines = []
    for event in results[-EVIDENCE_ITEMS:]:
        content = " ".join(str(event.get("content") or "").split())
        mark = ":warning:" if event.get("type") == "Error" else "•"
        lines.append(f"{mark} *{mrkdwn(str(event['tool']))}* (step {event.get('step')}): "
                     f"{mrkdwn(clip(content, 300))}")  # fmt: skip
    return section("*Evidence so far:*\n" + "\n".join(lines))


def _action(pending: dict[str, Any]) -> list[dict[str, Any]]:
    args = mrkdwn(clip(json.dumps(pending.get("arguments") or {}, indent=1, sort_keys=True), 1500))
    rows = [(k, v) for k, v in actionview.action_rows(pending) if k not in ("Tool", "Arguments")]
    scope = "\n".join(f"*{label}:* {code(text, 400)}" for label, text in rows)
    blocks = [section(f"*Proposed action:* {code(str(pending.get('tool')), 200)}\n```{args}```")]
    if scope:
        blocks.append(section(scope))
    return blocks


def _text_input(block_id: str, label: str, placeholder: str, limit: int) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": plain(label, lim.INPUT_LABEL),
        "element": {
            "type": "plain_text_input",
            "action_id": ids.INPUT_ACTION,
            "multiline": True,
            "max_length": limit,
            "placeholder": plain(placeholder, lim.PLACEHOLDER),
        },
    }


def _button(text: str, action_id: str, value: str, style: str = "") -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": plain(text, lim.BUTTON_TEXT),
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def approval_card(run: dict[str, Any]) -> dict[str, Any]:
    """The card asking for a decision on status.pendingAction."""
    ns, name = _ref(run)
    pending = (run.get("status") or {}).get("pendingAction") or {}
    action_hash = str(pending.get("actionHash") or "")
    value = ids.button_value(ns, name, action_hash=action_hash)
    approve = _button("Approve", ids.ACTION_APPROVE, value, "primary")
    approve["confirm"] = {
        "title": plain("Run this write?", lim.CONFIRM_TITLE),
        "text": {
            "type": "mrkdwn",
            "text": clip(
                f"{mrkdwn(str(pending.get('tool')))} runs in {mrkdwn(ns)} as you, "
                f"approving action {action_hash[:12]} of {mrkdwn(name)}.",
                lim.CONFIRM_TEXT,
            ),
        },
        "confirm": plain("Approve", lim.CONFIRM_BUTTON),
        "deny": plain("Cancel", lim.CONFIRM_BUTTON),
    }
    blocks = [
        {"type": "header", "text": plain(f":raised_hand: {ns}/{name} needs approval", lim.HEADER)},
        *_task(run),
        *_action(pending),
    ]
    evidence = _evidence(run)
    if evidence:
        blocks.append(evidence)
    blocks += [
        _text_input(ids.BLOCK_REASON, "Reason (required to reject)", "why not", ids.MAX_REASON),
        {
            "type": "actions",
            "block_id": "agentrun.decide",
            "elements": [approve, _button("Reject", ids.ACTION_REJECT, value, "danger")],
        },
        _context(run, f" · or: {pending.get('approveCommand', '')}"),
    ]
    text = f"AgentRun {ns}/{name} asks to run {pending.get('tool')}; approve or reject in Slack"
    return {"text": clip(text, lim.MESSAGE_TEXT), "blocks": blocks}


def input_card(run: dict[str, Any]) -> dict[str, Any]:
    """The card asking the run's question (request_human_input)."""
    ns, name = _ref(run)
    question = (run.get("status") or {}).get("pendingInput") or {}
    value = ids.button_value(ns, name, step=int(question.get("step") or 0))
    urgency = str(question.get("urgency") or "normal")
    blocks = [
        {"type": "header", "text": plain(f":question: {ns}/{name} has a question", lim.HEADER)},
        *_task(run),
        section(
            f"*Question* ({mrkdwn(urgency)}): {mrkdwn(clip(str(question.get('question')), 1500))}"
        ),
        _text_input(ids.BLOCK_ANSWER, "Your answer", "the run resumes with it", ids.MAX_ANSWER),
        {
            "type": "actions",
            "block_id": "agentrun.respond",
            "elements": [_button("Answer", ids.ACTION_ANSWER, value, "primary")],
        },
        _context(run, f" · or: {question.get('answerCommand', '')}"),
    ]
    text = f"AgentRun {ns}/{name} asks: {clip(str(question.get('question')), 500)}"
    return {"text": clip(text, lim.MESSAGE_TEXT), "blocks": blocks}


_DECIDED = {
    "Approved": ":white_check_mark:",
    "Rejected": ":no_entry_sign:",
    "Answered": ":speech_balloon:",
    "Expired": ":hourglass:",
}


def decided_card(
    run: dict[str, Any], decision: str, user: str, text: str = "", state: str = ""
) -> dict[str, Any]:
    """A card whose buttons are gone: who decided what (and why), and where the run is."""
    ns, name = _ref(run)
    status = run.get("status") or {}
    pending = status.get("pendingAction") or {}
    by = f" by {user}" if user else ""
    title = f"{_DECIDED.get(decision, ':information_source:')} {ns}/{name}: {decision}{by}"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": plain(title, lim.HEADER)}]
    blocks += _task(run)
    if decision == "Answered":
        question = status.get("pendingInput") or {}
        if question:
            blocks.append(
                section(f"*Question:* {mrkdwn(clip(str(question.get('question')), 1500))}")
            )
    elif pending:
        blocks += _action(pending)
    if text:
        label = "Answer" if decision == "Answered" else "Reason"
        blocks.append(section(f"*{label}:* {mrkdwn(clip(text, 1500))}"))
    if state:
        blocks.append(section(mrkdwn(state)))
    blocks.append(_context(run))
    return {"text": clip(title, lim.MESSAGE_TEXT), "blocks": blocks}


def settled_card(run: dict[str, Any], card: str, action_hash: str = "") -> dict[str, Any]:
    """The card as the run moved on (it was `card`: "approval" or "input", for the action of
    `action_hash`), however the human decided (Slack or kubectl), from status.approvals and
    the run's phase. A cancel leaves no record of that action: the card says the phase."""
    status = run.get("status") or {}
    phase = str(status.get("phase") or "")
    approvals = [a for a in status.get("approvals") or [] if a.get("actionHash") == action_hash]
    state = f"The run is {phase} now."
    if card == "input":
        thread = status.get("thread") or []
        answers = [e for e in thread if e.get("type") == "Answer"]
        answer = str(answers[-1].get("content") or "") if answers else ""
        decision = "Answered" if answers else phase
        return decided_card(run, decision, "", answer, state)
    if approvals:
        last = approvals[-1]
        decision = str(last.get("decision") or phase)
        reason = str(last.get("reason") or "") if decision != "Approved" else ""
        when = f" at {last.get('time')}" if last.get("time") else ""
        return decided_card(
            {**run, "status": {**status, "pendingAction": _as_pending(last, status)}},
            decision,
            str(last.get("approver") or ""),
            reason,
            f"Decided{when}. {state}",
        )
    return decided_card(run, phase or "Settled", "", "", state)


def _as_pending(record: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """What the card showed, for a run whose pendingAction is gone: the recorded decision's
    tool and hash (the arguments went with the pending action)."""
    current = status.get("pendingAction") or {}
    if current.get("actionHash") == record.get("actionHash"):
        return dict(current)
    shown: dict[str, Any] = {"tool": record.get("tool"), "actionHash": record.get("actionHash")}
    for event in reversed(status.get("thread") or []):
        same = event.get("step") == record.get("step") and event.get("tool") == record.get("tool")
        if same and event.get("type") == "ToolCall" and event.get("arguments") is not None:
            shown["arguments"] = event["arguments"]
            break
    return shown
