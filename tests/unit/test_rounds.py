"""The runner's adapter loop (Runner.step -> _rounds) against an in-memory API and a scripted
model: the write-ahead rule, the coalesced write of a quick model answer, a 409 decided again
on the same model answer, and a write proposal that waits for approval."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s

from agentrun.api import AgentRun
from agentrun.engine.config import Config
from agentrun.engine.core import Done, ModelReply, ModelUnavailable, ToolCall
from agentrun.llm.model import ModelClient
from agentrun.operator.runner import Runner, Settings
from tests.support.fakekube import FakeKube

NS, RUN = "prod", "r"


class ScriptedModel(ModelClient):
    """Answers each step from a script, counting the calls."""

    def __init__(self, *replies: ModelReply) -> None:
        super().__init__()
        self.replies = list(replies)
        self.calls: list[int] = []

    async def next_action(
        self, run: AgentRun, config: Config, prompt: str, api_key: str | None, step: int
    ) -> ModelReply | ModelUnavailable:
        self.calls.append(step)
        return self.replies.pop(0)


def agent() -> dict[str, Any]:
    spec = {"model": {"name": "m"}, "tools": ["get", "fix"], "prompt": {"name": "sre-agent"}}
    return {"metadata": {"name": "sre", "namespace": NS, "uid": "a"}, "spec": spec}


def tool(name: str, effect: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": name, "resourceVersion": "1"},
        "spec": {"description": "d", "effect": effect},
    }


def run_body() -> dict[str, Any]:
    meta = {"name": RUN, "namespace": NS, "uid": "u", "generation": 1}
    return {"metadata": meta, "spec": {"agentRef": "sre", "input": {"task": "look"}}}


def runner(
    monkeypatch: pytest.MonkeyPatch, fake: FakeKube, model: ModelClient, coalesce: float = 0.25
) -> Runner:
    fake.install(monkeypatch)
    r = Runner(k8s.ApiClient(), model, Settings(coalesce_seconds=coalesce))

    async def cannot_write(namespace: str, service_account: str) -> bool:
        return False

    monkeypatch.setattr(r.access, "can_write", cannot_write)
    r.observe_object("Agent", NS, "sre", agent())
    r.observe_object("AgentTool", NS, "get", tool("get", "read"))
    r.observe_object("AgentTool", NS, "fix", tool("fix", "write"))
    fake.add_run(run_body())
    return r


def step(r: Runner) -> None:
    async def go() -> None:
        await r.step(NS, RUN)
        await asyncio.gather(*r._tasks)  # the Events posted in the background
        r.forget(NS, RUN)  # cancels a wake-up the step left

    asyncio.run(go())


def status(fake: FakeKube) -> dict[str, Any]:
    return dict(fake.runs[(NS, RUN)].get("status") or {})


def read() -> ModelReply:
    return ModelReply(action=ToolCall(tool="get", arguments={}))


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
