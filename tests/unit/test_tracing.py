"""Traces (agentrun.otel, operator/tracing.py): off unless the standard variables ask, one
trace per run whatever process emits its spans, the GenAI attributes, and content only when
opted in, then redacted. The SDK's in-memory exporter stands in for the collector here (the
integration test sends to one over OTLP/HTTP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentrun.api import (
    AgentRun,
    AgentRunStatus,
    ApprovalRecord,
    Condition,
    ConditionStatus,
    Decision,
    Effect,
    EventType,
    PendingAction,
    Phase,
    ThreadEvent,
    Usage,
)
from agentrun.api.naming import RUN_SPAN, span_id, trace_id, traceparent
from agentrun.engine.core import CreateJob, ModelReply, ToolCall, parse_time
from agentrun.operator import jobs
from agentrun.operator.tracing import RunTracer, transition_spans
from agentrun.otel import build, setup, why_off
from tests.support.fakekube import FakeKube
from tests.support.loop import NS, ScriptedModel, runner, status, step
from tests.unit.test_core import CONFIG
from tests.unit.test_jobs import job

UID = "0f5a2c1e-1111-4222-8333-444455556666"
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"  # a GitHub token in a tool's output


def make_run(status: AgentRunStatus, **spec: Any) -> AgentRun:
    return AgentRun.model_validate(
        {
            "metadata": {
                "name": "r1",
                "namespace": "prod",
                "uid": UID,
                "creationTimestamp": "2025-01-02T03:00:00Z",
            },
            "spec": {"agentRef": "sre", "input": {"task": "look"}, **spec},
            "status": status.model_dump(),
        }
    )


def ev(step: int, type_: EventType, time: str, **kw: Any) -> ThreadEvent:
    return ThreadEvent(step=step, type=type_, time=time, **kw)


CALL = ev(
    1, EventType.TOOL_CALL, "2025-01-02T03:00:02Z", tool="k8s-get", jobRef="r1-s1-abc",
    arguments={"kind": "Secret", "token": TOKEN},
)  # fmt: skip
RESULT = ev(
    1, EventType.TOOL_RESULT, "2025-01-02T03:00:07Z", tool="k8s-get", jobRef="r1-s1-abc",
    content=f"kind: Deployment\nenv: GITHUB_TOKEN={TOKEN}", jobUID="job-uid",
)  # fmt: skip
PENDING = PendingAction(
    step=2,
    tool="rollout-restart",
    actionHash="h" * 64,
    requestedTime="2025-01-02T03:00:10Z",
    approveCommand="kubectl annotate ...",
)


def spans_of(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def tracer(content: bool = False) -> tuple[RunTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return RunTracer(build("agentrun-operator", exporter, content, batch=False)), exporter


def hexes(span: ReadableSpan) -> tuple[str, str, str | None]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = format(span.parent.span_id, "016x") if span.parent else None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), parent


# ---------------------------------------------------------------- off by default


def test_tracing_is_off_with_nothing_set_and_nothing_of_opentelemetry_is_built() -> None:
    assert why_off({}) == "no OTEL_EXPORTER_OTLP_ENDPOINT"
    assert setup("agentrun-operator", {}) is None


@pytest.mark.parametrize(
    ("env", "off"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, "DISABLED"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, "none"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "grpc is not supported",
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "not supported"),
    ],
)
def test_the_standard_variables_turn_tracing_on_or_say_why_not(
    env: dict[str, str], off: str | None
) -> None:
    why = why_off(env)
    assert why is None if off is None else (why is not None and off in why)


# ---------------------------------------------------------------- one trace per run


def test_a_runs_ids_follow_from_its_uid_so_any_process_puts_its_spans_in_one_trace() -> None:
    assert trace_id(UID) == trace_id(UID) and len(trace_id(UID)) == 32
    assert trace_id(UID) != trace_id(UID.replace("0f", "1f"))
    assert span_id(UID, RUN_SPAN) != span_id(UID, "r1-s1-abc")
    assert traceparent(UID, "r1-s1-abc") == f"00-{trace_id(UID)}-{span_id(UID, 'r1-s1-abc')}-01"


def test_a_step_records_the_trace_id_sends_a_chat_span_and_gives_the_job_its_traceparent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    model = ScriptedModel(ModelReply(action=ToolCall(tool="get", arguments={}), usage=Usage(
        promptTokens=120, completionTokens=8, totalTokens=128)))  # fmt: skip
    r = runner(monkeypatch, fake, model)
    r.trace, exporter = tracer()
    r.executor.trace = r.trace
    step(r)

    assert status(fake)["traceID"] == trace_id("u")
    created = next(c for c in fake.calls if c.verb == "create_job")
    manifest = fake.jobs[(NS, created.name)]
    env = {
        e["name"]: e["value"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRACEPARENT"] == traceparent("u", created.name)
    [chat] = exporter.get_finished_spans()
    assert chat.name == "chat m"
    assert hexes(chat) == (trace_id("u"), hexes(chat)[1], span_id("u", RUN_SPAN))
    assert chat.kind.name == "CLIENT"
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "m"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (120, 8)
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert "gen_ai.output.messages" not in attrs  # content not asked for


def test_without_tracing_a_job_has_no_traceparent_and_the_run_no_trace_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    step(runner(monkeypatch, fake, ScriptedModel(ModelReply(action=ToolCall("get", {})))))
    assert "traceID" not in status(fake)
    created = next(c for c in fake.calls if c.verb == "create_job")
    env = fake.jobs[(NS, created.name)]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "TRACEPARENT" not in {e["name"] for e in env}


def test_a_tool_result_ends_its_execute_tool_span_under_the_id_its_pod_was_given() -> None:
    before = AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL])
    run = make_run(AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL, RESULT]))
    [span] = transition_spans(run, before)
    assert span.name == "execute_tool k8s-get"
    assert (span.trace_id, span.span_id, span.parent) == (
        trace_id(UID),
        span_id(UID, "r1-s1-abc"),  # = the span of the Job's TRACEPARENT
        span_id(UID, RUN_SPAN),
    )
    assert (span.end - span.start).total_seconds() == 5
    assert span.attributes["gen_ai.tool.name"] == "k8s-get"
    assert span.attributes["gen_ai.tool.call.id"] == "r1-s1-abc"
    assert span.attributes["agentrun.job.name"] == "r1-s1-abc"
    assert span.attributes["agentrun.tool.outcome"] == "succeeded"
    assert span.error is None
    # Nothing new in the next transition: the span is not sent twice.
    assert list(transition_spans(run, run.status)) == []


def test_a_failed_tool_is_an_error_span() -> None:
    failed = ev(1, EventType.ERROR, "2025-01-02T03:00:09Z", tool="k8s-get", jobRef="r1-s1-abc",
                content="Tool k8s-get failed: forbidden")  # fmt: skip
    before = AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL])
    [span] = transition_spans(make_run(AgentRunStatus(step=1, thread=[CALL, failed])), before)
    assert span.attributes["agentrun.tool.outcome"] == "failed"
    assert span.error == "Tool k8s-get failed: forbidden"


def test_an_approval_ends_the_wait_span_with_who_decided_and_how_long() -> None:
    before = AgentRunStatus(phase=Phase.AWAITING_APPROVAL, step=2, pendingAction=PENDING)
    record = ApprovalRecord(step=2, tool="rollout-restart", actionHash="h" * 64,
        decision=Decision.APPROVED, approver="alice", time="2025-01-02T03:01:40Z")  # fmt: skip
    after = AgentRunStatus(phase=Phase.RUNNING, step=2, approvals=[record])
    [span] = transition_spans(make_run(after), before)
    assert span.name == "approval rollout-restart"
    assert span.parent == span_id(UID, RUN_SPAN)
    assert span.attributes["agentrun.approval.decision"] == "Approved"
    assert span.attributes["agentrun.approval.decided_by"] == "alice"
    assert span.attributes["agentrun.approval.wait_seconds"] == 90.0
    # Still waiting: no span yet.
    assert list(transition_spans(make_run(before), before)) == []


def test_the_end_of_a_run_sends_its_invoke_agent_span_the_parent_of_all_others() -> None:
    before = AgentRunStatus(phase=Phase.RUNNING, step=3)
    ended = Condition(type="Succeeded", status=ConditionStatus.TRUE, reason="Done",
                      lastTransitionTime="2025-01-02T03:02:00Z")  # fmt: skip
    after = AgentRunStatus(
        phase=Phase.SUCCEEDED,
        step=3,
        completionTime="2025-01-02T03:02:00Z",
        conditions=[ended],
        usage=Usage(promptTokens=900, completionTokens=40, totalTokens=940, modelCalls=3),
    )
    run = make_run(after, forkOf={"name": "src", "uid": "src-uid", "step": 1, "events": []})
    [span] = transition_spans(run, before)
    assert span.name == "invoke_agent sre"
    assert (span.trace_id, span.span_id, span.parent) == (
        trace_id(UID),
        span_id(UID, RUN_SPAN),
        None,
    )
    assert (span.end - span.start).total_seconds() == 120  # from creation
    a = span.attributes
    assert (a["gen_ai.agent.name"], a["gen_ai.agent.id"]) == ("sre", "prod/sre")
    assert (a["agentrun.run.name"], a["agentrun.run.namespace"], a["agentrun.run.uid"]) == (
        "r1",
        "prod",
        UID,
    )
    assert (a["agentrun.run.phase"], a["agentrun.run.steps"], a["agentrun.run.reason"]) == (
        "Succeeded",
        3,
        "Done",
    )
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (900, 40)
    assert [(x.trace_id, x.span_id) for x in span.links] == [
        (trace_id("src-uid"), span_id("src-uid", RUN_SPAN))
    ]
    assert list(transition_spans(run, after)) == []  # ended once


def test_a_run_that_ends_while_waiting_for_approval_ends_the_wait_too() -> None:
    before = AgentRunStatus(phase=Phase.AWAITING_APPROVAL, step=2, pendingAction=PENDING)
    expired = Condition(type="Failed", status=ConditionStatus.TRUE, reason="ApprovalExpired",
                        lastTransitionTime="2025-01-02T03:10:10Z")  # fmt: skip
    after = AgentRunStatus(
        phase=Phase.FAILED, step=2, completionTime="2025-01-02T03:10:10Z", conditions=[expired]
    )
    spans = {s.name: s for s in transition_spans(make_run(after), before)}
    wait = spans["approval rollout-restart"]
    assert wait.attributes["agentrun.approval.decision"] == "None"
    assert wait.attributes["agentrun.approval.ended_by"] == "ApprovalExpired"
    assert wait.attributes["agentrun.approval.wait_seconds"] == 600.0
    assert spans["invoke_agent sre"].error == "ApprovalExpired"


def test_spans_sent_through_the_sdk_keep_the_chosen_ids_times_and_parents() -> None:
    trace, exporter = tracer()
    before = AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL])
    done = AgentRunStatus(phase=Phase.SUCCEEDED, step=1, thread=[CALL, RESULT],
                          completionTime="2025-01-02T03:00:08Z")  # fmt: skip
    trace.transition(make_run(done), before)
    spans = spans_of(exporter)
    run_span, tool_span = spans["invoke_agent sre"], spans["execute_tool k8s-get"]
    assert hexes(run_span) == (trace_id(UID), span_id(UID, RUN_SPAN), None)
    assert hexes(tool_span) == (trace_id(UID), span_id(UID, "r1-s1-abc"), span_id(UID, RUN_SPAN))
    assert tool_span.end_time - tool_span.start_time == 5_000_000_000  # type: ignore[operator]
    assert run_span.resource.attributes["service.name"] == "agentrun-operator"


# ---------------------------------------------------------------- content


def _content_attrs(spans: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in spans:
        out.update({k: v for k, v in s.attributes.items() if "arguments" in k or "result" in k})
    return out


def test_tool_content_is_not_recorded_unless_opted_in() -> None:
    before = AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL])
    run = make_run(AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL, RESULT]))
    assert _content_attrs(list(transition_spans(run, before))) == {}


def test_opted_in_content_is_redacted_before_it_leaves_the_operator() -> None:
    before = AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL])
    run = make_run(AgentRunStatus(phase=Phase.RUNNING, step=1, thread=[CALL, RESULT]))
    attrs = _content_attrs(list(transition_spans(run, before, content=True)))
    assert "Deployment" in attrs["gen_ai.tool.call.result"]
    assert "Secret" in attrs["gen_ai.tool.call.arguments"]
    assert all(TOKEN not in str(v) for v in attrs.values()), attrs


def test_opted_in_model_output_is_redacted() -> None:
    trace, exporter = tracer(content=True)
    reply = ModelReply(action=ToolCall(tool="k8s-get", arguments={"password": "hunter2-secret"}))
    config = CONFIG
    t = parse_time(make_run(AgentRunStatus()).metadata["creationTimestamp"])
    trace.chat(make_run(AgentRunStatus()), config, 1, (t, t), reply)
    [chat] = exporter.get_finished_spans()
    out = str((chat.attributes or {})["gen_ai.output.messages"])
    assert "k8s-get" in out and "hunter2-secret" not in out


# ---------------------------------------------------------------- the Job


def test_the_traceparent_is_not_part_of_what_a_job_runs() -> None:
    """A Job made before tracing was switched on (or off) is still ours; any other change of
    its env is still caught."""
    plain = job()
    traced = job(traceparent=traceparent(UID, "j"))
    env = traced["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TRACEPARENT", "value": traceparent(UID, "j")} in env
    assert jobs.job_mismatch(traced, plain) is None
    assert jobs.job_mismatch(plain, traced) is None
    env.append({"name": "EXTRA", "value": "x"})
    assert jobs.job_mismatch(traced, plain) is not None


def test_calls_grouped_in_one_job_each_end_a_span_of_their_own_container() -> None:
    grouped = [
        ev(s, EventType.TOOL_RESULT, "2025-01-02T03:00:07Z", tool="k8s-get", jobRef="r1-s1-abc",
           container=f"tool-{s - 1}")
        for s in (1, 2)
    ]  # fmt: skip
    run = make_run(AgentRunStatus(phase=Phase.RUNNING, step=2, thread=grouped))
    spans = list(transition_spans(run, AgentRunStatus(phase=Phase.RUNNING, step=2)))
    # Each the span its container's TRACEPARENT names, never one id for two calls.
    assert [s.span_id for s in spans] == [
        span_id(UID, "r1-s1-abc/tool-0"),
        span_id(UID, "r1-s1-abc/tool-1"),
    ]
    assert [s.attributes["agentrun.job.name"] for s in spans] == ["r1-s1-abc"] * 2
    parents = {"r1-s1-abc/tool-0": "p0", "r1-s1-abc/tool-1": "p1"}
    action = CreateJob(
        step=1, tool="k8s-get", effect=Effect.READ, arguments={}, name="r1-s1-abc",
        actionHash="h", snapshot=CONFIG.snapshots["k8s-get"], batch=True,
    )  # fmt: skip
    group = replace(
        action,
        group=(replace(action, container="tool-0"), replace(action, step=2, container="tool-1")),
    )
    manifest = jobs.manifest_for(run, group, parents.__getitem__)
    envs = [c["env"] for c in manifest["spec"]["template"]["spec"]["containers"]]
    assert [[e["value"] for e in env if e["name"] == "TRACEPARENT"] for env in envs] == [
        ["p0"],
        ["p1"],
    ]
