"""Conditions are the source of truth of a run; the phase is derived from them."""

from __future__ import annotations

import pytest

from agentrun.api import Condition, ConditionStatus, Phase
from agentrun.engine import conditions as cond

T0 = "2025-01-02T03:04:05Z"
T1 = "2025-01-02T04:00:00Z"
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def c(type_: str, status: ConditionStatus, reason: str = "R", when: str = T0) -> Condition:
    return Condition(type=type_, status=status, reason=reason, lastTransitionTime=when)


def test_set_condition_adds_a_new_condition_with_now_and_generation() -> None:
    out = cond.set_condition([], cond.RUNNING, TRUE, "Started", "Run started", T0, 3)
    assert out == [
        Condition(
            type="Running",
            status=TRUE,
            reason="Started",
            message="Run started",
            lastTransitionTime=T0,
            observedGeneration=3,
        )
    ]


def test_set_condition_keeps_last_transition_time_when_status_does_not_change() -> None:
    before = cond.set_condition([], cond.APPROVAL_PENDING, TRUE, "AwaitingApproval", "a", T0, 1)
    after = cond.set_condition(before, cond.APPROVAL_PENDING, TRUE, "ApprovalMismatch", "b", T1, 2)
    (only,) = after
    assert only.lastTransitionTime == T0  # the status did not transition
    assert (only.reason, only.message, only.observedGeneration) == ("ApprovalMismatch", "b", 2)


def test_set_condition_moves_last_transition_time_when_status_changes() -> None:
    before = cond.set_condition([], cond.APPROVAL_PENDING, TRUE, "AwaitingApproval", "", T0, 1)
    after = cond.set_condition(before, cond.APPROVAL_PENDING, FALSE, "Approved", "", T1, 1)
    assert after[0].status is FALSE
    assert after[0].lastTransitionTime == T1


def test_set_condition_does_not_mutate_its_input_and_keeps_one_per_type() -> None:
    before = [c(cond.RUNNING, TRUE)]
    snapshot = [x.model_copy() for x in before]
    after = cond.set_condition(before, cond.RUNNING, FALSE, "Completed", "", T1, None)
    assert before == snapshot
    assert [x.type for x in after] == [cond.RUNNING]


def test_set_condition_keeps_a_stable_order_running_approval_succeeded_then_others() -> None:
    conds: list[Condition] = []
    for type_ in ("Custom", cond.SUCCEEDED, cond.APPROVAL_PENDING, cond.RUNNING):
        conds = cond.set_condition(conds, type_, TRUE, "R", "", T0, None)
    assert [x.type for x in conds] == ["Running", "ApprovalPending", "Succeeded", "Custom"]


def test_get_and_is_true() -> None:
    conds = [c(cond.RUNNING, TRUE), c(cond.SUCCEEDED, UNKNOWN)]
    assert cond.get(conds, cond.RUNNING) is conds[0]
    assert cond.get(conds, cond.APPROVAL_PENDING) is None
    assert cond.is_true(conds, cond.RUNNING)
    assert not cond.is_true(conds, cond.SUCCEEDED)
    assert not cond.is_true(conds, cond.APPROVAL_PENDING)


@pytest.mark.parametrize(
    ("conds", "phase"),
    [
        ([], Phase.PENDING),
        ([c("Running", FALSE)], Phase.PENDING),
        ([c("Running", TRUE), c("Succeeded", UNKNOWN)], Phase.RUNNING),
        ([c("Running", TRUE), c("ApprovalPending", FALSE)], Phase.RUNNING),
        ([c("Running", TRUE), c("ApprovalPending", TRUE)], Phase.AWAITING_APPROVAL),
        ([c("Running", FALSE), c("Succeeded", TRUE, "Completed")], Phase.SUCCEEDED),
        ([c("Succeeded", FALSE, "TooManyErrors")], Phase.FAILED),
        ([c("Succeeded", FALSE, "Timeout")], Phase.FAILED),
        ([c("Succeeded", FALSE, "InvalidSpec")], Phase.FAILED),
        ([c("Succeeded", FALSE, "Cancelled")], Phase.CANCELLED),
        ([c("Succeeded", FALSE, "Deleted")], Phase.CANCELLED),
        # A terminal Succeeded condition wins over a stale ApprovalPending=True.
        ([c("ApprovalPending", TRUE), c("Succeeded", FALSE, "Timeout")], Phase.FAILED),
        ([c("ApprovalPending", TRUE), c("Succeeded", TRUE, "Completed")], Phase.SUCCEEDED),
    ],
)
def test_derive_phase(conds: list[Condition], phase: Phase) -> None:
    assert cond.derive_phase(conds) is phase
