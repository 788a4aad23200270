"""Slack approvals, pure parts and the endpoint's logic on a fake cluster: the signature,
replays, the click, the user mapping, the approval proxy's stamp, and the decision."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from kubernetes.client.exceptions import ApiException

from agentrun.api import (
    ANNOTATION_APPROVE,
    ANNOTATION_DECIDED_BY,
    ANNOTATION_DECIDED_FOR,
    ANNOTATION_REJECT,
)
from agentrun.operator.admission import acting_user, forged_stamp, stamp
from agentrun.receiver import interact, slack
from agentrun.receiver.routing import SlackConfig
from agentrun.receiver.slack import SlackRefused

# Slack's own worked example ("Verifying requests from Slack").
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
    b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
PROXY = "system:serviceaccount:agentrun-system:agentrun-receiver"
HASH = "ab" * 32


# ---------------------------------------------------------------- signature


def test_slacks_documented_example_verifies() -> None:
    assert slack.signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE
    slack.verify([DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, float(DOC_TIMESTAMP))
    # One of several secrets (a rotation in progress) is enough.
    slack.verify(["old", DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, 1531420618 + 299)


@pytest.mark.parametrize(
    ("secrets", "timestamp", "signature", "body", "now", "code"),
    [
        ([DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY + b"&x=1", 1531420618, "Invalid"),
        (["other"], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, 1531420618, "InvalidSignature"),
        ([], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, 1531420618, "InvalidSignature"),
        ([DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE.upper(), DOC_BODY, 1531420618, "Invalid"),
        ([DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, 1531420618 + 301, "Stale"),
        ([DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, 1531420618 - 301, "Stale"),
        ([DOC_SECRET], None, DOC_SIGNATURE, DOC_BODY, 1531420618, "MissingSignature"),
        ([DOC_SECRET], DOC_TIMESTAMP, None, DOC_BODY, 1531420618, "MissingSignature"),
        ([DOC_SECRET], "yesterday", DOC_SIGNATURE, DOC_BODY, 1531420618, "InvalidTimestamp"),
    ],
)
def test_a_request_not_signed_by_slack_just_now_is_refused(
    secrets: list[str],
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    code: str,
) -> None:
    with pytest.raises(SlackRefused) as err:
        slack.verify(secrets, timestamp, signature, body, now)
    assert err.value.status == 401 and err.value.code.startswith(code)


def test_the_timestamp_is_checked_before_the_signature() -> None:
    # A correctly signed old request says it is old (not merely "invalid").
    with pytest.raises(SlackRefused, match="older than 300s"):
        slack.verify([DOC_SECRET], DOC_TIMESTAMP, DOC_SIGNATURE, DOC_BODY, 1531420618 + 3600)


def test_a_replayed_signature_is_refused_and_forgotten_after_the_window() -> None:
    guard = slack.ReplayGuard()
    guard.check("v0=1", 1000.0)
    guard.check("v0=2", 1000.0)
    with pytest.raises(SlackRefused, match="already received") as err:
        guard.check("v0=1", 1100.0)
    assert err.value.code == "Replayed"
    guard.check("v0=3", 1000.0 + 700)  # prunes what the timestamp check refuses anyway
    assert "v0=1" not in guard._seen


# ---------------------------------------------------------------- the click


def click_body(
    action: str = slack.ACTION_APPROVE,
    user: str = "U0ALICE",
    value: str | None = None,
    state: dict[str, Any] | None = None,
    response_url: str = "https://hooks.slack.com/actions/T1/1/x",
) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "alice", "team_id": "T1"},
        "team": {"id": "T1"},
        "container": {"type": "message", "channel_id": "C1", "message_ts": "1.2"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action,
                "block_id": "agentrun.decide",
                "value": value or slack.button_value("prod", "run-1", action_hash=HASH),
            }
        ],
        "state": {"values": state or {}},
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_a_click_names_the_run_the_hash_and_the_user() -> None:
    click = slack.parse_click(click_body())
    assert (click.action, click.namespace, click.run, click.action_hash) == (
        slack.ACTION_APPROVE,
        "prod",
        "run-1",
        HASH,
    )
    assert (click.slack_user, click.slack_team, click.channel, click.message_ts) == (
        "U0ALICE",
        "T1",
        "C1",
        "1.2",
    )
    reason = {
        slack.BLOCK_REASON: {slack.INPUT_ACTION: {"type": "plain_text_input", "value": " no "}}
    }
    assert slack.parse_click(click_body(slack.ACTION_REJECT, state=reason)).text == "no"


@pytest.mark.parametrize(
    "body",
    [
        b"not a form",
        urlencode({"payload": "{"}).encode(),
        urlencode({"payload": json.dumps({"type": "view_submission"})}).encode(),
        click_body(action="someone.else"),
        click_body(value='{"ns":"prod","run":"run-1"}'),  # no hash: not an agentrun card
        click_body(value='{"ns":"../x","run":"run-1","hash":"ab"}'),
    ],
)
def test_anything_else_is_an_invalid_payload(body: bytes) -> None:
    with pytest.raises(SlackRefused) as err:
        slack.parse_click(body)
    assert (err.value.status, err.value.code) == (400, "InvalidPayload")


# ---------------------------------------------------------------- the mapping

MAPPING = """
users:
  - slackUserID: U0ALICE
    user: alice@example.com
    groups: [sre-oncall]
  - email: Bob@Example.com
    user: bob@example.com
