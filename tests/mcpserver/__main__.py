"""MCP servers for the tests, on the official SDK's MCPServer (FastMCP in mcp 1.x).

    python -m tests.mcpserver stdio [--mode MODE]
    python -m tests.mcpserver http --port P [--mode MODE]

Tools: `echo` (annotated readOnlyHint, which agentrun must not trust alone), `add`, and
`wipe` (destructiveHint). Modes make a bad server: `hang` (never answers a request),
`garbage` (stdio: prints lines that are not JSON-RPC, then stops answering), `huge` (echo
answers 5 MB), `changing` (each start lists a new description for `echo`: its tools/list
digest changes between proposal and approval), `marker` (MCP_MARKER_FILE names a file the
`changing` server reads its version from).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations

HUGE_BYTES = 5 * 1024 * 1024


def build(mode: str) -> MCPServer:
    version = ""
    if mode == "changing":
        marker = Path(os.environ.get("MCP_MARKER_FILE", "/tmp/mcp-changing"))
        version = marker.read_text().strip() if marker.exists() else "v1"
    server = MCPServer("agentrun-test")

    @server.tool(
        description=f"Echo a message back{' ' + version if version else ''}.",
        annotations=ToolAnnotations(readOnlyHint=True),
    )
    def echo(message: str) -> str:
        if mode == "hang":
            time.sleep(3600)
        if mode == "huge":
            return "x" * HUGE_BYTES
        return f"echo: {message}"

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(
        description="Delete everything in a namespace.",
        annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False),
    )
    def wipe(namespace: str) -> str:
        marker = os.environ.get("MCP_WIPE_FILE")
        if marker:
            Path(marker).write_text(namespace)
        return f"wiped {namespace}"

    return server


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("transport", choices=["stdio", "http"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", default="ok")
    # A Host (HOST:PORT) to accept besides loopback's, e.g. the real node's address a
    # forwarder brings pods in on; the SDK refuses any other Host (DNS rebinding protection).
    p.add_argument("--allow-host", action="append", default=[])
    args = p.parse_args()
    if args.transport == "stdio" and args.mode == "hang":
        time.sleep(3600)  # never reads its stdin: not even initialize is answered
        return
    if args.transport == "stdio" and args.mode == "garbage":
        for _ in range(5):
            sys.stdout.write("this is not JSON-RPC {{{\n")
        sys.stdout.write('{"jsonrpc": "2.0", "id": "x", "result": 17}\n')
        sys.stdout.flush()
        time.sleep(3600)
        return
    server = build(args.mode)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", *args.allow_host],
        )
        server.run(
            "streamable-http",
            host="127.0.0.1",
            port=args.port,
            stateless_http=True,
            transport_security=security,
        )


if __name__ == "__main__":
    main()
