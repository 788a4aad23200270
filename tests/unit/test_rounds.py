"""The runner's adapter loop (Runner.step -> _rounds) against an in-memory API and a scripted
model: the write-ahead rule, the coalesced write of a quick model answer, a 409 decided again
on the same model answer, and a write proposal that waits for approval."""

from __future__ import annotations

import asyncio

import pytest

from agentrun.engine.core import Done, ModelReply, ToolCall
from tests.support.fakekube import FakeKube
from tests.support.loop import NS, RUN, ScriptedModel, read, runner, status, step


def test_a_read_step_writes_status_before_creating_its_job_in_the_same_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    step(runner(monkeypatch, fake, ScriptedModel(read())))
    created = [c for c in fake.calls if c.verb == "create_job"]
    assert len(created) == 1
    at = fake.calls.index(created[0])
    write = fake.calls[at - 1]
    assert write.verb == "patch_status"
    assert write.body["currentAction"]["jobRef"] == created[0].name  # recorded before it exists
    assert write.thread == created[0].thread  # right after the write, in its worker thread
    assert status(fake)["currentAction"]["tool"] == "get"


def test_a_quick_model_answer_is_written_with_the_round_that_asked_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    step(runner(monkeypatch, fake, ScriptedModel(read())))
    first = fake.status_writes()[0]
    assert first["phase"] == "Running"
    assert first["currentAction"]["tool"] == "get"  # the answer, in the same PATCH

    # Without the window, the round that asks is written on its own first.
    slow = FakeKube()
    step(runner(monkeypatch, slow, ScriptedModel(read()), coalesce=0))
    writes = slow.status_writes()
    assert "currentAction" not in writes[0]
    assert writes[1]["currentAction"]["tool"] == "get"


def test_events_follow_the_status_write_that_records_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    model = ScriptedModel(ModelReply(action=Done(answer="all good")))
    step(runner(monkeypatch, fake, model))
    assert status(fake)["phase"] == "Succeeded"
    verbs = fake.verbs()
    assert verbs.count("patch_status") == 1  # asked and answered: one write
    assert "event" in verbs
    assert verbs.index("patch_status") < verbs.index("event")


@pytest.mark.parametrize("coalesce", [0.25, 0.0])
def test_a_conflicting_status_write_decides_again_without_asking_the_model_again(
    monkeypatch: pytest.MonkeyPatch, coalesce: float
) -> None:
    fake = FakeKube(interfere=1)
    model = ScriptedModel(read())
    step(runner(monkeypatch, fake, model, coalesce))
    assert "conflict" in fake.verbs()
    assert model.calls == [1]
    assert fake.runs[(NS, RUN)]["metadata"]["labels"] == {"touched": "1"}  # theirs is kept
    assert status(fake)["currentAction"]["tool"] == "get"
    assert [c.verb for c in fake.calls].count("create_job") == 1


def test_a_write_proposal_waits_for_approval_without_a_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    model = ScriptedModel(ModelReply(action=ToolCall(tool="fix", arguments={})))
    step(runner(monkeypatch, fake, model))
    assert status(fake)["phase"] == "AwaitingApproval"
    assert status(fake)["currentAction"]["state"] == "AwaitingApproval"
    assert "create_job" not in fake.verbs()
    assert fake.jobs == {}


def test_a_run_parked_for_approval_keeps_no_body_and_ignores_news_of_old_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    model = ScriptedModel(ModelReply(action=ToolCall(tool="fix", arguments={})))
    r = runner(monkeypatch, fake, model)

    async def go() -> None:
        await r.step(NS, RUN)
        state = r._runs[f"{NS}/{RUN}"]
        assert state.body is None and state.parked  # memory per waiting run stays small
        assert r.awaiting(NS, "fix") == [RUN]  # still known to wait for the tool
        fake.calls.clear()
        # A late event of an earlier Job (its Complete, a TTL deletion): nothing to read.
        await r.step(NS, RUN, for_job="r-s0-000000")
        assert fake.verbs() == []
        # The run's own watch event (an approval) brings its body back and steps it.
        assert r.observe_run(
            fake.runs[(NS, RUN)]
            | {"metadata": {**fake.runs[(NS, RUN)]["metadata"], "resourceVersion": "999"}}
        )
        assert not state.parked and state.body is not None
        r.forget(NS, RUN)

    asyncio.run(go())
