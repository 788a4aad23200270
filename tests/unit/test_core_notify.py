"""decide() returns a Notify action when a run enters a phase its Agent's webhook listens for."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from agentrun.api import NotifyEvent, NotifySpec, Phase
from agentrun.engine.core import (
    Action,
    Config,
    InvalidAction,
    ModelUnavailable,
    Notify,
    RequestInput,
    notify_event,
)
from tests.unit.test_core import (
    CONFIG,
    NOW,
    after_reply,
    done,
    make_run,
    obs,
    read_call,
    reply,
    started,
    step,
    write_call,
)


def listening(*on: NotifyEvent, url: str | None = "https://hooks.example/x") -> Config:
    spec = NotifySpec(webhookURL=url, on=list(on) or list(NotifyEvent))
    agent = CONFIG.agent.model_copy(update={"notify": spec})
    return replace(CONFIG, agent=agent)


LISTENING = listening()


def notified(actions: list[Action]) -> list[Notify]:
    return [a for a in actions if isinstance(a, Notify)]


def test_entering_each_listened_phase_notifies_once() -> None:
    run = started(config=LISTENING)
    _, status, actions = after_reply(run, write_call(), config=LISTENING)
    assert status.phase is Phase.AWAITING_APPROVAL
    assert notified(actions) == [Notify(NotifyEvent.AWAITING_APPROVAL)]
    # Still waiting: the phase did not change, nothing is sent again.
    _, _, actions = step(run.model_copy(update={"status": status}), obs(config=LISTENING))
    assert notified(actions) == []

    question = reply(RequestInput(question="May I?"))  # type: ignore[arg-type]
    _, status, actions = after_reply(run, question, config=LISTENING)
    assert status.phase is Phase.AWAITING_INPUT
    assert notified(actions) == [Notify(NotifyEvent.AWAITING_INPUT)]

    _, status, actions = after_reply(run, done(), config=LISTENING)
    assert status.phase is Phase.SUCCEEDED
    assert notified(actions) == [Notify(NotifyEvent.SUCCEEDED)]
    assert actions[-1] == Notify(NotifyEvent.SUCCEEDED)  # after everything else it decided


def test_a_failed_run_notifies_failed() -> None:
    run = started(config=LISTENING)
    _, status, actions = step(run, obs(now=NOW + timedelta(days=1), config=LISTENING))
    assert status.phase is Phase.FAILED
    assert notified(actions) == [Notify(NotifyEvent.FAILED)]
    for _ in range(3):
        run, status, actions = after_reply(run, reply(InvalidAction("bad")), config=LISTENING)
    assert status.phase is Phase.FAILED
    assert notified(actions) == [Notify(NotifyEvent.FAILED)]


def test_nothing_is_notified_without_a_listening_webhook() -> None:
    for config in (CONFIG, listening(NotifyEvent.FAILED), listening(url=None)):
        run = started(config=config)
        _, status, actions = after_reply(run, done(), config=config)
        assert status.phase is Phase.SUCCEEDED
        assert notified(actions) == []


def test_phases_that_are_not_events_notify_nothing() -> None:
    run, status, actions = step(make_run(), obs(config=LISTENING))
    assert status.phase is Phase.RUNNING and notified(actions) == []
    _, status, actions = after_reply(run, read_call(), config=LISTENING)
    assert notified(actions) == []
    _, status, actions = step(make_run(cancel=True), obs(config=LISTENING))
    assert status.phase is Phase.CANCELLED and notified(actions) == []
    _, status, actions = after_reply(run, ModelUnavailable("x"), config=LISTENING)
    assert status.phase is Phase.RUNNING and notified(actions) == []


@pytest.mark.parametrize(
    ("before", "after", "event"),
    [
        (Phase.RUNNING, Phase.AWAITING_APPROVAL, NotifyEvent.AWAITING_APPROVAL),
        (Phase.AWAITING_APPROVAL, Phase.AWAITING_APPROVAL, None),
        (Phase.PENDING, Phase.RUNNING, None),
        (Phase.RUNNING, Phase.CANCELLED, None),
        (None, Phase.FAILED, NotifyEvent.FAILED),
    ],
)
def test_notify_event_is_the_one_rule(
    before: Phase | None, after: Phase, event: NotifyEvent | None
) -> None:
    assert notify_event(LISTENING.agent, before, after) is event
