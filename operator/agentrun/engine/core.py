"""The pure core: decide(run, observations) -> (new status, actions). No I/O here.

The adapter (runner.py) observes the world, calls decide, persists the returned status
*before* carrying out the actions (status is the write-ahead log), then feeds what the
actions produced (a model reply, a created Job) back into decide until nothing is left to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from agentrun.api import (
    ANNOTATION_ANSWER,
    ANNOTATION_APPROVE,
    ANNOTATION_DECIDED_BY,
    ANNOTATION_REJECT,
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFAULT_MAX_STEPS,
    DEFAULT_TIMEOUT_SECONDS,
    TERMINAL_PHASES,
    ActionState,
    AgentRun,
    AgentRunStatus,
    AgentSpec,
    ApprovalRecord,
    BatchCall,
    ConditionStatus,
    CurrentAction,
    Decision,
    Effect,
    EventType,
    ForkOf,
    NotifyEvent,
    PendingAction,
    PendingInput,
    Phase,
    RunResult,
    ThreadEvent,
    ToolSnapshot,
    Urgency,
    Usage,
)
from agentrun.api.naming import action_hash, canonical_json, job_name
from agentrun.engine import conditions as cond
from agentrun.engine.config import Config as Config
from agentrun.engine.config import ConfigError as ConfigError
from agentrun.engine.config import prefetch_refused
from agentrun.engine.fork import fork_refusal, inherited_events
from agentrun.engine.offered import unknown_tool
from agentrun.engine.templating import MissingValue, fill
from agentrun.text import clip as clip_text

FORGED = "ForgedJob"  # JobObservation.reason: the Job or pod is not the one the operator made
# JobObservation.reason: the Job's deadline passed before its pod ran to the end (the pod
# waited for a node, or started too late); "DeadlineExceeded" is the tool's own timeout.
JOB_DEADLINE = "JobDeadlineExceeded"
QUEUED = "Queued"  # Running=False reason: held back by the operator's cap on runs in progress
MAX_THREAD_EVENTS = 200
MAX_EVENT_CONTENT = 4000
MAX_APPROVAL_RECORDS = 50
MAX_THREAD_BYTES = 256 * 1024  # the thread in status stays far below etcd's object limit
COMPACTED_CONTENT = 300
MAX_BATCH = 8  # read calls of one reply run together; more are trimmed, and the model told

# ---------------------------------------------------------------- observations


@dataclass(frozen=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    # The target's state when proposed (a write's pod uid, revision, replicas), resolved by
    # the adapter; shown to the approver, covered by the hash, checked by the tool.
    preconditions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCalls:
    """Several tool calls in one reply (OpenAI parallel tool calls): reads run together."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class Done:
    answer: str


@dataclass(frozen=True)
class RequestInput:
    """The model asks a human a question; the run waits for the answer."""

    question: str
    urgency: Urgency = Urgency.NORMAL


@dataclass(frozen=True)
class InvalidAction:
    """A malformed, unknown or schema-invalid tool call: the model sees it next step."""

    message: str


@dataclass(frozen=True)
class ModelReply:
    action: ToolCall | ToolCalls | Done | RequestInput | InvalidAction
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ModelUnavailable:
    """The endpoint failed after the client's own retries."""

    message: str


class JobPhase(StrEnum):
    NOT_FOUND = "NotFound"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobObservation:
    name: str
    phase: JobPhase
    reason: str = ""
    message: str = ""
    ok: bool = False  # the tool's own verdict, from its result envelope
    content: str = ""  # compacted output for the thread
    outputRef: str | None = None
    # NOT_FOUND for a Job this operator process saw exist: it was deleted, not never created.
    existed: bool = False
    uid: str | None = None  # of the Job the result came from
    storedBytes: int = 0  # of raw output kept in its ConfigMap (the run's budget)


@dataclass(frozen=True)
class Observations:
    """What the adapter saw for one decide().

    `job`: the current action's Job (news of any other Job is dropped, see `concerns`). Its
    `existed` is the adapter's one memory across triggers: the Job names this process saw
    exist for the run. It tells a deleted Job (an error, never run again) from one not yet
    created (created now) for a read action, whose creation is not written to status; after
    a restart the memory is empty and a missing read Job is created again, which is safe.
    """

    now: datetime
    config: Config | ConfigError | None = None
    model: ModelReply | ModelUnavailable | None = None
    job: JobObservation | None = None
    # The Jobs of status.batch still without a result, by Job name.
    batch: Mapping[str, JobObservation] = field(default_factory=dict)
    deleting: bool = False
    # Why the adapter holds this not yet started run back (its cap on runs in progress);
    # empty: it may start.
    queued: str = ""


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class CallModel:
    step: int


@dataclass(frozen=True)
class CreateJob:
    step: int
    tool: str
    effect: Effect
    arguments: dict[str, Any]
    name: str
    actionHash: str
    snapshot: ToolSnapshot
    preconditions: dict[str, Any] = field(default_factory=dict)
    batch: bool = False  # one of status.batch, not the current action
    container: str | None = None  # the call's container in a grouped Job
    # A grouped Job (named after its first call): one container per call, these.
    group: tuple[CreateJob, ...] = ()


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class RemoveAnnotations:
    keys: tuple[str, ...]


@dataclass(frozen=True)
class RecordEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class RequeueAfter:
    seconds: float


