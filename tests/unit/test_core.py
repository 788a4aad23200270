"""The pure core, transition by transition: what an SRE sees in status, Events and Jobs.

`decide(run, obs)` is called by the adapter, which persists the returned status, carries out
the actions, and feeds what they produced back in. `Adapter` below simulates that loop in
pure code, so multi-step flows (and crashes between any two steps) are tested end to end.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agentrun.api import (
    ANNOTATION_APPROVE,
    ANNOTATION_REJECT,
    ActionState,
    AgentRun,
    AgentRunSpec,
    AgentRunStatus,
    AgentSpec,
    AgentToolSpec,
    Condition,
    ConditionStatus,
    Decision,
    Effect,
    EventType,
    Limits,
    ModelSpec,
    Phase,
    PromptRef,
    RunInput,
    Usage,
)
from agentrun.api.naming import action_hash, job_name, output_name
from agentrun.engine import conditions as cond
from agentrun.engine.core import (
    MAX_APPROVAL_RECORDS,
    MAX_EVENT_CONTENT,
    MAX_THREAD_EVENTS,
    Action,
    CallModel,
    Config,
    ConfigError,
    CreateJob,
    DeleteJob,
    Done,
    InvalidAction,
    JobObservation,
    JobPhase,
    ModelReply,
    ModelUnavailable,
    Observations,
    RecordEvent,
    RemoveAnnotations,
    RequeueAfter,
    ToolCall,
    decide,
    fail_invalid_spec,
)

# ---------------------------------------------------------------- fixtures

NAME, NAMESPACE, UID = "web-oom", "prod", "0b9d6c1e-1111-4222-8333-444455556666"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
NOW_S = "2025-01-02T03:04:05Z"
READ, WRITE = "k8s-get", "rollout-restart"
READ_ARGS = {"kind": "Deployment", "name": "web", "namespace": "prod"}
WRITE_ARGS = {"name": "web", "namespace": "prod"}
PROMPT = PromptRef(name="sre-agent", version="3", sha256="ab" * 32)
REPLY_USAGE = Usage(promptTokens=100, completionTokens=20, totalTokens=120)
BOTH = (ANNOTATION_APPROVE, ANNOTATION_REJECT)
TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


def make_run(
    *,
    name: str = NAME,
    uid: str = UID,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    limits: Limits | None = None,
    cancel: bool = False,
    status: AgentRunStatus | None = None,
) -> AgentRun:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": uid,
        "generation": generation,
    }
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return AgentRun(
        metadata=metadata,
        spec=AgentRunSpec(
            agentRef="sre",
            input=RunInput(task="web is OOMKilled", context={"alert": "KubePodCrashLooping"}),
            limits=limits or Limits(),
            cancel=cancel,
        ),
        status=status or AgentRunStatus(),
    )


def make_config(*, limits: Limits | None = None) -> Config:
    return Config.of(
        agent=AgentSpec(
            model=ModelSpec(name="gpt-test"), tools=[READ, WRITE], limits=limits or Limits()
        ),
        tools={
            READ: AgentToolSpec(description="Get an object", effect=Effect.READ, timeoutSeconds=30),
            WRITE: AgentToolSpec(description="Restart a rollout", effect=Effect.WRITE),
        },
        prompt=PROMPT,
    )


CONFIG = make_config()


def write_hash(step: int = 1, args: dict[str, Any] | None = None) -> str:
    """The hash of the scripted write, bound to the write tool's snapshot."""
    spec = CONFIG.snapshots[WRITE].specDigest
    return action_hash(UID, step, WRITE, WRITE_ARGS if args is None else args, spec)


def obs(
    now: datetime = NOW, config: Config | ConfigError | None = CONFIG, **kw: Any
) -> Observations:
    return Observations(now=now, config=config, **kw)


def with_status(run: AgentRun, status: AgentRunStatus) -> AgentRun:
    return run.model_copy(update={"status": status})


def annotate(run: AgentRun, **annotations: str) -> AgentRun:
    """Sets annotations; keys use `approve`/`reject` for the agentrun.dev ones."""
    metadata = copy.deepcopy(run.metadata)
    keys = {"approve": ANNOTATION_APPROVE, "reject": ANNOTATION_REJECT}
    metadata.setdefault("annotations", {}).update(
        {keys.get(k, k): v for k, v in annotations.items()}
    )
    return run.model_copy(update={"metadata": metadata})


def step(run: AgentRun, o: Observations) -> tuple[AgentRun, AgentRunStatus, list[Action]]:
    """One decide; checks the invariants that hold after every transition."""
    before = run.model_dump()
    status, actions = decide(run, o)
    assert run.model_dump() == before, "decide must not mutate its input"
    assert status.phase == cond.derive_phase(status.conditions)
    assert status.observedGeneration == run.metadata.get("generation")
    AgentRunStatus.model_validate(status.model_dump())  # still a valid status
    return with_status(run, status), status, actions


def reply(action: ToolCall | Done | InvalidAction, usage: Usage = REPLY_USAGE) -> ModelReply:
    return ModelReply(action=action, usage=usage)


def read_call(**args: Any) -> ModelReply:
    return reply(ToolCall(tool=READ, arguments=args or dict(READ_ARGS)))


def write_call(**args: Any) -> ModelReply:
    return reply(ToolCall(tool=WRITE, arguments=args or dict(WRITE_ARGS)))


def done(answer: str = "Raised the memory limit.") -> ModelReply:
    return reply(Done(answer=answer))


