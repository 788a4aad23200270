"""A run's spans, after the OpenTelemetry GenAI semantic conventions.

One trace per run (its id from the run's uid, naming.trace_id; recorded in status.traceID):
`invoke_agent {agent}` from creation to the end, its children `chat {model}` per model call,
`execute_tool {tool}` per tool Job (the Job's pod gets its context as TRACEPARENT) and
`approval {tool}` for each wait on a human. A run outlives any one operator, so the spans
of tools, approvals and the run are read from status transitions as they are written (the
write-ahead log: each lands once), with the times status recorded; a chat span is timed
around the call itself. The span builders are pure; RunTracer sends what they build.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from agentrun.api import TERMINAL_PHASES, AgentRun, AgentRunStatus, EventType, Phase, ThreadEvent
from agentrun.api.naming import RUN_SPAN, span_id, trace_id, traceparent
from agentrun.engine.core import (
    Config,
    Done,
    InvalidAction,
    ModelReply,
    ModelUnavailable,
    RequestInput,
    ToolCall,
    ToolCalls,
    parse_time,
)
from agentrun.otel import CONTENT_LIMIT, Attr, Link, Span, Tracer, pod_env, setup
from agentrun.text import clip
from agentrun.tool.redaction import redact, redact_value

log = logging.getLogger("agentrun.operator.tracing")

PROVIDER = "openai"  # every model is called through the OpenAI-compatible API
_ENDED = frozenset(TERMINAL_PHASES)


class RunTracer:
    """Sends a run's spans; one per operator, only when tracing is on (see agentrun.otel)."""

    def __init__(self, tracer: Tracer, exporter_env: Mapping[str, str] | None = None) -> None:
        self.tracer = tracer
        # Where a tool sends its own span: the operator's exporter settings (agentrun.otel).
        self.exporter_env = dict(exporter_env or {})

    @classmethod
    def from_env(cls) -> RunTracer | None:
        tracer = setup("agentrun-operator")
        return cls(tracer, pod_env(os.environ)) if tracer is not None else None

    @staticmethod
    def stamp(run: AgentRun) -> None:
        """Records the run's trace id in its status (written with its next status write)."""
        uid = run.metadata.get("uid")
        if uid and run.status.traceID is None:
            run.status.traceID = trace_id(str(uid))

    @staticmethod
    def tool_parent(run: AgentRun, part: str) -> str:
        """TRACEPARENT for a tool call's container: its execute_tool span (part: its Job's
        name, or a grouped call's f"{job}/{container}")."""
        return traceparent(str(run.metadata["uid"]), part)

    def chat(
        self,
        run: AgentRun,
        config: Config,
        step: int,
        times: tuple[datetime, datetime],
        reply: ModelReply | ModelUnavailable,
    ) -> None:
        self._send([chat_span(run, config, step, times, reply, self.tracer.content)])

    def transition(self, run: AgentRun, before: AgentRunStatus) -> None:
        """The spans a written status transition finished (none, usually)."""
        now = datetime.now(UTC)
        self._send(list(transition_spans(run, before, self.tracer.content, now)))

    def _send(self, spans: list[Span]) -> None:
        for span in spans:
            try:
                self.tracer.emit(span)
            except Exception as err:  # tracing never stops a run
                log.warning("Span %s not recorded: %s: %s", span.name, type(err).__name__, err)

    def shutdown(self) -> None:
        self.tracer.shutdown()


# ---------------------------------------------------------------- pure span builders


def _ids(run: AgentRun) -> tuple[str, str]:
    uid = str(run.metadata.get("uid", ""))
    return trace_id(uid), span_id(uid, RUN_SPAN)


def _run_attrs(run: AgentRun) -> dict[str, Attr]:
    meta = run.metadata
    return {
        "gen_ai.agent.name": run.spec.agentRef,
        "gen_ai.agent.id": f"{meta.get('namespace', '')}/{run.spec.agentRef}",
        "agentrun.run.name": str(meta.get("name", "")),
        "agentrun.run.namespace": str(meta.get("namespace", "")),
        "agentrun.run.uid": str(meta.get("uid", "")),
    }


