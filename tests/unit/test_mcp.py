"""MCP tools as run tools (engine.mcp), the lister's reading of a list result, the digest."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.api import AgentRun, AgentRunSpec, AgentRunStatus, Effect, PromptRef, RunInput
from agentrun.api.naming import action_hash, offered_name
from agentrun.engine.config import ConfigError, Fetched, Tool, validate
from agentrun.engine.mcp import read_mcp_tool
from agentrun.engine.policy import Policy
from agentrun.llm import toolcall
from agentrun.operator import jobs
from agentrun.operator.mcpservers import result_status
from agentrun.tool.envelope import Envelope
from agentrun.tool.mcp_digest import DIGEST_ENV, SERVER_ENV, TOOL_ENV, digest_tools

NS = "prod"
POLICY = Policy(mcp_urls=("http://mcp.tools.svc:8080/",))
TOOLS: list[dict[str, Any]] = [
    {
        "name": "pods_list",
        "description": "List pods.",
        "inputSchema": {"type": "object", "properties": {"namespace": {"type": "string"}}},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "pods_delete",
        "description": "Delete a pod.",
        "inputSchema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
            "required": ["name"],
        },
        "annotations": {"readOnlyHint": False, "destructiveHint": True},
    },
]
DIGEST = digest_tools(TOOLS)


def server(
    read_tools: list[str] | None = None,
    *,
    tools: list[dict[str, Any]] | None = None,
    digest: str | None = DIGEST,
    **spec: Any,
) -> dict[str, Any]:
    spec.setdefault("stdio", {"command": ["kubernetes-mcp-server"]})
    status: dict[str, Any] = {"tools": TOOLS if tools is None else tools}
    if digest is not None:
        status["digest"] = digest
    return {
        "metadata": {"name": "kubernetes", "namespace": NS, "generation": 1},
        "spec": {"readTools": read_tools or [], **spec},
        "status": status,
    }


def resolve(listed: str, body: dict[str, Any] | None, policy: Policy = POLICY) -> Any:
    return read_mcp_tool(
        listed,
        body,
        NS,
        policy,
        check_parameters=toolcall.validator_for,
        reserved=toolcall.BUILTIN_TOOLS,
    )


def env(tool: Tool) -> dict[str, str]:
    return {e.name: e.value for e in tool.snapshot.env}


def test_an_mcp_tool_is_a_write_even_when_the_server_hints_read_only() -> None:
    tool = resolve("mcp:kubernetes/pods_list", server())
    assert isinstance(tool, Tool)
    assert tool.snapshot.effect is Effect.WRITE
    assert tool.snapshot.serviceAccountName == "agentrun-tool-write"
    assert "hints it is read-only" in tool.spec.description


def test_an_admin_marks_an_mcp_tool_read() -> None:
    tool = resolve("mcp:kubernetes/pods_list", server(["pods_list"]))
    assert isinstance(tool, Tool)
    assert tool.snapshot.effect is Effect.READ
    assert tool.snapshot.serviceAccountName == "agentrun-tool-read"
    other = resolve("mcp:kubernetes/pods_delete", server(["pods_list"]))
    assert isinstance(other, Tool) and other.snapshot.effect is Effect.WRITE


def test_the_snapshot_pins_server_tool_and_digest_so_the_hash_does() -> None:
    tool = resolve("mcp:kubernetes/pods_delete", server())
    assert isinstance(tool, Tool)
    assert env(tool)[TOOL_ENV] == "pods_delete"
    assert env(tool)[DIGEST_ENV] == DIGEST
    assert '"kubernetes-mcp-server"' in env(tool)[SERVER_ENV]
    assert tool.snapshot.builtin == "mcp-call"
    assert tool.spec.parameters == TOOLS[1]["inputSchema"]
    changed = [*TOOLS[:1], {**TOOLS[1], "description": "Delete a pod (now any pod)."}]
    other = resolve(
        "mcp:kubernetes/pods_delete", server(tools=changed, digest=digest_tools(changed))
    )
    assert isinstance(other, Tool)
    args = {"name": "web-1"}
    assert action_hash("u", 1, "t", args, tool.snapshot.specDigest) != action_hash(
        "u", 1, "t", args, other.snapshot.specDigest
    )
    moved = resolve("mcp:kubernetes/pods_delete", server(stdio={"command": ["other-server"]}))
    assert isinstance(moved, Tool)
    assert moved.snapshot.specDigest != tool.snapshot.specDigest


@pytest.mark.parametrize(
    ("listed", "body", "reason", "words"),
    [
        ("mcp:kubernetes/pods_list", None, "InvalidAgent", "no MCPServer 'kubernetes'"),
        ("mcp:kubernetes/nodes_top", server(), "InvalidAgent", "lists no tool 'nodes_top'"),
        ("mcp:Kube/pods", server(), "InvalidAgent", "mcp:SERVER/TOOL"),
        (
            "mcp:kubernetes/pods_list",
            server(stdio={"command": ["x"], "image": "evil/image:1"}),
            "ToolNotAllowed",
            "allowed tool images",
        ),
        (
            "mcp:kubernetes/pods_list",
            server(stdio=None, streamableHttp={"url": "http://evil.example/mcp"}),
            "ToolNotAllowed",
            "allowed MCP URLs",
        ),
        (
            "mcp:kubernetes/pods_list",
            server(streamableHttp={"url": "http://mcp.tools.svc:8080/mcp"}),
            "ToolNotAllowed",
            "exactly one transport",
        ),
    ],
)
def test_bad_mcp_tools_say_what_is_wrong(
    listed: str, body: dict[str, Any] | None, reason: str, words: str
) -> None:
    got = resolve(listed, body)
    assert isinstance(got, ConfigError)
    assert got.reason == reason
    assert words in got.message


def test_a_server_not_listed_yet_makes_the_run_wait_and_a_failed_one_fails_it() -> None:
    assert resolve("mcp:kubernetes/pods_list", server(tools=[], digest=None)) is None
    failed = server(tools=[], digest=None)
    failed["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "NoAnswer",
            "message": "the MCP server (stdio) gave no valid answer within 8s",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    got = resolve("mcp:kubernetes/pods_list", failed)
    assert isinstance(got, ConfigError) and got.reason == "MCPServerNotReady"
    assert "no valid answer" in got.message


def test_an_http_server_gets_its_headers_from_a_secret_by_the_kubelet() -> None:
    body = server(
        ["pods_list"],
        stdio=None,
        streamableHttp={"url": "http://mcp.tools.svc:8080/mcp", "headersSecretRef": "mcp-auth"},
    )
    tool = resolve("mcp:kubernetes/pods_list", body)
    assert isinstance(tool, Tool)
    assert tool.snapshot.envFromSecret == "mcp-auth"
    job = jobs.build_job(
        run_name="r",
        run_namespace=NS,
        run_uid="u",
        step=1,
        tool_name="mcp__kubernetes__pods_list",
        tool=tool.snapshot,
        arguments={},
        job_name="j",
        action_hash="h",
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [
        {"secretRef": {"name": "mcp-auth"}, "prefix": "AGENTRUN_MCP_HEADER_"}
    ]
    assert container["args"][0] == "mcp-call"
    # A Job found under the name without the Secret (or with another) is not ours.
    forged = {**job, "spec": {**job["spec"]}}
    forged["spec"]["template"] = {
        "spec": {
            **job["spec"]["template"]["spec"],
            "containers": [{**container, "envFrom": [{"secretRef": {"name": "other"}}]}],
        }
    }
    assert "envFrom" in (jobs.job_mismatch(forged, job) or "")


def test_validate_offers_mcp_tools_under_their_model_name() -> None:
    tool = resolve("mcp:kubernetes/pods_list", server(["pods_list"]))
    assert isinstance(tool, Tool)
    run = AgentRun(
        metadata={"name": "r", "namespace": NS, "uid": "u"},
        spec=AgentRunSpec(agentRef="sre", input=RunInput(task="t")),
        status=AgentRunStatus(),
    )
    agent = {
        "metadata": {"name": "sre"},
        "spec": {"model": {"name": "m"}, "tools": ["mcp:kubernetes/pods_list"]},
    }
    prompt = PromptRef(name="sre-agent", version="1", sha256="ab" * 32)
    fetched = Fetched(agent=agent, tools={"mcp:kubernetes/pods_list": tool}, prompt=prompt)
    config = validate(run, NS, fetched, POLICY)
    assert not isinstance(config, ConfigError)
    assert list(config.tools) == ["mcp__kubernetes__pods_list"]
    assert offered_name("mcp:kubernetes/pods_list") == "mcp__kubernetes__pods_list"
    names = [d["function"]["name"] for d in toolcall.tool_definitions(config.tools)]
    assert "mcp__kubernetes__pods_list" in names
    # A read MCP tool whose ServiceAccount can write is a write, like any tool.
    writers = Fetched(
        agent=agent,
        tools={"mcp:kubernetes/pods_list": tool},
        prompt=prompt,
        writers=frozenset({"mcp:kubernetes/pods_list"}),
    )
    config = validate(run, NS, writers, POLICY)
    assert not isinstance(config, ConfigError)
    assert config.snapshots["mcp__kubernetes__pods_list"].effect is Effect.WRITE


def test_the_digest_ignores_order_and_sees_any_change() -> None:
    assert digest_tools(list(reversed(TOOLS))) == DIGEST
    changed = [TOOLS[0], {**TOOLS[1], "annotations": {"readOnlyHint": True}}]
    assert digest_tools(changed) != DIGEST


def test_the_lister_reads_a_list_result_or_says_why_not() -> None:
    ok = Envelope("mcp-list", True, {"tools": TOOLS, "digest": "whatever"})
    listed, reason, message = result_status(ok, "")
    assert listed is not None and reason == "Listed"
    assert listed["digest"] == DIGEST  # recomputed, not the Job's word
    assert [t["name"] for t in listed["tools"]] == ["pods_list", "pods_delete"]
    cases = [
        (
            Envelope(
                "mcp-list", False, None, "the MCP server (stdio) gave no valid answer within 8s"
            ),
            "NoAnswer",
        ),
        (
            Envelope("mcp-list", False, None, "the MCP server (x) failed: ConnectError"),
            "Unreachable",
        ),
        (
            Envelope("mcp-list", True, "x" * 100 + "[truncated by agentrun-tool]", None, True),
            "ListTooLarge",
        ),
        (Envelope("mcp-list", True, {"tools": "nope"}), "InvalidList"),
        (Envelope("mcp-list", True, {"tools": [{"description": "no name"}]}), "InvalidList"),
        (None, "ListFailed"),
    ]
    for envelope, want in cases:
        listed, reason, message = result_status(envelope, "exit code 1")
        assert listed is None and reason == want, (envelope, reason, message)
        assert message
