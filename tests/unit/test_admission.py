"""Approver authorization, pure: which changes need `approve`, the stamp, the refusal text.

The webhook (handlers.py) asks a SubjectAccessReview for exactly what these functions say;
the runner copies the stamp into status.approvals through core.decide.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest

from agentrun.api import (
    ANNOTATION_ANSWER,
    ANNOTATION_APPROVE,
    ANNOTATION_DECIDED_BY,
    ANNOTATION_REJECT,
    Decision,
)
from agentrun.engine.core import RemoveAnnotations
from agentrun.operator import admission
from agentrun.operator.admission import (
    User,
    access_review,
    decisions_made,
    forged_stamp,
    refusal,
    review_allowed,
    spec_violations,
    spec_warnings,
    stamp,
)
from tests.unit.test_core import (
    annotate,
    awaiting_approval,
    obs,
    of,
    step,
    write_hash,
)

ALICE = User(username="alice", uid="u-1", groups=("sre", "system:authenticated"))


def body(
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    started: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "run", "namespace": "prod", "annotations": dict(annotations or {})},
        "spec": spec or {"agentRef": "sre", "input": {"task": "web is down"}},
        "status": {"startTime": "2025-01-02T03:04:05Z"} if started else {},
    }


# ---------------------------------------------------------------- which changes need `approve`


@pytest.mark.parametrize("key", [ANNOTATION_APPROVE, ANNOTATION_REJECT, ANNOTATION_ANSWER])
def test_adding_a_decision_needs_the_permission(key: str) -> None:
    assert decisions_made(body(), body({key: "x"})) == [key]


def test_changing_a_decision_needs_it_too() -> None:
    old = body({ANNOTATION_APPROVE: "aaa"})
    assert decisions_made(old, body({ANNOTATION_APPROVE: "bbb"})) == [ANNOTATION_APPROVE]


def test_removing_a_decision_does_not() -> None:
    """The operator clears used decisions; a removal approves nothing."""
    old = body({ANNOTATION_APPROVE: "aaa", ANNOTATION_REJECT: "no", ANNOTATION_DECIDED_BY: "bob"})
    assert decisions_made(old, body()) == []
    assert forged_stamp(old, body(), "system:serviceaccount:agentrun:operator") is None


def test_unrelated_changes_and_unchanged_decisions_do_not() -> None:
    old = body({ANNOTATION_APPROVE: "aaa"})
    new = body({ANNOTATION_APPROVE: "aaa", "team": "sre", "kopf.agentrun.dev/x": "{}"})
    assert decisions_made(old, new) == []


def test_a_decision_set_at_creation_needs_the_permission() -> None:
    assert decisions_made(None, body({ANNOTATION_ANSWER: "yes"})) == [ANNOTATION_ANSWER]


# ---------------------------------------------------------------- the stamp


def test_a_decision_is_stamped_with_the_requesting_user() -> None:
    assert stamp(body(), body({ANNOTATION_APPROVE: "aaa"}), "alice") == {
        ANNOTATION_DECIDED_BY: "alice"
    }
    # ... over whatever the request itself claimed.
    claimed = body({ANNOTATION_APPROVE: "aaa", ANNOTATION_DECIDED_BY: "bob"})
    assert stamp(body(), claimed, "alice") == {ANNOTATION_DECIDED_BY: "alice"}
    # Already right: nothing to patch.
    right = body({ANNOTATION_APPROVE: "aaa", ANNOTATION_DECIDED_BY: "alice"})
    assert stamp(body(), right, "alice") == {}


def test_a_stamp_without_a_decision_is_put_back() -> None:
    old = body({ANNOTATION_APPROVE: "aaa", ANNOTATION_DECIDED_BY: "alice"})
    forged = body({ANNOTATION_APPROVE: "aaa", ANNOTATION_DECIDED_BY: "mallory"})
    assert stamp(old, forged, "mallory") == {ANNOTATION_DECIDED_BY: "alice"}
    assert stamp(body(), body({ANNOTATION_DECIDED_BY: "ceo"}), "mallory") == {
        ANNOTATION_DECIDED_BY: None
    }


def test_removing_the_stamp_and_unrelated_changes_are_left_alone() -> None:
    old = body({ANNOTATION_DECIDED_BY: "alice"})
    assert stamp(old, body(), "system:serviceaccount:agentrun:operator") == {}
    assert stamp(old, body({ANNOTATION_DECIDED_BY: "alice", "x": "y"}), "bob") == {}


def test_the_validator_refuses_a_stamp_the_mutator_did_not_set() -> None:
    """Defence in depth: if only the validating webhook is registered, forgery still fails."""
    message = forged_stamp(body(), body({ANNOTATION_DECIDED_BY: "ceo"}), "mallory")
    assert message is not None and "'ceo'" in message and "'mallory'" in message
    own = body({ANNOTATION_APPROVE: "aaa", ANNOTATION_DECIDED_BY: "alice"})
    assert forged_stamp(body(), own, "alice") is None


# ---------------------------------------------------------------- the access review


def test_the_access_review_asks_for_approve_on_this_run_as_this_user() -> None:
    user = User(
        username="alice",
        uid="u-1",
        groups=("sre",),
        extra={"scopes.example.com": ("a", "b")},
    )
    review = access_review(user, "prod", "web-oom")
    assert review["apiVersion"] == "authorization.k8s.io/v1"
    assert review["kind"] == "SubjectAccessReview"
    assert review["spec"] == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["sre"],
        "extra": {"scopes.example.com": ["a", "b"]},
        "resourceAttributes": {
            "namespace": "prod",
            "verb": "approve",
            "group": "agentrun.dev",
            "resource": "agentruns",
            "name": "web-oom",
        },
    }


def test_user_from_the_admission_userinfo() -> None:
    info = {
        "username": "system:serviceaccount:prod:oncall",
        "uid": "9",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:prod"],
        "extra": {"authentication.kubernetes.io/pod-name": ["p"]},
    }
    user = User.from_userinfo(info)
    assert user.username == "system:serviceaccount:prod:oncall"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:prod")
    assert user.extra == {"authentication.kubernetes.io/pod-name": ("p",)}
    assert User.from_userinfo(None).username == ""


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ({"allowed": True}, True),
        ({"allowed": False}, False),
        ({"allowed": True, "denied": True}, False),
        ({}, False),
    ],
)
def test_review_allowed(status: dict[str, Any], allowed: bool) -> None:
    assert review_allowed({"status": status})[0] is allowed


def test_the_refusal_names_the_user_the_namespace_and_the_missing_permission() -> None:
    message = refusal(User(username="alice"), "prod", [ANNOTATION_APPROVE])
    assert message.startswith(
        'user "alice" may not approve agentruns in namespace "prod": '
        'needs verb "approve" on agentruns.agentrun.dev (see the agentrun-approver ClusterRole)'
    )
    assert message.endswith("to set agentrun.dev/approve")
    custom = refusal(ALICE, "prod", [ANNOTATION_REJECT], role="ar-approver", why="no RBAC")
    assert "(see the ar-approver ClusterRole)" in custom
    assert custom.endswith("authorizer: no RBAC")


# ---------------------------------------------------------------- spec of a started run


def test_agent_and_input_cannot_change_after_the_run_started() -> None:
    old = body(started=True)
    new = body(spec={"agentRef": "other", "input": {"task": "something else"}}, started=True)
    problems = spec_violations(old, new)
    assert len(problems) == 2
    assert problems[0].startswith("spec.agentRef cannot change after the run started")
    assert problems[1].startswith("spec.input cannot change after the run started")
    assert "2025-01-02T03:04:05Z" in problems[1]


def test_before_the_start_the_spec_may_still_change() -> None:
    new = body(spec={"agentRef": "other", "input": {"task": "x"}})
    assert spec_violations(body(), new) == []
    assert spec_violations(None, new) == []  # CREATE


def test_cancel_and_limits_stay_allowed_on_a_started_run() -> None:
    old = body(started=True)
    spec = copy.deepcopy(old["spec"])
    cancelled = body(spec={**spec, "cancel": True}, started=True)
    assert spec_violations(old, cancelled) == []
    assert spec_warnings(old, cancelled) == []
    longer = body(spec={**spec, "limits": {"timeoutSeconds": 7200}}, started=True)
    assert spec_violations(old, longer) == []
    assert spec_warnings(old, longer) == [
        "spec.limits changed on a started run: the new limits apply from its next step"
    ]


def test_a_path_without_a_handler_is_refused_not_allowed() -> None:
    request = {"apiVersion": "admission.k8s.io/v1", "request": {"uid": "r-1"}}
    response = admission.unknown_webhook(request, "")
    assert response["response"]["uid"] == "r-1"
    assert response["response"]["allowed"] is False
    assert "/validate-agentrun" in response["response"]["status"]["message"]


# ---------------------------------------------------------------- the approver in the audit


def test_the_approver_is_recorded_with_the_decision_and_the_stamp_consumed() -> None:
    digest = write_hash()
    run = annotate(awaiting_approval(), approve=digest, **{ANNOTATION_DECIDED_BY: "alice"})
    _, status, actions = step(run, obs())
    (record,) = status.approvals
    assert (record.decision, record.approver) == (Decision.APPROVED, "alice")
    assert RemoveAnnotations(
        keys=(ANNOTATION_APPROVE, ANNOTATION_REJECT, ANNOTATION_DECIDED_BY)
    ) in of(actions, RemoveAnnotations)


def test_a_rejection_and_a_mismatch_record_who_decided() -> None:
    run = annotate(awaiting_approval(), reject="not now", **{ANNOTATION_DECIDED_BY: "bob"})
    _, status, _ = step(run, obs())
    assert [(r.decision, r.approver) for r in status.approvals] == [(Decision.REJECTED, "bob")]

    run = annotate(awaiting_approval(), approve="0" * 64, **{ANNOTATION_DECIDED_BY: "carol"})
    _, status, actions = step(run, obs())
    assert [(r.decision, r.approver) for r in status.approvals] == [(Decision.REFUSED, "carol")]
    assert of(actions, RemoveAnnotations) == [
        RemoveAnnotations(keys=(ANNOTATION_APPROVE, ANNOTATION_DECIDED_BY))
    ]


def test_without_the_webhook_the_approver_stays_empty() -> None:
    digest = write_hash()
    _, status, _ = step(annotate(awaiting_approval(), approve=digest), obs())
    assert status.approvals[0].approver == ""


# ---------------------------------------------------------------- structured logs


def test_json_logs_are_one_object_per_line_with_the_run() -> None:
    from agentrun.operator.handlers import JsonFormatter

    record = logging.LogRecord(
        "agentrun.operator.admission", logging.INFO, __file__, 1, "%s ok", ("x",), None
    )
    record.run_namespace, record.run, record.step = "prod", "web-oom", 3
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "x ok" and entry["level"] == "INFO"
    assert entry["logger"] == "agentrun.operator.admission"
    assert (entry["run_namespace"], entry["run"], entry["step"]) == ("prod", "web-oom", 3)
    assert entry["time"].endswith("+00:00")

    kopf_record = logging.LogRecord("kopf.objects", logging.WARNING, __file__, 1, "m", (), None)
    kopf_record.k8s_ref = {"namespace": "prod", "name": "web-oom", "kind": "AgentRun"}
    entry = json.loads(JsonFormatter().format(kopf_record))
    assert (entry["run_namespace"], entry["run"]) == ("prod", "web-oom")
