"""decide(): prefetch before the first model call, human input, and the bounded thread."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agentrun.api import (
    ANNOTATION_ANSWER,
    AgentRun,
    AgentRunSpec,
    AgentRunStatus,
    AgentSpec,
    AgentToolSpec,
    ConditionStatus,
    Effect,
    EventType,
    ModelSpec,
    Phase,
    PrefetchCall,
    PromptRef,
    RunInput,
    ThreadEvent,
    Urgency,
)
from agentrun.api.naming import job_name
from agentrun.engine import conditions as cond
from agentrun.engine.core import (
    MAX_THREAD_BYTES,
    CallModel,
    Config,
    CreateJob,
    JobObservation,
    JobPhase,
    ModelReply,
    Observations,
    RecordEvent,
    RemoveAnnotations,
    RequestInput,
    bound_thread,
    decide,
    fail_invalid_spec,
)
from agentrun.engine.templating import MissingValue, fill

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
ALERT = {"labels": {"namespace": "shop", "deployment": "web", "alertname": "KubePodCrashLooping"}}


def run(
    status: AgentRunStatus | None = None, annotations: dict[str, str] | None = None
) -> AgentRun:
    meta: dict[str, Any] = {"name": "r", "namespace": "ops", "uid": "u-1", "generation": 1}
    if annotations:
        meta["annotations"] = annotations
    return AgentRun(
        metadata=meta,
        spec=AgentRunSpec(agentRef="sre", input=RunInput(task="look", context={"alert": ALERT})),
        status=status or AgentRunStatus(),
    )


def config(prefetch: list[PrefetchCall]) -> Config:
    return Config.of(
        agent=AgentSpec(model=ModelSpec(name="m"), tools=["k8s-get", "scale"], prefetch=prefetch),
        tools={
            "k8s-get": AgentToolSpec(description="get", effect=Effect.READ),
            "scale": AgentToolSpec(description="scale", effect=Effect.WRITE),
        },
        prompt=PromptRef(name="p", version="1", sha256="0" * 64),
    )


GET_DEPLOY = PrefetchCall(
    tool="k8s-get",
    arguments={
        "kind": "Deployment",
        "name": "{{ input.context.alert.labels.deployment }}",
        "namespace": "{{ input.context.alert.labels.namespace }}",
    },
)


def test_prefetch_runs_as_a_job_before_the_first_model_call() -> None:
    cfg = config([GET_DEPLOY])
    status, actions = decide(run(), Observations(now=NOW, config=cfg))

    creates = [a for a in actions if isinstance(a, CreateJob)]
    assert len(creates) == 1 and not any(isinstance(a, CallModel) for a in actions)
    assert creates[0].arguments == {"kind": "Deployment", "name": "web", "namespace": "shop"}
    assert creates[0].name == job_name("r", "u-1", 0, prefetch=0)
    assert [c.prefetch for c in status.batch] == [True] and status.currentAction is None
    assert status.step == 0
    assert [(e.step, e.type) for e in status.thread] == [(0, EventType.TOOL_CALL)]

    done = JobObservation(
        name=creates[0].name,
        phase=JobPhase.SUCCEEDED,
        ok=True,
        content="web: 0/1 ready",
        outputRef="cm",
    )
    status, actions = decide(
        run(status), Observations(now=NOW, config=cfg, batch={done.name: done})
    )
    assert status.prefetched == 1 and not status.batch
    assert status.thread[-1].type is EventType.TOOL_RESULT
    assert status.thread[-1].content == "web: 0/1 ready"
    assert CallModel(step=1) in actions


def test_a_failed_prefetch_is_context_not_an_agent_error() -> None:
    cfg = config([GET_DEPLOY])
    status, actions = decide(run(), Observations(now=NOW, config=cfg))
    name = status.batch[0].jobRef
    failed = JobObservation(name=name, phase=JobPhase.FAILED, reason="BackoffLimitExceeded")
    status, actions = decide(run(status), Observations(now=NOW, config=cfg, batch={name: failed}))
    assert status.consecutiveErrors == 0
    assert status.thread[-1].type is EventType.ERROR
    assert CallModel(step=1) in actions


def test_prefetch_with_a_missing_input_value_is_skipped_with_a_note() -> None:
    call = PrefetchCall(
        tool="k8s-get", arguments={"kind": "Pod", "name": "{{ input.context.pod }}"}
    )
    status, actions = decide(run(), Observations(now=NOW, config=config([call])))
    assert status.prefetched == 1
    assert "input.context.pod" in status.thread[-1].content
    assert CallModel(step=1) in actions


def test_prefetch_never_runs_a_write_tool() -> None:
    call = PrefetchCall(tool="scale", arguments={"replicas": 0})
    status, actions = decide(run(), Observations(now=NOW, config=config([call])))
    assert not any(isinstance(a, CreateJob) for a in actions)
    assert "not a read tool" in status.thread[-1].content
    assert CallModel(step=1) in actions


def test_request_human_input_waits_for_the_answer_annotation() -> None:
    cfg = config([])
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    reply = ModelReply(action=RequestInput(question="May I restart web now?", urgency=Urgency.HIGH))
    status, actions = decide(run(status), Observations(now=NOW, config=cfg, model=reply))

    assert status.phase is Phase.AWAITING_INPUT
    assert status.pendingInput is not None
    assert status.pendingInput.question == "May I restart web now?"
    assert ANNOTATION_ANSWER in status.pendingInput.answerCommand
    assert cond.get(status.conditions, cond.INPUT_PENDING) is not None
    assert any(isinstance(a, RecordEvent) and a.reason == "InputRequested" for a in actions)
    assert not any(isinstance(a, CallModel) for a in actions)

    # Nothing happens until the answer arrives.
    same, actions = decide(run(status), Observations(now=NOW, config=cfg))
    assert same.phase is Phase.AWAITING_INPUT
    assert not any(isinstance(a, CallModel) for a in actions)

    answered = run(status, annotations={ANNOTATION_ANSWER: "yes, after 18:00"})
    status, actions = decide(answered, Observations(now=NOW, config=cfg))
    assert status.phase is Phase.RUNNING and status.pendingInput is None
    assert status.thread[-1].type is EventType.ANSWER
    assert status.thread[-1].content == "yes, after 18:00"
    assert RemoveAnnotations(keys=(ANNOTATION_ANSWER,)) in actions
    assert CallModel(step=2) in actions
    pending = cond.get(status.conditions, cond.INPUT_PENDING)
    assert pending is not None and pending.status is ConditionStatus.FALSE


def test_the_thread_stays_bounded_and_points_at_the_raw_output() -> None:
    big = "x" * 20_000
    thread = [
        ThreadEvent(step=i, type=EventType.TOOL_RESULT, time="t", content=big, outputRef=f"cm{i}")
        for i in range(100)
    ]
    bounded, dropped = bound_thread(thread, 0)
    size = sum(len(e.content) + 200 for e in bounded)
    assert size <= MAX_THREAD_BYTES
    assert bounded[-1].content == big  # the newest evidence is kept whole
    assert "full output in ConfigMap cm0" in bounded[0].content
    assert dropped == 100 - len(bounded)


def test_templating_fills_whole_values_and_interpolates() -> None:
    values = {"input": {"context": {"alert": ALERT, "n": 3}}}
    assert fill({"r": "{{ input.context.n }}"}, values) == {"r": 3}
    assert fill("ns={{input.context.alert.labels.namespace}}!", values) == "ns=shop!"
    try:
        fill("{{ input.nope }}", values)
    except MissingValue as missing:
        assert missing.args[0] == "input.nope"
    else:
        raise AssertionError("a missing value must be reported")


def test_templating_default_fills_what_the_input_lacks() -> None:
    values = {"input": {"context": {"alert": ALERT}}, "run": {"namespace": "ops"}}
    labels = "input.context.alert.labels"
    # Present: the value itself; missing: the fallback path, or a literal.
    assert fill(f"{{{{ {labels}.namespace | default(run.namespace) }}}}", values) == "shop"
    assert fill(f"{{{{ {labels}.pod | default(run.namespace) }}}}", values) == "ops"
    assert fill(f"{{{{{labels}.pod|default('')}}}}", values) == ""
    assert fill(f'c={{{{ {labels}.container | default("app") }}}}', values) == "c=app"
    assert fill(f"{{{{ {labels} }}}}", values) == ALERT["labels"]  # a whole map
    try:
        fill(f"{{{{ {labels}.pod | default(run.nope) }}}}", values)
    except MissingValue as missing:
        assert missing.args[0] == "run.nope"
    else:
        raise AssertionError("a missing fallback must be reported")


def test_a_prefetch_with_a_default_runs_where_the_label_is_missing() -> None:
    events = PrefetchCall(
        tool="k8s-get",
        arguments={
            "kind": "Event",
            "namespace": "{{ input.context.alert.labels.cluster | default(run.namespace) }}",
        },
    )
    status, actions = decide(run(), Observations(now=NOW, config=config([events])))
    [job] = [a for a in actions if isinstance(a, CreateJob)]
    assert job.arguments == {"kind": "Event", "namespace": "ops"}
    assert [c.prefetch for c in status.batch] == [True]


def test_an_invalid_spec_ends_a_run_waiting_for_input_like_any_other_ending() -> None:
    cfg = config([])
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    reply = ModelReply(action=RequestInput(question="May I restart web now?"))
    status, _ = decide(run(status), Observations(now=NOW, config=cfg, model=reply))
    assert status.phase is Phase.AWAITING_INPUT

    failed, actions = fail_invalid_spec(status.model_dump(mode="json"), "bad", NOW, 2)
    assert failed.phase is Phase.FAILED
    assert failed.pendingInput is None
    pending = cond.get(failed.conditions, cond.INPUT_PENDING)
    assert pending is not None
    assert (pending.status, pending.reason) == (ConditionStatus.FALSE, "InvalidSpec")
    assert actions == [RecordEvent(type="Warning", reason="InvalidSpec", message="bad")]


def test_results_only_the_thread_holds_are_compacted_last() -> None:
    big = "x" * 20_000
    thread = [
        ThreadEvent(
            step=i,
            type=EventType.TOOL_RESULT,
            time="t",
            content=big,
            outputRef=f"cm{i}" if i % 2 else None,
        )
        for i in range(14)
    ]
    bounded, dropped = bound_thread(thread, 0)
    assert dropped == 0
    # Enough room was made by compacting the results kept in ConfigMaps.
    assert all(e.content == big for e in bounded if e.outputRef is None)
    assert any("[compacted; full output in ConfigMap" in e.content for e in bounded)
