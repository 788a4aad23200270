"""MCP tools as a run's tools (pure): `mcp:SERVER/TOOL` in an Agent's spec.tools, resolved
from the MCPServer's listed tools into the same frozen ToolSnapshot as an AgentTool's.

The snapshot's env names the transport, the tool and the tools/list digest it was proposed
against, so the action hash (which covers the snapshot) pins server, tool, arguments and
digest; the Job's client refuses to call a server whose list has changed since. An MCP tool
is a write unless the MCPServer's readTools (an admin's word) lists it: the server's
readOnlyHint is never trusted alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from pydantic import ValidationError

from agentrun.api import AgentToolSpec, Effect, EnvVar, MCPServer, MCPServerSpec, MCPToolInfo
from agentrun.api.naming import canonical_json, mcp_model_name, parse_mcp_ref
from agentrun.engine.conditions import get as get_condition
from agentrun.engine.config import ConfigError, Tool, field_path
from agentrun.engine.policy import Policy, PolicyError, snapshot
from agentrun.text import clip
from agentrun.tool.mcp_digest import DIGEST_ENV, SERVER_ENV, TIMEOUT_ENV, TOOL_ENV

CALL_BUILTIN = "mcp-call"
LIST_BUILTIN = "mcp-list"
READY = "Ready"
# What a model API accepts as a function name (OpenAI's rule).
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def server_problem(spec: MCPServerSpec, policy: Policy) -> str | None:
    """Why the admin's policy or the spec's shape rules this server out (None: it is fine)."""
    if (spec.stdio is None) == (spec.streamableHttp is None):
        return "spec: set exactly one transport, stdio or streamableHttp"
    if spec.stdio is not None:
        image = spec.stdio.image or policy.tool_image
        if not policy.image_allowed(image):
            return (
                f"spec.stdio.image {image!r} is not in the operator's allowed tool images "
                f"({', '.join([policy.tool_image, *policy.allowed_images])})"
            )
    if spec.streamableHttp is not None and not policy.mcp_url_allowed(spec.streamableHttp.url):
        return (
            f"spec.streamableHttp.url {spec.streamableHttp.url!r} is not under the operator's "
            f"allowed MCP URLs ({', '.join(policy.mcp_urls) or 'none'}); a platform admin sets "
            "them (chart value mcp.allowedURLs)"
        )
    return None


def server_env(spec: MCPServerSpec) -> str:
    """The transport as the Job's client reads it (AGENTRUN_MCP_SERVER)."""
    if spec.stdio is not None:
        env = {e.name: e.value for e in spec.stdio.env}
        return canonical_json({"transport": "stdio", "command": spec.stdio.command, "env": env})
    assert spec.streamableHttp is not None
    return canonical_json({"transport": "streamableHttp", "url": spec.streamableHttp.url})