def of(actions: list[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def non_requeue(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, RequeueAfter)]


def get_cond(status: AgentRunStatus, type_: str) -> Condition:
    found = cond.get(status.conditions, type_)
    assert found is not None, f"no {type_} condition in {status.conditions}"
    return found


def events(actions: list[Action], reason: str | None = None) -> list[RecordEvent]:
    return [a for a in of(actions, RecordEvent) if reason is None or a.reason == reason]


def approve_cmd(digest: str, name: str = NAME) -> str:
    return f"kubectl annotate agentrun {name} -n {NAMESPACE} agentrun.dev/approve={digest}"


def job_obs(
    name: str,
    phase: JobPhase = JobPhase.SUCCEEDED,
    *,
    ok: bool = True,
    content: str = "deployment web: 3/3 ready",
    reason: str = "",
    message: str = "",
) -> JobObservation:
    return JobObservation(
        name=name,
        phase=phase,
        ok=ok,
        content=content,
        reason=reason,
        message=message,
        outputRef=output_name(name) if phase is JobPhase.SUCCEEDED else None,
    )


# -- states reached through decide itself (no hand-built statuses unless a crash needs it)


def started(run: AgentRun | None = None, config: Config = CONFIG) -> AgentRun:
    run, status, _ = step(run or make_run(), obs(config=config))
    assert status.phase is Phase.RUNNING
    return run


def after_reply(
    run: AgentRun, r: ModelReply | ModelUnavailable, config: Config = CONFIG, now: datetime = NOW
) -> tuple[AgentRun, AgentRunStatus, list[Action]]:
    return step(run, obs(now=now, config=config, model=r))


def read_ready(run: AgentRun | None = None) -> AgentRun:
    """Step 1 is a read tool; the status says READY and CreateJob was emitted."""
    run, status, _ = after_reply(started(run), read_call())
    assert status.currentAction is not None
    assert status.currentAction.state is ActionState.READY
    return run


def read_job_created(run: AgentRun | None = None) -> AgentRun:
    """Step 1's read Job was created and is running: no status write for that."""
    run = read_ready(run)
    name = run.status.currentAction.jobRef  # type: ignore[union-attr]
    run, status, _ = step(run, obs(job=job_obs(name, JobPhase.RUNNING)))
    assert status.currentAction is not None
    assert status.currentAction.state is ActionState.READY
    return run


def awaiting_approval(run: AgentRun | None = None) -> AgentRun:
    run, status, _ = after_reply(started(run), write_call())
    assert status.phase is Phase.AWAITING_APPROVAL
    return run


def approved_write() -> AgentRun:
    """Step 1's write action, approved: READY, its Job not yet observed."""
    run = awaiting_approval()
    digest = run.status.currentAction.actionHash  # type: ignore[union-attr]
    run, status, _ = step(annotate(run, approve=digest), obs())
    assert status.currentAction is not None
    assert status.currentAction.state is ActionState.READY
    return run


def errors_then(run: AgentRun, n: int, config: Config = CONFIG) -> AgentRun:
    """n invalid replies in a row."""
    for _ in range(n):
        run, _, _ = after_reply(run, reply(InvalidAction(message="not JSON")), config=config)
    return run


# ---------------------------------------------------------------- the adapter loop


class Adapter:
    """The adapter's loop in pure code: persist, act, feed back, until nothing is left.

    `script[step]` lists what the model answers to CallModel(step), in order.
    `tool_results[tool]` makes that tool's Jobs finish at once with (ok, content); other
    Jobs stay Running until `finish_job`. `jobs` is the cluster: it survives a "crash".
    """

    def __init__(
        self,
        run: AgentRun,
        script: Mapping[int, Sequence[ModelReply | ModelUnavailable]] | None = None,
        *,
        config: Config | ConfigError | None = CONFIG,
        tool_results: dict[str, tuple[bool, str]] | None = None,
        jobs: dict[str, JobObservation] | None = None,
        now: datetime = NOW,
    ) -> None:
        self.run = run
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.config = config
        self.tool_results = tool_results or {}
        self.jobs: dict[str, JobObservation] = {} if jobs is None else jobs
        self.now = now
        self.pending_reply: ModelReply | ModelUnavailable | None = None
        self.creates: list[CreateJob] = []
        self.job_runs: Counter[str] = Counter()  # Jobs actually created (a 409 is not a run)
        self.deleted: list[str] = []
        self.events: list[RecordEvent] = []
        self.model_calls: list[int] = []
        self.requeues: list[float] = []
        self.snapshots: list[AgentRunStatus] = []  # every persisted status

    @property
    def status(self) -> AgentRunStatus:
        return self.run.status

    def observe_job(self) -> JobObservation | None:
        cur = self.run.status.currentAction
        if cur is None or cur.state is ActionState.AWAITING_APPROVAL:
            return None
        return self.jobs.get(cur.jobRef, JobObservation(cur.jobRef, JobPhase.NOT_FOUND))

    def decide_once(self, **extra: Any) -> list[Action]:
        o = Observations(
            now=self.now,
            config=self.config,
            model=self.pending_reply,
            job=self.observe_job(),
            **extra,
        )
        self.pending_reply = None
        self.run, status, actions = step(self.run, o)  # persisted before acting
        self.snapshots.append(status)
        return actions

    def execute(self, actions: list[Action]) -> bool:
        """Carries out actions; True when one produced something decide must see."""
        more = False
        for a in actions:
            if isinstance(a, CallModel):
                self.model_calls.append(a.step)
                replies = self.script.get(a.step)
                assert replies, f"the model was not scripted for step {a.step}"
                self.pending_reply = replies.pop(0)
                more = True
            elif isinstance(a, CreateJob):
                self.creates.append(a)
                if a.name not in self.jobs:  # else: 409, harmless
                    self.job_runs[a.name] += 1
                    if a.tool in self.tool_results:
                        ok, content = self.tool_results[a.tool]
                        self.jobs[a.name] = job_obs(a.name, ok=ok, content=content)
                    else:
                        self.jobs[a.name] = job_obs(a.name, JobPhase.RUNNING)
                more = True
            elif isinstance(a, DeleteJob):
                self.deleted.append(a.name)
                self.jobs.pop(a.name, None)
            elif isinstance(a, RemoveAnnotations):
                metadata = copy.deepcopy(self.run.metadata)
                for key in a.keys:
                    metadata.get("annotations", {}).pop(key, None)
                self.run = self.run.model_copy(update={"metadata": metadata})
            elif isinstance(a, RecordEvent):
                self.events.append(a)
            elif isinstance(a, RequeueAfter):
                self.requeues.append(a.seconds)
            else:  # pragma: no cover
                raise AssertionError(f"unknown action {a!r}")
        return more

    def settle(self, **extra: Any) -> AgentRunStatus:
        for _ in range(200):
            if not self.execute(self.decide_once(**extra)):
                return self.status
        raise AssertionError("the loop did not settle")

    def finish_job(self, ok: bool = True, content: str = "ok", **kw: Any) -> AgentRunStatus:
        cur = self.status.currentAction
        assert cur is not None
        self.jobs[cur.jobRef] = job_obs(cur.jobRef, ok=ok, content=content, **kw)
        return self.settle()

    def annotate(self, **annotations: str) -> AgentRunStatus:
        self.run = annotate(self.run, **annotations)
        return self.settle()

    def event_reasons(self) -> list[str]:
        return [e.reason for e in self.events]


# ================================================================ start


def test_start_moves_a_pending_run_to_running_and_calls_the_model_for_step_1() -> None:
    run = make_run(generation=4)
    _, status, actions = step(run, obs())

    assert status.phase is Phase.RUNNING
    assert status.startTime == NOW_S
    assert status.completionTime is None
    assert status.promptRef == PROMPT
    assert status.step == 0  # a step is counted when the model answers
    assert status.observedGeneration == 4
    running, succeeded = get_cond(status, cond.RUNNING), get_cond(status, cond.SUCCEEDED)
    assert (running.status, running.reason, running.message) == (TRUE, "Started", "Run started")
    assert (succeeded.status, succeeded.reason) == (UNKNOWN, "InProgress")
    assert running.lastTransitionTime == NOW_S
    assert all(c.observedGeneration == 4 for c in status.conditions)
    assert cond.get(status.conditions, cond.APPROVAL_PENDING) is None

    assert non_requeue(actions) == [
        RecordEvent(type="Normal", reason="Started", message="Run started with agent sre"),
        CallModel(step=1),
    ]
    # Wakes up at the deadline (default timeoutSeconds=3600) even if nothing happens.
    assert of(actions, RequeueAfter) == [RequeueAfter(seconds=3600.0)]


def test_start_is_not_repeated_when_the_adapter_crashed_before_calling_the_model() -> None:
    run = started()
    later = NOW + timedelta(seconds=30)
    _, status, actions = step(run, obs(now=later))
    assert status.startTime == NOW_S  # unchanged
    assert get_cond(status, cond.RUNNING).lastTransitionTime == NOW_S
    assert non_requeue(actions) == [CallModel(step=1)]  # same step, no second Started event
    assert of(actions, RequeueAfter) == [RequeueAfter(seconds=3570.0)]


def test_config_none_is_a_no_op_for_a_new_run() -> None:
    run = make_run()
    _, status, actions = step(run, obs(config=None))
    assert actions == []
    assert status.phase is Phase.PENDING
    assert status.startTime is None
    assert status.conditions == []


def test_config_none_is_a_no_op_for_a_running_run() -> None:
    run = read_job_created()
    _, status, actions = step(run, obs(config=None))
    assert actions == []
    assert status == run.status


def test_start_uses_the_prompt_of_the_resolved_config() -> None:
    other = PromptRef(name="sre-agent", version="7", sha256="cd" * 32)
    config = Config.of(agent=CONFIG.agent, tools=CONFIG.tools, prompt=other)
    _, status, _ = step(make_run(), obs(config=config))
    assert status.promptRef == other


def test_times_are_recorded_in_utc_whatever_the_timezone_of_now() -> None:
    cest = timezone(timedelta(hours=2))
    _, status, _ = step(make_run(), obs(now=NOW.astimezone(cest)))
    assert status.startTime == NOW_S


# ================================================================ model replies


def test_read_tool_creates_a_job_with_a_deterministic_name_and_hash() -> None:
    _, status, actions = after_reply(started(), read_call())
    name, digest = (
        job_name(NAME, UID, 1),
        action_hash(UID, 1, READ, READ_ARGS, CONFIG.snapshots[READ].specDigest),
    )

    assert status.phase is Phase.RUNNING
    assert status.step == 1
    assert status.pendingAction is None  # reads never wait for a human
    cur = status.currentAction
    assert cur is not None
    assert (cur.step, cur.tool, cur.effect, cur.arguments) == (1, READ, Effect.READ, READ_ARGS)
    assert (cur.state, cur.jobRef, cur.actionHash, cur.requestedTime) == (
        ActionState.READY,
        name,
        digest,
        NOW_S,
    )
    (call,) = status.thread
    assert (call.step, call.type, call.tool, call.arguments) == (
        1,
        EventType.TOOL_CALL,
        READ,
        READ_ARGS,
    )
    assert call.content.startswith(READ)
    assert non_requeue(actions) == [
        CreateJob(
            step=1,
            tool=READ,
            effect=Effect.READ,
            arguments=READ_ARGS,
            name=name,
            actionHash=digest,
            snapshot=CONFIG.snapshots[READ],
        )
    ]
    assert not cond.is_true(status.conditions, cond.APPROVAL_PENDING)


def test_usage_is_summed_across_replies_and_counts_model_calls() -> None:
    run = read_ready()
    run, _, _ = step(run, obs(job=job_obs(job_name(NAME, UID, 1))))
    run, status, _ = after_reply(run, done())
    assert status.usage == Usage(
        promptTokens=200, completionTokens=40, totalTokens=240, modelCalls=2
    )


def test_usage_of_an_invalid_reply_is_still_counted() -> None:
    _, status, _ = after_reply(started(), reply(InvalidAction(message="bad")))
    assert status.usage == Usage(
        promptTokens=100, completionTokens=20, totalTokens=120, modelCalls=1
    )


def test_invalid_action_puts_the_error_in_the_thread_and_calls_the_model_again() -> None:
    _, status, actions = after_reply(started(), reply(InvalidAction(message="missing 'tool'")))
    assert status.phase is Phase.RUNNING
    assert status.step == 1  # the model call was spent
    assert status.consecutiveErrors == 1
    (err,) = status.thread
    assert (err.type, err.step, err.content) == (EventType.ERROR, 1, "missing 'tool'")
    assert non_requeue(actions) == [CallModel(step=2)]
    assert status.currentAction is None


def test_unknown_tool_is_an_error_the_model_sees_and_nothing_runs() -> None:
    r = reply(ToolCall(tool="kubectl-exec", arguments={"cmd": "rm -rf /"}))
    _, status, actions = after_reply(started(), r)
    assert of(actions, CreateJob) == []
    assert status.consecutiveErrors == 1
    (err,) = status.thread
    assert err.type is EventType.ERROR
    assert "kubectl-exec" in err.content
    assert non_requeue(actions) == [CallModel(step=2)]


def test_done_succeeds_the_run_with_the_answer() -> None:
    run = errors_then(started(), 2)  # errors before do not matter once it is done
    later = NOW + timedelta(minutes=5)
    _, status, actions = after_reply(run, done("Raised the memory limit to 512Mi."), now=later)

    assert status.phase is Phase.SUCCEEDED
    assert status.result is not None
    assert status.result.answer == "Raised the memory limit to 512Mi."
    assert status.completionTime == "2025-01-02T03:09:05Z"
    assert status.consecutiveErrors == 0
    assert status.step == 3
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.status, succeeded.reason) == (TRUE, "Completed")
    assert get_cond(status, cond.RUNNING).status is FALSE
    assert get_cond(status, cond.RUNNING).reason == "Completed"
    assert status.thread[-1].type is EventType.DONE
    assert status.thread[-1].content == "Raised the memory limit to 512Mi."
    assert actions == [RecordEvent(type="Normal", reason="Completed", message="The agent finished")]