@dataclass(frozen=True)
class Notify:
    """The run entered a phase its Agent's webhook listens for. Sent once the status saying
    so is written, in the background and best effort: never retried into the run. `settle`:
    the run left that waiting phase (AwaitingApproval/AwaitingInput), so its open Slack card
    is updated in place (event None: nothing new to announce)."""

    event: NotifyEvent | None
    settle: str = ""


Action = CallModel | CreateJob | DeleteJob | RemoveAnnotations | RecordEvent | RequeueAfter | Notify

DECISION_ANNOTATIONS = (ANNOTATION_APPROVE, ANNOTATION_REJECT)


# ---------------------------------------------------------------- helpers


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class EffectiveLimits:
    maxSteps: int
    maxConsecutiveErrors: int
    timeoutSeconds: int
    maxTotalTokens: int | None
    approvalTimeoutSeconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS


def effective_limits(run: AgentRun, agent: AgentSpec | None) -> EffectiveLimits:
    """The run's own limits, then the agent's defaults, then the built-in defaults."""
    own, dflt = run.spec.limits, agent.limits if agent is not None else None

    def pick(name: str, default: int | None) -> Any:
        value = getattr(own, name)
        if value is None and dflt is not None:
            value = getattr(dflt, name)
        return default if value is None else value

    return EffectiveLimits(
        maxSteps=pick("maxSteps", DEFAULT_MAX_STEPS),
        maxConsecutiveErrors=pick("maxConsecutiveErrors", DEFAULT_MAX_CONSECUTIVE_ERRORS),
        timeoutSeconds=pick("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS),
        maxTotalTokens=pick("maxTotalTokens", None),
        approvalTimeoutSeconds=pick("approvalTimeoutSeconds", DEFAULT_APPROVAL_TIMEOUT_SECONDS),
    )


def clip(text: str, limit: int = MAX_EVENT_CONTENT) -> str:
    return clip_text(text, limit, "\n[... truncated {dropped} characters]", room=60)


def approve_command(run: AgentRun, digest: str) -> str:
    name = run.metadata.get("name", "")
    namespace = run.metadata.get("namespace", "default")
    return f"kubectl annotate agentrun {name} -n {namespace} {ANNOTATION_APPROVE}={digest}"


def concerns(job_ref: str | None, job: str) -> bool:
    """Whether news of this Job is about the run's current action (job_ref: its Job)."""
    return job_ref is not None and job_ref == job


def _job_to_stop(current: CurrentAction | None, job: JobObservation | None) -> str | None:
    """The Job of an ending run that may still be running (created, or perhaps created)."""
    if current is None or current.state is ActionState.AWAITING_APPROVAL:
        return None
    if job is None or job.phase is JobPhase.RUNNING:
        return current.jobRef
    return None


def answer_command(run: AgentRun) -> str:
    name = run.metadata.get("name", "")
    namespace = run.metadata.get("namespace", "default")
    return f"kubectl annotate agentrun {name} -n {namespace} {ANNOTATION_ANSWER}='<your answer>'"


def _size(event: ThreadEvent) -> int:
    return len(event.content) + len(canonical_json(event.arguments or {})) + 200


def bound_thread(thread: list[ThreadEvent], dropped: int) -> tuple[list[ThreadEvent], int]:
    """Keeps the thread under MAX_THREAD_BYTES: oldest results compacted first, then dropped.

    Results whose raw output is kept in a ConfigMap (outputRef) are compacted before those
    whose whole output is only here (outputs short enough to be kept whole get no ConfigMap).
    """
    total = sum(_size(e) for e in thread)
    if total <= MAX_THREAD_BYTES:
        return thread, dropped
    out = list(thread)
    for kept_elsewhere in (True, False):
        for i, event in enumerate(out[:-1]):  # the newest event is kept whole
            if total <= MAX_THREAD_BYTES:
                break
            if (event.outputRef is not None) is not kept_elsewhere:
                continue
            if len(event.content) > COMPACTED_CONTENT and event.type is not EventType.DONE:
                where = f"; full output in ConfigMap {event.outputRef}" if event.outputRef else ""
                short = event.content[:COMPACTED_CONTENT] + f"\n[compacted{where}]"
                total -= len(event.content) - len(short)
                out[i] = event.model_copy(update={"content": short})
    while total > MAX_THREAD_BYTES and len(out) > 1:
        total -= _size(out.pop(0))
        dropped += 1
    return out, dropped


class _Step:
    """Mutable working state of one decide() call."""

    def __init__(self, run: AgentRun, obs: Observations) -> None:
        self.run = run
        self.obs = obs
        self.status: AgentRunStatus = run.status.model_copy(deep=True)
        self.actions: list[Action] = []
        self.now = iso(obs.now)
        self.generation: int | None = run.metadata.get("generation")
        self.annotations: dict[str, str] = run.metadata.get("annotations") or {}
        self.config: Config | None = None
        self.wake: datetime | None = None  # an earlier wake-up than the run's deadline

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str = "") -> None:
        self.status.conditions = cond.set_condition(
            self.status.conditions, type_, status, reason, message, self.now, self.generation
        )

    def event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(RecordEvent(type=type_, reason=reason, message=message))

    def thread(self, type_: EventType, content: str, step: int | None = None, **extra: Any) -> None:
        at = self.status.step if step is None else step
        self.append(ThreadEvent(step=at, type=type_, time=self.now, content=clip(content), **extra))

    def append(self, event: ThreadEvent) -> None:
        self.status.thread.append(event)
        if len(self.status.thread) > MAX_THREAD_EVENTS:
            cut = len(self.status.thread) - MAX_THREAD_EVENTS
            self.status.thread = self.status.thread[cut:]
            self.status.threadDropped += cut
        self.status.thread, self.status.threadDropped = bound_thread(
            self.status.thread, self.status.threadDropped
        )

    def consume(self, keys: tuple[str, ...]) -> None:
        """Removes used decision annotations, and the decided-by stamp that went with them."""
        if ANNOTATION_DECIDED_BY in self.annotations:
            keys = (*keys, ANNOTATION_DECIDED_BY)
        self.actions.append(RemoveAnnotations(keys=keys))

    def audit(self, record: ApprovalRecord) -> None:
        self.status.approvals = [*self.status.approvals, record][-MAX_APPROVAL_RECORDS:]

    def finish(self, ok: bool, reason: str, message: str) -> None:
        self.actions += _finish(
            self.status, ok, reason, message, self.now, self.generation, self.obs.job
        )

    def error(self, content: str, limits: EffectiveLimits, **extra: Any) -> bool:
        """Records an error the model will see; returns True when the run failed of it."""
        self.status.consecutiveErrors += 1
        self.thread(EventType.ERROR, content, **extra)
        if self.status.consecutiveErrors >= limits.maxConsecutiveErrors:
            self.finish(
                False,
                "TooManyErrors",
                f"{self.status.consecutiveErrors} consecutive errors; last: {clip(content, 500)}",
            )
            return True
        return False


