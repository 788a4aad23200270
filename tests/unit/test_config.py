"""Config validation (engine/config.py): what the adapter fetched, judged without I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from agentrun.api import AgentRun, AgentRunSpec, AgentRunStatus, Effect, PromptRef, RunInput
from agentrun.engine.config import (
    Config,
    ConfigError,
    Fetched,
    PromptFailure,
    Tool,
    prefetch_refused,
    prompt_wanted,
    read_agent,
    read_tool,
    validate,
)
from agentrun.engine.policy import Policy
from agentrun.llm import toolcall

NS = "prod"
PROMPT = PromptRef(name="sre-agent", version="3", sha256="ab" * 32)
POLICY = Policy()


def run(pinned: PromptRef | None = None) -> AgentRun:
    return AgentRun(
        metadata={"name": "r", "namespace": NS, "uid": "u"},
        spec=AgentRunSpec(agentRef="sre", input=RunInput(task="t")),
        status=AgentRunStatus(promptRef=pinned),
    )


def agent(tools: list[str], prefetch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": "m"}, "tools": tools, "prompt": {"name": "sre-agent"}}
    if prefetch is not None:
        spec["prefetch"] = prefetch
    return {"metadata": {"name": "sre"}, "spec": spec}


def tool_body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": "t", "resourceVersion": "1"},
        "spec": {"description": "d", "effect": "read", **spec},
    }


def tool(name: str, **spec: Any) -> Tool | ConfigError:
    return read_tool(
        name,
        tool_body(**spec),
        POLICY,
        check_parameters=toolcall.validator_for,
        reserved=toolcall.BUILTIN_TOOLS,
    )


def fetched(
    agent_body: dict[str, Any] | None,
    tools: Mapping[str, Tool | ConfigError | None] | None = None,
    **kw: Any,
) -> Fetched:
    kw.setdefault("prompt", PROMPT)
    return Fetched(agent=agent_body, tools=tools or {}, **kw)


def test_a_complete_config_is_valid_with_the_snapshots_effects() -> None:
    tools = {"get": tool("get", effect="read"), "fix": tool("fix", effect="write")}
    config = validate(run(), NS, fetched(agent(["get", "fix"]), tools), POLICY)
    assert isinstance(config, Config)
    assert config.prompt == PROMPT
    assert {n: s.effect for n, s in config.snapshots.items()} == {
        "get": Effect.READ,
        "fix": Effect.WRITE,
    }
    assert config.tools["get"].effect is Effect.READ


def test_a_missing_agent_is_an_invalid_spec() -> None:
    assert validate(run(), NS, fetched(None), POLICY) == ConfigError(
        "InvalidSpec", "spec.agentRef: Agent 'sre' not found in namespace 'prod'"
    )


def test_an_agent_that_does_not_parse_is_invalid() -> None:
    bad: dict[str, Any] = {"spec": {"tools": []}}  # no model
    err = validate(run(), NS, fetched(bad), POLICY)
    assert isinstance(err, ConfigError)
    assert err.reason == "InvalidAgent"
    assert err.message.startswith("Agent sre: model:")
    assert read_agent(run(), NS, bad) == err


def test_a_listed_tool_that_does_not_exist_is_an_invalid_agent() -> None:
    err = validate(run(), NS, fetched(agent(["get"]), {"get": None}), POLICY)
    assert err == ConfigError(
        "InvalidAgent",
        "Agent sre: spec.tools lists 'get', but no AgentTool of that name exists in "
        "namespace 'prod'",
    )


@pytest.mark.parametrize(
    ("name", "spec", "reason", "says"),
    [
        ("get", {"timeoutSeconds": "soon"}, "InvalidTool", "AgentTool get: timeoutSeconds:"),
        (
            "get",
            {"parameters": {"type": "array"}},
            "InvalidTool",
            "AgentTool get: spec.parameters is not usable:",
        ),
        ("done", {}, "InvalidTool", "AgentTool 'done': the name is reserved for the agent"),
        ("get", {"image": "evil/x:1"}, "ToolNotAllowed", "AgentTool get: spec.image 'evil/x:1'"),
    ],
)
def test_a_tool_that_cannot_be_used_fails_the_run_with_its_reason(
    name: str, spec: dict[str, Any], reason: str, says: str
) -> None:
    err = validate(run(), NS, fetched(agent([name]), {name: tool(name, **spec)}), POLICY)
    assert isinstance(err, ConfigError)
    assert err.reason == reason
    assert err.message.startswith(says)


def test_the_first_problem_in_the_agents_order_is_reported() -> None:
    tools = {"a": None, "b": tool("b", image="evil/x:1")}
    err = validate(run(), NS, fetched(agent(["b", "a"]), tools), POLICY)
    assert isinstance(err, ConfigError) and err.reason == "ToolNotAllowed"


def test_a_read_tool_whose_service_account_can_write_is_a_write() -> None:
    tools = {"get": tool("get", effect="read")}
    config = validate(run(), NS, fetched(agent(["get"]), tools, writers=frozenset({"get"})), POLICY)
    assert isinstance(config, Config)
    assert config.snapshots["get"].effect is Effect.WRITE
    assert config.tools["get"].effect is Effect.WRITE


def test_prefetch_must_call_a_read_tool_of_the_agent() -> None:
    tools = {"get": tool("get", effect="read"), "fix": tool("fix", effect="write")}
    for called in ("fix", "other"):
        body = agent(["get", "fix"], prefetch=[{"tool": called}])
        err = validate(run(), NS, fetched(body, tools), POLICY)
        assert err == ConfigError(
            "InvalidAgent",
            f"Agent sre: spec.prefetch calls {called!r}, which is not a read tool listed in "
            "spec.tools",
        )
    body = agent(["get"], prefetch=[{"tool": "get"}])
    assert isinstance(validate(run(), NS, fetched(body, tools), POLICY), Config)
    # A read tool that turned out to write is no longer prefetched either.
    err = validate(run(), NS, fetched(body, tools, writers=frozenset({"get"})), POLICY)
    assert isinstance(err, ConfigError) and err.reason == "InvalidAgent"


def test_prefetch_refused_is_the_one_rule() -> None:
    config = validate(run(), NS, fetched(agent(["get"]), {"get": tool("get")}), POLICY)
    assert isinstance(config, Config)
    body = agent(["get"], prefetch=[{"tool": "get"}, {"tool": "nope"}])
    spec = read_agent(run(), NS, body)
    assert not isinstance(spec, ConfigError)
    assert [prefetch_refused(c, config.snapshots) for c in spec.prefetch] == [False, True]


def test_a_prompt_that_cannot_be_loaded_is_an_invalid_agent() -> None:
    problem = PromptFailure("prompt 'sre-agent' not found")
    err = validate(run(), NS, fetched(agent([]), prompt=problem), POLICY)
    assert err == ConfigError(
        "InvalidAgent", "Agent sre: spec.prompt: prompt 'sre-agent' not found"
    )


def test_a_prompt_changed_under_a_running_run_fails_it() -> None:
    pinned = PROMPT.model_copy(update={"sha256": "cd" * 32})
    err = validate(run(pinned), NS, fetched(agent([])), POLICY)
    assert err == ConfigError(
        "PromptChanged",
        "Prompt sre-agent v3 changed during the run (sha256 abababababab... became "
        "abababababab...); publish prompt edits as a new version".replace(
            "(sha256 abababababab...", "(sha256 cdcdcdcdcdcd..."
        ),
    )
    assert isinstance(validate(run(PROMPT), NS, fetched(agent([])), POLICY), Config)


def test_the_prompt_wanted_is_the_pinned_version_once_started() -> None:
    spec = read_agent(run(), NS, agent([]))
    assert not isinstance(spec, ConfigError)
    assert prompt_wanted(run(), spec) == ("sre-agent", None)
    assert prompt_wanted(run(PROMPT), spec) == ("sre-agent", "3")
