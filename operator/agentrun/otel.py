"""OpenTelemetry traces: off unless the standard OTEL_* variables ask for them.

A thin adapter over the SDK, shared by the operator, the receiver and the tool runner. With
tracing off nothing of OpenTelemetry is imported and every call site skips on `None`: no
exporter, no cost. On, spans are sent over OTLP/HTTP (protobuf) as configured by the SDK's
own variables (OTEL_EXPORTER_OTLP_ENDPOINT / _TRACES_ENDPOINT, _HEADERS, _TIMEOUT,
_CERTIFICATE, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*).

A run lives longer than any one process (restarts, many reconciles), so its spans are made
whole after the fact, with explicit start and end times, and with ids chosen by the caller
where other spans point at them (naming.trace_id / naming.span_id): `Span` records the
pure code builds, `Tracer.emit` sends them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("agentrun.otel")

# The GenAI semantic conventions' opt-in for prompt and tool content (off: not recorded).
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONTENT_LIMIT = 4096  # characters of one content attribute, after redaction

Attr = str | bool | int | float | Sequence[str]
_TRACES_TIMEOUT = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: Mapping[str, Attr] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """A finished span, as the pure code describes it (hex ids, wall-clock times)."""

    name: str
    trace_id: str
    start: datetime
    end: datetime
    parent: str | None = None  # span id; None: a root span
    span_id: str | None = None  # None: a random one
    kind: str = "internal"  # internal | client | server
    attributes: Mapping[str, Attr] = field(default_factory=dict)
    error: str | None = None  # the status description of a failed span
    links: Sequence[Link] = ()


def why_off(env: Mapping[str, str]) -> str | None:
    """None when the environment asks for traces; else why they are off (for the log)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "OTEL_SDK_DISABLED=true"
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return "OTEL_TRACES_EXPORTER=none"
    if exporter not in ("", "otlp", "console"):
        return f"OTEL_TRACES_EXPORTER={exporter} is not supported (otlp or console)"
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint and exporter != "console":
        return "no OTEL_EXPORTER_OTLP_ENDPOINT"
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if exporter != "console" and protocol.strip() != "http/protobuf":
        return f"OTLP protocol {protocol} is not supported (http/protobuf, port 4318)"
    return None


# The exporter's settings a tool pod gets from the operator (RunTracer.tool_env). Not the
# headers (often a token: a Job's env is readable by whoever reads Jobs, and by tools that
# list them) nor certificate files (not mounted in the pod): a collector that needs either
# gets no spans from inside tools.
_POD_ENV = re.compile(
    r"OTEL_EXPORTER_OTLP_(TRACES_)?(ENDPOINT|PROTOCOL|TIMEOUT|COMPRESSION)"
    r"|OTEL_RESOURCE_ATTRIBUTES|" + CAPTURE_CONTENT_ENV
)
TOOL_SERVICE = "agentrun-tool"


def pod_env(env: Mapping[str, str]) -> dict[str, str]:
    """What a tool's pod needs to send its own span where the operator sends its spans."""
    out = {k: v for k, v in sorted(env.items()) if _POD_ENV.fullmatch(k) and v}
    return {**out, "OTEL_SERVICE_NAME": TOOL_SERVICE} if out else {}


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a W3C traceparent (version 00); None when it is not one."""
    m = _TRACEPARENT.fullmatch((value or "").strip().lower())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(1), m.group(2)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def capture_content(env: Mapping[str, str]) -> bool:
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def setup(
    service: str,
    env: Mapping[str, str] | None = None,
    batch: bool = True,
    timeout: float | None = None,
) -> Tracer | None:
    """The tracer the environment asks for, or None (nothing imported, nothing exported).
    `batch=False` sends each span as it ends (a short-lived process); `timeout` (seconds)
    bounds an export when the environment does not."""
    env = os.environ if env is None else env
    off = why_off(env)
    if off is not None:
        log.debug("Tracing off: %s", off)
        return None
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    exporter: Any
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # It reads OTEL_EXPORTER_OTLP_* itself.
        timed = any(k in env for k in ("OTEL_EXPORTER_OTLP_TIMEOUT", _TRACES_TIMEOUT))
        exporter = OTLPSpanExporter(timeout=None if timed else timeout)
    # OTEL_SERVICE_NAME or service.name in OTEL_RESOURCE_ATTRIBUTES wins over the default.
    named = bool(env.get("OTEL_SERVICE_NAME")) or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    tracer = build(None if named else service, exporter, capture_content(env), batch)
    log.info("Tracing on: spans of %s exported over OTLP/HTTP", service)
    return tracer


def build(service: str | None, exporter: Any, content: bool, batch: bool = True) -> Tracer:
    """A tracer sending to `exporter` (batched, as in production; unbatched in tests)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({SERVICE_NAME: service} if service else {})
    provider = TracerProvider(resource=resource, id_generator=_ids())
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return Tracer(provider, content)


# Ids the next span takes instead of random ones (see _ids): set only around one start_span.
_FORCED: ContextVar[tuple[int, int] | None] = ContextVar("agentrun_otel_forced", default=None)


def _ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ChosenIds(RandomIdGenerator):
        """Random ids, except for a span whose ids others already point at."""

        def generate_span_id(self) -> int:
            forced = _FORCED.get()
            return forced[1] if forced and forced[1] else super().generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _FORCED.get()
            return forced[0] if forced else super().generate_trace_id()

    return ChosenIds()


class Tracer:
    def __init__(self, provider: TracerProvider, content: bool) -> None:
        self.provider = provider
        self.content = content  # prompt and tool content recorded (redacted)
        self._tracer = provider.get_tracer("agentrun")

    def emit(self, span: Span) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            Status,
            StatusCode,
            TraceFlags,
        )

        def context_of(trace_id: str, span_id: str) -> SpanContext:
            return SpanContext(
                int(trace_id, 16),
                int(span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )

        parent = None
        if span.parent:
            parent = trace.set_span_in_context(
                NonRecordingSpan(context_of(span.trace_id, span.parent))
            )
        links = [
            trace.Link(context_of(x.trace_id, x.span_id), dict(x.attributes)) for x in span.links
        ]
        token = _FORCED.set((int(span.trace_id, 16), int(span.span_id or "0", 16)))
        try:
            made = self._tracer.start_span(
                span.name,
                context=parent,
                kind=SpanKind[span.kind.upper()],
                attributes=dict(span.attributes),
                links=links,
                start_time=_ns(span.start),
            )
        finally:
            _FORCED.reset(token)
        if span.error is not None:
            made.set_status(Status(StatusCode.ERROR, span.error))
        made.end(end_time=max(_ns(span.end), _ns(span.start)))

    def flush(self, timeout_ms: int = 5000) -> None:
        self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)
