"""The tools/list digest and the env names the MCP tool Jobs share with the operator.

Standard library only: the operator imports it (to build Jobs and read list results) without
the `mcp` SDK, which only the tool image carries.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SERVER_ENV = "AGENTRUN_MCP_SERVER"
TOOL_ENV = "AGENTRUN_MCP_TOOL"
DIGEST_ENV = "AGENTRUN_MCP_DIGEST"
TIMEOUT_ENV = "AGENTRUN_MCP_TIMEOUT"
HEADER_PREFIX = "AGENTRUN_MCP_HEADER_"
# What of a listed tool reaches the model or decides its effect: the digest covers these.
TOOL_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def tool_entry(tool: dict[str, Any]) -> dict[str, Any]:
    """A listed tool as status keeps it: the fields above that the server set."""
    return {k: tool[k] for k in TOOL_FIELDS if tool.get(k) is not None}


def digest_tools(tools: list[dict[str, Any]]) -> str:
    """sha256 of the list in canonical JSON, sorted by name: the same tools in any order give
    the same digest; any change of a name, description, schema or annotation another."""
    entries = sorted((tool_entry(t) for t in tools), key=lambda t: str(t.get("name", "")))
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
