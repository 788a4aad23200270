"""The adapter loop around the pure core: observe, decide, persist, act, repeat.

The write-ahead rule: status is the write-ahead log. The status decide() returns is written
(onto the version it was decided from; a 409 decides again) before any of its actions
changes the cluster, so a new operator resumes every run from status alone, with no Job
created twice (Job names are deterministic) and no write without its recorded approval.
Effects that follow a write: its Job is created right after it in the same worker thread,
then its Events, notifications and other actions run. One exception, for speed, changes
nothing in the cluster: a model call may start together with the status write that asks
for it (if the write fails, its answer is dropped, or reused by the round decided again),
and a quick answer is written in that same write (see Runner._coalesce).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from agentrun.api import (
    TERMINAL_PHASES,
    ActionState,
    AgentRun,
    AgentRunStatus,
    AgentSpec,
    CurrentAction,
    Effect,
    PromptRef,
)
from agentrun.engine import config as engine_config
from agentrun.engine import policy
from agentrun.engine.core import (
    Action,
    CallModel,
    Config,
    ConfigError,
    CreateJob,
    DeleteJob,
    InvalidAction,
    JobObservation,
    JobPhase,
    ModelReply,
    ModelUnavailable,
    Notify,
    Observations,
    RecordEvent,
    RemoveAnnotations,
    RequeueAfter,
    ToolCall,
    concerns,
    decide,
    fail_invalid_spec,
    job_action,
    parse_time,
)
from agentrun.kube import client as kube
from agentrun.llm import prompts, toolcall
from agentrun.llm.model import ModelClient
from agentrun.operator import faults, jobs, metrics, notify, targets
from agentrun.operator.access import WriteAccess
from agentrun.operator.toolpods import ToolPods
from agentrun.tool.redaction import redact

log = logging.getLogger("agentrun.operator.runner")

MAX_ROUNDS = 50  # decide/act rounds per trigger; a guard against a logic loop
MAX_TOOL_OUTPUT_BYTES = 900 * 1024  # AgentToolSpec.outputLimitBytes' maximum
TRANSIENT_RETRY_SECONDS = 2.0
ERROR_RETRY_SECONDS = 60.0  # an unexpected error: retried, slowly
FINISHED = frozenset(p.value for p in TERMINAL_PHASES)


@dataclass
class Settings:
    # What the admin allows tools to run (images, ServiceAccounts) and the default image.
    policy: policy.Policy = field(default_factory=policy.Policy)
    output_limit_bytes: int = 512 * 1024
    # How long a step waits for a model answer to write it together with the record that
    # asked for it (see Runner._coalesce); 0 writes each round at once.
    coalesce_seconds: float = 0.25
    # All raw outputs one run may keep in ConfigMaps: a run that loops over huge outputs
    # stops filling etcd (its compacted results still reach the thread).
    run_output_budget_bytes: int = 8 * 1024 * 1024


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
    # Raw-output ConfigMaps being created alongside the status write that links them; one
    # that failed is retried at the run's next step.
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    storing: list[asyncio.Task[None]] = field(default_factory=list)


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
            now=_now(), config=self.obs.config, deleting=self.obs.deleting, **produced
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


def _version(body: dict[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


def _newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """resourceVersions are etcd revisions; if one is not a number, the latest arrival wins."""
    if than is None:
        return True
    try:
        return int(_version(body)) > int(_version(than))
    except ValueError:
        return True


def _now() -> datetime:
    return datetime.now(UTC)


def to_wire(value: Any) -> Any:
    """Drops None and empty strings: absent is how Kubernetes spells both (omitempty)."""
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `before` into `after`: changed keys only, None
    for a removed key, at every depth, since a merge patch merges nested objects (a key left
    out of a nested object is kept, not dropped). Lists are replaced whole."""
    patch: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    for key in before:
        if key not in after:
            patch[key] = None
    return patch