def test_a_long_answer_is_kept_in_full_in_result_and_clipped_in_the_thread() -> None:
    answer = "x" * (MAX_EVENT_CONTENT * 2)
    _, status, _ = after_reply(started(), done(answer))
    assert status.result is not None and status.result.answer == answer
    assert len(status.thread[-1].content) <= MAX_EVENT_CONTENT
    assert "truncated" in status.thread[-1].content


def test_model_unavailable_is_an_error_with_backoff_and_no_step() -> None:
    run, status, actions = after_reply(started(), ModelUnavailable(message="502 Bad Gateway"))
    assert status.phase is Phase.RUNNING
    assert status.step == 0  # no step was spent
    assert status.usage == Usage()
    assert status.consecutiveErrors == 1
    (err,) = status.thread
    assert err.type is EventType.ERROR
    assert "502 Bad Gateway" in err.content
    assert of(actions, CallModel) == []  # retried later, not at once
    assert min(a.seconds for a in of(actions, RequeueAfter)) == 2.0

    # The backoff grows with the consecutive errors.
    run, status, actions = after_reply(run, ModelUnavailable(message="timeout"))
    assert status.consecutiveErrors == 2
    assert min(a.seconds for a in of(actions, RequeueAfter)) == 4.0

    # On the requeue (no reply yet) the same step is asked for again.
    _, status, actions = step(run, obs(now=NOW + timedelta(seconds=4)))
    assert non_requeue(actions) == [CallModel(step=1)]


def test_model_unavailable_backoff_is_capped_at_60s() -> None:
    run = started(make_run(limits=Limits(maxConsecutiveErrors=20)))
    for _ in range(8):
        run, _, actions = after_reply(run, ModelUnavailable(message="down"))
    assert min(a.seconds for a in of(actions, RequeueAfter)) == 60.0


def test_model_unavailable_requeues_with_the_backoff_as_the_earliest_wake_up() -> None:
    # Contract with the adapter: decide may emit several RequeueAfter (the backoff and the
    # deadline); the adapter keeps the earliest (runner._wake_later does).
    _, _, actions = after_reply(started(), ModelUnavailable(message="502"))
    assert sorted(a.seconds for a in of(actions, RequeueAfter)) == [2.0, 3600.0]


def test_model_unavailable_three_times_in_a_row_fails_the_run() -> None:
    run = started()
    for _ in range(3):
        run, status, actions = after_reply(run, ModelUnavailable(message="503"))
    assert status.phase is Phase.FAILED
    assert get_cond(status, cond.SUCCEEDED).reason == "TooManyErrors"
    assert of(actions, RequeueAfter) == []


def test_a_model_reply_is_ignored_while_an_action_is_in_flight() -> None:
    run = read_job_created()
    name = run.status.currentAction.jobRef  # type: ignore[union-attr]
    _, status, actions = step(run, obs(model=done(), job=job_obs(name, JobPhase.RUNNING)))
    assert status == run.status
    assert non_requeue(actions) == []


# ================================================================ read tool Jobs


def test_ready_and_job_not_found_after_a_crash_creates_the_same_job_again() -> None:
    run = read_ready()
    first = run.status.currentAction
    assert first is not None
    later = NOW + timedelta(seconds=10)
    _, status, actions = step(
        run, obs(now=later, job=JobObservation(first.jobRef, JobPhase.NOT_FOUND))
    )
    assert non_requeue(actions) == [
        CreateJob(
            step=1,
            tool=READ,
            effect=Effect.READ,
            arguments=READ_ARGS,
            name=first.jobRef,  # the SAME name: a repeated create is a harmless 409
            actionHash=first.actionHash,
            snapshot=CONFIG.snapshots[READ],
        )
    ]
    assert status.currentAction == first  # still READY, same hash/name/time
    assert status.step == 1
    assert len(status.thread) == 1  # no second ToolCall in the thread


def test_ready_and_job_not_observed_creates_the_same_job_again() -> None:
    run = read_ready()
    _, _, actions = step(run, obs())
    (create,) = of(actions, CreateJob)
    assert create.name == job_name(NAME, UID, 1)


def test_ready_and_read_job_running_writes_nothing_and_creates_nothing() -> None:
    run = read_ready()
    name = job_name(NAME, UID, 1)
    _, status, actions = step(run, obs(job=job_obs(name, JobPhase.RUNNING)))
    assert status == run.status  # no status write while a read Job runs
    assert of(actions, CreateJob) == []
    assert non_requeue(actions) == []
    assert status.phase is Phase.RUNNING


