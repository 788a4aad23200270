"""A new run held back by the operator's cap on runs in progress (Observations.queued)."""

from __future__ import annotations

from datetime import timedelta

from agentrun.api import ConditionStatus, Phase
from agentrun.engine import conditions as cond
from agentrun.engine.config import ConfigError
from agentrun.engine.core import QUEUED, CallModel, RecordEvent, iso
from tests.unit.test_core import NOW, NOW_S, get_cond, make_run, obs, started, step

WHY = "Waiting to start: 2 runs are in progress"


def test_a_queued_run_stays_pending_and_says_why_without_starting() -> None:
    run, status, actions = step(make_run(), obs(queued=WHY))
    assert status.phase is Phase.PENDING
    assert status.startTime is None  # its timeout counts from its start, not from here
    running = get_cond(status, cond.RUNNING)
    assert (running.status, running.reason, running.message) == (
        ConditionStatus.FALSE,
        QUEUED,
        WHY,
    )
    assert actions == []  # no model call, no Job, no Event, no wake-up: the adapter wakes it

    # Asked again while still queued: nothing changes, so nothing is written.
    _, again, actions = step(run, obs(now=NOW + timedelta(seconds=30), queued=WHY))
    assert again == status and actions == []


def test_a_queued_run_starts_when_let_through() -> None:
    run, _, _ = step(make_run(), obs(queued=WHY))
    later = NOW + timedelta(seconds=45)
    _, status, actions = step(run, obs(now=later))
    assert status.phase is Phase.RUNNING
    assert status.startTime == iso(later)
    assert get_cond(status, cond.RUNNING).reason == "Started"
    assert [a for a in actions if isinstance(a, CallModel | RecordEvent)][-1] == CallModel(step=1)


def test_queued_does_not_hold_back_a_started_run() -> None:
    run = started()
    _, status, actions = step(run, obs(queued=WHY))
    assert status.startTime == NOW_S
    assert get_cond(status, cond.RUNNING).reason == "Started"
    assert CallModel(step=1) in actions


def test_a_queued_run_can_still_be_cancelled_or_fail_its_config() -> None:
    _, status, _ = step(make_run(cancel=True), obs(queued=WHY))
    assert status.phase is Phase.CANCELLED
    bad = ConfigError("AgentNotFound", "Agent sre not found")
    _, status, _ = step(make_run(), obs(config=bad, queued=WHY))
    assert status.phase is Phase.FAILED
    assert get_cond(status, cond.SUCCEEDED).reason == "AgentNotFound"