"""


def test_the_mapping_finds_users_by_id_or_email() -> None:
    m = slack.load_mapping(MAPPING, "cm")
    alice = m.by_id("U0ALICE")
    assert alice is not None and (alice.user, alice.groups) == ("alice@example.com", ["sre-oncall"])
    assert m.by_id("U0BOB") is None
    bob = m.by_email("bob@example.com")
    assert bob is not None and bob.user == "bob@example.com" and m.needs_email()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "has no user mapping"),
        ("users: [{user: x}]", "names neither slackUserID nor email"),
        ("users: [{slackUserID: U1, user: x, admin: true}]", "not a valid user mapping"),
        ("users: [{slackUserID: 'lowercase', user: x}]", "not a valid user mapping"),
        (": :", "not a valid user mapping"),
    ],
)
def test_a_bad_mapping_says_what_is_wrong(text: str | None, problem: str) -> None:
    with pytest.raises(slack.MappingError, match=problem):
        slack.load_mapping(text, "ConfigMap x/y")


# ---------------------------------------------------------------- the approval proxy's stamp


def ann(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"annotations": annotations}}


APPROVED_FOR = {ANNOTATION_APPROVE: HASH, ANNOTATION_DECIDED_FOR: "alice@example.com"}


def test_the_proxy_decides_for_the_user_it_names_and_the_annotation_is_consumed() -> None:
    new = {"metadata": {"annotations": APPROVED_FOR}}
    assert acting_user(ann(), new, PROXY, (PROXY,)) == "alice@example.com"
    assert stamp(ann(), new, PROXY, (PROXY,)) == {
        ANNOTATION_DECIDED_BY: "alice@example.com",
        ANNOTATION_DECIDED_FOR: None,
    }
    # After the mutation (and on a reinvocation) the stamp stands and passes validation.
    mutated = ann(**{ANNOTATION_APPROVE: HASH, ANNOTATION_DECIDED_BY: "alice@example.com"})
    assert stamp(ann(), mutated, PROXY, (PROXY,)) == {}
    assert forged_stamp(ann(), mutated, PROXY, (PROXY,)) is None


def test_nobody_else_can_decide_for_someone_else() -> None:
    new = {"metadata": {"annotations": APPROVED_FOR}}
    # Not a configured proxy: stamped with their own name, decided-for left to be refused.
    assert acting_user(ann(), new, "mallory", (PROXY,)) == "mallory"
    assert stamp(ann(), new, "mallory", (PROXY,)) == {ANNOTATION_DECIDED_BY: "mallory"}
    stamped = ann(**{**APPROVED_FOR, ANNOTATION_DECIDED_BY: "mallory"})
    refused = forged_stamp(ann(), stamped, "mallory", (PROXY,))
    assert refused is not None and "decided-for is honoured only" in refused and PROXY in refused
    # With no proxy configured, not even the receiver's ServiceAccount.
    assert acting_user(ann(), new, PROXY, ()) == PROXY
    assert "none configured" in str(forged_stamp(ann(), stamped, PROXY, ()))
    # Writing decided-by directly is refused as before, for anyone but a deciding proxy.
    direct = ann(**{ANNOTATION_APPROVE: HASH, ANNOTATION_DECIDED_BY: "alice@example.com"})
    assert forged_stamp(ann(), direct, "mallory", (PROXY,)) is not None
    assert forged_stamp(ann(), ann(**{ANNOTATION_DECIDED_BY: "x"}), PROXY, (PROXY,)) is not None


def test_the_proxy_without_a_decision_stamps_nothing_and_keeps_nothing() -> None:
    new = ann(**{ANNOTATION_DECIDED_FOR: "alice@example.com"})
    assert stamp(ann(), new, PROXY, (PROXY,)) == {ANNOTATION_DECIDED_FOR: None}


# ---------------------------------------------------------------- the decision, on a fake


class FakeStore:
    def __init__(self, run: dict[str, Any] | None, allowed: bool = True) -> None:
        self.run = run
        self.allowed = allowed
        self.decisions: list[tuple[str, str, dict[str, str | None], str]] = []
        self.reviews: list[dict[str, Any]] = []
        self.mapping: str | None = MAPPING
        self.conflict = False

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.run

    async def decide(
        self, namespace: str, name: str, annotations: dict[str, str | None], version: str
    ) -> None:
        if self.conflict:
            raise ApiException(status=409, reason="Conflict")
        self.decisions.append((namespace, name, annotations, version))

    async def review(self, review: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(review)
        return {**review, "status": {"allowed": self.allowed, "reason": "RBAC: no"}}

    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.mapping is None:
            return None
        return {"data": {"users.yaml": self.mapping}}


def waiting_run(phase: str = "AwaitingApproval") -> dict[str, Any]:
    return {
        "metadata": {"name": "run-1", "namespace": "prod", "resourceVersion": "42"},
        "spec": {"agentRef": "sre-agent", "input": {"task": "web is down"}},
        "status": {
            "phase": phase,
            "step": 3,
            "pendingAction": {
                "step": 3,
                "tool": "rollout-restart",
                "arguments": {"name": "web"},
                "actionHash": HASH,
                "requestedTime": "2024-05-01T10:00:00Z",
                "approveCommand": f"kubectl annotate agentrun run-1 {ANNOTATION_APPROVE}={HASH}",
            },
        },
    }


def handle(store: FakeStore, body: bytes, now: float = 1_700_000_000) -> tuple[int, dict[str, Any]]:
    config = SlackConfig.model_validate({"userMapping": {"namespace": "agentrun-system"}})
    inter = interact.Interactions(config, store, lambda: ["s3cret"], clock=lambda: now)
    inter._respond = lambda click, message: None  # type: ignore[method-assign]
    headers = {
        slack.HEADER_TIMESTAMP: str(int(now)),
        slack.HEADER_SIGNATURE: slack.signature("s3cret", str(int(now)), body),
    }
    return asyncio.run(inter.handle(headers, body))


def test_an_approvers_click_sets_the_hash_bound_approval_for_the_mapped_user() -> None:
    store = FakeStore(waiting_run())
    status, answer = handle(store, click_body())
    assert status == 200 and answer["ok"] and answer["user"] == "alice@example.com"
    assert store.decisions == [
        (
            "prod",
            "run-1",
            {ANNOTATION_APPROVE: HASH, ANNOTATION_DECIDED_FOR: "alice@example.com"},
            "42",
        )
    ]
    spec = store.reviews[0]["spec"]
    assert (spec["user"], spec["groups"]) == ("alice@example.com", ["sre-oncall"])
    assert spec["resourceAttributes"] == {
        "namespace": "prod",
        "verb": "approve",
        "group": "agentrun.dev",
        "resource": "agentruns",
        "name": "run-1",
    }


@pytest.mark.parametrize(
    ("change", "code", "says"),
    [
        ({"allowed": False}, "Forbidden", 'needs verb "approve"'),
        ({"user": "U0NOBODY"}, "UnmappedUser", "is not mapped to a Kubernetes user"),
        ({"mapping": None}, "MappingUnavailable", "does not exist"),
        ({"phase": "Running"}, "StaleCard", "This card is stale"),
        ({"hash": "cd" * 32}, "StaleCard", "no longer pending"),
        ({"run": None}, "StaleCard", "no longer exists"),
        ({"conflict": True}, "StaleCard", "changed while you decided"),
        ({"action": slack.ACTION_REJECT}, "ReasonRequired", "Type a reason"),
    ],
)
def test_a_refused_click_decides_nothing_and_says_why(
    change: dict[str, Any], code: str, says: str
) -> None:
    run = waiting_run(change.get("phase", "AwaitingApproval"))
    store = FakeStore(None if "run" in change else run, allowed=change.get("allowed", True))
    store.conflict = change.get("conflict", False)
    if "mapping" in change:
        store.mapping = change["mapping"]
    value = slack.button_value("prod", "run-1", action_hash=change.get("hash", HASH))
    body = click_body(
        action=change.get("action", slack.ACTION_APPROVE), user=change.get("user", "U0ALICE"),
        value=value,
    )  # fmt: skip
    status, answer = handle(store, body)
    assert (status, answer["ok"], answer["error"]) == (200, False, code)
    assert says in answer["message"]
    assert store.decisions == []


def test_a_reject_carries_the_reason_and_an_answer_the_text() -> None:
    store = FakeStore(waiting_run())
    state = {slack.BLOCK_REASON: {slack.INPUT_ACTION: {"value": "not in peak hours"}}}
    handle(store, click_body(slack.ACTION_REJECT, state=state))
    assert store.decisions[0][2][ANNOTATION_REJECT] == "not in peak hours"

    run = waiting_run("AwaitingInput")
    run["status"]["pendingInput"] = {"step": 3, "question": "ok?", "requestedTime": "t",
                                     "answerCommand": "kubectl ..."}  # fmt: skip
    store = FakeStore(run)
    answer_value = slack.button_value("prod", "run-1", step=3)
    state = {slack.BLOCK_ANSWER: {slack.INPUT_ACTION: {"value": "yes, after 18:00"}}}
    _, answer = handle(store, click_body(slack.ACTION_ANSWER, value=answer_value, state=state))
    assert answer["ok"], answer
    assert store.decisions[0][2]["agentrun.dev/answer"] == "yes, after 18:00"
    stale = slack.button_value("prod", "run-1", step=2)
    _, answer = handle(FakeStore(run), click_body(slack.ACTION_ANSWER, value=stale, state=state))
    assert answer["error"] == "StaleCard"


def test_unverified_requests_never_reach_the_cluster() -> None:
    store = FakeStore(waiting_run())
    config = SlackConfig.model_validate({"userMapping": {"namespace": "agentrun-system"}})
    inter = interact.Interactions(config, store, lambda: ["s3cret"], clock=lambda: 1_700_000_000)
    body = click_body()
    good = {
        slack.HEADER_TIMESTAMP: "1700000000",
        slack.HEADER_SIGNATURE: slack.signature("s3cret", "1700000000", body),
    }
    forged = {**good, slack.HEADER_SIGNATURE: slack.signature("guess", "1700000000", body)}
    for headers in (forged, {}):
        with pytest.raises(SlackRefused):
            asyncio.run(inter.handle(headers, body))
    assert store.reviews == [] and store.decisions == []