def test_ready_and_write_job_exists_records_job_created_at_once() -> None:
    run = approved_write()
    current = run.status.currentAction
    assert current is not None and current.state is ActionState.READY
    _, status, actions = step(run, obs(job=job_obs(current.jobRef, JobPhase.RUNNING)))
    assert status.currentAction is not None
    assert status.currentAction.state is ActionState.JOB_CREATED
    assert status.currentAction.jobRef == current.jobRef
    assert of(actions, CreateJob) == []


def test_a_recorded_write_job_that_disappears_is_never_created_again() -> None:
    run = approved_write()
    current = run.status.currentAction
    assert current is not None
    run, status, _ = step(run, obs(job=job_obs(current.jobRef, JobPhase.RUNNING)))
    # An operator restarted after the Job was deleted has no memory of it: status decides.
    _, status, actions = step(run, obs(job=JobObservation(current.jobRef, JobPhase.NOT_FOUND)))
    assert of(actions, CreateJob) == []
    assert "disappeared" in status.thread[-1].content


def test_ready_and_job_already_finished_takes_its_result() -> None:
    # We created the Job, crashed before recording it, and it finished meanwhile.
    run = read_ready()
    name = job_name(NAME, UID, 1)
    _, status, actions = step(run, obs(job=job_obs(name, content="3/3 ready")))
    assert of(actions, CreateJob) == []
    assert status.thread[-1].type is EventType.TOOL_RESULT
    assert status.thread[-1].content == "3/3 ready"
    assert non_requeue(actions) == [CallModel(step=2)]


def test_a_running_job_is_waited_for() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    observed = job_obs(name, JobPhase.RUNNING)
    _, status, actions = step(run, obs(now=NOW + timedelta(seconds=100), job=observed))
    assert status == run.status
    assert actions == [RequeueAfter(seconds=3500.0)]


def test_a_recorded_job_not_observed_this_time_is_waited_for() -> None:
    run = approved_write()
    name = run.status.currentAction.jobRef  # type: ignore[union-attr]
    run, _, _ = step(run, obs(job=job_obs(name, JobPhase.RUNNING)))
    _, status, actions = step(run, obs(now=NOW + timedelta(seconds=100)))
    assert status == run.status
    assert non_requeue(actions) == []


def test_job_succeeded_puts_the_result_in_the_thread_and_calls_the_model() -> None:
    run = errors_then(started(), 2)
    run, status, _ = after_reply(run, read_call())
    assert status.consecutiveErrors == 2
    name = job_name(NAME, UID, 3)
    run, _, _ = step(run, obs(job=job_obs(name, JobPhase.RUNNING)))
    later = NOW + timedelta(seconds=20)
    _, status, actions = step(run, obs(now=later, job=job_obs(name, content="web: 3/3 ready")))

    result = status.thread[-1]
    assert result.type is EventType.TOOL_RESULT
    assert (result.step, result.tool, result.content) == (3, READ, "web: 3/3 ready")
    assert result.jobRef == name
    assert result.outputRef == output_name(name)
    assert result.time == "2025-01-02T03:04:25Z"
    assert status.consecutiveErrors == 0  # reset by a success
    assert status.currentAction is None
    assert status.phase is Phase.RUNNING
    assert non_requeue(actions) == [CallModel(step=4)]


def test_a_tool_reporting_failure_is_evidence_not_an_error() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    job = job_obs(name, ok=False, content='deployments.apps "web" not found')
    _, status, actions = step(run, obs(job=job))

    result = status.thread[-1]
    assert result.type is EventType.TOOL_RESULT
    assert result.content == 'deployments.apps "web" not found'
    assert status.consecutiveErrors == run.status.consecutiveErrors
    assert status.currentAction is None
    assert CallModel(step=2) in actions


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            job_obs(
                "J",
                JobPhase.FAILED,
                ok=False,
                content="",
                reason="BackoffLimitExceeded",
                message="Job has reached the specified backoff limit",
            ),
            "Tool k8s-get failed: Job has reached the specified backoff limit",
        ),
        (
            job_obs("J", JobPhase.FAILED, ok=False, content="", reason="BackoffLimitExceeded"),
            "Tool k8s-get failed: BackoffLimitExceeded",
        ),
        (
            job_obs("J", JobPhase.FAILED, ok=False, content=""),
            "Tool k8s-get failed: no output",
        ),
        (
            job_obs(
                "J",
                JobPhase.FAILED,
                ok=False,
                content="",
                reason="DeadlineExceeded",
                message="Job was active longer than specified deadline",
            ),
            "Tool k8s-get timed out after 30s (Job J).",
        ),
        (
            job_obs(
                "J",
                JobPhase.FAILED,
                ok=False,
                content="",
                reason="JobDeadlineExceeded",
                message="its Job's deadline of 330s passed (pod Pending)",
            ),
            "Tool k8s-get was not done when its Job's deadline passed: it waited for a node, "
            "or started too late to finish; its Job's deadline of 330s passed (pod Pending) "
            "(Job J).",
        ),
    ],
    ids=["job-failed-message", "job-failed-reason", "no-output", "timeout", "never-started"],
)
def test_a_failed_tool_is_an_error_in_the_thread_then_the_model_is_called(
    job: JobObservation, expected: str
) -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    job = JobObservation(**{**job.__dict__, "name": name})
    _, status, actions = step(run, obs(job=job))

    err = status.thread[-1]
    assert err.type is EventType.ERROR
    assert err.content == expected.replace("(Job J)", f"(Job {name})")
    assert (err.tool, err.jobRef, err.step) == (READ, name, 1)
    assert status.consecutiveErrors == 1
    assert status.currentAction is None
    assert status.phase is Phase.RUNNING
    assert of(actions, CreateJob) == []
    assert non_requeue(actions) == [CallModel(step=2)]


def test_a_job_that_disappears_after_creation_is_an_error_and_is_not_run_again() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    seen = JobObservation(name, JobPhase.NOT_FOUND, existed=True)  # the runner saw it exist
    _, status, actions = step(run, obs(job=seen))
    assert of(actions, CreateJob) == []  # never re-created: it may have run already
    err = status.thread[-1]
    assert err.type is EventType.ERROR
    assert "disappeared" in err.content and "not run again" in err.content
    assert err.jobRef == name
    assert status.consecutiveErrors == 1
    assert non_requeue(actions) == [CallModel(step=2)]


def test_an_observation_of_another_job_is_not_taken_as_this_steps_result() -> None:
    run = read_ready()
    stale = job_obs("web-oom-s0-aaaaaa", content="old output")
    _, status, actions = step(run, obs(job=stale))
    assert status.currentAction is not None
    assert status.currentAction.state is ActionState.READY
    assert of(actions, CreateJob) != []
    assert all(e.type is not EventType.TOOL_RESULT for e in status.thread)


# ================================================================ write tools and approval


def test_write_tool_waits_for_approval_with_the_exact_command() -> None:
    run = make_run(annotations={ANNOTATION_REJECT: "stale", "team": "sre"})
    _, status, actions = after_reply(started(run), write_call())
    digest = write_hash()
    command = approve_cmd(digest)

    assert status.phase is Phase.AWAITING_APPROVAL
    pending = get_cond(status, cond.APPROVAL_PENDING)
    assert (pending.status, pending.reason) == (TRUE, "AwaitingApproval")
    assert command in pending.message
    assert WRITE in pending.message
    assert get_cond(status, cond.RUNNING).status is TRUE  # still running, just waiting

    pa = status.pendingAction
    assert pa is not None
    assert (pa.step, pa.tool, pa.arguments, pa.actionHash, pa.requestedTime) == (
        1,
        WRITE,
        WRITE_ARGS,
        digest,
        NOW_S,
    )
    assert pa.approveCommand == command
    cur = status.currentAction
    assert cur is not None
    assert (cur.state, cur.effect, cur.actionHash) == (
        ActionState.AWAITING_APPROVAL,
        Effect.WRITE,
        digest,
    )

    assert of(actions, CreateJob) == []  # nothing runs before a human approves
    assert RemoveAnnotations(keys=BOTH) in actions  # a stale decision never applies
    (requested,) = events(actions, "ApprovalRequested")
    assert requested.type == "Normal"
    assert requested.message.endswith(f"approve with: {command}")
    assert "Step 1" in requested.message and WRITE in requested.message
    assert status.thread[-1].type is EventType.TOOL_CALL