# ---------------------------------------------------------------- decide


def decide(run: AgentRun, obs: Observations) -> tuple[AgentRunStatus, list[Action]]:
    """One transition of a run, from its status and what the adapter just observed."""
    st = _Step(run, obs)
    _transition(st)
    st.status.phase = cond.derive_phase(st.status.conditions)
    st.status.observedGeneration = st.generation
    if isinstance(obs.config, Config):
        event = notify_event(obs.config.agent, run.status.phase, st.status.phase)
        settle = settles_card(obs.config.agent, run.status.phase, st.status.phase)
        if event is not None or settle:
            st.actions.append(Notify(event=event, settle=settle))
    return st.status, st.actions


def notify_event(
    agent: AgentSpec, before: Phase | str | None, after: Phase | str
) -> NotifyEvent | None:
    """The notification for a change of phase, when the Agent has a webhook listening for it."""
    spec = agent.notify
    if spec is None or (
        spec.webhookURL is None and spec.webhookSecretRef is None and spec.slackApp is None
    ):
        return None
    if before is not None and str(before) == str(after):
        return None
    try:
        event = NotifyEvent(str(after))
    except ValueError:
        return None
    return event if event in spec.on else None


def settles_card(agent: AgentSpec, before: Phase | str | None, after: Phase | str) -> str:
    """The waiting phase the run just left, when its Agent posts interactive Slack cards."""
    waiting = (Phase.AWAITING_APPROVAL.value, Phase.AWAITING_INPUT.value)
    if agent.notify is None or agent.notify.slackApp is None or before is None:
        return ""
    return str(before) if str(before) in waiting and str(before) != str(after) else ""


def _transition(st: _Step) -> None:
    status, obs = st.status, st.obs
    current = status.currentAction
    if obs.job is not None and not concerns(current.jobRef if current else None, obs.job.name):
        # A Job of another step says nothing about this one.
        obs = st.obs = replace(obs, job=None)
    if status.phase in TERMINAL_PHASES:
        return
    if obs.deleting or st.run.spec.cancel:
        reason = "Deleted" if obs.deleting else "Cancelled"
        st.finish(False, reason, "Run deleted" if obs.deleting else "Run cancelled by spec.cancel")
        return
    config = obs.config
    if isinstance(config, ConfigError):
        st.finish(False, config.reason, config.message)
        return
    if config is None:
        return  # the adapter could not resolve the config this time; nothing to decide on
    limits = effective_limits(st.run, config.agent)
    st.config = config

    if status.startTime is None and obs.queued:
        # Pending until a place is free; the adapter steps it again then. Nothing else is
        # due: its timeout counts from its start.
        st.set(cond.RUNNING, ConditionStatus.FALSE, QUEUED, obs.queued)
        return
    if status.startTime is None and not _start(st, config):
        return

    deadline = parse_time(status.startTime or st.now) + timedelta(seconds=limits.timeoutSeconds)
    if obs.now >= deadline:
        st.finish(False, "Timeout", f"Run exceeded timeoutSeconds={limits.timeoutSeconds}")
        return

    _proceed(st, config, limits)

    if status.completionTime is None:
        # Wake up at the deadline (or an approval's expiry) even if nothing else happens.
        remaining = (min(deadline, st.wake or deadline) - obs.now).total_seconds()
        st.actions.append(RequeueAfter(seconds=max(1.0, remaining)))


def _proceed(st: _Step, config: Config, limits: EffectiveLimits) -> None:
    """What the run is waiting for decides what this observation can move."""
    status, obs = st.status, st.obs
    if status.batch:
        _advance_batch(st, limits)
    elif status.currentAction is not None:
        _advance_action(st, status.currentAction, config, limits)
    elif status.pendingInput is not None:
        _await_input(st, status.pendingInput, limits)
    elif obs.model is not None:
        _take_reply(st, obs.model, config, limits)
    else:
        _next_model_call(st, limits)


