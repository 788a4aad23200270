"""The MCP client inside a tool Job: `agentrun-tool mcp-list` and `agentrun-tool mcp-call`.

It speaks to the server with the official `mcp` SDK (the image's `mcp` extra), never from the
operator: a stdio server is started here, in the Job's own pod, under the tool's
ServiceAccount, for this one call, and exits with it; a Streamable HTTP server is called from
here too. What to reach comes from the Job's env, which the snapshot froze (and the approval
hash covers): AGENTRUN_MCP_SERVER (canonical JSON of the transport), AGENTRUN_MCP_TOOL and
AGENTRUN_MCP_DIGEST (the tools/list digest the call was proposed against; a server whose list
changed since is not called). Headers of an HTTP server come from AGENTRUN_MCP_HEADER_<name>
variables, filled from a Secret by the kubelet. The result goes through the tool runner's
envelope, redaction and output limit like any built-in tool.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agentrun.tool.builtins.common import ToolError
from agentrun.tool.mcp_digest import (
    DIGEST_ENV,
    HEADER_PREFIX,
    SERVER_ENV,
    TIMEOUT_ENV,
    TOOL_ENV,
    digest_tools,
    tool_entry,
)

DEFAULT_TIMEOUT = 50.0
MAX_PAGES = 50
STDERR_TAIL = 1500


def _server() -> dict[str, Any]:
    raw = os.environ.get(SERVER_ENV, "")
    try:
        server = json.loads(raw)
    except ValueError as exc:
        raise ToolError(f"{SERVER_ENV} is not JSON: {exc}") from None
    if not isinstance(server, dict) or server.get("transport") not in ("stdio", "streamableHttp"):
        raise ToolError(f"{SERVER_ENV} names no transport (stdio or streamableHttp)")
    return server


def _timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV, "")))
    except ValueError:
        return DEFAULT_TIMEOUT


def _headers() -> dict[str, str]:
    return {
        k[len(HEADER_PREFIX) :]: v for k, v in os.environ.items() if k.startswith(HEADER_PREFIX)
    }


def _server_env(extra: dict[str, str]) -> dict[str, str]:
    """The stdio server runs in this pod as the tool would: the pod's env (its API address,
    KUBECONFIG on the local node), the server's own settings, never the HTTP headers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(HEADER_PREFIX)}
    return {**env, **extra}


@asynccontextmanager
async def _connect(server: dict[str, Any], errlog: Any) -> AsyncIterator[Any]:
    """A connected SDK client; a stdio server is started here and stopped on exit."""
    from mcp import Client

    if server["transport"] == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        command = [str(c) for c in server.get("command") or []]
        if not command:
            raise ToolError("the stdio server has no command")
        params = StdioServerParameters(
            command=command[0],
            args=command[1:],
            env=_server_env({str(k): str(v) for k, v in (server.get("env") or {}).items()}),
        )
        async with Client(stdio_client(params, errlog=errlog), cache=None) as client:
            yield client
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url = str(server.get("url"))
    async with (
        httpx2.AsyncClient(headers=_headers(), timeout=_timeout()) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as client,
    ):
        yield client


async def _list(client: Any) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += [
            tool_entry(t.model_dump(mode="json", by_alias=True, exclude_none=True))
            for t in page.tools
        ]
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise ToolError(f"tools/list went on past {MAX_PAGES} pages")


def _content(result: Any) -> Any:
    """What the model reads of a tools/call result: its text, structured content if any."""
    texts: list[str] = []
    for item in result.content or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            texts.append(item.text)
        else:
            texts.append(f"[{kind} content omitted]")
    text = "\n".join(texts)
    # A server that returns structured content should also return it as text: the text is
    # what the model reads; the structure only when there is no text.
    structured = getattr(result, "structured_content", None)
    return structured if structured and not text else text


def _stderr_tail(errlog: Any) -> str:
    try:
        errlog.flush()
        errlog.seek(0)
        text = str(errlog.read())
    except (OSError, ValueError):
        return ""
    text = text.strip()[-STDERR_TAIL:]
    return f"; the server's stderr ended with: {text}" if text else ""


async def _run(operation: str, arguments: dict[str, Any]) -> Any:
    server = _server()
    where = server.get("url") if server["transport"] == "streamableHttp" else "stdio"
    timeout = _timeout()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            async with asyncio.timeout(timeout):
                async with _connect(server, errlog) as client:
                    if operation == "list":
                        tools = await _list(client)
                        return {"tools": tools, "digest": digest_tools(tools)}
                    return await _call(client, arguments)
        except ToolError:
            raise
        except TimeoutError:
            raise ToolError(
                f"the MCP server ({where}) gave no valid answer within {timeout:g}s"
                + _stderr_tail(errlog)
            ) from None
        except Exception as exc:  # the SDK's and the transport's errors alike
            cause = _first(exc)
            if isinstance(cause, ToolError):
                raise cause from None
            raise ToolError(
                f"the MCP server ({where}) failed: {_describe(exc)}" + _stderr_tail(errlog)
            ) from None


def _first(exc: BaseException) -> BaseException:
    """An anyio task group's ExceptionGroup: its first cause says what happened."""
    inner = getattr(exc, "exceptions", None)
    return _first(inner[0]) if inner else exc


def _describe(exc: BaseException) -> str:
    cause = _first(exc)
    return f"{type(cause).__name__}: {cause}".strip(": ")


async def _call(client: Any, arguments: dict[str, Any]) -> Any:
    tool = os.environ.get(TOOL_ENV, "")
    if not tool:
        raise ToolError(f"{TOOL_ENV} is not set")
    pinned = os.environ.get(DIGEST_ENV, "")
    if pinned:
        digest = digest_tools(await _list(client))
        if digest != pinned:
            raise ToolError(
                f"the MCP server's tools/list changed since this call was proposed (digest "
                f"{pinned[:12]}... became {digest[:12]}...); {tool} was not called. Propose it "
                "again once the MCPServer's status shows the new list."
            )
    result = await client.call_tool(tool, arguments)
    output = _content(result)
    if getattr(result, "is_error", False):
        raise ToolError(f"{tool}: {output if isinstance(output, str) else json.dumps(output)}")
    return output


def run_list(arguments: dict[str, Any]) -> Any:
    """tools/list of the server in AGENTRUN_MCP_SERVER: {"tools": [...], "digest": ...}."""
    return asyncio.run(_run("list", arguments))


def run_call(arguments: dict[str, Any]) -> Any:
    """tools/call of AGENTRUN_MCP_TOOL with the arguments, after checking the pinned digest."""
    return asyncio.run(_run("call", arguments))