def test_write_tool_without_stale_annotations_removes_nothing() -> None:
    _, _, actions = after_reply(started(make_run(annotations={"team": "sre"})), write_call())
    assert of(actions, RemoveAnnotations) == []


def test_the_approve_command_names_the_run_and_its_namespace() -> None:
    run = make_run(name="checkout-latency-5xx")
    _, status, _ = after_reply(started(run), write_call())
    assert status.pendingAction is not None
    assert status.pendingAction.approveCommand.startswith(
        f"kubectl annotate agentrun checkout-latency-5xx -n {NAMESPACE} agentrun.dev/approve="
    )


def test_awaiting_approval_without_a_decision_changes_nothing() -> None:
    run = awaiting_approval()
    _, status, actions = step(run, obs(now=NOW + timedelta(minutes=10)))
    assert status == run.status
    assert actions == [RequeueAfter(seconds=3000.0)]


def test_a_matching_approval_runs_the_write_tool() -> None:
    run = awaiting_approval()
    digest = write_hash()
    later = NOW + timedelta(minutes=2)
    _, status, actions = step(annotate(run, approve=digest), obs(now=later))

    assert status.phase is Phase.RUNNING
    assert status.pendingAction is None
    pending = get_cond(status, cond.APPROVAL_PENDING)
    assert (pending.status, pending.reason) == (FALSE, "Approved")
    (record,) = status.approvals
    assert (record.decision, record.step, record.tool, record.actionHash, record.time) == (
        Decision.APPROVED,
        1,
        WRITE,
        digest,
        "2025-01-02T03:06:05Z",
    )
    assert status.thread[-1].type is EventType.APPROVAL
    cur = status.currentAction
    assert cur is not None and cur.state is ActionState.READY
    assert of(actions, CreateJob) == [
        CreateJob(
            step=1,
            tool=WRITE,
            effect=Effect.WRITE,
            arguments=WRITE_ARGS,
            name=job_name(NAME, UID, 1),
            actionHash=digest,
            snapshot=CONFIG.snapshots[WRITE],
        )
    ]
    assert RemoveAnnotations(keys=BOTH) in actions
    assert [e.reason for e in events(actions)] == ["Approved"]


def test_an_approval_with_surrounding_whitespace_still_matches() -> None:
    run = awaiting_approval()
    digest = write_hash()
    _, status, actions = step(annotate(run, approve=f" {digest}\n"), obs())
    assert len(of(actions, CreateJob)) == 1
    assert status.approvals[-1].decision is Decision.APPROVED


def test_an_approval_with_another_hash_runs_nothing_and_says_why() -> None:
    run = awaiting_approval()
    digest = write_hash()
    wrong = "f" * 64
    _, status, actions = step(annotate(run, approve=wrong), obs())

    assert of(actions, CreateJob) == []
    assert status.phase is Phase.AWAITING_APPROVAL
    assert status.pendingAction == run.status.pendingAction  # still pending, unchanged
    assert status.currentAction == run.status.currentAction
    (record,) = status.approvals
    assert (record.decision, record.actionHash) == (Decision.REFUSED, digest)
    assert "does not match" in record.reason

    pending = get_cond(status, cond.APPROVAL_PENDING)
    assert (pending.status, pending.reason) == (TRUE, "ApprovalMismatch")
    assert "does not match" in pending.message and "nothing ran" in pending.message
    assert pending.message.endswith(f"Approve with: {approve_cmd(digest)}")
    # Still the same wait: lastTransitionTime stays at the request.
    assert pending.lastTransitionTime == run.status.conditions[1].lastTransitionTime

    (warning,) = events(actions, "ApprovalMismatch")
    assert warning.type == "Warning"
    assert approve_cmd(digest) in warning.message
    assert of(actions, RemoveAnnotations) == [RemoveAnnotations(keys=(ANNOTATION_APPROVE,))]


def test_the_right_approval_still_works_after_a_mismatch() -> None:
    ad = Adapter(started(), {1: [write_call()]})
    ad.settle()
    ad.annotate(approve="0" * 64)
    assert ad.status.phase is Phase.AWAITING_APPROVAL
    assert ANNOTATION_APPROVE not in ad.run.metadata["annotations"]  # the wrong one is gone
    ad.annotate(approve=write_hash())
    assert [r.decision for r in ad.status.approvals] == [Decision.REFUSED, Decision.APPROVED]
    assert list(ad.job_runs) == [job_name(NAME, UID, 1)]
    mismatch = get_cond(ad.status, cond.APPROVAL_PENDING)
    assert (mismatch.status, mismatch.reason) == (FALSE, "Approved")


def test_a_rejection_goes_back_to_the_model_with_the_reason() -> None:
    run = awaiting_approval()
    digest = write_hash()
    _, status, actions = step(annotate(run, reject="restart during peak; scale up instead"), obs())

    assert of(actions, CreateJob) == []
    assert status.phase is Phase.RUNNING
    assert status.currentAction is None and status.pendingAction is None
    rejection = status.thread[-1]
    assert rejection.type is EventType.REJECTION
    assert rejection.tool == WRITE
    assert "restart during peak; scale up instead" in rejection.content
    assert "did not run" in rejection.content
    (record,) = status.approvals
    assert (record.decision, record.reason, record.actionHash) == (
        Decision.REJECTED,
        "restart during peak; scale up instead",
        digest,
    )
    pending = get_cond(status, cond.APPROVAL_PENDING)
    assert (pending.status, pending.reason) == (FALSE, "Rejected")
    assert pending.message == "restart during peak; scale up instead"
    assert RemoveAnnotations(keys=BOTH) in actions
    assert [e.reason for e in events(actions)] == ["Rejected"]
    assert of(actions, CallModel) == [CallModel(step=2)]
    assert status.consecutiveErrors == 0  # a denial is not an error


def test_a_rejection_without_a_reason_says_so() -> None:
    _, status, _ = step(annotate(awaiting_approval(), reject="  "), obs())
    assert status.approvals[-1].reason == "no reason given"
    assert "no reason given" in status.thread[-1].content


def test_a_rejection_wins_over_an_approval_set_at_the_same_time() -> None:
    run = awaiting_approval()
    digest = write_hash()
    _, status, actions = step(annotate(run, approve=digest, reject="no"), obs())
    assert of(actions, CreateJob) == []
    assert [r.decision for r in status.approvals] == [Decision.REJECTED]


def test_an_earlier_steps_approval_never_approves_a_later_identical_action() -> None:
    ad = Adapter(
        started(),
        {1: [write_call()], 2: [write_call()], 3: [done()]},
        tool_results={WRITE: (True, "restarted")},
    )
    ad.settle()
    first = write_hash()
    ad.annotate(approve=first)
    assert ad.status.step == 2 and ad.status.phase is Phase.AWAITING_APPROVAL
    second = ad.status.pendingAction.actionHash  # type: ignore[union-attr]
    assert second != first  # same tool and arguments, later step

    ad.annotate(approve=first)  # replaying the first approval
    assert ad.status.phase is Phase.AWAITING_APPROVAL
    assert len(ad.job_runs) == 1  # the second restart did not run
    assert ad.status.approvals[-1].decision is Decision.REFUSED

    ad.annotate(approve=second)
    assert len(ad.job_runs) == 2
    final = ad.status  # a fresh name: mypy still narrows ad.status.phase from before annotate()
    assert final.phase is Phase.SUCCEEDED