def _start(st: _Step, config: Config) -> bool:
    """Pending -> Running (a fork: at the step it goes on from). False when it failed."""
    status = st.status
    status.startTime = st.now
    status.promptRef = config.prompt
    st.set(cond.RUNNING, ConditionStatus.TRUE, "Started", "Run started")
    st.set(cond.SUCCEEDED, ConditionStatus.UNKNOWN, "InProgress", "")
    st.event("Normal", "Started", f"Run started with agent {st.run.spec.agentRef}")
    fork = st.run.spec.forkOf
    return fork is None or _start_fork(st, fork, config)


def _start_fork(st: _Step, fork: ForkOf, config: Config) -> bool:
    """Pending -> Running at step fork.step + 1, the source's events inherited (a fork).

    The inherited events are context for the model only: the fork's approvals, Jobs and
    hashes are its own (its uid), so nothing of the source runs or counts again, and the
    prefetch is not run (step 0 is inherited). False when the fork's spec is unusable."""
    status = st.status
    refused = fork_refusal(fork)
    if refused is not None:
        st.finish(False, "InvalidSpec", refused)
        return False
    status.thread, status.threadDropped = bound_thread(
        inherited_events(fork)[-MAX_THREAD_EVENTS:], fork.omitted
    )
    status.threadDropped += max(0, len(fork.events) - MAX_THREAD_EVENTS)
    status.step = fork.step
    status.prefetched = len(config.agent.prefetch)
    st.event(
        "Normal",
        "Forked",
        f"Fork of {fork.name} from step {fork.step}: {len(status.thread)} events inherited"
        + (f", {status.threadDropped} left out" if status.threadDropped else ""),
    )
    return True


def _next_model_call(st: _Step, limits: EffectiveLimits) -> None:
    status = st.status
    config = st.config
    if config is not None and status.step == 0 and status.prefetched < len(config.agent.prefetch):
        _start_prefetch(st, config, limits)
        return
    if status.step >= limits.maxSteps:
        st.finish(False, "MaxStepsExceeded", f"Run reached maxSteps={limits.maxSteps}")
        return
    if limits.maxTotalTokens is not None and status.usage.totalTokens >= limits.maxTotalTokens:
        st.finish(
            False,
            "TokenBudgetExceeded",
            f"Run used {status.usage.totalTokens} tokens of maxTotalTokens={limits.maxTotalTokens}",
        )
        return
    st.actions.append(CallModel(step=status.step + 1))


def _take_reply(
    st: _Step, reply: ModelReply | ModelUnavailable, config: Config, limits: EffectiveLimits
) -> None:
    status = st.status
    if isinstance(reply, ModelUnavailable):
        if not st.error(f"Model request failed: {reply.message}", limits):
            backoff = min(2.0**status.consecutiveErrors, 60.0)
            st.actions.append(RequeueAfter(seconds=backoff))
        return
    status.step += 1
    u = status.usage
    status.usage = Usage(
        promptTokens=u.promptTokens + reply.usage.promptTokens,
        completionTokens=u.completionTokens + reply.usage.completionTokens,
        totalTokens=u.totalTokens + reply.usage.totalTokens,
        modelCalls=u.modelCalls + 1,
    )
    action = reply.action
    if isinstance(action, InvalidAction):
        if not st.error(action.message, limits):
            _next_model_call(st, limits)
        return
    if isinstance(action, RequestInput):
        _request_input(st, action)
        return
    if isinstance(action, ToolCalls):
        _request_tools(st, action.calls, config, limits)
        return
    if isinstance(action, Done):
        st.thread(EventType.DONE, action.answer)
        status.result = RunResult(answer=action.answer)
        status.consecutiveErrors = 0
        st.finish(True, "Completed", "The agent finished")
        return
    unknown = unknown_tool(action.tool, config.snapshots)
    if unknown is not None:
        if not st.error(unknown, limits):
            _next_model_call(st, limits)
        return
    _request_tool(st, action, config.snapshots[action.tool], limits)


def describe_snapshot(snap: ToolSnapshot) -> str:
    """What runs, in one line, for the approver (Events, conditions)."""
    return (
        f"image {snap.image}, command {canonical_json(snap.command)}, "
        f"serviceAccount {snap.serviceAccountName}, timeout {snap.timeoutSeconds}s, "
        f"spec {snap.specDigest[:12]}"
    )


def _request_tool(st: _Step, call: ToolCall, snap: ToolSnapshot, limits: EffectiveLimits) -> None:
    status = st.status
    uid = str(st.run.metadata.get("uid", ""))
    digest = action_hash(
        uid, status.step, call.tool, call.arguments, snap.specDigest, call.preconditions
    )
    name = job_name(str(st.run.metadata.get("name", "run")), uid, status.step)
    st.thread(
        EventType.TOOL_CALL,
        f"{call.tool} {canonical_json(call.arguments)}",
        tool=call.tool,
        arguments=call.arguments,
    )
    write = snap.effect is Effect.WRITE
    status.currentAction = CurrentAction(
        step=status.step,
        tool=call.tool,
        effect=snap.effect,
        arguments=call.arguments,
        actionHash=digest,
        requestedTime=st.now,
        state=ActionState.AWAITING_APPROVAL if write else ActionState.READY,
        jobRef=name,
        preconditions=call.preconditions,
        snapshot=snap,
    )
    if not write:
        _start_job(st, status.currentAction)
        return
    command = approve_command(st.run, digest)
    expires = st.obs.now + timedelta(seconds=limits.approvalTimeoutSeconds)
    st.wake = expires
    status.pendingAction = PendingAction(
        step=status.step,
        tool=call.tool,
        arguments=call.arguments,
        actionHash=digest,
        requestedTime=st.now,
        approveCommand=command,
        expiresTime=iso(expires),
        preconditions=call.preconditions,
        snapshot=snap,
    )
    st.set(
        cond.APPROVAL_PENDING,
        ConditionStatus.TRUE,
        "AwaitingApproval",
        f"Write action {call.tool} needs approval: {command}",
    )
    # A decision left over from an earlier action must never apply to this one.
    if any(k in st.annotations for k in DECISION_ANNOTATIONS):
        st.consume(DECISION_ANNOTATIONS)
    bound = f", on {canonical_json(call.preconditions)}" if call.preconditions else ""
    st.event(
        "Normal",
        "ApprovalRequested",
        f"Step {status.step} wants to run {call.tool} {canonical_json(call.arguments)}{bound} "
        f"({describe_snapshot(snap)}); approve with: {command}",
    )