def client_timeout(spec: MCPServerSpec) -> str:
    """The client gives up a little before the Job's deadline, so it can say why."""
    return str(max(3, spec.timeoutSeconds * 4 // 5))


def list_spec(spec: MCPServerSpec, policy: Policy) -> AgentToolSpec:
    """The tools/list Job's tool: a read, under the server's ServiceAccount when that is a
    read one (else the default read one: listing never runs with write rights)."""
    sa = spec.serviceAccountName
    if sa not in policy.read_service_accounts:
        sa = None
    env = [
        EnvVar(name=SERVER_ENV, value=server_env(spec)),
        EnvVar(name=TIMEOUT_ENV, value=client_timeout(spec)),
    ]
    return AgentToolSpec(
        description="tools/list",
        effect=Effect.READ,
        builtin=LIST_BUILTIN,
        image=spec.stdio.image if spec.stdio is not None else None,
        serviceAccountName=sa,
        env=env,
        timeoutSeconds=spec.timeoutSeconds,
        outputLimitBytes=spec.outputLimitBytes,
        resources=spec.resources,
    )


def _description(server: str, info: MCPToolInfo) -> str:
    hints = info.annotations or {}
    said = " (the server hints it is read-only)" if hints.get("readOnlyHint") is True else ""
    text = (info.description or info.title or "").strip() or f"The {info.name} tool."
    return clip(f"{text} [MCP tool {info.name} of server {server}{said}]", 4000, "...")


def ready_state(server: MCPServer) -> tuple[bool | None, str]:
    """True: listed; False: the server failed its last listing (message says why); None:
    not listed yet (a run waits for it)."""
    ready = get_condition(server.status.conditions, READY)
    if server.status.digest is not None:
        return True, ""
    if ready is None or ready.status.value == "Unknown":
        return None, ""
    return False, f"{ready.reason}: {ready.message}"


def read_mcp_tool(
    listed: str,
    body: dict[str, Any] | None,
    namespace: str,
    policy: Policy,
    *,
    check_parameters: Callable[[dict[str, Any]], object],
    reserved: Collection[str],
) -> Tool | ConfigError | None:
    """An Agent's `mcp:SERVER/TOOL` as a Tool, a ConfigError saying what is wrong, or None
    while its server has not been listed yet."""
    ref = parse_mcp_ref(listed)
    if ref is None:
        return ConfigError(
            "InvalidAgent", f"spec.tools: {listed!r} is not of the form mcp:SERVER/TOOL"
        )
    server_name, tool_name = ref
    name = mcp_model_name(server_name, tool_name)
    if body is None:
        return ConfigError(
            "InvalidAgent",
            f"spec.tools lists {listed!r}, but no MCPServer {server_name!r} exists in "
            f"namespace {namespace!r}",
        )
    try:
        server = MCPServer.model_validate(body)
    except ValidationError as err:
        return ConfigError("InvalidTool", f"MCPServer {server_name}: {field_path(err)}")
    problem = server_problem(server.spec, policy)
    if problem is not None:
        return ConfigError("ToolNotAllowed", f"MCPServer {server_name}: {problem}")
    state, why = ready_state(server)
    if state is None:
        return None
    if state is False:
        return ConfigError("MCPServerNotReady", f"MCPServer {server_name} is not Ready: {why}")
    info = next((t for t in server.status.tools if t.name == tool_name), None)
    if info is None:
        names = ", ".join(t.name for t in server.status.tools[:30]) or "none"
        return ConfigError(
            "InvalidAgent",
            f"spec.tools lists {listed!r}, but MCPServer {server_name} lists no tool "
            f"{tool_name!r} (it lists: {names})",
        )
    if not _MODEL_NAME.match(name) or name in reserved:
        return ConfigError(
            "InvalidAgent",
            f"spec.tools: {listed!r} gives the model the name {name!r}, which a model API "
            "refuses (letters, digits, _ and - only, at most 64 characters)",
        )
    spec = _tool_spec(server, server_name, info)
    try:
        check_parameters(spec.parameters)
    except (TypeError, ValueError, KeyError) as err:
        return ConfigError(
            "InvalidTool",
            f"MCPServer {server_name} tool {tool_name}: inputSchema is not usable: {err}",
        )
    headers = server.spec.streamableHttp.headersSecretRef if server.spec.streamableHttp else None
    try:
        snap = snapshot(name, spec, policy, env_from_secret=headers)
    except PolicyError as err:
        return ConfigError("ToolNotAllowed", f"MCPServer {server_name}: {err}")
    return Tool(spec=spec, snapshot=snap)


def _tool_spec(server: MCPServer, server_name: str, info: MCPToolInfo) -> AgentToolSpec:
    spec = server.spec
    effect = Effect.READ if info.name in spec.readTools else Effect.WRITE
    parameters = dict(info.inputSchema) or {"type": "object", "properties": {}}
    env = [
        EnvVar(name=SERVER_ENV, value=server_env(spec)),
        EnvVar(name=TIMEOUT_ENV, value=client_timeout(spec)),
        EnvVar(name=TOOL_ENV, value=info.name),
        EnvVar(name=DIGEST_ENV, value=server.status.digest or ""),
    ]
    return AgentToolSpec(
        description=_description(server_name, info),
        effect=effect,
        parameters=parameters,
        builtin=CALL_BUILTIN,
        image=spec.stdio.image if spec.stdio is not None else None,
        serviceAccountName=spec.serviceAccountName,
        env=env,
        timeoutSeconds=spec.timeoutSeconds,
        outputLimitBytes=spec.outputLimitBytes,
        resources=spec.resources,
    )
