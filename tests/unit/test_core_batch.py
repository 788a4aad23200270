"""decide(): read calls that run together (prefetch, several reads in one reply)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agentrun.api import (
    AgentRun,
    AgentRunSpec,
    AgentRunStatus,
    AgentSpec,
    AgentToolSpec,
    Effect,
    EventType,
    Limits,
    ModelSpec,
    Phase,
    PrefetchCall,
    PromptRef,
    RunInput,
    Usage,
)
from agentrun.api.naming import job_name
from agentrun.engine.core import (
    CallModel,
    Config,
    CreateJob,
    DeleteJob,
    JobObservation,
    JobPhase,
    ModelReply,
    Observations,
    ToolCall,
    ToolCalls,
    decide,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
ALERT = {"labels": {"namespace": "shop", "pod": "web-1"}}


def run(status: AgentRunStatus | None = None, **spec: Any) -> AgentRun:
    return AgentRun(
        metadata={"name": "r", "namespace": "ops", "uid": "u-1", "generation": 1},
        spec=AgentRunSpec(
            agentRef="sre", input=RunInput(task="look", context={"alert": ALERT}), **spec
        ),
        status=status or AgentRunStatus(),
    )


def config(prefetch: list[PrefetchCall] | None = None) -> Config:
    return Config.of(
        agent=AgentSpec(
            model=ModelSpec(name="m"),
            tools=["k8s-get", "k8s-events", "scale"],
            prefetch=prefetch or [],
        ),
        tools={
            "k8s-get": AgentToolSpec(description="get", effect=Effect.READ),
            "k8s-events": AgentToolSpec(description="events", effect=Effect.READ),
            "scale": AgentToolSpec(description="scale", effect=Effect.WRITE),
        },
        prompt=PromptRef(name="p", version="1", sha256="0" * 64),
    )


PREFETCH = [
    PrefetchCall(
        tool="k8s-get", arguments={"kind": "Pod", "name": "{{ input.context.alert.labels.pod }}"}
    ),
    PrefetchCall(
        tool="k8s-events", arguments={"namespace": "{{ input.context.alert.labels.namespace }}"}
    ),
    PrefetchCall(
        tool="k8s-get",
        arguments={"kind": "Deployment", "name": "{{ input.context.alert.labels.deployment }}"},
    ),
    PrefetchCall(tool="k8s-get", arguments={"kind": "Node"}),
]


def ok(name: str, content: str) -> JobObservation:
    return JobObservation(name=name, phase=JobPhase.SUCCEEDED, ok=True, content=content)


def step(status: AgentRunStatus, cfg: Config, **obs: Any) -> tuple[AgentRunStatus, list[Any]]:
    return decide(run(status), Observations(now=NOW, config=cfg, **obs))


def reply(*calls: ToolCall, tokens: int = 10) -> ModelReply:
    return ModelReply(action=ToolCalls(calls=calls), usage=Usage(totalTokens=tokens, modelCalls=1))


def get(kind: str) -> ToolCall:
    return ToolCall(tool="k8s-get", arguments={"kind": kind})


def test_prefetch_calls_start_together_and_the_model_waits_for_all() -> None:
    cfg = config(PREFETCH)
    status, actions = decide(run(), Observations(now=NOW, config=cfg))
    creates = [a for a in actions if isinstance(a, CreateJob)]
    # The third call's label is missing: a note, not a Job; the other three start at once.
    assert [c.name for c in creates] == [job_name("r", "u-1", 0, prefetch=i) for i in (0, 1, 3)]
    assert all(c.batch for c in creates) and not any(isinstance(a, CallModel) for a in actions)
    assert "input has no input.context.alert.labels.deployment" in status.thread[2].content
    assert status.prefetched == 4 and status.step == 0

    # Results arrive out of order; nothing enters the thread until the last is in.
    names = [c.name for c in creates]
    status, actions = step(status, cfg, batch={names[2]: ok(names[2], "node ok")})
    assert [c.result is not None for c in status.batch] == [False, False, True]
    assert status.thread[-1].type is EventType.TOOL_CALL
    assert not any(isinstance(a, (CallModel, CreateJob)) for a in actions)
    failed = JobObservation(name=names[1], phase=JobPhase.FAILED, reason="DeadlineExceeded")
    status, actions = step(
        status, cfg, batch={names[0]: ok(names[0], "pod web-1"), names[1]: failed}
    )
    assert not status.batch
    results = [(e.type, e.jobRef) for e in status.thread[-3:]]
    assert results == [
        (EventType.TOOL_RESULT, names[0]),
        (EventType.ERROR, names[1]),
        (EventType.TOOL_RESULT, names[2]),
    ]
    assert "timed out" in status.thread[-2].content
    assert status.consecutiveErrors == 0  # prefetch evidence is never the agent's error
    assert CallModel(step=1) in actions


def test_several_reads_in_one_reply_run_together_each_a_step() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("Pod"), get("Service"), get("Node")))
    creates = [a for a in actions if isinstance(a, CreateJob)]
    assert [c.name for c in creates] == [job_name("r", "u-1", s) for s in (1, 2, 3)]
    assert [c.step for c in creates] == [1, 2, 3]
    assert status.step == 3 and status.usage.modelCalls == 1 and status.usage.totalTokens == 10
    assert len({c.actionHash for c in creates}) == 3
    assert [e.step for e in status.thread] == [1, 2, 3]

    obs = {c.name: ok(c.name, f"out {c.step}") for c in creates}
    status, actions = step(status, cfg, batch=obs)
    assert [e.content for e in status.thread[-3:]] == ["out 1", "out 2", "out 3"]
    assert [e.step for e in status.thread[-3:]] == [1, 2, 3]
    assert CallModel(step=4) in actions


def test_a_write_beside_reads_is_not_proposed_and_the_model_is_told() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    write = ToolCall(tool="scale", arguments={"replicas": 0})
    status, actions = step(status, cfg, model=reply(get("Pod"), write, get("Node")))
    assert status.pendingAction is None
    assert status.phase is Phase.RUNNING
    assert [c.tool for c in status.batch] == ["k8s-get", "k8s-get"]
    assert "scale was not proposed" in status.thread[-1].content
    assert not any(isinstance(a, CreateJob) and a.tool == "scale" for a in actions)


def test_only_writes_in_one_reply_is_an_error_and_nothing_runs() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    write = ToolCall(tool="scale", arguments={"replicas": 0})
    status, actions = step(status, cfg, model=reply(write, write))
    assert not any(isinstance(a, CreateJob) for a in actions)
    assert status.consecutiveErrors == 1 and status.pendingAction is None
    assert CallModel(step=2) in actions


def test_max_steps_bounds_what_runs_and_the_rest_is_named() -> None:
    cfg = config()
    status, _ = decide(run(limits=Limits(maxSteps=3)), Observations(now=NOW, config=cfg))
    status = status.model_copy(update={"step": 1})
    r = run(status, limits=Limits(maxSteps=3))
    status, _ = decide(
        r, Observations(now=NOW, config=cfg, model=reply(get("A"), get("B"), get("C")))
    )
    assert [c.arguments["kind"] for c in status.batch] == ["A", "B"]
    assert status.step == 3
    assert "1 read call(s) were not run (k8s-get)" in status.thread[-1].content


def test_after_a_crash_a_missing_job_is_created_and_a_deleted_one_is_not() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B"), get("C")))
    a, b, c = (x.name for x in actions if isinstance(x, CreateJob))
    status, _ = step(status, cfg, batch={a: ok(a, "a")})
    # Restarted: A's result is kept in status; B was never created; C was deleted.
    status, actions = step(
        status,
        cfg,
        batch={
            b: JobObservation(name=b, phase=JobPhase.NOT_FOUND),
            c: JobObservation(name=c, phase=JobPhase.NOT_FOUND, existed=True),
        },
    )
    assert [x.name for x in actions if isinstance(x, CreateJob)] == [b]
    assert status.batch[2].result is not None and "disappeared" in status.batch[2].result.content
    status, actions = step(status, cfg, batch={b: ok(b, "b")})
    assert [e.content.split(":")[0] for e in status.thread[-3:]] == [
        "a",
        "b",
        "Tool k8s-get",
    ]
    assert status.consecutiveErrors == 0 and CallModel(step=4) in actions


def test_every_call_failing_is_one_failed_step() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B")))
    names = [x.name for x in actions if isinstance(x, CreateJob)]
    failed = {n: JobObservation(name=n, phase=JobPhase.FAILED, message="boom") for n in names}
    status, actions = step(status, cfg, batch=failed)
    assert status.consecutiveErrors == 1
    assert [e.type for e in status.thread[-2:]] == [EventType.ERROR, EventType.ERROR]


def test_a_run_that_ends_mid_batch_deletes_the_jobs_still_running() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B")))
    a, b = (x.name for x in actions if isinstance(x, CreateJob))
    status, _ = step(status, cfg, batch={a: ok(a, "a")})
    status, actions = decide(run(status, cancel=True), Observations(now=NOW, config=cfg))
    assert status.phase is Phase.CANCELLED and not status.batch
    assert [x.name for x in actions if isinstance(x, DeleteJob)] == [b]