def _start_job(st: _Step, current: CurrentAction) -> None:
    snap = current.snapshot
    if snap is None:
        # Recorded by an operator that froze nothing: a read runs as the tool is now; a
        # write is never run from a live spec (it is refused in _advance_action).
        snap = st.config.snapshots.get(current.tool) if st.config is not None else None
        if snap is None or snap.effect is not Effect.READ:
            return
    st.actions.append(job_action(current, snap))


def job_action(current: CurrentAction, snap: ToolSnapshot, batch: bool = False) -> CreateJob:
    """The Job of a call, run from the given (frozen) snapshot."""
    return CreateJob(
        batch=batch,
        container=current.container if isinstance(current, BatchCall) else None,
        step=current.step,
        tool=current.tool,
        effect=current.effect,
        arguments=current.arguments,
        name=current.jobRef,
        actionHash=current.actionHash,
        snapshot=snap,
        preconditions=current.preconditions,
    )


def _advance_action(
    st: _Step, current: CurrentAction, config: Config, limits: EffectiveLimits
) -> None:
    unfrozen = current.effect is Effect.WRITE and current.snapshot is None
    if unfrozen and current.state is not ActionState.JOB_CREATED:
        _drop_unfrozen_write(st, current, limits)
        return
    if current.state is ActionState.AWAITING_APPROVAL:
        _await_approval(st, current, config, limits)
        return
    job = st.obs.job
    if current.state is ActionState.READY:
        if job is None or (job.phase is JobPhase.NOT_FOUND and not job.existed):
            _start_job(st, current)
            return
        if current.effect is Effect.WRITE or job.phase is not JobPhase.RUNNING:
            # A write's Job is recorded as created at once: even an operator restarted after
            # the Job was deleted must never create it again. A running read Job is not (one
            # status write per step fewer); the runner remembers the Jobs it saw exist.
            current = current.model_copy(update={"state": ActionState.JOB_CREATED})
            st.status.currentAction = current
    if job is None or job.phase is JobPhase.RUNNING:
        return
    _take_job_result(st, current, job, config, limits)


def _drop_unfrozen_write(st: _Step, current: CurrentAction, limits: EffectiveLimits) -> None:
    """A write proposed before snapshots existed: what would run was never shown, so it is
    not run; the model is asked again and its new proposal is frozen."""
    status = st.status
    status.currentAction = None
    status.pendingAction = None
    message = (
        f"The proposed {current.tool} was recorded without a snapshot of what it runs, so it "
        "cannot be approved; it did not run. Propose it again."
    )
    st.set(cond.APPROVAL_PENDING, ConditionStatus.FALSE, "Reproposed", message)
    st.thread(EventType.ERROR, message, tool=current.tool)
    st.event("Warning", "Reproposed", message)
    _next_model_call(st, limits)


def _await_approval(
    st: _Step, current: CurrentAction, config: Config, limits: EffectiveLimits
) -> None:
    status, ann = st.status, st.annotations
    reject, approve = ann.get(ANNOTATION_REJECT), ann.get(ANNOTATION_APPROVE)
    base = {
        "step": current.step,
        "tool": current.tool,
        "actionHash": current.actionHash,
        "time": st.now,
        "approver": ann.get(ANNOTATION_DECIDED_BY, ""),
    }
    expires = parse_time(current.requestedTime) + timedelta(seconds=limits.approvalTimeoutSeconds)
    pending = status.pendingAction
    if pending is not None and pending.expiresTime is not None:
        expires = parse_time(pending.expiresTime)
    if st.obs.now >= expires:
        st.audit(ApprovalRecord(decision=Decision.EXPIRED, reason="no decision in time", **base))
        st.finish(
            False,
            "ApprovalExpired",
            f"Step {current.step} {current.tool} waited {limits.approvalTimeoutSeconds}s for "
            "an approval (limits.approvalTimeoutSeconds); nothing ran",
        )
        return
    st.wake = expires
    if reject is not None:
        reason = reject.strip() or "no reason given"
        st.audit(ApprovalRecord(decision=Decision.REJECTED, reason=reason, **base))
        st.thread(
            EventType.REJECTION,
            f"A human rejected {current.tool} {canonical_json(current.arguments)}: {reason}. "
            "It did not run. Choose another action.",
            tool=current.tool,
        )
        status.currentAction = None
        status.pendingAction = None
        st.set(cond.APPROVAL_PENDING, ConditionStatus.FALSE, "Rejected", reason)
        st.consume(DECISION_ANNOTATIONS)
        st.event("Normal", "Rejected", f"Step {current.step} {current.tool} rejected: {reason}")
        _next_model_call(st, limits)
        return
    if approve is None:
        _warn_if_tool_changed(st, current, config)
        return
    if approve.strip() != current.actionHash:
        st.audit(
            ApprovalRecord(
                decision=Decision.REFUSED,
                reason=f"approval hash {approve.strip()[:16]}... does not match the pending action",
                **base,
            )
        )
        message = (
            f"Approval refused: {ANNOTATION_APPROVE}={approve.strip()[:16]}... does not match "
            f"the pending action {current.tool} (hash {current.actionHash}); nothing ran. "
            f"Approve with: {approve_command(st.run, current.actionHash)}"
        )
        st.set(cond.APPROVAL_PENDING, ConditionStatus.TRUE, "ApprovalMismatch", message)
        st.consume((ANNOTATION_APPROVE,))
        st.event("Warning", "ApprovalMismatch", message)
        return
    st.audit(ApprovalRecord(decision=Decision.APPROVED, **base))
    st.thread(EventType.APPROVAL, f"A human approved {current.tool}.", tool=current.tool)
    approved = current.model_copy(update={"state": ActionState.READY})
    status.currentAction = approved
    status.pendingAction = None
    st.set(cond.APPROVAL_PENDING, ConditionStatus.FALSE, "Approved", f"{current.tool} approved")
    st.consume(DECISION_ANNOTATIONS)
    st.event("Normal", "Approved", f"Step {current.step} {current.tool} approved")
    _start_job(st, approved)


