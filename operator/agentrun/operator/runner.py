"""The adapter loop around the pure core: observe, decide, persist, act, repeat.

Observations come from observe.py, status is written by persist.py (which states the
write-ahead rule every effect follows), actions are carried out by execute.py. This module
keeps the per-run state (the lock, the newest body, wake-ups) and the rounds of one trigger.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from agentrun.api import TERMINAL_PHASES, ActionState, AgentRun, AgentRunStatus, Phase
from agentrun.engine import config as engine_config
from agentrun.engine.core import (
    Action,
    CallModel,
    Config,
    ConfigError,
    CreateJob,
    ModelReply,
    ModelUnavailable,
    Observations,
    RecordEvent,
    RequeueAfter,
    concerns,
    decide,
    fail_invalid_spec,
    parse_time,
)
from agentrun.kube import client as kube
from agentrun.llm.model import ModelClient
from agentrun.operator import metrics, persist
from agentrun.operator.access import WriteAccess
from agentrun.operator.execute import Executor, Outputs, running_jobs, transient
from agentrun.operator.ledger import JobLedger
from agentrun.operator.memory import Trimmer, malloc_trim
from agentrun.operator.observe import Observer
from agentrun.operator.settings import Settings
from agentrun.operator.toolpods import ToolPods
from agentrun.operator.tracing import RunTracer

__all__ = ["Runner", "Settings"]

log = logging.getLogger("agentrun.operator.runner")

MAX_ROUNDS = 50  # decide/act rounds per trigger; a guard against a logic loop
MAX_TOOL_OUTPUT_BYTES = 900 * 1024  # AgentToolSpec.outputLimitBytes' maximum
TRANSIENT_RETRY_SECONDS = 2.0
ERROR_RETRY_SECONDS = 60.0  # an unexpected error: retried, slowly
FINISHED = frozenset(p.value for p in TERMINAL_PHASES)
PARKED = frozenset({Phase.AWAITING_APPROVAL.value, Phase.AWAITING_INPUT.value})


ModelCall = asyncio.Task[ModelReply | ModelUnavailable]


@dataclass
class _RunState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.TimerHandle | None = None
    # The newest body known (our own writes' responses, watch events, GETs): a step starts
    # from it instead of a GET. Never older than our last write; a staler one could only
    # fail a status write, which is conditional on its resourceVersion.
    body: dict[str, Any] | None = None
    own: deque[str] = field(default_factory=lambda: deque(maxlen=16))  # versions we wrote
    jobs_seen: set[str] = field(default_factory=set)  # Job names seen existing
    done: bool = False  # seen finished: events of its Jobs and pods have nothing to step
    outputs: Outputs = field(default_factory=Outputs)
    # A run parked for a human keeps no body here (its next trigger, a watch event, brings
    # one): only the tool whose approval it waits for, for tool_changed.
    awaiting: str | None = None
    parked: bool = False  # its body dropped while it waits: no Job of it is running


@dataclass
class _Trigger:
    """One trigger's rounds: the run as last decided and the body its next write applies to."""

    body: dict[str, Any]
    run: AgentRun
    obs: Observations
    # The observations the first unwritten round was decided from: a 409 decides again on them.
    since: Observations
    asked: dict[int, ModelCall]  # this trigger's model calls, by step
    # Rounds decided but not yet written (see Runner._coalesce), and the actions they left
    # for after the write (Events, wake-ups).
    unwritten: list[tuple[AgentRun, AgentRunStatus]] = field(default_factory=list)
    deferred: list[Action] = field(default_factory=list)

    def observe(self, **produced: Any) -> None:
        """The next round's observations: what the last one's actions produced."""
        self.obs = Observations(
            now=_now(),
            config=self.obs.config,
            deleting=self.obs.deleting,
            queued=self.obs.queued,
            **produced,
        )

    def hold(
        self,
        decided: AgentRun,
        before: AgentRunStatus,
        actions: list[Action],
        reply: ModelReply | ModelUnavailable,
    ) -> None:
        """Holds a round back to write it together with the round its model answer decides."""
        self.unwritten.append((decided, before))
        self.deferred += [a for a in actions if not isinstance(a, CallModel)]
        self.run = decided
        self.observe(model=reply)


def _now() -> datetime:
    return datetime.now(UTC)