def test_the_same_action_on_another_run_needs_its_own_approval() -> None:
    a = awaiting_approval(make_run(uid="uid-a"))
    b = awaiting_approval(make_run(uid="uid-b"))
    hash_a = a.status.pendingAction.actionHash  # type: ignore[union-attr]
    assert hash_a != b.status.pendingAction.actionHash  # type: ignore[union-attr]
    _, _, actions = step(annotate(b, approve=hash_a), obs())
    assert of(actions, CreateJob) == []
    assert events(actions, "ApprovalMismatch")


def test_a_decision_annotation_while_a_job_is_in_flight_does_nothing() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    _, status, actions = step(
        annotate(run, approve="x", reject="y"), obs(job=job_obs(name, JobPhase.RUNNING))
    )
    assert status == run.status
    assert non_requeue(actions) == []


def test_approval_records_are_bounded_and_keep_the_newest() -> None:
    run = awaiting_approval()
    for i in range(MAX_APPROVAL_RECORDS + 5):
        run, status, _ = step(annotate(run, approve=f"{i:03d}" + "a" * 61), obs())
    assert len(status.approvals) == MAX_APPROVAL_RECORDS
    assert status.approvals[0].reason.startswith("approval hash 005aaaa")
    assert status.approvals[-1].reason.startswith(f"approval hash {MAX_APPROVAL_RECORDS + 4:03d}")


# ================================================================ limits


def test_three_consecutive_errors_fail_the_run_by_default() -> None:
    run = errors_then(started(), 2)
    assert run.status.phase is Phase.RUNNING
    _, status, actions = after_reply(run, reply(InvalidAction(message="still not JSON")))
    assert status.phase is Phase.FAILED
    assert status.consecutiveErrors == 3
    assert status.completionTime == NOW_S
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.status, succeeded.reason) == (FALSE, "TooManyErrors")
    assert succeeded.message.startswith("3 consecutive errors")
    assert "still not JSON" in succeeded.message
    assert get_cond(status, cond.RUNNING).reason == "TooManyErrors"
    assert status.thread[-1].type is EventType.ERROR
    assert of(actions, CallModel) == [] and of(actions, RequeueAfter) == []
    (ev,) = events(actions)
    assert (ev.type, ev.reason) == ("Warning", "TooManyErrors")


def test_a_success_resets_the_consecutive_error_count() -> None:
    ad = Adapter(
        started(),
        {
            1: [reply(InvalidAction(message="bad"))],
            2: [reply(InvalidAction(message="bad"))],
            3: [read_call()],
            4: [reply(InvalidAction(message="bad"))],
            5: [reply(InvalidAction(message="bad"))],
            6: [done()],
        },
        tool_results={READ: (True, "ok")},
    )
    status = ad.settle()
    assert status.phase is Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("run_limits", "agent_limits", "fails_after"),
    [
        (Limits(maxConsecutiveErrors=1), Limits(), 1),
        (Limits(), Limits(maxConsecutiveErrors=5), 5),
        (Limits(maxConsecutiveErrors=2), Limits(maxConsecutiveErrors=5), 2),  # run wins
    ],
)
def test_max_consecutive_errors_is_configurable(
    run_limits: Limits, agent_limits: Limits, fails_after: int
) -> None:
    config = make_config(limits=agent_limits)
    run = errors_then(started(make_run(limits=run_limits), config), fails_after - 1, config)
    assert run.status.phase is Phase.RUNNING
    _, status, _ = after_reply(run, reply(InvalidAction(message="bad")), config=config)
    assert status.phase is Phase.FAILED
    assert get_cond(status, cond.SUCCEEDED).reason == "TooManyErrors"


@pytest.mark.parametrize(
    ("run_limits", "agent_limits", "max_steps"),
    [
        (Limits(maxSteps=2), Limits(), 2),
        (Limits(), Limits(maxSteps=3), 3),
        (Limits(maxSteps=1), Limits(maxSteps=3), 1),
    ],
)
def test_max_steps_fails_the_run_before_another_model_call(
    run_limits: Limits, agent_limits: Limits, max_steps: int
) -> None:
    config = make_config(limits=agent_limits)
    script = {i: [read_call(name=f"pod-{i}")] for i in range(1, 10)}
    ad = Adapter(
        make_run(limits=run_limits), script, config=config, tool_results={READ: (True, "ok")}
    )
    status = ad.settle()
    assert ad.model_calls == list(range(1, max_steps + 1))
    assert status.phase is Phase.FAILED
    assert status.step == max_steps
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.reason, succeeded.message) == (
        "MaxStepsExceeded",
        f"Run reached maxSteps={max_steps}",
    )
    assert ad.event_reasons()[-1] == "MaxStepsExceeded"


def test_done_on_the_last_allowed_step_still_succeeds() -> None:
    ad = Adapter(
        make_run(limits=Limits(maxSteps=2)),
        {1: [read_call()], 2: [done()]},
        tool_results={READ: (True, "ok")},
    )
    assert ad.settle().phase is Phase.SUCCEEDED


def test_max_steps_defaults_to_20() -> None:
    script = {i: [read_call(name=f"pod-{i}")] for i in range(1, 30)}
    ad = Adapter(make_run(), script, tool_results={READ: (True, "ok")})
    status = ad.settle()
    assert status.step == 20
    assert get_cond(status, cond.SUCCEEDED).reason == "MaxStepsExceeded"


@pytest.mark.parametrize("where", ["run", "agent"])
def test_max_total_tokens_stops_the_run(where: str) -> None:
    limits = Limits(maxTotalTokens=200)
    run = make_run(limits=limits if where == "run" else None)
    config = make_config(limits=limits if where == "agent" else None)
    ad = Adapter(
        run,
        {1: [read_call()], 2: [read_call()], 3: [done()]},
        config=config,
        tool_results={READ: (True, "ok")},
    )
    status = ad.settle()
    assert ad.model_calls == [1, 2]  # 240 tokens used after 2 calls: no third
    assert status.phase is Phase.FAILED
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert succeeded.reason == "TokenBudgetExceeded"
    assert succeeded.message == "Run used 240 tokens of maxTotalTokens=200"


def test_timeout_fails_the_run_and_deletes_its_running_job() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    at = NOW + timedelta(seconds=3600)
    _, status, actions = step(run, obs(now=at, job=job_obs(name, JobPhase.RUNNING)))
    assert status.phase is Phase.FAILED
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.status, succeeded.reason, succeeded.message) == (
        FALSE,
        "Timeout",
        "Run exceeded timeoutSeconds=3600",
    )
    assert status.completionTime == "2025-01-02T04:04:05Z"
    assert status.currentAction is None
    assert of(actions, DeleteJob) == [DeleteJob(name=name)]
    assert [(e.type, e.reason) for e in events(actions)] == [("Warning", "Timeout")]
    assert of(actions, RequeueAfter) == []


def test_timeout_deletes_a_job_it_could_not_observe() -> None:
    run = read_job_created()
    _, _, actions = step(run, obs(now=NOW + timedelta(hours=2)))
    assert of(actions, DeleteJob) == [DeleteJob(name=job_name(NAME, UID, 1))]


@pytest.mark.parametrize("phase", [JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.NOT_FOUND])
def test_timeout_does_not_delete_a_finished_or_missing_job(phase: JobPhase) -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    _, status, actions = step(run, obs(now=NOW + timedelta(hours=2), job=job_obs(name, phase)))
    assert status.phase is Phase.FAILED
    assert of(actions, DeleteJob) == []


def test_timeout_while_awaiting_approval_clears_the_pending_action() -> None:
    run = awaiting_approval()
    _, status, actions = step(run, obs(now=NOW + timedelta(hours=1)))
    assert status.phase is Phase.FAILED
    assert status.pendingAction is None and status.currentAction is None
    assert get_cond(status, cond.APPROVAL_PENDING).status is FALSE
    assert of(actions, CreateJob) == [] and of(actions, DeleteJob) == []