def _warn_if_tool_changed(st: _Step, current: CurrentAction, config: Config) -> None:
    """The AgentTool changed after the proposal: approving still runs exactly the frozen
    snapshot shown in pendingAction. Told once, on the condition and in an Event."""
    live, frozen = config.snapshots.get(current.tool), current.snapshot
    if frozen is None or (live is not None and live.specDigest == frozen.specDigest):
        return
    pending = cond.get(st.status.conditions, cond.APPROVAL_PENDING)
    if pending is not None and pending.reason == "ToolChanged":
        return
    now = "was removed" if live is None else f"changed (spec {live.specDigest[:12]})"
    message = (
        f"AgentTool {current.tool} {now} after step {current.step} was proposed; approving "
        f"runs the frozen snapshot in pendingAction ({describe_snapshot(frozen)}), not the new "
        f"spec. Approve with: {approve_command(st.run, current.actionHash)}"
    )
    st.set(cond.APPROVAL_PENDING, ConditionStatus.TRUE, "ToolChanged", message)
    st.event("Warning", "ToolChanged", message)


def _take_job_result(
    st: _Step,
    current: CurrentAction,
    job: JobObservation,
    config: Config,
    limits: EffectiveLimits,
) -> None:
    status = st.status
    status.currentAction = None
    event = _outcome(st, current, job)
    if current.prefetch:
        # Prefetched evidence, good or bad, is context for the first model call, not an error
        # of the agent's (a run whose prefetch was recorded one call at a time).
        status.prefetched += 1
        st.append(event)
        _next_model_call(st, limits)
        return
    if event.type is EventType.TOOL_RESULT:
        # A tool that ran and reported "not found" gave evidence, not an error of the agent's.
        if job.ok:
            status.consecutiveErrors = 0
        st.append(event)
        _next_model_call(st, limits)
        return
    extra = event.model_dump(include={"tool", "jobRef", "outputRef", "jobUID", "specDigest"})
    if not st.error(event.content, limits, **extra):
        _next_model_call(st, limits)


def _outcome(st: _Step, current: CurrentAction, job: JobObservation) -> ThreadEvent:
    """The thread event a finished (or vanished) Job of a call gives, its output counted."""
    st.status.storedOutputBytes += job.storedBytes
    if job.reason == FORGED:
        st.event("Warning", FORGED, job.content)
    refs = {
        "tool": current.tool,
        "jobRef": current.jobRef,
        "outputRef": job.outputRef,
        "jobUID": job.uid,
        "specDigest": current.snapshot.specDigest if current.snapshot else None,
    }
    if isinstance(current, BatchCall) and current.container is not None:
        refs["container"] = current.container
    kind = EventType.ERROR
    if job.phase is JobPhase.SUCCEEDED:
        kind, text = EventType.TOOL_RESULT, job.content or f"Tool {current.tool} gave no output."
    elif job.phase is JobPhase.NOT_FOUND:
        text = (
            f"Tool {current.tool}: Job {current.jobRef} disappeared before its result was read; "
            "it was not run again."
        )
    elif job.reason == "DeadlineExceeded":
        timeout = current.snapshot.timeoutSeconds if current.snapshot else 0
        text = f"Tool {current.tool} timed out after {timeout}s (Job {current.jobRef})."
    elif job.reason == JOB_DEADLINE:
        text = (
            f"Tool {current.tool} was not done when its Job's deadline passed: it waited for "
            f"a node, or started too late to finish; {job.message} (Job {current.jobRef})."
        )
    else:
        detail = job.content or job.message or job.reason or "no output"
        text = f"Tool {current.tool} failed: {detail}"
    return ThreadEvent(step=current.step, type=kind, time=st.now, content=clip(text), **refs)


# ---------------------------------------------------------------- batches


