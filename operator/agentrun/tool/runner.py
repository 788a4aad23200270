"""agentrun-tool: runs one built-in tool and prints one JSON result envelope as its last line.

Exit 0 whenever the tool ran, even when it reports ok=false (a missing object is a result the
model should see); non-zero only for a usage error or a crash, still with an envelope.
Diagnostics go to stderr: stdout carries nothing but the envelope. With TRACEPARENT and an
OTLP endpoint in its environment (the operator's tracing is on) it also sends one span of its
own under the run's execute_tool span; otherwise nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from agentrun.tool.envelope import Envelope

DEFAULT_OUTPUT_LIMIT = 256 * 1024
MIN_OUTPUT_LIMIT = 1024
EXIT_USAGE, EXIT_CRASH = 2, 1
MCP_LIST, MCP_CALL = "mcp-list", "mcp-call"
MCP_TOOLS = (MCP_LIST, MCP_CALL)
SPAN_EXPORT_TIMEOUT = 3.0  # seconds, unless OTEL_EXPORTER_OTLP_TIMEOUT says otherwise
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


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


def outcome(envelope: Envelope, code: int) -> str:
    if code == EXIT_USAGE:
        return "usage_error"
    if code != 0:
        return "crashed"
    return "succeeded" if envelope.ok else "failed"


def send_span(
    envelope: Envelope,
    code: int,
    line: bytes,
    times: tuple[datetime, datetime],
    env: Mapping[str, str] | None = None,
) -> bool:
    """The tool's own span, a child of TRACEPARENT (its execute_tool span), sent before the
    process exits; False (and nothing imported) unless the pod was given an endpoint. The
    output itself is recorded only with the content opt-in, and then as redacted as the
    envelope is. Tracing never fails the tool."""
    env = os.environ if env is None else env
    if not env.get("TRACEPARENT") or not any(env.get(k) for k in _ENDPOINTS):
        return False
    from agentrun import otel

    ids = otel.parse_traceparent(env["TRACEPARENT"])
    if ids is None:
        print("agentrun-tool: TRACEPARENT is not a W3C traceparent; no span", file=sys.stderr)
        return False
    ok = outcome(envelope, code)
    attrs: dict[str, otel.Attr] = {
        "gen_ai.tool.name": envelope.tool,
        "agentrun.tool.outcome": ok,
        "agentrun.tool.output_bytes": len(line),
        "agentrun.tool.truncated": envelope.truncated,
        "agentrun.run.name": env.get("AGENTRUN_RUN", ""),
        "agentrun.run.namespace": env.get("AGENTRUN_NAMESPACE", ""),
    }
    if env.get("AGENTRUN_STEP", "").isdigit():
        attrs["agentrun.step"] = int(env["AGENTRUN_STEP"])
    error = None if ok == "succeeded" else ok
    if otel.capture_content(env):
        from agentrun.text import clip
        from agentrun.tool.redaction import redact

        attrs["gen_ai.tool.call.result"] = clip(redact(line.decode()), otel.CONTENT_LIMIT)
        if error is not None and envelope.error:
            error = clip(redact(envelope.error), 500)
    span = otel.Span(
        name=f"agentrun-tool {envelope.tool}",
        trace_id=ids[0],
        parent=ids[1],
        start=times[0],
        end=times[1],
        attributes=attrs,
        error=error,
    )
    try:
        tracer = otel.setup(otel.TOOL_SERVICE, env, batch=False, timeout=SPAN_EXPORT_TIMEOUT)
        if tracer is None:
            return False
        tracer.emit(span)
        tracer.shutdown()
    except Exception as exc:
        print(f"agentrun-tool: span not sent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    began = datetime.now(UTC)
    # Whatever a tool or library prints goes to stderr: stdout is the envelope alone.
    with contextlib.redirect_stdout(sys.stderr):
        envelope, code = execute(sys.argv[1:] if argv is None else argv)
    if envelope.error:
        print(f"agentrun-tool: {envelope.error}", file=sys.stderr)
    sys.stderr.flush()
    line = render(envelope, output_limit())
    out = sys.stdout.buffer
    out.write(line + b"\n")
    out.flush()
    # After the envelope: a slow collector delays the pod's exit, never the result.
    with contextlib.redirect_stdout(sys.stderr):
        send_span(envelope, code, line, (began, datetime.now(UTC)))
    return code


if __name__ == "__main__":
    sys.exit(main())