class Runner:
    """Drives runs one trigger at a time; one lock per run serialises all triggers."""

    def __init__(self, api: k8s.ApiClient, model: ModelClient, settings: Settings) -> None:
        self.api = api
        self.model = model
        self.settings = settings
        self._runs: dict[str, _RunState] = {}
        # Agents and AgentTools as last seen by the operator's watch; a miss falls back to a GET.
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        # Read past any tool's own output limit so the envelope line is never cut.
        log_limit = max(settings.output_limit_bytes, MAX_TOOL_OUTPUT_BYTES + 64 * 1024)
        self.pods = ToolPods(api, log_limit)
        # The run of each tool Job this process created or observed: a tool pod that succeeded
        # steps its run at once, without waiting for the Job's Complete condition.
        self._job_runs: dict[tuple[str, str], str] = {}
        # The uid of each tool Job this process created (or verified): a result is taken only
        # from that Job's own pod; a Job or pod made by someone else under the name is refused.
        self._job_uids: dict[tuple[str, str], str] = {}
        self.access = WriteAccess(api)
        # Jobs whose create found one of the name already there (filled in worker threads).
        self._existed: set[tuple[str, str]] = set()
        # Each AgentTool as read_tool made it, per version (see _read_tool).
        self._tools: dict[
            tuple[str, str], tuple[str, engine_config.Tool | engine_config.ConfigError]
        ] = {}
        self._seen: dict[str, metrics.RunSnapshot] = {}
        self._prompt_texts: dict[str, str] = {}  # sha256 -> text, one entry per prompt version
        self._tasks: set[asyncio.Task[Any]] = set()

    def _state(self, key: str) -> _RunState:
        return self._runs.setdefault(key, _RunState())

    def observe_object(
        self, kind: str, namespace: str, name: str, body: dict[str, Any] | None
    ) -> None:
        """Called from the watch of Agents and AgentTools; None means deleted."""
        if body is None:
            self._objects.pop((kind, namespace, name), None)
        else:
            self._objects[(kind, namespace, name)] = body

    async def _lookup(
        self, kind: str, namespace: str, name: str, fetch: Any
    ) -> dict[str, Any] | None:
        hit = self._objects.get((kind, namespace, name))
        if hit is not None:
            return hit
        found: dict[str, Any] | None = await asyncio.to_thread(fetch, self.api, namespace, name)
        return found

    def awaiting(self, namespace: str, tool: str) -> list[str]:
        """The runs known to wait for approval of a call of this tool."""
        out = []
        for key, state in self._runs.items():
            ns, _, name = key.partition("/")
            current = ((state.body or {}).get("status") or {}).get("currentAction") or {}
            waiting = current.get("state") == ActionState.AWAITING_APPROVAL.value
            if ns == namespace and current.get("tool") == tool and waiting:
                out.append(name)
        return out

    def snapshots(self) -> list[metrics.RunSnapshot]:
        return list(self._seen.values())

    def pod_succeeded(self, namespace: str, job: str) -> str | None:
        """The run to step for a tool pod that has succeeded, if it is one of ours."""
        return self._job_runs.get((namespace, job))

    def job_gone(self, namespace: str, job: str) -> None:
        self._job_runs.pop((namespace, job), None)
        self._job_uids.pop((namespace, job), None)

    def forget(self, namespace: str, name: str) -> None:
        self._seen.pop(f"{namespace}/{name}", None)
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
            return False
        state = self._state(key)
        if _version(body) in state.own:
            return False
        if _newer(body, state.body):
            state.body = body
        return True

    def _wrote(self, state: _RunState, body: dict[str, Any]) -> None:
        state.own.append(_version(body))
        if _newer(body, state.body):
            state.body = body

    async def _fetch(self, state: _RunState, namespace: str, name: str) -> dict[str, Any] | None:
        body = await asyncio.to_thread(kube.get_run, self.api, namespace, name)
        if body is not None:
            state.body = body
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
        state = self._state(f"{namespace}/{name}")
        async with state.lock:
            if for_job is not None and self._stale(state, for_job):
                return
            try:
                self._store_outputs(state)  # any left over from a step that failed
                body = state.body or await self._fetch(state, namespace, name)
                if body is None:
                    self.forget(namespace, name)
                    return
                await self._advance(state, body, job)
                await self._outputs_stored(state)
                if state.body is not None and _finished(state.body):
                    state.body, state.done = None, True
            except (ApiException, HTTPError, OSError) as err:
                if not _transient(err):
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

    @staticmethod
    def _stale(state: _RunState, job: str) -> bool:
        """Skips a step the core would drop the news of (its own filter, `concerns`)."""
        if state.done:
            return True
        if state.body is None:
            return False  # not known: read it
        current = (state.body.get("status") or {}).get("currentAction") or {}
        return not concerns(current.get("jobRef"), job)

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
        self._state(f"{namespace}/{name}").body = None
        self._wake_later(namespace, name, ERROR_RETRY_SECONDS)

    # ------------------------------------------------------------ the loop

    async def _advance(
        self, state: _RunState, body: dict[str, Any], job_hint: dict[str, Any] | None
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
                await self._act(state, run=None, body=body, actions=actions)
            return
        deleting = meta.get("deletionTimestamp") is not None
        config, job = await asyncio.gather(
            self._resolve(run), self._observe_job(state, run, job_hint)
        )
        obs = Observations(now=_now(), config=config, deleting=deleting, job=job)
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
        create: CreateJob | None = None
        if status != before:
            decided = trigger.run.model_copy(update={"status": status})
            config = trigger.obs.config
            # The one exception to write-ahead: a model call starts together with the write.
            early = self._early_model_call(decided, actions, config, trigger.asked)
            if early is not None and await self._coalesce(early, actions):
                trigger.hold(decided, before, actions, early.result())
                return True
            create = next((a for a in actions if isinstance(a, CreateJob)), None)
            then = None
            if create is not None and isinstance(config, Config):
                then = self._job_creator(decided, config, create)
            else:
                create = None
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
        await self._outputs_stored(state)
        for was, was_before in [*trigger.unwritten, round_]:
            self._account(was, was_before, was.status)
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
        created: CreateJob | None,
    ) -> bool:
        """Carries out a written round's actions; False when they produced nothing new.
        `created`: its Job, already created right after the write in the same worker thread;
        `early`: its model call, started together with the write."""
        meta = trigger.body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if created is not None:
            actions = [a for a in actions if a is not created]
            self._job_exists(state, namespace, name, created.name)
        if early is not None:
            actions = [a for a in actions if not isinstance(a, CallModel)]
        produced, trigger.body = await self._act(
            state, run=trigger.run, body=trigger.body, actions=actions, config=trigger.obs.config
        )
        if early is not None:
            produced = {**(produced or {}), "model": await early}
        if created is not None:
            job = JobObservation(name=created.name, phase=JobPhase.RUNNING)
            produced = {**(produced or {}), "job": job}
            self._look_again_if_existed(namespace, name, created.name)
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
            made = asyncio.get_running_loop().create_task(self._ask_model(decided, config, call))
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
        """Writes status, only onto the version decided from; the new body, None on a 409.
        `then` runs in the same worker thread once the write succeeded: one trip through the
        event loop fewer for the effect the write records."""
        meta = body["metadata"]
        before = to_wire(body.get("status") or {})
        before.pop("kopf", None)  # kopf's own, when it kept progress in status
        patch = merge_patch(before, to_wire(status.model_dump(mode="json")))
        if not patch:
            if then is not None:
                await asyncio.to_thread(then)
            return body
        ns, name, version = meta["namespace"], meta["name"], _version(body)

        def write() -> tuple[dict[str, Any], Exception | None]:
            done = kube.patch_run_status(self.api, ns, name, patch, version)
            try:
                if then is not None:
                    then()
            except Exception as err:  # the write stands; the effect is retried from it
                return done, err
            return done, None

        try:
            written, failed = await asyncio.to_thread(write)
        except ApiException as err:
            if err.status == 409:
                return None
            raise
        self._wrote(state, written)
        if failed is not None:
            raise failed
        return written

    # ------------------------------------------------------------ observations

    async def _resolve(self, run: AgentRun) -> Config | ConfigError | None:
        """Fetches what the run's config is made of; the engine's validate() judges it."""
        namespace = run.metadata["namespace"]
        agent_body = await self._lookup("Agent", namespace, run.spec.agentRef, kube.get_agent)
        fetched = engine_config.Fetched(agent=agent_body, tools={})
        agent = engine_config.read_agent(run, namespace, agent_body)
        if isinstance(agent, AgentSpec):
            fetched = await self._fetch_config(run, namespace, agent_body, agent)
        return engine_config.validate(run, namespace, fetched, self.settings.policy)

    async def _fetch_config(
        self, run: AgentRun, namespace: str, agent_body: dict[str, Any] | None, agent: AgentSpec
    ) -> engine_config.Fetched:
        """The Agent's tools, in order up to the first that is unusable (the later ones cannot
        change the verdict), which of them are writes by their ServiceAccount, and the prompt."""
        tools: dict[str, engine_config.Tool | engine_config.ConfigError | None] = {}
        writers: set[str] = set()
        for tool_name in agent.tools:
            body = await self._lookup("AgentTool", namespace, tool_name, kube.get_tool)
            tool = None if body is None else self._read_tool(namespace, tool_name, body)
            tools[tool_name] = tool
            if not isinstance(tool, engine_config.Tool):
                break
            snap = tool.snapshot
            if snap.effect is Effect.READ and await self.access.can_write(
                namespace, snap.serviceAccountName
            ):
                writers.add(tool_name)
        prompt: PromptRef | engine_config.PromptFailure
        try:
            loaded = prompts.load_prompt(*engine_config.prompt_wanted(run, agent))
        except prompts.PromptError as err:
            prompt = engine_config.PromptFailure(str(err))
        else:
            prompt = PromptRef(name=loaded.name, version=loaded.version, sha256=loaded.sha256)
            # Kept by sha256: the text the model gets is the one promptRef names.
            self._prompt_texts[loaded.sha256] = loaded.text
        return engine_config.Fetched(
            agent=agent_body, tools=tools, writers=frozenset(writers), prompt=prompt
        )

    def _read_tool(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> engine_config.Tool | engine_config.ConfigError:
        """read_tool, once per AgentTool version: the policy is fixed for the process's life."""
        meta = body.get("metadata") or {}
        version = f"{meta.get('uid', '')}/{meta.get('resourceVersion', '')}"
        seen = self._tools.get((namespace, name))
        if seen is not None and seen[0] == version:
            return seen[1]
        tool = engine_config.read_tool(
            name,
            body,
            self.settings.policy,
            check_parameters=toolcall.validator_for,
            reserved=toolcall.BUILTIN_TOOLS,
        )
        self._tools[(namespace, name)] = (version, tool)
        return tool

    async def _observe_job(
        self, state: _RunState, run: AgentRun, hint: dict[str, Any] | None
    ) -> JobObservation | None:
        current = run.status.currentAction
        if current is None or current.state is ActionState.AWAITING_APPROVAL:
            return None
        namespace = run.metadata["namespace"]
        key = (namespace, current.jobRef)
        known: str | None = self._job_uids.get(key)
        manifest = self._manifest(run, current)
        job = await self._current_job(namespace, current.jobRef, hint, known, manifest)
        if job is None:
            existed = current.jobRef in state.jobs_seen
            return JobObservation(name=current.jobRef, phase=JobPhase.NOT_FOUND, existed=existed)
        uid = str(job["metadata"].get("uid") or "")
        if known is not None and uid != known:
            replaced = f"Job {current.jobRef} was replaced (uid {uid}, ours was {known})"
            return self._forged(run, current.jobRef, replaced)
        if known is None and manifest is not None:
            differs = jobs.job_mismatch(job, manifest)
            if differs is not None:
                return self._forged(run, current.jobRef, differs)
            self._job_uids[key] = uid
        self._job_exists(state, namespace, run.metadata["name"], current.jobRef)
        if not jobs.job_finished(job):
            return JobObservation(name=current.jobRef, phase=JobPhase.RUNNING)
        return await self._job_result(state, run, current, job, uid)

    async def _current_job(
        self,
        namespace: str,
        name: str,
        hint: dict[str, Any] | None,
        known: str | None,
        manifest: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """The current action's Job: the trigger's, one our succeeded pod stands for, or a GET."""
        if hint and hint["metadata"]["name"] == name:
            return hint
        # The pod alone is enough only for a Job whose uid we know (we created it).
        pod = self.pods.succeeded(namespace, name) if known else None
        if pod is not None and manifest is not None:
            job = jobs.completed_by_pod(name, pod)
            job["metadata"]["uid"] = known
            job["spec"] = manifest["spec"]
            return job
        found: dict[str, Any] | None = await asyncio.to_thread(
            kube.read_job, self.api, namespace, name
        )
        return found

    async def _job_result(
        self,
        state: _RunState,
        run: AgentRun,
        current: CurrentAction,
        job: dict[str, Any],
        uid: str,
    ) -> JobObservation:
        """What a finished Job of ours returned, read from its own pod's log."""
        namespace = run.metadata["namespace"]
        pod = await self.pods.finished_pod(namespace, current.jobRef)
        if pod is not None and "spec" in job:
            alien = jobs.pod_mismatch(pod, job)
            if alien is not None:
                return self._forged(run, current.jobRef, alien)
        text: str | None = None
        if pod is not None:
            text = await self.pods.log(namespace, current.jobRef, pod["metadata"]["name"])
        if text:
            # Custom tools and crash logs bypass the tool runner's own masking. In a worker
            # thread: up to a MiB of text, and the event loop also answers the webhook.
            text = await asyncio.to_thread(redact, text)
        ref: str | None = None
        stored, spent = 0, run.status.storedOutputBytes
        if text and spent >= self.settings.run_output_budget_bytes:
            log.warning(
                "Did not store the output of %s/%s: the run's output budget of %d bytes is spent",
                namespace,
                current.jobRef,
                self.settings.run_output_budget_bytes,
            )
        elif text:
            room = self.settings.run_output_budget_bytes - spent
            cm = jobs.output_configmap(
                run_name=run.metadata["name"],
                run_namespace=namespace,
                run_uid=run.metadata["uid"],
                step=current.step,
                tool_name=current.tool,
                job_name=current.jobRef,
                raw=text,
                limit=min(self.settings.output_limit_bytes, room),
            )
            ref = cm["metadata"]["name"]
            stored = sum(len(v.encode()) for v in cm["data"].values())
            # Created while the status write that links it is in flight, not before it.
            state.outputs[ref] = cm
            self._store_outputs(state)
        observed = jobs.job_observation(job, pod, text, ref)
        observed = replace(
            observed,
            content=redact(observed.content),
            message=redact(observed.message),
            uid=uid,
            storedBytes=stored,
        )
        _observe_duration(current.tool, job, observed)
        return observed

    def _forged(self, run: AgentRun, job: str, why: str) -> JobObservation:
        log.warning("Refused the result of %s/%s: %s", run.metadata["namespace"], job, why)
        return jobs.forged(job, why)

    def _manifest(self, run: AgentRun, current: CurrentAction) -> dict[str, Any] | None:
        """The Job the operator builds for the current action (None before snapshots)."""
        if current.snapshot is None:
            return None
        return _build(run, job_action(current, current.snapshot))

    def _job_exists(self, state: _RunState, namespace: str, run: str, job: str) -> None:
        """A tool Job of the run exists (we created or saw it): if it disappears it was
        deleted, and a pod of it that succeeds steps the run."""
        state.jobs_seen.add(job)
        self._job_runs[(namespace, job)] = run

    def _store_outputs(self, state: _RunState) -> None:
        for name, manifest in list(state.outputs.items()):
            if not any(t.get_name() == name for t in state.storing):
                task = asyncio.get_running_loop().create_task(
                    self._store_output(state, name, manifest), name=name
                )
                state.storing.append(task)

    async def _store_output(self, state: _RunState, name: str, manifest: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(kube.ensure_configmap, self.api, manifest)
        except ApiException as err:
            if _transient(err):
                raise  # kept in state.outputs: retried at the run's next step
            # A refusal will not change on retry; the thread keeps the compacted result.
            log.error("Could not store the tool output ConfigMap %s: %s", name, err.reason)
        state.outputs.pop(name, None)

    async def _outputs_stored(self, state: _RunState) -> None:
        """Waits for the raw-output ConfigMaps; a failure is raised (and retried later)."""
        tasks, state.storing = state.storing, []
        errors = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if r]
        if errors and isinstance(errors[0], BaseException):
            raise errors[0]

    # ------------------------------------------------------------ actions

    async def _act(
        self,
        state: _RunState,
        *,
        run: AgentRun | None,
        body: dict[str, Any],
        actions: list[Action],
        config: Config | ConfigError | None = None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Carries out actions in order; returns what they produced for the next decide, and
        the run's body as our own writes left it."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        produced: dict[str, Any] = {}
        for action in actions:
            if isinstance(action, RecordEvent):
                # Events are for people; the run's next step does not wait for them.
                self._background(
                    asyncio.to_thread(
                        kube.record_event,
                        self.api,
                        body,
                        action.type,
                        action.reason,
                        action.message,
                    )
                )
                log.info(
                    "Recorded %s for %s/%s: %s", action.reason, namespace, name, action.message
                )
            elif isinstance(action, RemoveAnnotations):
                written = await asyncio.to_thread(
                    kube.remove_annotations, self.api, namespace, name, list(action.keys)
                )
                if written is not None:
                    self._wrote(state, written)
                    body = written
                if run is not None:
                    kept = {
                        k: v
                        for k, v in (run.metadata.get("annotations") or {}).items()
                        if k not in action.keys
                    }
                    run.metadata["annotations"] = kept
            elif isinstance(action, DeleteJob):
                await asyncio.to_thread(kube.delete_job, self.api, namespace, action.name)
                log.info("Deleted Job %s/%s", namespace, action.name)
            elif isinstance(action, RequeueAfter):
                self._wake_later(namespace, name, action.seconds)
            elif isinstance(action, Notify) and run is not None and isinstance(config, Config):
                notify.start(self.api, run, config.agent, action.event, self._tasks)
            elif isinstance(action, CreateJob) and run is not None and isinstance(config, Config):
                produced["job"] = await self._create_job(run, config, action)
                self._job_exists(state, namespace, name, action.name)
            elif isinstance(action, CallModel) and run is not None and isinstance(config, Config):
                produced["model"] = await self._ask_model(run, config, action)
        return produced or None, body

    async def _create_job(self, run: AgentRun, config: Config, action: CreateJob) -> JobObservation:
        await asyncio.to_thread(self._job_creator(run, config, action))
        self._look_again_if_existed(run.metadata["namespace"], run.metadata["name"], action.name)
        return JobObservation(name=action.name, phase=JobPhase.RUNNING)

    def _look_again_if_existed(self, namespace: str, run: str, job: str) -> None:
        """A Job found already there may have finished long ago: no watch event will come
        for it, so the run steps again at once and reads (and checks) it."""
        if (namespace, job) in self._existed:
            self._existed.discard((namespace, job))
            self._wake_later(namespace, run, 0.0)

    def _job_creator(self, run: AgentRun, config: Config, action: CreateJob) -> Callable[[], None]:
        """The Job's creation, as a call for a worker thread."""
        manifest = _build(run, action)
        key = (run.metadata["namespace"], action.name)

        def create() -> None:
            faults.crash_point(faults.BEFORE_JOB_CREATE)
            created = kube.create_job(self.api, manifest)
            if created is not None:
                self._job_uids[key] = str(created["metadata"]["uid"])
            else:  # it existed: ours from before a restart, or not ours; looked at next step
                self._existed.add(key)
            log.info(
                "%s Job %s/%s for step %d (%s)",
                "Created" if created is not None else "Found existing",
                run.metadata["namespace"],
                action.name,
                action.step,
                action.tool,
            )

        return create

    async def _ask_model(
        self, run: AgentRun, config: Config, action: CallModel
    ) -> ModelReply | ModelUnavailable:
        reply = await self._call_model(run, config, action)
        if not isinstance(reply, ModelReply) or not isinstance(reply.action, ToolCall):
            return reply
        return replace(reply, action=await self._bind_target(run, config, reply.action))

    async def _bind_target(
        self, run: AgentRun, config: Config, call: ToolCall
    ) -> ToolCall | InvalidAction:
        """A write is proposed on its target's current state (resolved with the operator's
        own read rights), which the approver sees and the tool checks before it acts."""
        snap = config.snapshots.get(call.tool)
        if snap is None or snap.effect is not Effect.WRITE or snap.builtin is None:
            return call
        try:
            bound = await asyncio.to_thread(
                targets.resolve, self.api, snap.builtin, call.arguments, run.metadata["namespace"]
            )
        except targets.TargetError as err:
            return InvalidAction(f"{call.tool} was not proposed: {err}. Look again first.")
        except ApiException as err:
            if _transient(err):
                raise
            return InvalidAction(
                f"{call.tool} was not proposed: its target could not be read ({err.status} "
                f"{err.reason}). Look again first."
            )
        return replace(call, preconditions=bound) if bound else call

    async def _call_model(
        self, run: AgentRun, config: Config, action: CallModel
    ) -> ModelReply | ModelUnavailable:
        ref = config.agent.model.apiKeySecretRef
        key: str | None = None
        if ref is not None:  # only from the credentials namespace, only if it opted in
            namespace = self.model.policy.credentials_namespace
            try:
                key = await asyncio.to_thread(
                    kube.read_credential, self.api, namespace, ref.name, ref.key
                )
            except kube.CredentialError as e:
                return ModelUnavailable(f"API key not used: {e}")
        # The text _resolve loaded for this config: keyed by its sha256, it is the prompt
        # promptRef names, even if the file changes between the two.
        prompt_text = self._prompt_texts[config.prompt.sha256]
        agent, model = run.spec.agentRef, config.agent.model.name
        started = time.monotonic()
        reply = await self.model.next_action(run, config, prompt_text, key, action.step)
        outcome = "error" if isinstance(reply, ModelUnavailable) else "ok"
        metrics.MODEL_SECONDS.labels(agent, model, outcome).observe(time.monotonic() - started)
        if isinstance(reply, ModelUnavailable):
            metrics.MODEL_ERRORS.labels(agent, model).inc()
        else:
            metrics.TOKENS.labels(agent, model, "prompt").inc(reply.usage.promptTokens)
            metrics.TOKENS.labels(agent, model, "completion").inc(reply.usage.completionTokens)
        return reply

    def _wake_later(self, namespace: str, name: str, seconds: float) -> None:
        state = self._state(f"{namespace}/{name}")
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        pending = state.wake is not None and state.wake.when() > loop.time()
        if pending and state.wake is not None and state.wake.when() <= when:
            return  # an earlier wake-up is already due
        if state.wake is not None:
            state.wake.cancel()
        state.wake = loop.call_at(when, self._spawn, namespace, name)

    def _spawn(self, namespace: str, name: str) -> None:
        self._background(self.step(namespace, name))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Background task failed: %s", task.exception())


def _build(run: AgentRun, action: CreateJob) -> dict[str, Any]:
    """The Job manifest of an action: only from its frozen snapshot."""
    return jobs.build_job(
        run_name=run.metadata["name"],
        run_namespace=run.metadata["namespace"],
        run_uid=run.metadata["uid"],
        step=action.step,
        tool_name=action.tool,
        tool=action.snapshot,
        arguments=action.arguments,
        job_name=action.name,
        action_hash=action.actionHash,
        preconditions=action.preconditions,
    )


def _finished(body: dict[str, Any]) -> bool:
    return (body.get("status") or {}).get("phase") in FINISHED


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


def _transient(err: Exception) -> bool:
    """Connection trouble, throttling and server errors pass; a 4xx is a real answer."""
    if isinstance(err, ApiException):
        if err.status == 404:
            return not kube.object_missing(err)  # a path not served yet, not a missing object
        return err.status is None or err.status == 429 or err.status >= 500
    return True


def _observe_duration(tool: str, job: dict[str, Any], observed: JobObservation) -> None:
    status = job.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if start and end:
        outcome = "ok" if observed.phase is JobPhase.SUCCEEDED and observed.ok else "failed"
        seconds = (parse_time(end) - parse_time(start)).total_seconds()
        metrics.TOOL_JOB_SECONDS.labels(tool, outcome).observe(seconds)
