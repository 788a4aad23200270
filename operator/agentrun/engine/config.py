"""A run's configuration, validated: the Agent, its AgentTools and the prompt (pure).

The adapter fetches (the Agent, each AgentTool, the prompt file, which ServiceAccounts can
change the namespace); `validate` decides whether that makes a usable Config or which
terminal reason the run fails with: InvalidSpec (no such Agent), InvalidAgent, InvalidTool,
ToolNotAllowed, PromptChanged. The first problem found, in that order, is the one reported.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agentrun.api import (
    AgentRun,
    AgentSpec,
    AgentToolSpec,
    Effect,
    PrefetchCall,
    PromptRef,
    ToolSnapshot,
)
from agentrun.api.naming import offered_name
from agentrun.engine.policy import Policy, PolicyError, snapshot


@dataclass(frozen=True)
class Config:
    """The Agent, its tools and the prompt, resolved for this run. `snapshots` hold what each
    tool runs (admin policy applied; effect never lower than the tool can do): a proposed
    call freezes its tool's snapshot, and the Job is built from that, never from the spec."""

    agent: AgentSpec
    tools: dict[str, AgentToolSpec]
    prompt: PromptRef
    snapshots: dict[str, ToolSnapshot]

    @classmethod
    def of(
        cls,
        agent: AgentSpec,
        tools: dict[str, AgentToolSpec],
        prompt: PromptRef,
        policy: Policy | None = None,
    ) -> Config:
        """Snapshots taken under the given (or the default) policy; the specs' effects are the
        snapshots' own, so the model is told what needs approval."""
        snaps = {n: snapshot(n, t, policy or Policy()) for n, t in tools.items()}
        specs = {n: t.model_copy(update={"effect": snaps[n].effect}) for n, t in tools.items()}
        return cls(agent=agent, tools=specs, prompt=prompt, snapshots=snaps)


@dataclass(frozen=True)
class ConfigError:
    reason: str  # CamelCase, e.g. InvalidSpec
    message: str  # names the field or object at fault


@dataclass(frozen=True)
class Tool:
    """An AgentTool that parsed, with what it runs under the policy (before the write check)."""

    spec: AgentToolSpec
    snapshot: ToolSnapshot


@dataclass(frozen=True)
class PromptFailure:
    """The prompt the Agent names could not be loaded."""

    message: str


@dataclass(frozen=True)
class Fetched:
    """What the adapter read for one run's config.

    `agent`: the Agent object, None when there is none. `tools`: each AgentTool the Agent
    lists, by name, as `read_tool` made it (None: not found). `writers`: the tools whose
    ServiceAccount can change the namespace (checked only for read tools), so they are
    writes. `prompt`: the loaded prompt (the version `prompt_wanted` names), None when the
    Agent did not parse.
    """

    agent: dict[str, Any] | None
    tools: Mapping[str, Tool | ConfigError | None]
    writers: frozenset[str] = frozenset()
    prompt: PromptRef | PromptFailure | None = None
    # MCP tools whose server has not been listed yet: the run waits (no config this time).
    waiting: tuple[str, ...] = ()