def _content(value: Any) -> str:
    """Content as recorded when opted in: redacted, then bounded."""
    text = value if isinstance(value, str) else json.dumps(redact_value(value), sort_keys=True)
    return clip(redact(text), CONTENT_LIMIT)


def chat_span(
    run: AgentRun,
    config: Config,
    step: int,
    times: tuple[datetime, datetime],
    reply: ModelReply | ModelUnavailable,
    content: bool = False,
) -> Span:
    trace, parent = _ids(run)
    model = config.agent.model
    attrs: dict[str, Attr] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model.name,
        "gen_ai.agent.name": run.spec.agentRef,
        "agentrun.run.name": str(run.metadata.get("name", "")),
        "agentrun.step": step,
    }
    host = urlsplit(model.baseURL or "").hostname
    if host:
        attrs["server.address"] = host
    error = None
    if isinstance(reply, ModelUnavailable):
        attrs["error.type"] = "ModelUnavailable"
        error = clip(reply.message, 500)
    else:
        attrs["gen_ai.usage.input_tokens"] = reply.usage.promptTokens
        attrs["gen_ai.usage.output_tokens"] = reply.usage.completionTokens
        attrs["gen_ai.response.finish_reasons"] = [_finish_reason(reply)]
        if content:
            attrs["gen_ai.output.messages"] = _content(_output_message(reply))
    return Span(
        name=f"chat {model.name}",
        trace_id=trace,
        parent=parent,
        start=times[0],
        end=times[1],
        kind="client",
        attributes=attrs,
        error=error,
    )


def _finish_reason(reply: ModelReply) -> str:
    # The reply as parsed: a tool call (or several) is "tool_calls", an answer "stop".
    return "tool_calls" if isinstance(reply.action, ToolCall | ToolCalls) else "stop"


def _output_message(reply: ModelReply) -> list[dict[str, Any]]:
    action = reply.action
    calls = action.calls if isinstance(action, ToolCalls) else (action,)
    parts: list[dict[str, Any]] = []
    for call in calls:
        if isinstance(call, ToolCall):
            parts.append({"type": "tool_call", "name": call.tool, "arguments": call.arguments})
        elif isinstance(call, Done):
            parts.append({"type": "text", "content": call.answer})
        elif isinstance(call, RequestInput):
            parts.append({"type": "text", "content": call.question})
        elif isinstance(call, InvalidAction):
            parts.append({"type": "text", "content": call.message})
    return [{"role": "assistant", "parts": parts}]


def transition_spans(
    run: AgentRun, before: AgentRunStatus, content: bool = False, now: datetime | None = None
) -> Iterator[Span]:
    """The spans that a status transition (`before` to `run.status`) finished, as it is
    written (`now`: status keeps whole seconds; the run's span ends after its last call)."""
    after = run.status
    known = {_key(e) for e in before.thread}
    new = [e for e in after.thread if _key(e) not in known]
    for event in new:
        if event.jobRef and event.type in (EventType.TOOL_RESULT, EventType.ERROR):
            yield _tool_span(run, event, content)
    yield from _approval_spans(run, before)
    if after.phase in _ENDED and before.phase not in _ENDED:
        yield _run_span(run, now)


def _key(event: ThreadEvent) -> tuple[Any, ...]:
    return (event.step, event.type, event.time, event.jobRef, event.container, event.tool)


