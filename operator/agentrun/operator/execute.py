"""Carries out decide()'s actions, after the status that records them is written (see
persist.py for the write-ahead rule), and reports what they produced for the next decide."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from agentrun.api import AgentRun, Effect
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
    RecordEvent,
    RemoveAnnotations,
    RequeueAfter,
    ToolCall,
)
from agentrun.kube import client as kube
from agentrun.llm.model import ModelClient
from agentrun.operator import faults, jobs, metrics, notify, targets
from agentrun.operator.ledger import JobLedger
from agentrun.operator.tracing import RunTracer

log = logging.getLogger("agentrun.operator.execute")

Wake = Callable[[str, str, float], None]  # (namespace, run, seconds)
Body = dict[str, Any]


def transient(err: Exception) -> bool:
    """Connection trouble, throttling and server errors pass; a 4xx is a real answer."""
    if isinstance(err, ApiException):
        if err.status == 404:
            return not kube.object_missing(err)  # a path not served yet, not a missing object
        return err.status is None or err.status == 429 or err.status >= 500
    return True


@dataclass
class Outputs:
    """Raw-output ConfigMaps being created alongside the status write that links them; one
    that failed is kept and retried at the run's next step."""

    waiting: dict[str, Body] = field(default_factory=dict)
    storing: list[asyncio.Task[None]] = field(default_factory=list)

    def add(self, api: k8s.ApiClient, manifest: Body) -> None:
        self.waiting[manifest["metadata"]["name"]] = manifest
        self.start(api)

    def start(self, api: k8s.ApiClient) -> None:
        for name, manifest in list(self.waiting.items()):
            if not any(t.get_name() == name for t in self.storing):
                task = asyncio.get_running_loop().create_task(
                    self._store(api, name, manifest), name=name
                )
                self.storing.append(task)

    async def _store(self, api: k8s.ApiClient, name: str, manifest: Body) -> None:
        try:
            await asyncio.to_thread(kube.ensure_configmap, api, manifest)
        except ApiException as err:
            if transient(err):
                raise  # kept waiting: retried at the run's next step
            # A refusal will not change on retry; the thread keeps the compacted result.
            log.error("Could not store the tool output ConfigMap %s: %s", name, err.reason)
        self.waiting.pop(name, None)

    async def stored(self) -> None:
        """Waits for the ConfigMaps being created; a failure is raised (and retried later)."""
        tasks, self.storing = self.storing, []
        errors = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if r]
        if errors and isinstance(errors[0], BaseException):
            raise errors[0]


def running_jobs(created: list[CreateJob]) -> dict[str, Any]:
    """What just created Jobs are for the next decide: the current action's, or the batch's."""
    produced: dict[str, Any] = {}
    for action in created:
        seen = JobObservation(name=action.name, phase=JobPhase.RUNNING)
        if action.group:  # a grouped Job: each call's container is running
            for call in action.group:
                key = f"{action.name}/{call.container}"
                produced.setdefault("batch", {})[key] = replace(seen, name=key)
        elif action.batch:
            produced.setdefault("batch", {})[action.name] = seen
        else:
            produced["job"] = seen
    return produced


