"""decide(): read calls that run together (prefetch, several reads in one reply)."""

from __future__ import annotations

from dataclasses import replace
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


def config(prefetch: list[PrefetchCall] | None = None, events_timeout: int = 60) -> Config:
    events = AgentToolSpec(description="events", effect=Effect.READ, timeoutSeconds=events_timeout)
    return Config.of(
        agent=AgentSpec(
            model=ModelSpec(name="m"),
            tools=["k8s-get", "k8s-events", "scale"],
            prefetch=prefetch or [],
        ),
        tools={
            "k8s-get": AgentToolSpec(description="get", effect=Effect.READ),
            "k8s-events": events,
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


def calls(actions: list[Any]) -> list[CreateJob]:
    """The calls the actions start, a grouped Job's each with its container."""
    out: list[CreateJob] = []
    for a in actions:
        if isinstance(a, CreateJob):
            out += list(a.group) or [a]
    return out


def key(c: CreateJob) -> str:
    """The observation key of a call (batch_key): its Job, and its container if grouped."""
    return c.name if c.container is None else f"{c.name}/{c.container}"


def test_prefetch_calls_start_together_and_the_model_waits_for_all() -> None:
    cfg = config(PREFETCH, events_timeout=30)
    status, actions = decide(run(), Observations(now=NOW, config=cfg))
    jobs = [a for a in actions if isinstance(a, CreateJob)]
    creates = calls(actions)
    # The third call's label is missing: a note, not a Job; the other three start at once:
    # the two k8s-get calls in one Job (same ServiceAccount, image, timeout), k8s-events
    # with another timeout in a Job of its own.
    p0, p1 = (job_name("r", "u-1", 0, prefetch=i) for i in (0, 1))
    assert [(j.name, [c.container for c in j.group]) for j in jobs] == [
        (p0, ["tool-0", "tool-1"]),
        (p1, []),
    ]
    assert [(c.tool, c.arguments.get("kind")) for c in creates] == [
        ("k8s-get", "Pod"),
        ("k8s-get", "Node"),
        ("k8s-events", None),
    ]
    assert all(c.batch for c in creates) and not any(isinstance(a, CallModel) for a in actions)
    assert "input has no input.context.alert.labels.deployment" in status.thread[2].content
    assert status.prefetched == 4 and status.step == 0
    assert [(c.jobRef, c.container) for c in status.batch] == [
        (p0, "tool-0"),
        (p1, None),
        (p0, "tool-1"),
    ]

    # Results arrive out of order; nothing enters the thread until the last is in.
    names = [key(c) for c in sorted(creates, key=lambda c: c.tool != "k8s-get")]
    names = [names[0], names[2], names[1]]  # in the order asked: Pod, events, Node
    status, actions = step(status, cfg, batch={names[2]: ok(names[2], "node ok")})
    assert [c.result is not None for c in status.batch] == [False, False, True]
    assert status.thread[-1].type is EventType.TOOL_CALL
    assert not any(isinstance(a, (CallModel, CreateJob)) for a in actions)
    failed = JobObservation(name=names[1], phase=JobPhase.FAILED, reason="DeadlineExceeded")
    status, actions = step(
        status, cfg, batch={names[0]: ok(names[0], "pod web-1"), names[1]: failed}
    )
    assert not status.batch
    results = [(e.type, e.jobRef, e.container) for e in status.thread[-3:]]
    assert results == [
        (EventType.TOOL_RESULT, p0, "tool-0"),
        (EventType.ERROR, p1, None),
        (EventType.TOOL_RESULT, p0, "tool-1"),
    ]
    assert "timed out" in status.thread[-2].content
    assert status.consecutiveErrors == 0  # prefetch evidence is never the agent's error
    assert CallModel(step=1) in actions


def test_several_reads_in_one_reply_run_together_each_a_step() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("Pod"), get("Service"), get("Node")))
    creates = calls(actions)
    # One Job (the first call's name), a container per call, each its own step and hash.
    assert [a.name for a in actions if isinstance(a, CreateJob)] == [job_name("r", "u-1", 1)]
    assert [key(c) for c in creates] == [f"{job_name('r', 'u-1', 1)}/tool-{i}" for i in range(3)]
    assert [c.step for c in creates] == [1, 2, 3]
    assert status.step == 3 and status.usage.modelCalls == 1 and status.usage.totalTokens == 10
    assert len({c.actionHash for c in creates}) == 3
    assert [e.step for e in status.thread] == [1, 2, 3]

    obs = {key(c): ok(key(c), f"out {c.step}") for c in creates}
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
    events = ToolCall(tool="k8s-events", arguments={})
    cfg = config(events_timeout=30)
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(events, get("B"), get("C")))
    e, g = (x for x in actions if isinstance(x, CreateJob))
    assert (e.group, [x.container for x in g.group]) == ((), ["tool-0", "tool-1"])
    b, c = (key(x) for x in g.group)
    status, _ = step(status, cfg, batch={e.name: ok(e.name, "e")})
    # Restarted: the events result is kept in status; B and C's Job was never created.
    missing = JobObservation(name=b, phase=JobPhase.NOT_FOUND)
    status, actions = step(status, cfg, batch={b: missing, c: replace(missing, name=c)})
    assert [x for x in actions if isinstance(x, CreateJob)] == [g]
    # Then it was deleted before its result was read: neither call runs again.
    gone = JobObservation(name=b, phase=JobPhase.NOT_FOUND, existed=True)
    status, actions = step(status, cfg, batch={b: gone, c: replace(gone, name=c)})
    assert not any(isinstance(x, CreateJob) for x in actions)
    assert [e.content.split(":")[0] for e in status.thread[-3:]] == [
        "e",
        "Tool k8s-get",
        "Tool k8s-get",
    ]
    assert "disappeared" in status.thread[-1].content
    assert status.consecutiveErrors == 0 and CallModel(step=4) in actions


