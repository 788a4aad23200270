"""The one "unknown tool" rule, as the reply parser and the core apply it."""

from __future__ import annotations

from agentrun.engine.offered import unknown_tool
from agentrun.llm.toolcall import BUILTIN_TOOLS

CONFIGURED = ("rollout-restart", "k8s-get")


def test_a_configured_or_built_in_tool_is_known() -> None:
    for name in (*CONFIGURED, *BUILTIN_TOOLS):
        assert unknown_tool(name, CONFIGURED, BUILTIN_TOOLS) is None
    assert unknown_tool("k8s-get", CONFIGURED) is None


def test_the_parser_lists_configured_tools_sorted_then_the_built_ins() -> None:
    assert unknown_tool("kubectl-exec", CONFIGURED, BUILTIN_TOOLS) == (
        "Unknown tool 'kubectl-exec'; allowed tools: k8s-get, rollout-restart, done, "
        "request_human_input."
    )


def test_the_core_which_knows_no_built_ins_points_at_the_offered_list() -> None:
    assert unknown_tool("kubectl-exec", CONFIGURED) == (
        "Unknown tool 'kubectl-exec'; use one of the offered tools."
    )


def test_a_long_or_multiline_name_is_quoted_clipped() -> None:
    message = unknown_tool("x\n" * 100, CONFIGURED, BUILTIN_TOOLS)
    assert message is not None
    assert "\n" not in message
    assert len(message.split(";")[0]) < 90
