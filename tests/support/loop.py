"""The adapter loop's test rig: a Runner on the in-memory API (tests.support.fakekube), an
Agent with a read tool `get` and a write tool `fix`, and a model that answers from a script."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s

from agentrun.api import AgentRun
from agentrun.engine.config import Config
from agentrun.engine.core import ModelReply, ModelUnavailable, ToolCall
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
    watched = {
        ("Agent", NS, "sre"): agent(),
        ("AgentTool", NS, "get"): tool("get", "read"),
        ("AgentTool", NS, "fix"): tool("fix", "write"),
    }
    r.observer.cached = lambda kind, ns, name: watched.get((kind, ns, name))
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