class Runner:
    """Drives runs one trigger at a time; one lock per run serialises all triggers."""

    def __init__(
        self,
        api: k8s.ApiClient,
        model: ModelClient,
        settings: Settings,
        trace: RunTracer | None = None,
    ) -> None:
        self.api = api
        self.trace = trace  # None: tracing off
        self.model = model
        self.settings = settings
        self._runs: dict[str, _RunState] = {}
        self._seen: dict[str, metrics.RunSnapshot] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Runs in progress (started, not parked for a human, not finished), and the new runs
        # waiting for a place among them, in order of arrival.
        self._active: set[str] = set()
        self._queue: dict[str, None] = {}
        self.jobs = JobLedger()
        self.trimmer = Trimmer(malloc_trim())  # the heap back to the system after a burst
        # Read past any tool's own output limit so the envelope line is never cut.
        log_limit = max(settings.output_limit_bytes, MAX_TOOL_OUTPUT_BYTES + 64 * 1024)
        self.pods = ToolPods(api, log_limit)
        self.access = WriteAccess(api)
        self.observer = Observer(api, settings, self.jobs, self.pods, self.access)
        self.executor = Executor(
            api,
            model,
            self.jobs,
            self.observer.prompt_text,
            self._wake_later,
            self._tasks,
            trace,
            settings.tool_start_seconds,
        )

    def _state(self, key: str) -> _RunState:
        return self._runs.setdefault(key, _RunState())

    def awaiting(self, namespace: str, tool: str) -> list[str]:
        """The runs known to wait for approval of a call of this tool."""
        out = []
        for key, state in self._runs.items():
            ns, _, name = key.partition("/")
            if ns == namespace and _awaiting(state) == tool:
                out.append(name)
        return out

    def unfinished(self, namespace: str) -> list[str]:
        """The runs of a namespace this process knows and has not seen finish."""
        prefix = f"{namespace}/"
        return [
            k[len(prefix) :]
            for k, state in self._runs.items()
            if k.startswith(prefix) and not state.done
        ]

    def snapshots(self) -> list[metrics.RunSnapshot]:
        return list(self._seen.values())

    def pod_succeeded(self, namespace: str, job: str) -> str | None:
        """The run to step for a tool pod that has succeeded, if it is one of ours."""
        return self.jobs.run_of(namespace, job)

    def job_gone(self, namespace: str, job: str) -> None:
        self.jobs.gone(namespace, job)

    def job_watched(self, namespace: str, body: dict[str, Any], event: str | None) -> None:
        if event != "DELETED":
            self.jobs.watched(namespace, body)

    def forget(self, namespace: str, name: str) -> None:
        self._seen.pop(f"{namespace}/{name}", None)
        self._release(f"{namespace}/{name}")
        state = self._runs.pop(f"{namespace}/{name}", None)
        if state is not None and state.wake is not None:
            state.wake.cancel()

    def observe_run(self, body: dict[str, Any]) -> bool:
        """Called for each watch event of a run; False for the echo of our own write, and for
        a finished run (nothing is left to do, and its body is not kept: runs stay for audit)."""
        meta = body.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        if _finished(body):
            state = self._runs.get(key)
            if state is not None:
                state.body, state.done = None, True
            self._release(key)
            return False
        state = self._state(key)
        if persist.version(body) in state.own:
            return False
        if persist.newer(body, state.body):
            state.body, state.parked = body, False
        return True

    def _wrote(self, state: _RunState, body: dict[str, Any]) -> None:
        state.own.append(persist.version(body))
        if persist.newer(body, state.body):
            state.body, state.parked = body, False

    async def _fetch(self, state: _RunState, namespace: str, name: str) -> dict[str, Any] | None:
        body = await asyncio.to_thread(kube.get_run, self.api, namespace, name)
        if body is not None:
            state.body, state.parked = body, False
        return body

    async def step(
        self,
        namespace: str,
        name: str,
        job: dict[str, Any] | None = None,
        for_job: str | None = None,
    ) -> None:
        """Advances one run as far as it can go without waiting, from its newest known body.
        `for_job`: the trigger is news of that Job (or its pod), stale unless it is the run's
        current one."""
        key = f"{namespace}/{name}"
        state = self._state(key)
        self.trimmer.stepped()
        async with state.lock:
            if for_job is not None and self._stale(state, for_job):
                return
            try:
                state.outputs.start(self.api)  # any left over from a step that failed
                body = state.body or await self._fetch(state, namespace, name)
                if body is None:
                    self.forget(namespace, name)
                    return
                queued = self._admit(key, body)
                await self._advance(state, body, job, queued)
                await state.outputs.stored()
                if state.body is not None and _finished(state.body):
                    state.body, state.done = None, True
                    self._release(key)
                elif queued and state.body is not None:
                    # A queued run keeps no body while it waits (thousands may, in a burst);
                    # no Job of it runs, and its turn starts from a fresh read.
                    state.body, state.parked = None, True
                elif state.body is not None and _parked(state.body):
                    # Memory per waiting run stays small, whatever its thread holds.
                    state.awaiting, state.body, state.parked = _awaiting(state), None, True
                    self._release(key)
            except (ApiException, HTTPError, OSError) as err:
                if not transient(err):
                    self._failed_step(namespace, name, err)
                    return
                # Status is the log: retrying the step soon redoes only what was not recorded.
                log.warning(
                    "Step of %s/%s hit a transient API error; retrying in %.0fs: %s",
                    namespace,
                    name,
                    TRANSIENT_RETRY_SECONDS,
                    str(err).splitlines()[0][:200],
                )
                self._wake_later(namespace, name, TRANSIENT_RETRY_SECONDS)
            except Exception as err:  # a bug must not stop the run for good
                self._failed_step(namespace, name, err)

    # ------------------------------------------------------------ runs in progress

    def _admit(self, key: str, body: dict[str, Any]) -> str:
        """Whether a step of this run may go on: empty, or why a new run waits (the cap on
        runs in progress). A started run always goes on, and counts while it works."""
        status = body.get("status") or {}
        if status.get("startTime") is not None or _finished(body):
            if not _finished(body) and not _parked(body):
                self._active.add(key)
            return ""
        limit = self.settings.max_active_runs
        if key in self._active or limit <= 0:
            return ""
        first = next(iter(self._queue), key)
        if len(self._active) < limit and first == key:
            self._queue.pop(key, None)
            self._active.add(key)
            return ""
        self._queue.setdefault(key, None)
        return (
            f"Waiting to start: {limit} runs are in progress, the most this operator runs at "
            "once (AGENTRUN_MAX_ACTIVE_RUNS); it starts, in order of arrival, when one of "
            "them ends or waits for a human"
        )

    def _release(self, key: str) -> None:
        """A run stopped working (parked, finished or gone): the next queued runs start."""
        self._active.discard(key)
        self._queue.pop(key, None)
        free = self.settings.max_active_runs - len(self._active)
        for waiting in list(self._queue)[: max(0, free)]:
            namespace, _, name = waiting.partition("/")
            self._wake_later(namespace, name, 0)

    def load(self) -> tuple[int, int]:
        """Runs in progress, and new runs waiting for a place among them."""
        return len(self._active), len(self._queue)

    @staticmethod
    def _stale(state: _RunState, job: str) -> bool:
        """Skips a step the core would drop the news of (its own filter, `concerns`)."""
        if state.done:
            return True
        if state.body is None:
            # Parked for a human: no Job of it runs, so news of one (a late Complete, a TTL
            # deletion) is stale; else not known: read it.
            return state.parked
        status = state.body.get("status") or {}
        current = status.get("currentAction") or {}
        batch = {c.get("jobRef") for c in status.get("batch") or [] if c.get("result") is None}
        return not concerns(current.get("jobRef"), job) and job not in batch

    def _failed_step(self, namespace: str, name: str, err: Exception) -> None:
        log.error(
            "Step of %s/%s failed; retrying in %.0fs: %s: %s",
            namespace,
            name,
            ERROR_RETRY_SECONDS,
            type(err).__name__,
            str(err).splitlines()[0][:300] if str(err) else "",
            exc_info=not isinstance(err, ApiException),
        )
        # Forget the cached body: the retry starts from a fresh read.
        state = self._state(f"{namespace}/{name}")
        state.body, state.parked = None, False
        self._wake_later(namespace, name, ERROR_RETRY_SECONDS)

    # ------------------------------------------------------------ the loop

    async def _advance(
        self,
        state: _RunState,
        body: dict[str, Any],
        job_hint: dict[str, Any] | None,
        queued: str = "",
    ) -> None:
        meta = body["metadata"]
        try:
            run = _parse(body)
        except ValidationError as err:
            status, actions = fail_invalid_spec(
                body.get("status") or {},
                f"Invalid spec: {engine_config.field_path(err)}",
                _now(),
                meta.get("generation"),
            )
            if actions:
                await self._persist(state, body, status)
                await self._act(state, actions, run=None, body=body, config=None)
            return
        if self.trace:
            self.trace.stamp(run)
        deleting = meta.get("deletionTimestamp") is not None
        config, seen, batch = await asyncio.gather(
            self.observer.config(run),
            self.observer.job(run, job_hint, state.jobs_seen),
            self.observer.batch(run, job_hint, state.jobs_seen),
        )
        for found in [seen, *batch]:
            if found.output is not None:
                state.outputs.add(self.api, found.output)
        obs = Observations(
            now=_now(),
            config=config,
            deleting=deleting,
            job=seen.job,
            batch={b.job.name: b.job for b in batch if b.job is not None},
            queued=queued,
        )
        asked: dict[int, ModelCall] = {}  # this trigger's model calls, by step
        try:
            await self._rounds(state, body, run, obs, asked)
        finally:
            for call in asked.values():
                if not call.done():
                    _discard(call)

    async def _rounds(
        self,
        state: _RunState,
        body: dict[str, Any],
        run: AgentRun,
        obs: Observations,
        asked: dict[int, ModelCall],
    ) -> None:
        trigger = _Trigger(body=body, run=run, obs=obs, since=obs, asked=asked)
        for _ in range(MAX_ROUNDS):
            if not trigger.unwritten:
                trigger.since = trigger.obs
            if not await self._round(state, trigger):
                return
        meta = body["metadata"]
        log.error(
            "Run %s/%s did not settle after %d rounds", meta["namespace"], meta["name"], MAX_ROUNDS
        )

    async def _round(self, state: _RunState, trigger: _Trigger) -> bool:
        """One decide and its effects, its status written first; False when it is the last."""
        before = trigger.run.status
        status, actions = decide(trigger.run, trigger.obs)
        early: ModelCall | None = None
        create: list[CreateJob] = []
        if status != before:
            decided = trigger.run.model_copy(update={"status": status})
            config = trigger.obs.config
            # The one exception to write-ahead: a model call starts together with the write.
            early = self._early_model_call(decided, actions, config, trigger.asked)
            if early is not None and await self._coalesce(early, actions):
                trigger.hold(decided, before, actions, early.result())
                return True
            then = None
            if isinstance(config, Config):
                create = [a for a in actions if isinstance(a, CreateJob)]
                then = self.executor.jobs_creator(decided, create) if create else None
            written = await self._persist(state, trigger.body, status, then)
            if written is None:
                return await self._conflicted(state, trigger)
            actions = await self._landed(state, trigger, written, (decided, before), actions, early)
        return await self._execute(state, trigger, actions, early, create)

    async def _conflicted(self, state: _RunState, trigger: _Trigger) -> bool:
        """Someone else changed the run since the body decided from (a 409): decide again, from
        the fresh run, on the same observations; a model call already made is used again."""
        meta = trigger.body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        log.info("Status write of %s/%s conflicted; decided again", namespace, name)
        fresh = await self._fetch(state, namespace, name)
        if fresh is None:
            self.forget(namespace, name)
            return False
        trigger.body, trigger.run, trigger.obs = fresh, _parse(fresh), trigger.since
        trigger.unwritten.clear()
        trigger.deferred.clear()
        return True

    async def _landed(
        self,
        state: _RunState,
        trigger: _Trigger,
        written: dict[str, Any],
        round_: tuple[AgentRun, AgentRunStatus],
        actions: list[Action],
        early: ModelCall | None,
    ) -> list[Action]:
        """The write of a round (and of the rounds held back with it) landed: the actions
        they deferred are due now, before this round's own."""
        trigger.body = written
        # Replays after this write start from here: no call before it is used again.
        for step in [s for s, call in trigger.asked.items() if call is not early]:
            del trigger.asked[step]
        await state.outputs.stored()
        for was, was_before in [*trigger.unwritten, round_]:
            self._account(was, was_before, was.status)
            if self.trace:
                self.trace.transition(was, was_before)
        trigger.run = round_[0]
        due = trigger.deferred + actions
        trigger.unwritten.clear()
        trigger.deferred = []
        return due

    async def _execute(
        self,
        state: _RunState,
        trigger: _Trigger,
        actions: list[Action],
        early: ModelCall | None,
        created: list[CreateJob],
    ) -> bool:
        """Carries out a written round's actions; False when they produced nothing new.
        `created`: its Jobs, already created right after the write in the same worker thread;
        `early`: its model call, started together with the write."""
        meta = trigger.body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if created:
            actions = [a for a in actions if not any(a is c for c in created)]
            for job in created:
                self.executor.created(namespace, name, job.name, state.jobs_seen)
        if early is not None:
            actions = [a for a in actions if not isinstance(a, CallModel)]
        produced, trigger.body = await self._act(
            state, actions, run=trigger.run, body=trigger.body, config=trigger.obs.config
        )
        if early is not None:
            produced = {**(produced or {}), "model": await early}
        if created:
            produced = {**(produced or {}), **running_jobs(created)}
        if produced is None:
            return False
        trigger.observe(**produced)
        return True

    async def _coalesce(self, call: ModelCall, actions: list[Action]) -> bool:
        """Whether the model answered within the coalescing window, so that the round that
        asked and the round its answer decides are written together: one status write, not
        two, when the model is quick. A slower model loses nothing: its call goes on while
        the first write is sent, as without the window. Only a round whose other actions
        are Events and wake-ups (nothing that needs the write first) is held back."""
        window = self.settings.coalesce_seconds
        held = (CallModel, RecordEvent, RequeueAfter)
        if window <= 0 or not all(isinstance(a, held) for a in actions):
            return False
        await asyncio.wait({call}, timeout=window)
        return call.done() and not call.cancelled()

    def _early_model_call(
        self,
        decided: AgentRun,
        actions: list[Action],
        config: Any,
        asked: dict[int, ModelCall],
    ) -> ModelCall | None:
        call = next((a for a in actions if isinstance(a, CallModel)), None)
        if call is None or not isinstance(config, Config):
            return None
        made = asked.get(call.step)
        if made is None or made.cancelled():
            made = asyncio.get_running_loop().create_task(
                self.executor.ask_model(decided, config, call)
            )
            asked[call.step] = made
        return made

    def _account(self, run: AgentRun, before: AgentRunStatus, after: AgentRunStatus) -> None:
        agent = run.spec.agentRef
        if after.phase != before.phase:
            metrics.TRANSITIONS.labels(after.phase.value).inc()
        if after.step > before.step:
            metrics.STEPS.labels(agent).inc(after.step - before.step)
        pending = after.pendingAction
        self._seen[f"{run.metadata['namespace']}/{run.metadata['name']}"] = metrics.RunSnapshot(
            phase=after.phase.value,
            agent=agent,
            approval_requested=parse_time(pending.requestedTime) if pending else None,
        )

    async def _persist(
        self,
        state: _RunState,
        body: dict[str, Any],
        status: AgentRunStatus,
        then: Callable[[], None] | None = None,
    ) -> dict[str, Any] | None:
        """persist.write_status, the new body kept as the run's newest; None on a 409."""
        return await persist.write_status(
            self.api, body, status, lambda written: self._wrote(state, written), then
        )

    async def _act(
        self,
        state: _RunState,
        actions: list[Action],
        *,
        run: AgentRun | None,
        body: dict[str, Any],
        config: Config | ConfigError | None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return await self.executor.act(
            actions,
            run=run,
            body=body,
            config=config,
            wrote=lambda written: self._wrote(state, written),
            seen=state.jobs_seen,
        )

    def _wake_later(self, namespace: str, name: str, seconds: float) -> None:
        state = self._state(f"{namespace}/{name}")
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        pending = state.wake is not None and state.wake.when() > loop.time()
        if pending and state.wake is not None and state.wake.when() <= when:
            return  # an earlier wake-up is already due
        if state.wake is not None:
            state.wake.cancel()
        # A fresh context: call_at keeps a copy of the caller's, and there kopf's handler
        # context holds its event (a run, Job or pod body, tens of KiB) for as long as the
        # run waits, hours for a run parked on approval with its expiry wake-up.
        state.wake = loop.call_at(when, self._spawn, namespace, name, context=contextvars.Context())

    def _spawn(self, namespace: str, name: str) -> None:
        self._background(self.step(namespace, name))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        self.executor.background(work)


def _finished(body: dict[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in FINISHED


def _parked(body: dict[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in PARKED


def _awaiting(state: _RunState) -> str | None:
    """The tool whose approval the run waits for, if it does."""
    if state.body is None:
        return state.awaiting
    current = (state.body.get("status") or {}).get("currentAction") or {}
    if current.get("state") != ActionState.AWAITING_APPROVAL.value:
        return None
    return str(current.get("tool") or "") or None


def _discard(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _parse(body: dict[str, Any]) -> AgentRun:
    return AgentRun.model_validate(
        {
            "spec": body.get("spec", {}),
            "metadata": body["metadata"],
            "status": body.get("status") or {},
        }
    )
