"""The real ModelClient, through the real openai client, against the scripted HTTP server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from agentrun.api import AgentRun, AgentSpec, AgentToolSpec, Effect, ModelSpec, PromptRef, Usage
from agentrun.core import (
    CallModel,
    Config,
    Done,
    InvalidAction,
    ModelReply,
    ModelUnavailable,
    Observations,
    ToolCall,
    decide,
)
from agentrun.model import ModelClient
from tests.modelserver import ScriptedModelServer

TOOLS = {
    "k8s-get": AgentToolSpec(
        description="Get objects.",
        effect=Effect.READ,
        parameters={
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "namespace": {"type": "string", "default": "default"},
            },
            "required": ["kind"],
            "additionalProperties": False,
        },
    )
}
PROMPT = PromptRef(name="sre-agent", version="1", sha256="0" * 64)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


def config(server: ScriptedModelServer, model: str, **spec: Any) -> Config:
    spec = {"maxRetries": 2, "timeoutSeconds": 5, **spec}
    return Config(
        agent=AgentSpec(model=ModelSpec(name=model, baseURL=server.base_url, **spec)),
        tools=TOOLS,
        prompt=PROMPT,
    )


def make_run(name: str = "web-down") -> AgentRun:
    return AgentRun.model_validate(
        {
            "metadata": {"name": name, "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": {"agentRef": "sre", "input": {"task": "Why is web down?"}},
        }
    )


def ask(
    cfg: Config, steps: list[int], api_key: str | None = None, run: AgentRun | None = None
) -> list[ModelReply | ModelUnavailable]:
    async def go() -> list[ModelReply | ModelUnavailable]:
        client = ModelClient()
        try:
            return [
                await client.next_action(
                    run or make_run(), cfg, "You are {{ run.name }}.", api_key, s
                )
                for s in steps
            ]
        finally:
            await client.close()

    return asyncio.run(go())


def seen(server: ScriptedModelServer, model: str) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["model"] == model]


def test_tool_call_becomes_validated_tool_call(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-tool": [{}, {}, {"tool": "k8s-get", "arguments": {"kind": "Pod"}}]})
    (reply,) = ask(config(server, "m-tool", temperature=0.2), [3])
    assert isinstance(reply, ModelReply)
    assert reply.action == ToolCall("k8s-get", {"kind": "Pod", "namespace": "default"})
    (req,) = seen(server, "m-tool")
    # Headers carried: the run and the step.
    assert (req["run"], req["step"]) == ("shop/web-down", 3)
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    assert req["messages"][0]["content"] == "You are web-down."
    assert [t["function"]["name"] for t in req["tools"]] == [
        "k8s-get",
        "request_human_input",
        "done",
    ]
    assert req["tool_choice"] == "auto"
    assert req["temperature"] == 0.2
    assert req["has_authorization"]  # a placeholder key: local endpoints need none
    # Usage converted from the server's numbers.
    prompt_tokens = sum(len(m["content"]) for m in req["messages"]) // 4
    assert reply.usage.promptTokens == prompt_tokens
    assert reply.usage.totalTokens == prompt_tokens + reply.usage.completionTokens
    assert reply.usage.modelCalls == 1


def test_done_and_script_end(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-done": [{"done": "Root cause: OOM."}]})
    first, past_end = ask(config(server, "m-done"), [1, 2])
    assert isinstance(first, ModelReply) and first.action == Done("Root cause: OOM.")
    assert isinstance(past_end, ModelReply) and isinstance(past_end.action, Done)
    assert "script ended" in past_end.action.answer


def test_bad_replies_become_invalid_actions(server: ScriptedModelServer) -> None:
    server.set_scripts(
        {
            "m-bad": [
                {"raw_tool_calls": [{"name": "k8s-get", "arguments": '{"kind": "Pod"'}]},
                {"tool": "kubectl-exec", "arguments": {}},
                {"raw_tool_calls": [{"name": "k8s-get", "arguments": {"kind": "Pod"}}] * 2},
                {"text": "The pod is probably fine."},
                {"tool": "k8s-get", "arguments": {"kind": "Pod", "verb": "delete"}},
            ]
        }
    )
    replies = ask(config(server, "m-bad"), [1, 2, 3, 4, 5])
    messages = []
    for reply in replies:
        assert isinstance(reply, ModelReply) and isinstance(reply.action, InvalidAction)
        messages.append(reply.action.message)
    assert "not valid JSON" in messages[0]
    assert "Unknown tool 'kubectl-exec'; allowed tools: k8s-get, done" in messages[1]
    assert "Exactly one action per step, got 2" in messages[2]
    assert "no tool call" in messages[3] and "exactly one tool" in messages[3]
    assert "verb: unknown field" in messages[4]
    # One pooled keep-alive connection served all five steps.
    assert len({r["peer"] for r in seen(server, "m-bad")}) == 1


def test_429_twice_then_success_is_retried(server: ScriptedModelServer) -> None:
    entry = {"error": 429, "times": 2, "then": {"tool": "k8s-get", "arguments": {"kind": "Pod"}}}
    server.set_scripts({"m-429": [entry]})
    (reply,) = ask(config(server, "m-429", maxRetries=2), [1])
    assert isinstance(reply, ModelReply) and isinstance(reply.action, ToolCall)
    reqs = seen(server, "m-429")
    assert [r["status"] for r in reqs] == [429, 429, 200]
    assert [r["retry_count"] for r in reqs] == ["0", "1", "2"]
    assert reqs[-1]["answered"] - reqs[0]["received"] < 2  # retry-after-ms honoured


def test_persistent_500_becomes_model_unavailable(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-500": [{"error": 500}]})
    (reply,) = ask(config(server, "m-500", maxRetries=1), [1])
    assert isinstance(reply, ModelUnavailable)
    assert "HTTP 500" in reply.message and "after 1 retries" in reply.message
    assert len(seen(server, "m-500")) == 2


def test_timeout_becomes_model_unavailable(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-slow": [{"delay": 2, "then": {"done": "late"}}]})
    (reply,) = ask(config(server, "m-slow", maxRetries=0, timeoutSeconds=1), [1])
    assert isinstance(reply, ModelUnavailable)
    assert "timed out after 1s" in reply.message


def test_unreachable_endpoint_becomes_model_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config(
        agent=AgentSpec(
            model=ModelSpec(name="m", baseURL=f"http://127.0.0.1:{port}/v1", maxRetries=0)
        ),
        tools=TOOLS,
        prompt=PROMPT,
    )
    (reply,) = ask(cfg, [1])
    assert isinstance(reply, ModelUnavailable)
    assert f"cannot reach 127.0.0.1:{port}" in reply.message


def test_api_key_never_in_the_message(server: ScriptedModelServer) -> None:
    key = "verysecret-123456"
    message = f"Incorrect API key: {key} (sk-proj-ab****************yz12)"
    server.set_scripts({"m-401": [{"error": 401, "message": message}]})
    (reply,) = ask(config(server, "m-401"), [1], api_key=key)
    assert isinstance(reply, ModelUnavailable)
    assert "HTTP 401" in reply.message and "Incorrect API key" in reply.message
    assert "verysecret" not in reply.message and "yz12" not in reply.message
    assert len(seen(server, "m-401")) == 1  # 401 is not retried


def test_usage_is_summed_by_the_core(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-usage": [{"text": "hmm"}, {"text": "still thinking"}]})
    cfg = config(server, "m-usage")
    run = make_run()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    run.status, actions = decide(run, Observations(now=now, config=cfg))
    total = Usage()
    for _ in range(2):
        (call,) = [a for a in actions if isinstance(a, CallModel)]
        (reply,) = ask(cfg, [call.step], run=run)
        assert isinstance(reply, ModelReply)
        total = Usage(
            promptTokens=total.promptTokens + reply.usage.promptTokens,
            completionTokens=total.completionTokens + reply.usage.completionTokens,
            totalTokens=total.totalTokens + reply.usage.totalTokens,
            modelCalls=total.modelCalls + 1,
        )
        run.status, actions = decide(run, Observations(now=now, config=cfg, model=reply))
    assert run.status.usage == total
    assert total.totalTokens > 0 and run.status.step == 2
    # The second request saw the first reply's error in its thread.
    second = seen(server, "m-usage")[-1]
    assert second["step"] == 2
    assert (
        '<error step="1" untrusted="true">Your reply had no tool call'
        in (second["messages"][1]["content"])
    )


def test_clients_are_cached_per_endpoint_config(server: ScriptedModelServer) -> None:
    async def go() -> None:
        client = ModelClient()
        spec = ModelSpec(name="m", baseURL=server.base_url)
        a = client.client(spec, "k1")
        assert client.client(ModelSpec(name="other", baseURL=server.base_url), "k1") is a
        assert client.client(spec, "k2") is not a
        assert client.client(spec.model_copy(update={"maxRetries": 0}), "k1") is not a
        await client.close()

    asyncio.run(go())