def field_path(err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    return f"{path}: {first['msg']}"


def read_agent(
    run: AgentRun, namespace: str, body: dict[str, Any] | None
) -> AgentSpec | ConfigError:
    if body is None:
        return ConfigError(
            "InvalidSpec",
            f"spec.agentRef: Agent {run.spec.agentRef!r} not found in namespace {namespace!r}",
        )
    try:
        agent = AgentSpec.model_validate(body.get("spec", {}))
    except ValidationError as err:
        return ConfigError("InvalidAgent", f"Agent {run.spec.agentRef}: {field_path(err)}")
    return with_overrides(run, agent)


def with_overrides(run: AgentRun, agent: AgentSpec) -> AgentSpec:
    """The Agent as this run uses it: spec.model names another model on the Agent's endpoint
    (its URL and key unchanged, so still under the admin's allow-list), spec.prompt another
    prompt of the operator's (a fork's other prompt or model)."""
    update: dict[str, Any] = {}
    if run.spec.model is not None:
        update["model"] = agent.model.model_copy(update={"name": run.spec.model})
    if run.spec.prompt is not None:
        update["prompt"] = run.spec.prompt
    return agent.model_copy(update=update) if update else agent


def read_tool(
    name: str,
    body: dict[str, Any],
    policy: Policy,
    *,
    check_parameters: Callable[[dict[str, Any]], object],
    reserved: Collection[str],
) -> Tool | ConfigError:
    """One AgentTool: its spec, a usable parameters schema (`check_parameters` raises
    TypeError, ValueError or KeyError if not), a name the agent does not use itself
    (`reserved`), and what it runs under the admin's policy."""
    try:
        spec = AgentToolSpec.model_validate(body.get("spec", {}))
        check_parameters(spec.parameters)
    except ValidationError as err:
        return ConfigError("InvalidTool", f"AgentTool {name}: {field_path(err)}")
    except (TypeError, ValueError, KeyError) as err:
        return ConfigError("InvalidTool", f"AgentTool {name}: spec.parameters is not usable: {err}")
    if name in reserved:
        return ConfigError("InvalidTool", f"AgentTool {name!r}: the name is reserved for the agent")
    try:
        return Tool(spec=spec, snapshot=snapshot(name, spec, policy))
    except PolicyError as err:
        return ConfigError("ToolNotAllowed", f"AgentTool {name}: {err}")


def prompt_wanted(run: AgentRun, agent: AgentSpec) -> tuple[str, str | None]:
    """The prompt to load: the version the run pinned when it started, else the Agent's."""
    pinned = run.status.promptRef
    return agent.prompt.name, pinned.version if pinned else agent.prompt.version


def prefetch_refused(call: PrefetchCall, snapshots: Mapping[str, ToolSnapshot]) -> bool:
    """A prefetch runs before any human looks: only a read tool of the agent may run."""
    snap = snapshots.get(call.tool)
    return snap is None or snap.effect is not Effect.READ


def validate(
    run: AgentRun, namespace: str, fetched: Fetched, policy: Policy
) -> Config | ConfigError:
    """The run's Config, or the first reason it cannot have one."""
    agent = read_agent(run, namespace, fetched.agent)
    if isinstance(agent, ConfigError):
        return agent
    tools: dict[str, AgentToolSpec] = {}
    snaps: dict[str, ToolSnapshot] = {}
    for name in agent.tools:
        tool = fetched.tools.get(name)
        if tool is None and name.startswith("mcp:"):
            return ConfigError(
                "InvalidAgent", f"Agent {run.spec.agentRef}: spec.tools lists {name!r}, unresolved"
            )
        if tool is None:
            return ConfigError(
                "InvalidAgent",
                f"Agent {run.spec.agentRef}: spec.tools lists {name!r}, but no AgentTool "
                f"of that name exists in namespace {namespace!r}",
            )
        if isinstance(tool, ConfigError):
            return tool
        snap = tool.snapshot
        if snap.effect is Effect.READ and name in fetched.writers:
            # Its ServiceAccount can change the namespace: a write, whatever its spec says.
            try:
                snap = snapshot(
                    name,
                    tool.spec,
                    policy,
                    writes=True,
                    env_from_secret=tool.snapshot.envFromSecret,
                )
            except PolicyError as err:
                return ConfigError("ToolNotAllowed", f"AgentTool {name}: {err}")
        key = offered_name(name)  # an MCP tool's mcp:S/T is mcp__S__T to the model
        snaps[key] = snap
        tools[key] = tool.spec.model_copy(update={"effect": snap.effect})
    for call in agent.prefetch:
        if prefetch_refused(call, snaps):
            return ConfigError(
                "InvalidAgent",
                f"Agent {run.spec.agentRef}: spec.prefetch calls {call.tool!r}, which is not "
                "a read tool listed in spec.tools",
            )
    prompt = fetched.prompt
    if prompt is None or isinstance(prompt, PromptFailure):
        problem = prompt.message if prompt is not None else "not loaded"
        return ConfigError("InvalidAgent", f"Agent {run.spec.agentRef}: spec.prompt: {problem}")
    pinned = run.status.promptRef
    if pinned is not None and pinned.sha256 != prompt.sha256:
        return ConfigError(
            "PromptChanged",
            f"Prompt {prompt.name} v{prompt.version} changed during the run "
            f"(sha256 {pinned.sha256[:12]}... became {prompt.sha256[:12]}...); "
            "publish prompt edits as a new version",
        )
    return Config(agent=agent, tools=tools, prompt=prompt, snapshots=snaps)