def merge_produced(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    merged = {**into, **more}
    if "batch" in into and "batch" in more:
        merged["batch"] = {**into["batch"], **more["batch"]}
    return merged


class Executor:
    def __init__(
        self,
        api: k8s.ApiClient,
        model: ModelClient,
        ledger: JobLedger,
        prompt_text: Callable[[str], str],
        wake: Wake,
        tasks: set[asyncio.Task[Any]],
        trace: RunTracer | None = None,
        start_seconds: int = jobs.DEFAULT_START_SECONDS,
    ) -> None:
        self.api = api
        self.trace = trace
        self.start_seconds = start_seconds
        self.model = model
        self.ledger = ledger
        self._prompt_text = prompt_text
        self._wake = wake
        self.tasks = tasks  # background work (Events, notifications), awaited by nobody

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Background task failed: %s", task.exception())

    async def act(
        self,
        actions: list[Action],
        *,
        run: AgentRun | None,
        body: Body,
        config: Config | ConfigError | None,
        wrote: Callable[[Body], None],
        seen: set[str],
    ) -> tuple[dict[str, Any] | None, Body]:
        """Carries out actions in order; returns what they produced for the next decide, and
        the run's body as its own writes left it (each also told to `wrote`). `seen`: the
        run's Jobs seen existing, to which a created one is added."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        produced: dict[str, Any] = {}
        usable = run if isinstance(config, Config) else None
        for action in actions:
            if isinstance(action, RecordEvent):
                self._record(body, action)
            elif isinstance(action, RemoveAnnotations):
                body = await self._remove_annotations(body, run, action, wrote)
            elif isinstance(action, DeleteJob):
                await asyncio.to_thread(kube.delete_job, self.api, namespace, action.name)
                log.info("Deleted Job %s/%s", namespace, action.name)
            elif isinstance(action, RequeueAfter):
                self._wake(namespace, name, action.seconds)
            elif isinstance(action, Notify) and usable and isinstance(config, Config):
                notify.start(
                    self.api, usable, config.agent, action.event, self.tasks, action.settle
                )
            elif isinstance(action, CreateJob) and usable:
                await asyncio.to_thread(self.job_creator(usable, action))
                self.created(namespace, name, action.name, seen)
                produced = merge_produced(produced, running_jobs([action]))
            elif isinstance(action, CallModel) and usable and isinstance(config, Config):
                produced["model"] = await self.ask_model(usable, config, action)
        return produced or None, body

    def _record(self, body: Body, action: RecordEvent) -> None:
        # Events are for people; the run's next step does not wait for them.
        self.background(
            asyncio.to_thread(
                kube.record_event, self.api, body, action.type, action.reason, action.message
            )
        )
        meta = body["metadata"]
        log.info(
            "Recorded %s for %s/%s: %s",
            action.reason,
            meta["namespace"],
            meta["name"],
            action.message,
        )

    async def _remove_annotations(
        self,
        body: Body,
        run: AgentRun | None,
        action: RemoveAnnotations,
        wrote: Callable[[Body], None],
    ) -> Body:
        meta = body["metadata"]
        written = await asyncio.to_thread(
            kube.remove_annotations, self.api, meta["namespace"], meta["name"], list(action.keys)
        )
        if written is not None:
            wrote(written)
            body = written
        if run is not None:
            annotations = run.metadata.get("annotations") or {}
            run.metadata["annotations"] = {
                k: v for k, v in annotations.items() if k not in action.keys
            }
        return body

    # ------------------------------------------------------------ Jobs

    def jobs_creator(self, run: AgentRun, actions: list[CreateJob]) -> Callable[[], None]:
        """The Jobs' creation, one after the other in one worker thread call."""
        creators = [self.job_creator(run, a) for a in actions]

        def create() -> None:
            for creator in creators:
                creator()

        return create

    def created(self, namespace: str, run: str, job: str, seen: set[str]) -> None:
        """A Job of the run was created (or found there): if it disappears it was deleted, and
        a pod of it that succeeds steps the run. One found already there may have finished
        long ago: no watch event will come for it, so the run steps again at once and reads
        (and checks) it."""
        seen.add(job)
        self.ledger.exists(namespace, run, job)
        if self.ledger.take_existed(namespace, job):
            self._wake(namespace, run, 0.0)

    def job_creator(self, run: AgentRun, action: CreateJob) -> Callable[[], None]:
        """The Job's creation, as a call for a worker thread (see persist.write_status)."""
        trace = self.trace
        parent = None if trace is None else (lambda part: trace.tool_parent(run, part))
        exporter = None if trace is None else trace.exporter_env
        manifest = jobs.manifest_for(run, action, parent, exporter, self.start_seconds)
        namespace = run.metadata["namespace"]

        def create() -> None:
            faults.crash_point(faults.BEFORE_JOB_CREATE)
            made = kube.create_job(self.api, manifest)
            if made is not None:
                self.ledger.verified(namespace, action.name, str(made["metadata"]["uid"]))
            else:  # it existed: ours from before a restart, or not ours; looked at next step
                self.ledger.found_existing(namespace, action.name)
            calls = action.group or (action,)
            log.info(
                "%s Job %s/%s for step %s (%s)",
                "Created" if made is not None else "Found existing",
                namespace,
                action.name,
                ", ".join(str(c.step) for c in calls),
                ", ".join(c.tool for c in calls),
            )

        return create

    # ------------------------------------------------------------ the model

    async def ask_model(
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
            if transient(err):
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
        prompt_text = self._prompt_text(config.prompt.sha256)
        agent, model = run.spec.agentRef, config.agent.model.name
        started, began = time.monotonic(), datetime.now(UTC)
        reply = await self.model.next_action(run, config, prompt_text, key, action.step)
        if self.trace:
            self.trace.chat(run, config, action.step, (began, datetime.now(UTC)), reply)
        outcome = "error" if isinstance(reply, ModelUnavailable) else "ok"
        metrics.MODEL_SECONDS.labels(agent, model, outcome).observe(time.monotonic() - started)
        if isinstance(reply, ModelUnavailable):
            metrics.MODEL_ERRORS.labels(agent, model).inc()
        else:
            metrics.TOKENS.labels(agent, model, "prompt").inc(reply.usage.promptTokens)
            metrics.TOKENS.labels(agent, model, "completion").inc(reply.usage.completionTokens)
        return reply