def test_every_call_failing_is_one_failed_step() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B")))
    names = [key(x) for x in calls(actions)]
    failed = {n: JobObservation(name=n, phase=JobPhase.FAILED, message="boom") for n in names}
    status, actions = step(status, cfg, batch=failed)
    assert status.consecutiveErrors == 1
    assert [e.type for e in status.thread[-2:]] == [EventType.ERROR, EventType.ERROR]


def test_a_run_that_ends_mid_batch_deletes_the_jobs_still_running() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B")))
    a, _b = (key(x) for x in calls(actions))
    status, _ = step(status, cfg, batch={a: ok(a, "a")})
    status, actions = decide(run(status, cancel=True), Observations(now=NOW, config=cfg))
    assert status.phase is Phase.CANCELLED and not status.batch
    # The grouped Job, still running B, is deleted once.
    assert [x.name for x in actions if isinstance(x, DeleteJob)] == [job_name("r", "u-1", 1)]


def test_a_grouped_job_lost_in_a_crash_is_made_again_whole_once() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B"), get("C")))
    first = [a for a in actions if isinstance(a, CreateJob)]
    missing = {key(c): JobObservation(name=key(c), phase=JobPhase.NOT_FOUND) for c in calls(first)}
    status, actions = step(status, cfg, batch=missing)
    assert [a for a in actions if isinstance(a, CreateJob)] == first
    # Deleted (it existed): every call of it is an error of its own, never run again.
    gone = {k: JobObservation(name=k, phase=JobPhase.NOT_FOUND, existed=True) for k in missing}
    status, actions = step(status, cfg, batch=gone)
    assert not any(isinstance(a, CreateJob) for a in actions)
    assert all("disappeared" in e.content for e in status.thread[-3:])


def test_in_a_grouped_job_a_failed_call_is_evidence_of_its_own() -> None:
    cfg = config()
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    status, actions = step(status, cfg, model=reply(get("A"), get("B"), get("C")))
    a, b, c = (key(x) for x in calls(actions))
    oom = JobObservation(name=b, phase=JobPhase.FAILED, reason="OOMKilled", message="exit 137")
    status, actions = step(status, cfg, batch={a: ok(a, "a"), b: oom, c: ok(c, "c")})
    assert [(e.type, e.step, e.container) for e in status.thread[-3:]] == [
        (EventType.TOOL_RESULT, 1, "tool-0"),
        (EventType.ERROR, 2, "tool-1"),
        (EventType.TOOL_RESULT, 3, "tool-2"),
    ]
    assert status.consecutiveErrors == 0 and CallModel(step=4) in actions


def test_calls_under_another_service_account_image_or_timeout_get_jobs_of_their_own() -> None:
    cfg = config(events_timeout=30)
    status, _ = decide(run(), Observations(now=NOW, config=cfg))
    events = ToolCall(tool="k8s-events", arguments={})
    status, actions = step(status, cfg, model=reply(events, get("Pod")))
    made = [a for a in actions if isinstance(a, CreateJob)]
    # Each alone in its group: exactly the single-container Job of today.
    assert [(a.name, a.container, a.group) for a in made] == [
        (job_name("r", "u-1", 1), None, ()),
        (job_name("r", "u-1", 2), None, ()),
    ]
    assert [c.container for c in status.batch] == [None, None]