def _request_tools(
    st: _Step, calls: tuple[ToolCall, ...], config: Config, limits: EffectiveLimits
) -> None:
    """Several calls in one reply: the reads run together, each its own step and Job; a
    write is never batched (its approval must show it alone), so beside reads it is refused
    and the model proposes it again after reading the results."""
    reads: list[tuple[ToolCall, ToolSnapshot]] = []
    refused: list[str] = []
    for call in calls:
        unknown = unknown_tool(call.tool, config.snapshots)
        snap = config.snapshots.get(call.tool)
        if unknown is not None or snap is None:
            refused.append(unknown or f"Unknown tool {call.tool}.")
        elif snap.effect is Effect.WRITE:
            refused.append(
                f"{call.tool} was not proposed: a write tool is proposed alone, in a reply of "
                "its own, so the approver sees exactly it; propose it again after reading the "
                "results if it is still right."
            )
        else:
            reads.append((call, snap))
    room = max(1, min(MAX_BATCH, limits.maxSteps - st.status.step + 1))
    if len(reads) > room:
        names = ", ".join(c.tool for c, _ in reads[room:])
        refused.append(
            f"{len(reads) - room} read call(s) were not run ({names}): at most {room} run "
            f"together now (at most {MAX_BATCH} at once, and maxSteps={limits.maxSteps})."
        )
        reads = reads[:room]
    if not reads:
        if not st.error(" ".join(refused), limits):
            _next_model_call(st, limits)
        return
    if len(reads) == 1:
        call, snap = reads[0]
        _request_tool(st, call, snap, limits)
    else:
        _start_batch(st, [_batch_call(st, call, snap, i) for i, (call, snap) in enumerate(reads)])
        st.status.step += len(reads) - 1  # each read that runs is a step of its own
    if refused:
        st.thread(EventType.ERROR, " ".join(refused))


def _batch_call(
    st: _Step,
    call: ToolCall,
    snap: ToolSnapshot,
    offset: int = 0,
    prefetch: int | None = None,
) -> BatchCall:
    uid = str(st.run.metadata.get("uid", ""))
    step = 0 if prefetch is not None else st.status.step + offset
    key = -1 - prefetch if prefetch is not None else step
    st.thread(
        EventType.TOOL_CALL,
        f"{call.tool} {canonical_json(call.arguments)}",
        step=step,
        tool=call.tool,
        arguments=call.arguments,
    )
    return BatchCall(
        step=step,
        tool=call.tool,
        effect=Effect.READ,
        arguments=call.arguments,
        actionHash=action_hash(uid, key, call.tool, call.arguments, snap.specDigest),
        requestedTime=st.now,
        state=ActionState.READY,
        jobRef=job_name(str(st.run.metadata.get("name", "run")), uid, step, prefetch=prefetch),
        prefetch=prefetch is not None,
        snapshot=snap,
    )


def batch_key(call: BatchCall) -> str:
    """The key of a batch call's observation: its Job, and its container in a grouped Job."""
    return call.jobRef if call.container is None else f"{call.jobRef}/{call.container}"


def _group(calls: list[BatchCall]) -> list[BatchCall]:
    """Calls under the same ServiceAccount, image and timeout share one Job (the first one's
    name), a container each: the same API rights as Jobs of their own, one pod instead of
    several. A call alone in its group keeps its own Job of one container, as ever."""
    groups: dict[tuple[str, str, int] | int, list[int]] = {}
    for i, call in enumerate(calls):
        snap = call.snapshot
        key = (snap.serviceAccountName, snap.image, snap.timeoutSeconds) if snap else i
        groups.setdefault(key, []).append(i)
    out = list(calls)
    for members in groups.values():
        if len(members) > 1:
            ref = calls[members[0]].jobRef
            for n, i in enumerate(members):
                out[i] = calls[i].model_copy(update={"jobRef": ref, "container": f"tool-{n}"})
    return out


def batch_jobs(calls: list[BatchCall]) -> list[CreateJob]:
    """The Jobs of these batch calls, one per jobRef: a grouped Job carries its calls."""
    by_job: dict[str, list[BatchCall]] = {}
    for call in calls:
        if call.snapshot is not None:
            by_job.setdefault(call.jobRef, []).append(call)
    out: list[CreateJob] = []
    for members in by_job.values():
        made = [job_action(c, c.snapshot, batch=True) for c in members if c.snapshot]
        if members[0].container is None:
            out += made
        else:
            out.append(replace(made[0], container=None, group=tuple(made)))
    return out


def _start_batch(st: _Step, calls: list[BatchCall]) -> None:
    """Recorded before any of its Jobs is created (write-ahead): after a crash each call is
    either done (its result kept), its Job found, or its Job created now; never twice."""
    st.status.batch = _group(calls)
    st.actions += batch_jobs(st.status.batch)


def _advance_batch(st: _Step, limits: EffectiveLimits) -> None:
    """Keeps each call's result as its Job finishes; when the last one is done, all results
    enter the thread in the order the calls were made."""
    status = st.status
    calls = list(status.batch)
    missing: set[str] = set()
    for i, call in enumerate(calls):
        job = st.obs.batch.get(batch_key(call))
        if call.result is not None or job is None or job.phase is JobPhase.RUNNING:
            continue
        if job.phase is JobPhase.NOT_FOUND and not job.existed:
            missing.add(call.jobRef)  # not created yet, or lost in a crash before it was
            continue
        calls[i] = call.model_copy(update={"result": _outcome(st, call, job)})
    # A grouped Job is made again whole, once, exactly as first built.
    st.actions += batch_jobs([c for c in calls if c.jobRef in missing])
    status.batch = calls
    results = [c.result for c in calls]
    if any(r is None for r in results):
        return
    status.batch = []
    done = [r for r in results if r is not None]
    for event in done:
        st.append(event)
    if calls[0].prefetch:
        # Prefetched evidence, good or bad, is context for the first model call.
        _next_model_call(st, limits)
        return
    if any(r.type is EventType.TOOL_RESULT for r in done):
        status.consecutiveErrors = 0
    else:  # every call of the batch failed: one failed step
        status.consecutiveErrors += 1
        if status.consecutiveErrors >= limits.maxConsecutiveErrors:
            last = clip(done[-1].content, 500)
            st.finish(
                False,
                "TooManyErrors",
                f"{status.consecutiveErrors} consecutive errors; last: {last}",
            )
            return
    _next_model_call(st, limits)