def test_timeout_wins_over_an_approval_that_arrives_too_late() -> None:
    run = awaiting_approval()
    digest = write_hash()
    _, status, actions = step(annotate(run, approve=digest), obs(now=NOW + timedelta(hours=1)))
    assert status.phase is Phase.FAILED
    assert of(actions, CreateJob) == []


def test_timeout_seconds_is_configurable_and_drives_the_requeue() -> None:
    run = started(make_run(limits=Limits(timeoutSeconds=60)))
    _, status, actions = step(run, obs(now=NOW + timedelta(seconds=59.5)))
    assert status.phase is Phase.RUNNING
    assert of(actions, RequeueAfter) == [RequeueAfter(seconds=1.0)]  # never below 1s
    _, status, _ = step(run, obs(now=NOW + timedelta(seconds=60)))
    assert get_cond(status, cond.SUCCEEDED).reason == "Timeout"
    assert get_cond(status, cond.SUCCEEDED).message == "Run exceeded timeoutSeconds=60"


def test_agent_timeout_applies_when_the_run_sets_none() -> None:
    config = make_config(limits=Limits(timeoutSeconds=120))
    run = started(config=config)
    _, status, _ = step(run, obs(now=NOW + timedelta(seconds=120), config=config))
    assert get_cond(status, cond.SUCCEEDED).reason == "Timeout"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_job_created_but_not_yet_recorded_is_deleted_when_the_run_ends(how: str) -> None:
    run = read_ready()
    name = job_name(NAME, UID, 1)
    if how == "cancel":
        run = run.model_copy(update={"spec": run.spec.model_copy(update={"cancel": True})})
    now = NOW + timedelta(hours=2) if how == "timeout" else NOW
    _, status, actions = step(run, obs(now=now, job=job_obs(name, JobPhase.RUNNING)))
    assert status.phase in (Phase.FAILED, Phase.CANCELLED)
    assert of(actions, DeleteJob) == [DeleteJob(name=name)]


# ================================================================ cancel, delete, config errors


def cancel(run: AgentRun) -> AgentRun:
    return run.model_copy(update={"spec": run.spec.model_copy(update={"cancel": True})})


def test_spec_cancel_cancels_the_run_and_deletes_its_running_job() -> None:
    run = cancel(read_job_created())
    name = job_name(NAME, UID, 1)
    _, status, actions = step(run, obs(job=job_obs(name, JobPhase.RUNNING)))
    assert status.phase is Phase.CANCELLED
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.status, succeeded.reason, succeeded.message) == (
        FALSE,
        "Cancelled",
        "Run cancelled by spec.cancel",
    )
    assert get_cond(status, cond.RUNNING).status is FALSE
    assert status.completionTime == NOW_S
    assert status.currentAction is None
    assert of(actions, DeleteJob) == [DeleteJob(name=name)]
    assert [(e.type, e.reason) for e in events(actions)] == [("Warning", "Cancelled")]
    assert of(actions, RequeueAfter) == [] and of(actions, CallModel) == []


def test_cancel_while_awaiting_approval_withdraws_the_request() -> None:
    run = cancel(awaiting_approval())
    digest = write_hash()
    _, status, actions = step(annotate(run, approve=digest), obs())  # even if approved now
    assert status.phase is Phase.CANCELLED
    assert status.pendingAction is None
    assert get_cond(status, cond.APPROVAL_PENDING).status is FALSE
    assert of(actions, CreateJob) == []


def test_cancel_before_start_cancels_without_starting() -> None:
    _, status, actions = step(make_run(cancel=True), obs())
    assert status.phase is Phase.CANCELLED
    assert status.startTime is None
    assert of(actions, CallModel) == []


def test_cancel_does_not_need_the_config() -> None:
    _, status, _ = step(cancel(started()), obs(config=None))
    assert status.phase is Phase.CANCELLED


def test_deletion_cancels_the_run_with_reason_deleted() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    _, status, actions = step(run, obs(deleting=True, job=job_obs(name, JobPhase.RUNNING)))
    assert status.phase is Phase.CANCELLED
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.reason, succeeded.message) == ("Deleted", "Run deleted")
    assert of(actions, DeleteJob) == [DeleteJob(name=name)]


def test_config_error_fails_the_run_with_its_reason_and_message() -> None:
    err = ConfigError(reason="AgentNotFound", message='Agent "sre" not found in namespace prod')
    _, status, actions = step(make_run(), obs(config=err))
    assert status.phase is Phase.FAILED
    succeeded = get_cond(status, cond.SUCCEEDED)
    assert (succeeded.status, succeeded.reason, succeeded.message) == (
        FALSE,
        "AgentNotFound",
        'Agent "sre" not found in namespace prod',
    )
    assert get_cond(status, cond.RUNNING).reason == "AgentNotFound"
    assert status.completionTime == NOW_S
    assert actions == [
        RecordEvent(
            type="Warning",
            reason="AgentNotFound",
            message='Agent "sre" not found in namespace prod',
        )
    ]


def test_config_error_on_a_running_run_deletes_its_job() -> None:
    run = read_job_created()
    _, status, actions = step(run, obs(config=ConfigError("ToolNotFound", "no AgentTool k8s-get")))
    assert status.phase is Phase.FAILED
    assert of(actions, DeleteJob) == [DeleteJob(name=job_name(NAME, UID, 1))]


def terminal_runs() -> list[tuple[str, AgentRun]]:
    succeeded = after_reply(started(), done())[0]
    failed = errors_then(started(), 3)
    timed_out = step(read_job_created(), obs(now=NOW + timedelta(hours=2)))[0]
    cancelled = step(cancel(awaiting_approval()), obs())[0]
    deleted = step(started(), obs(deleting=True))[0]
    invalid = with_status(make_run(), fail_invalid_spec({}, "bad", NOW, 1)[0])
    return [
        ("succeeded", succeeded),
        ("failed", failed),
        ("timeout", timed_out),
        ("cancelled", cancelled),
        ("deleted", deleted),
        ("invalid", invalid),
    ]


@pytest.mark.parametrize(
    "poke",
    [
        {},
        {"model": done("again")},
        {"model": ModelUnavailable(message="x")},
        {"job": JobObservation(job_name(NAME, UID, 1), JobPhase.RUNNING)},
        {"deleting": True},
        {"config": ConfigError("AgentNotFound", "gone")},
        {"config": None},
        {"now": NOW + timedelta(days=30)},
        {"cancel": True},
        {"approve": True},
    ],
    ids=lambda p: ",".join(p) or "nothing",
)
def test_terminal_runs_are_never_changed_again(poke: dict[str, Any]) -> None:
    # Every terminal run gets the poke: the run-level ones are taken out of the
    # observations once, not popped inside the loop (which poked only the first run).
    seen = {k: v for k, v in poke.items() if k not in ("cancel", "approve")}
    for label, run in terminal_runs():
        assert run.status.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED), label
        if poke.get("cancel"):
            run = cancel(run)
            assert run.spec.cancel, label
        if poke.get("approve"):
            run = annotate(run, approve=write_hash(), reject="x")
        _, status, actions = step(run, obs(**seen))
        assert status == run.status, label
        assert actions == [], label


# ================================================================ invariants and bounds


def test_observed_generation_follows_the_run_on_status_and_conditions() -> None:
    run = started(make_run(generation=1))
    run.metadata["generation"] = 2
    _, status, _ = after_reply(run, write_call())
    assert status.observedGeneration == 2
    assert get_cond(status, cond.APPROVAL_PENDING).observedGeneration == 2


def test_the_thread_is_bounded_and_keeps_the_newest_events() -> None:
    run = started(make_run(limits=Limits(maxConsecutiveErrors=100, maxSteps=1000)))
    for i in range(MAX_THREAD_EVENTS + 10):
        run, _, _ = after_reply(run, reply(InvalidAction(message=f"bad {i}")))
        if i % 50 == 0:  # keep the counter low so the run keeps going
            run = with_status(run, run.status.model_copy(update={"consecutiveErrors": 0}))
    assert len(run.status.thread) == MAX_THREAD_EVENTS
    assert run.status.thread[-1].content == f"bad {MAX_THREAD_EVENTS + 9}"
    assert run.status.thread[0].content == "bad 10"