def _tool_span(run: AgentRun, result: ThreadEvent, content: bool) -> Span:
    trace, parent = _ids(run)
    job = result.jobRef or ""
    # A call grouped in a Job with others: its span is its container's (the TRACEPARENT the
    # container got), not the Job's.
    part = f"{job}/{result.container}" if result.container else job
    call = next(
        (e for e in run.status.thread if e.type is EventType.TOOL_CALL and e.jobRef == job), None
    )
    approved = next(
        (
            e
            for e in run.status.thread
            if e.type is EventType.APPROVAL and e.step == result.step and e.tool == result.tool
        ),
        None,
    )
    # A write runs from its approval; a read from when it was asked for.
    started = approved or call
    tool = result.tool or (call.tool if call else "") or ""
    ok = result.type is EventType.TOOL_RESULT
    attrs: dict[str, Attr] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.call.id": part,
        "gen_ai.tool.type": "function",
        "agentrun.job.name": job,
        "agentrun.step": result.step,
        "agentrun.tool.outcome": "succeeded" if ok else "failed",
    }
    if result.jobUID:
        attrs["agentrun.job.uid"] = result.jobUID
    if result.outputRef:
        attrs["agentrun.output.ref"] = result.outputRef
    if not ok:
        attrs["error.type"] = "ToolFailed"
    if content:
        if call is not None and call.arguments is not None:
            attrs["gen_ai.tool.call.arguments"] = _content(call.arguments)
        attrs["gen_ai.tool.call.result"] = _content(result.content)
    end = parse_time(result.time)
    return Span(
        name=f"execute_tool {tool}",
        trace_id=trace,
        parent=parent,
        span_id=span_id(str(run.metadata.get("uid", "")), part),
        start=parse_time(started.time) if started else end,
        end=end,
        attributes=attrs,
        error=None if ok else clip(result.content, 500),
    )


def _approval_spans(run: AgentRun, before: AgentRunStatus) -> Iterator[Span]:
    """A wait on a human that this transition ended: decided, or the run ended under it."""
    pending = before.pendingAction
    if pending is None:
        return
    after = run.status
    decided = [a for a in after.approvals if a.step == pending.step and a not in before.approvals]
    if not decided and after.phase not in _ENDED:
        return  # still waiting
    trace, parent = _ids(run)
    start = parse_time(pending.requestedTime)
    attrs: dict[str, Attr] = {
        "gen_ai.tool.name": pending.tool,
        "agentrun.step": pending.step,
        "agentrun.approval.action_hash": pending.actionHash,
    }
    if decided:
        record = decided[-1]
        end = parse_time(record.time)
        attrs["agentrun.approval.decision"] = record.decision.value
        attrs["agentrun.approval.decided_by"] = record.approver or "unknown"
        if record.reason:
            attrs["agentrun.approval.reason"] = clip(record.reason, 500)
    else:
        end = parse_time(after.completionTime) if after.completionTime else start
        attrs["agentrun.approval.decision"] = "None"
        attrs["agentrun.approval.ended_by"] = _reason(after)
    attrs["agentrun.approval.wait_seconds"] = round(max(0.0, (end - start).total_seconds()), 3)
    yield Span(
        name=f"approval {pending.tool}",
        trace_id=trace,
        parent=parent,
        start=start,
        end=end,
        attributes=attrs,
    )


def _reason(status: AgentRunStatus) -> str:
    ended = next(
        (c for c in status.conditions if c.type in ("Succeeded", "Failed", "Cancelled")), None
    )
    return ended.reason if ended is not None else status.phase.value


def _run_span(run: AgentRun, now: datetime | None) -> Span:
    trace, own = _ids(run)
    status = run.status
    created = run.metadata.get("creationTimestamp") or status.startTime
    ends = [parse_time(status.completionTime)] if status.completionTime else []
    end = max([*ends, now] if now is not None else ends or [datetime.now(UTC)])
    attrs: dict[str, Attr] = {
        "gen_ai.operation.name": "invoke_agent",
        **_run_attrs(run),
        "agentrun.run.phase": status.phase.value,
        "agentrun.run.reason": _reason(status),
        "agentrun.run.steps": status.step,
        "agentrun.run.model_calls": status.usage.modelCalls,
        "gen_ai.usage.input_tokens": status.usage.promptTokens,
        "gen_ai.usage.output_tokens": status.usage.completionTokens,
    }
    if status.promptRef is not None:
        attrs["agentrun.prompt"] = f"{status.promptRef.name}@{status.promptRef.version}"
    links: list[Link] = []
    fork = run.spec.forkOf
    if fork is not None:  # the run it goes on from: one click back to its trace
        links.append(
            Link(trace_id(fork.uid), span_id(fork.uid, RUN_SPAN), {"agentrun.link": "forkOf"})
        )
    return Span(
        name=f"invoke_agent {run.spec.agentRef}",
        trace_id=trace,
        span_id=own,
        start=parse_time(str(created)) if created else end,
        end=end,
        attributes=attrs,
        error=_reason(status) if status.phase is Phase.FAILED else None,
        links=links,
    )