def _finish(
    status: AgentRunStatus,
    ok: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
    job: JobObservation | None,
) -> list[Action]:
    """Every ending of a run: the terminal conditions, nothing left pending, a Job still
    running for the run deleted, and the Event saying why."""

    def set_(type_: str, value: ConditionStatus, text: str) -> None:
        status.conditions = cond.set_condition(
            status.conditions, type_, value, reason, text, now, generation
        )

    set_(cond.RUNNING, ConditionStatus.FALSE, message)
    set_(cond.APPROVAL_PENDING, ConditionStatus.FALSE, "")
    if status.pendingInput is not None:
        set_(cond.INPUT_PENDING, ConditionStatus.FALSE, "")
    status.pendingInput = None
    set_(cond.SUCCEEDED, ConditionStatus.TRUE if ok else ConditionStatus.FALSE, message)
    status.completionTime = now
    actions: list[Action] = []
    stop = _job_to_stop(status.currentAction, job)
    if stop is not None:
        actions.append(DeleteJob(name=stop))
    open_ = dict.fromkeys(c.jobRef for c in status.batch if c.result is None)
    actions += [DeleteJob(name=job) for job in open_]
    status.batch = []
    status.currentAction = None
    status.pendingAction = None
    actions.append(RecordEvent(type="Normal" if ok else "Warning", reason=reason, message=message))
    return actions


def fail_invalid_spec(
    status: dict[str, Any], message: str, now: datetime, generation: int | None
) -> tuple[AgentRunStatus, list[Action]]:
    """For a run whose spec does not even parse: a terminal InvalidSpec status, once."""
    try:
        current = AgentRunStatus.model_validate(status)
    except ValueError:
        current = AgentRunStatus()
    if current.phase in TERMINAL_PHASES:
        return current, []
    actions = _finish(current, False, "InvalidSpec", message, iso(now), generation, None)
    current.phase = cond.derive_phase(current.conditions)
    current.observedGeneration = generation
    return current, actions


def _start_prefetch(st: _Step, config: Config, limits: EffectiveLimits) -> None:
    """All of the Agent's prefetch calls start together, each in its own Job under its own
    tool's ServiceAccount (least privilege per call, as for any read); the first model call
    waits for all of them. One that cannot be made is evidence of its own."""
    status = st.status
    values = {
        "input": st.run.spec.input.model_dump(mode="json"),
        "run": {"name": st.run.metadata.get("name"), "namespace": st.run.metadata.get("namespace")},
    }
    calls: list[BatchCall] = []
    for index in range(status.prefetched, len(config.agent.prefetch)):
        call = config.agent.prefetch[index]
        snap = config.snapshots.get(call.tool)
        if snap is None or prefetch_refused(call, config.snapshots):
            # validate() refuses such an Agent; a Config made otherwise still never runs it.
            st.thread(
                EventType.ERROR, f"Prefetch {call.tool}: not a read tool of this agent; skipped."
            )
            continue
        try:
            arguments = fill(call.arguments, values)
        except MissingValue as missing:
            st.thread(
                EventType.ERROR,
                f"Prefetch {call.tool}: the input has no {missing.args[0]}; skipped.",
            )
            continue
        calls.append(_batch_call(st, ToolCall(call.tool, arguments), snap, prefetch=index))
    status.prefetched = len(config.agent.prefetch)
    if not calls:
        _next_model_call(st, limits)
        return
    _start_batch(st, calls)


def _request_input(st: _Step, action: RequestInput) -> None:
    status = st.status
    command = answer_command(st.run)
    status.pendingInput = PendingInput(
        step=status.step,
        question=action.question,
        urgency=action.urgency,
        requestedTime=st.now,
        answerCommand=command,
    )
    st.thread(EventType.QUESTION, f"[{action.urgency.value}] {action.question}")
    st.set(cond.INPUT_PENDING, ConditionStatus.TRUE, "AwaitingInput", action.question)
    if ANNOTATION_ANSWER in st.annotations:
        st.consume((ANNOTATION_ANSWER,))
    st.event(
        "Normal",
        "InputRequested",
        f"Step {status.step} asks ({action.urgency.value}): {clip(action.question, 500)}; "
        f"answer with: {command}",
    )


def _await_input(st: _Step, pending: PendingInput, limits: EffectiveLimits) -> None:
    answer = st.annotations.get(ANNOTATION_ANSWER)
    if answer is None or not answer.strip():
        return
    status = st.status
    st.thread(EventType.ANSWER, answer.strip())
    status.pendingInput = None
    st.set(cond.INPUT_PENDING, ConditionStatus.FALSE, "Answered", "")
    st.consume((ANNOTATION_ANSWER,))
    st.event("Normal", "InputReceived", f"Step {pending.step} question answered")
    _next_model_call(st, limits)
