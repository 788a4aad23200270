"""agentrun-tool: runs one built-in tool and prints one JSON result envelope as its last line.

Exit 0 whenever the tool ran, even when it reports ok=false (a missing object is a result the
model should see); non-zero only for a usage error or a crash, still with an envelope.
Diagnostics go to stderr: stdout carries nothing but the envelope.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from agentrun.tool.envelope import Envelope

DEFAULT_OUTPUT_LIMIT = 256 * 1024
MIN_OUTPUT_LIMIT = 1024
EXIT_USAGE, EXIT_CRASH = 2, 1
MCP_LIST, MCP_CALL = "mcp-list", "mcp-call"
MCP_TOOLS = (MCP_LIST, MCP_CALL)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage()}".strip())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or "printed help")  # --help: still end with an envelope


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="agentrun-tool", description="Run a built-in agentrun tool.")
    p.add_argument("tool", help="built-in tool name, e.g. k8s-get")
    p.add_argument("arguments", nargs="?", help="the tool's arguments as a JSON object")
    p.add_argument("--arguments-file", metavar="PATH", help="read the JSON arguments from PATH")
    return p


def output_limit() -> int:
    try:
        return max(MIN_OUTPUT_LIMIT, int(os.environ.get("AGENTRUN_OUTPUT_LIMIT", "")))
    except ValueError:
        return DEFAULT_OUTPUT_LIMIT


def _line(env: Envelope) -> bytes:
    return json.dumps(env.to_dict(), ensure_ascii=False, default=str).encode()


def render(env: Envelope, limit: int) -> bytes:
    """The envelope as one line of at most limit bytes; a cut output says so, never silently."""
    line = _line(env)
    if len(line) <= limit:
        return line
    text = env.output if isinstance(env.output, str) else json.dumps(env.output, default=str)
    size = len(text.encode())
    budget = limit - len(_line(Envelope(env.tool, env.ok, "", env.error, True))) - 200
    while True:
        note = (
            f"\n[truncated by agentrun-tool: the output was {size} bytes, over the "
            f"{limit}-byte limit; ask for less (a name, a labelSelector, a namespace)]"
        )
        cut = text.encode()[: max(0, budget)].decode(errors="ignore")
        line = _line(Envelope(env.tool, env.ok, cut + note, env.error, True))
        if len(line) <= limit or budget <= 0:
            return line
        budget -= len(line) - limit + 64  # JSON escaping grew the text; shrink and retry


def _arguments(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.arguments is not None and ns.arguments_file:
        raise UsageError("pass the arguments inline or with --arguments-file, not both")
    if ns.arguments_file:
        try:
            with open(ns.arguments_file, encoding="utf-8") as f:
                raw = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read --arguments-file: {exc}") from exc
    else:
        raw = ns.arguments if ns.arguments is not None else "{}"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"arguments are not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UsageError("arguments must be a JSON object")
    return value


def _mcp_tool(name: str) -> Callable[[dict[str, Any]], Any] | None:
    """The MCP client's operations; imported only for them (the `mcp` SDK is an extra)."""
    if name not in MCP_TOOLS:
        return None
    from agentrun.tool import mcp_client

    return mcp_client.run_list if name == MCP_LIST else mcp_client.run_call


def execute(argv: list[str]) -> tuple[Envelope, int]:
    """Runs the tool named in argv; never raises."""
    tool = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        ns = _parser().parse_args(argv)
        tool = ns.tool
        arguments = _arguments(ns)
        from agentrun.tool.builtins import REGISTRY, ToolError
        from agentrun.tool.builtins.common import redact, redact_value

        fn = REGISTRY.get(tool) or _mcp_tool(tool)
        if fn is None:
            raise UsageError(f"unknown tool {tool!r}; built-in tools: {sorted(REGISTRY)}")
        # Credentials that show up in logs, messages or annotations are masked here, before
        # the output leaves the Job (the operator masks again: custom tools skip this).
        try:
            return Envelope(tool, True, redact_value(fn(arguments))), 0
        except ToolError as exc:
            return Envelope(tool, False, None, redact(str(exc))), 0
    except UsageError as exc:
        return Envelope(tool, False, None, f"usage error: {exc}"), EXIT_USAGE
    except Exception as exc:  # a crash: still an envelope, the trace to stderr
        traceback.print_exc(file=sys.stderr)
        return Envelope(tool, False, None, f"tool crashed: {type(exc).__name__}: {exc}"), EXIT_CRASH


def main(argv: list[str] | None = None) -> int:
    # Whatever a tool or library prints goes to stderr: stdout is the envelope alone.
    with contextlib.redirect_stdout(sys.stderr):
        envelope, code = execute(sys.argv[1:] if argv is None else argv)
    if envelope.error:
        print(f"agentrun-tool: {envelope.error}", file=sys.stderr)
    sys.stderr.flush()
    out = sys.stdout.buffer
    out.write(render(envelope, output_limit()) + b"\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
