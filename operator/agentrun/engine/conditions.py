"""Conditions are the truth of a run; its phase is derived from them."""

from __future__ import annotations

from agentrun.api import Condition, ConditionStatus, Phase

RUNNING = "Running"
APPROVAL_PENDING = "ApprovalPending"
INPUT_PENDING = "InputPending"
SUCCEEDED = "Succeeded"

# Succeeded=False reasons that mean the run was stopped by a person, not failed.
CANCELLED_REASONS = frozenset({"Cancelled", "Deleted"})


def get(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    cond = get(conditions, type_)
    return cond is not None and cond.status is ConditionStatus.TRUE


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    """Returns the conditions with one set; lastTransitionTime moves only when status does."""
    old = get(conditions, type_)
    since = old.lastTransitionTime if old is not None and old.status is status else now
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=since,
        observedGeneration=generation,
    )
    kept = [c for c in conditions if c.type != type_]
    return sorted([*kept, new], key=lambda c: _ORDER.get(c.type, 99))


_ORDER = {RUNNING: 0, APPROVAL_PENDING: 1, INPUT_PENDING: 2, SUCCEEDED: 3}


def derive_phase(conditions: list[Condition]) -> Phase:
    done = get(conditions, SUCCEEDED)
    if done is not None and done.status is ConditionStatus.TRUE:
        return Phase.SUCCEEDED
    if done is not None and done.status is ConditionStatus.FALSE:
        return Phase.CANCELLED if done.reason in CANCELLED_REASONS else Phase.FAILED
    if is_true(conditions, APPROVAL_PENDING):
        return Phase.AWAITING_APPROVAL
    if is_true(conditions, INPUT_PENDING):
        return Phase.AWAITING_INPUT
    if is_true(conditions, RUNNING):
        return Phase.RUNNING
    return Phase.PENDING
