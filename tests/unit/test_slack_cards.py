"""The Slack cards and their limits: every message agentrun sends fits Slack's documented
Block Kit limits, even for a run whose every text is as long as the API allows; the buttons
carry the hash; the settled card says who decided; the core asks for the update."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from agentrun.api import AgentRun, AgentSpec, NotifyEvent, Phase
from agentrun.engine.core import settles_card
from agentrun.operator import notify, slackcard, slacklimits
from agentrun.receiver import slack

HASH = "ab" * 32


def run_body(phase: str = "AwaitingApproval", long: bool = False) -> dict[str, Any]:
    # As long as the API allows (env values 4096, the task 32768), where it allows that much.
    text = "x<&>`*" * (600 if long else 1)
    thread = [
        {"step": i, "type": "ToolResult", "time": "t", "tool": "k8s-get" * (5 if long else 1),
         "content": text}
        for i in range(40 if long else 2)
    ]  # fmt: skip
    return {
        "metadata": {"name": "r" * (253 if long else 5), "namespace": "n" * (63 if long else 4)},
        "spec": {
            "agentRef": "sre-agent",
            "input": {
                "task": text * (9 if long else 1),
                "context": {"alert": {"labels": {f"l{i}": text for i in range(50 if long else 2)}}},
            },
        },
        "status": {
            "phase": phase,
            "step": 3,
            "usage": {"totalTokens": 10},
            "thread": thread,
            "pendingAction": {
                "step": 3,
                "tool": "rollout-restart",
                "arguments": {"name": text, "many": list(range(500 if long else 1))},
                "actionHash": HASH,
                "requestedTime": "2024-05-01T10:00:00Z",
                "approveCommand": "kubectl annotate agentrun " + text,
                "snapshot": {
                    "builtin": "rollout-restart", "effect": "write", "image": text,
                    "command": [text], "serviceAccountName": "agentrun-tool-write",
                    "env": [{"name": "A", "value": text}], "timeoutSeconds": 30,
                    "outputLimitBytes": 100, "specDigest": "d" * 64,
                },
            },
            "pendingInput": {"step": 3, "question": text, "urgency": "high",
                             "requestedTime": "t", "answerCommand": "kubectl " + text},
            "approvals": [{"step": 3, "tool": "rollout-restart", "actionHash": HASH,
                           "decision": "Rejected", "reason": text, "approver": "a" * 300,
                           "time": "t"}],
        },
    }  # fmt: skip


@pytest.mark.parametrize("long", [False, True])
def test_every_card_fits_slacks_block_kit_limits(long: bool) -> None:
    run = run_body(long=long)
    messages = [
        slackcard.approval_card(run),
        slackcard.input_card(run),
        slackcard.decided_card(run, "Approved", "alice@example.com"),
        slackcard.decided_card(run, "Rejected", "a" * 500, "why" * 2000, "state" * 1000),
        slackcard.settled_card(run, "approval", HASH),
        slackcard.settled_card(run, "input"),
    ]
    model = AgentRun.model_validate(run)
    agent = AgentSpec.model_validate({"model": {"name": "m"}})
    messages += [notify.slack_payload(model, agent, e) for e in NotifyEvent]
    for message in messages:
        assert slacklimits.check(message) == [], json.dumps(message)[:500]


def test_the_check_finds_what_slack_would_refuse() -> None:
    card = slackcard.approval_card(run_body())
    broken = copy.deepcopy(card)
    broken["blocks"][0]["text"]["text"] = "h" * 151
    broken["blocks"] += [{"type": "divider"}] * 50
    actions = next(b for b in broken["blocks"] if b["type"] == "actions")
    actions["elements"][0]["text"]["text"] = "b" * 76
    actions["elements"][0]["value"] = "v" * 2001
    actions["elements"][0]["confirm"]["text"]["text"] = "c" * 301
    broken["blocks"].append({"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}})
    broken["blocks"].append({"type": "video"})
    problems = slacklimits.check(broken)
    for expected in (
        "Slack allows 50",
        "blocks[0].text: 151 characters, Slack allows 150",
        ".text: 76 characters, Slack allows 75",
        ".value: over 2000 characters",
        ".confirm.text: 301 characters, Slack allows 300",
        "3001 characters, Slack allows 3000",
        "unknown block type 'video'",
    ):
        assert any(expected in p for p in problems), (expected, problems)
    assert slacklimits.check({"blocks": []}) == [
        "text: the fallback text is required (notifications, screen readers)"
    ]


def test_the_approval_card_shows_the_action_and_its_buttons_carry_the_hash() -> None:
    card = slackcard.approval_card(run_body())
    text = json.dumps(card)
    for shown in ("rollout-restart", "agentrun-tool-write", "Evidence so far", "k8s-get"):
        assert shown in text
    buttons = next(b for b in card["blocks"] if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == [slack.ACTION_APPROVE, slack.ACTION_REJECT]
    assert {b["value"] for b in buttons} == {slack.button_value("nnnn", "rrrrr", action_hash=HASH)}
    reason = next(b for b in card["blocks"] if b.get("block_id") == slack.BLOCK_REASON)
    assert reason["element"]["action_id"] == slack.INPUT_ACTION
    # Markup in the run's text is escaped, never interpreted.
    assert "<&>" not in text and "&lt;&amp;&gt;" in text


def test_credentials_in_the_run_input_never_reach_a_card() -> None:
    # An alert with a token label, a task with a pasted key: the channel gets neither.
    body = run_body()
    body["spec"]["input"]["task"] = "crash loops; key AKIAABCDEFGHIJKLMNOP leaked"
    body["spec"]["input"]["context"]["alert"]["labels"]["api_token"] = "tok-9f8e7d6c"
    for card in (slackcard.approval_card(body), slackcard.input_card(body)):
        text = json.dumps(card)
        assert "ABCDEFGHIJKLMNOP" not in text and "tok-9f8e7d6c" not in text
        assert "crash loops" in text and "api_token" in text


def test_the_settled_card_has_no_buttons_and_names_the_decider() -> None:
    run = run_body("Running")
    run["status"]["approvals"][0].update(decision="Approved", approver="bob", reason="")
    del run["status"]["pendingAction"]
    call = {"step": 3, "type": "ToolCall", "time": "t", "tool": "rollout-restart"}
    run["status"]["thread"].append({**call, "arguments": {"name": "web"}})
    card = slackcard.settled_card(run, "approval", HASH)
    assert not [b for b in card["blocks"] if b["type"] in ("actions", "input")]
    assert card["blocks"][0]["text"]["text"] == ":white_check_mark: nnnn/rrrrr: Approved by bob"
    texts = [b["text"]["text"] for b in card["blocks"] if b["type"] == "section"]
    assert any('"name": "web"' in t for t in texts) and "The run is Running now." in texts[-1]
    # Cancelled while waiting: an earlier step's approval is not this card's decision.
    run["status"]["phase"] = "Cancelled"
    other = slackcard.settled_card(run, "approval", "cd" * 32)
    assert other["blocks"][0]["text"]["text"] == ":information_source: nnnn/rrrrr: Cancelled"


def test_the_core_asks_for_the_card_update_when_the_run_leaves_a_waiting_phase() -> None:
    app = AgentSpec.model_validate(
        {"model": {"name": "m"}, "notify": {"slackApp": {
            "channel": "C0APPROVALS", "tokenSecretRef": {"name": "slack", "key": "token"}}}}
    )  # fmt: skip
    hook = AgentSpec.model_validate(
        {"model": {"name": "m"}, "notify": {"webhookURL": "https://hooks.slack.com/x"}}
    )
    assert settles_card(app, Phase.AWAITING_APPROVAL, Phase.RUNNING) == "AwaitingApproval"
    assert settles_card(app, Phase.AWAITING_INPUT, Phase.CANCELLED) == "AwaitingInput"
    assert settles_card(app, Phase.AWAITING_APPROVAL, Phase.AWAITING_APPROVAL) == ""
    assert settles_card(app, Phase.RUNNING, Phase.SUCCEEDED) == ""
    assert settles_card(hook, Phase.AWAITING_APPROVAL, Phase.RUNNING) == ""