def test_tool_output_in_the_thread_is_clipped() -> None:
    run = read_job_created()
    name = job_name(NAME, UID, 1)
    _, status, _ = step(run, obs(job=job_obs(name, content="y" * 100_000)))
    assert len(status.thread[-1].content) <= MAX_EVENT_CONTENT
    assert status.thread[-1].outputRef == output_name(name)  # the raw output is linked


# ================================================================ fail_invalid_spec


def test_fail_invalid_spec_fails_a_new_run_once() -> None:
    status, actions = fail_invalid_spec({}, "spec.input.task: field required", NOW, 3)
    assert status.phase is Phase.FAILED
    assert status.completionTime == NOW_S
    assert status.observedGeneration == 3
    for type_ in (cond.RUNNING, cond.SUCCEEDED):
        c = get_cond(status, type_)
        assert (c.status, c.reason, c.message, c.observedGeneration) == (
            FALSE,
            "InvalidSpec",
            "spec.input.task: field required",
            3,
        )
    assert actions == [
        RecordEvent(type="Warning", reason="InvalidSpec", message="spec.input.task: field required")
    ]
    again, actions = fail_invalid_spec(status.model_dump(), "other", NOW + timedelta(hours=1), 4)
    assert again == status
    assert actions == []


def test_fail_invalid_spec_survives_an_unparsable_status() -> None:
    status, actions = fail_invalid_spec({"step": "many", "bogus": 1}, "bad spec", NOW, None)
    assert status.phase is Phase.FAILED
    assert len(actions) == 1


def test_fail_invalid_spec_keeps_the_history_of_a_running_run() -> None:
    run = read_job_created()
    status, _ = fail_invalid_spec(run.status.model_dump(mode="json"), "bad", NOW, 2)
    assert status.phase is Phase.FAILED
    assert status.startTime == NOW_S
    assert status.thread == run.status.thread
    assert status.usage == run.status.usage


def test_fail_invalid_spec_withdraws_a_pending_action() -> None:
    run = awaiting_approval()
    status, _ = fail_invalid_spec(run.status.model_dump(mode="json"), "bad", NOW, 2)
    assert status.phase is Phase.FAILED
    assert status.pendingAction is None
    assert status.currentAction is None
    assert get_cond(status, cond.APPROVAL_PENDING).status is FALSE


# ================================================================ end to end


def test_an_incident_end_to_end_read_write_approval_done() -> None:
    ad = Adapter(
        make_run(),
        {
            1: [read_call()],
            2: [ModelUnavailable(message="429"), write_call()],
            3: [done("Restarted web; memory back to normal.")],
        },
        tool_results={READ: (True, "web: OOMKilled x5"), WRITE: (True, "restarted")},
    )
    status = ad.settle()
    assert status.phase is Phase.RUNNING  # ModelUnavailable: waiting for the backoff
    assert status.consecutiveErrors == 1
    ad.now += timedelta(seconds=2)
    status = ad.settle()
    assert status.phase is Phase.AWAITING_APPROVAL
    assert status.step == 2
    digest = status.pendingAction.actionHash  # type: ignore[union-attr]
    assert ad.events[-1].message.endswith(approve_cmd(digest))

    ad.now += timedelta(minutes=3)
    status = ad.annotate(approve=digest)

    assert status.phase is Phase.SUCCEEDED
    assert status.result is not None
    assert status.result.answer == "Restarted web; memory back to normal."
    assert [e.type for e in status.thread] == [
        EventType.TOOL_CALL,
        EventType.TOOL_RESULT,
        EventType.ERROR,
        EventType.TOOL_CALL,
        EventType.APPROVAL,
        EventType.TOOL_RESULT,
        EventType.DONE,
    ]
    assert [e.step for e in status.thread] == [1, 1, 1, 2, 2, 2, 3]
    assert dict(ad.job_runs) == {job_name(NAME, UID, 1): 1, job_name(NAME, UID, 2): 1}
    assert [r.decision for r in status.approvals] == [Decision.APPROVED]
    assert status.usage == Usage(
        promptTokens=300, completionTokens=60, totalTokens=360, modelCalls=3
    )
    assert ad.event_reasons() == ["Started", "ApprovalRequested", "Approved", "Completed"]
    assert ad.model_calls == [1, 2, 2, 3]
    assert status.completionTime == "2025-01-02T03:07:07Z"
    for snapshot in ad.snapshots:  # every persisted status is self-consistent
        assert snapshot.phase == cond.derive_phase(snapshot.conditions)
        assert (snapshot.pendingAction is not None) == (snapshot.phase is Phase.AWAITING_APPROVAL)


def test_a_rejection_end_to_end_the_model_picks_another_action() -> None:
    ad = Adapter(
        make_run(),
        {1: [write_call()], 2: [read_call()], 3: [done("Did not restart; see thread.")]},
        tool_results={READ: (True, "ok")},
    )
    ad.settle()
    status = ad.annotate(reject="not during business hours")
    assert status.phase is Phase.SUCCEEDED
    assert list(ad.job_runs) == [job_name(NAME, UID, 2)]  # only the read ran
    assert ANNOTATION_REJECT not in ad.run.metadata.get("annotations", {})
    assert any(
        e.type is EventType.REJECTION and "not during business hours" in e.content
        for e in status.thread
    )


def run_incident(ad: Adapter) -> Adapter:
    """Drives an incident to its end: jobs finish when asked, the write is approved."""
    for _ in range(20):
        status = ad.settle()
        if status.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED):
            return ad
        if status.phase is Phase.AWAITING_APPROVAL:
            ad.run = annotate(ad.run, approve=status.pendingAction.actionHash)  # type: ignore[union-attr]
        elif status.currentAction is not None:
            name = status.currentAction.jobRef
            if (
                ad.jobs.get(name, JobObservation(name, JobPhase.NOT_FOUND)).phase
                is JobPhase.RUNNING
            ):
                ad.jobs[name] = job_obs(name, content=f"result of {name}")
    raise AssertionError("the incident did not finish")


SCRIPT = {1: [read_call()], 2: [write_call()], 3: [read_call(name="web-2")], 4: [done("fixed")]}


def test_a_restart_after_any_persisted_status_resumes_without_running_a_tool_twice() -> None:
    """Kill the operator after any status write, before its actions ran: a new one resumes."""
    reference = run_incident(Adapter(make_run(), SCRIPT))
    assert reference.status.phase is Phase.SUCCEEDED
    n = len(reference.snapshots)
    assert n > 5

    for crash_at in range(n):
        first = Adapter(make_run(), SCRIPT)
        # Replay the reference until `crash_at` statuses were persisted, then drop the actions.
        first.snapshots = []
        for _ in range(200):
            actions = first.decide_once()
            if len(first.snapshots) > crash_at:
                break
            if not first.execute(actions):
                status = first.status
                if status.phase is Phase.AWAITING_APPROVAL:
                    first.run = annotate(first.run, approve=status.pendingAction.actionHash)  # type: ignore[union-attr]
                elif status.currentAction is not None:
                    name = status.currentAction.jobRef
                    first.jobs[name] = job_obs(name, content=f"result of {name}")
        # A new operator: same persisted run, same cluster, empty memory.
        second = Adapter(first.run, {k: list(v) for k, v in SCRIPT.items()}, jobs=first.jobs)
        second.job_runs = first.job_runs
        run_incident(second)
        assert second.status.phase is Phase.SUCCEEDED, crash_at
        assert second.status.result is not None and second.status.result.answer == "fixed"
        assert all(count == 1 for count in second.job_runs.values()), (crash_at, second.job_runs)
        assert sorted(second.job_runs) == sorted(reference.job_runs), crash_at
        tool_results = [e for e in second.status.thread if e.type is EventType.TOOL_RESULT]
        assert len(tool_results) == 3, crash_at
