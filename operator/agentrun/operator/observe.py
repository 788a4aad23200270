"""Observations for decide(): the run's config as fetched and its Jobs (the current
action's, and those of its batch) as found.

Reads only: the one effect it prepares (a raw-output ConfigMap) is returned to the loop to
create, together with the status write that links it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubernetes import client as k8s

from agentrun.api import (
    ActionState,
    AgentRun,
    AgentSpec,
    BatchCall,
    CurrentAction,
    Effect,
    PromptRef,
)
from agentrun.api.naming import MCP_PREFIX, parse_mcp_ref
from agentrun.engine import config as engine_config
from agentrun.engine import mcp
from agentrun.engine.core import (
    Config,
    ConfigError,
    JobObservation,
    JobPhase,
    batch_jobs,
    batch_key,
    job_action,
    parse_time,
)
from agentrun.kube import client as kube
from agentrun.llm import prompts, toolcall
from agentrun.operator import jobs, metrics
from agentrun.operator.access import WriteAccess
from agentrun.operator.ledger import JobLedger
from agentrun.operator.settings import Settings
from agentrun.operator.toolpods import ToolPods
from agentrun.tool.redaction import redact

log = logging.getLogger("agentrun.operator.observe")


Cached = Callable[[str, str, str], dict[str, Any] | None]  # (kind, namespace, name)


def _nothing_cached(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return None


@dataclass(frozen=True)
class JobSeen:
    """The current Job as observed, and the ConfigMap to keep its raw output in, if any."""

    job: JobObservation | None
    output: dict[str, Any] | None = None


class Observer:
    def __init__(
        self,
        api: k8s.ApiClient,
        settings: Settings,
        ledger: JobLedger,
        pods: ToolPods,
        access: WriteAccess,
    ) -> None:
        self.api = api
        self.settings = settings
        self.ledger = ledger
        self.pods = pods
        self.access = access
        # Agents and AgentTools as last seen by the operator's watch (kopf indexes, see
        # handlers.py); a miss falls back to a GET.
        self.cached: Cached = _nothing_cached
        # Each AgentTool as read_tool made it, per version (see _read_tool).
        self._tools: dict[
            tuple[str, str], tuple[str, engine_config.Tool | engine_config.ConfigError]
        ] = {}
        self._prompt_texts: dict[str, str] = {}  # sha256 -> text, one entry per prompt version

    def prompt_text(self, sha256: str) -> str:
        """The text config() loaded for a promptRef: keyed by its sha256, it is the prompt the
        ref names, even if the file changed since."""
        return self._prompt_texts[sha256]

    async def _lookup(
        self, kind: str, namespace: str, name: str, fetch: Any
    ) -> dict[str, Any] | None:
        hit = self.cached(kind, namespace, name)
        if hit is not None:
            return hit
        found: dict[str, Any] | None = await asyncio.to_thread(fetch, self.api, namespace, name)
        return found

    # ------------------------------------------------------------ config

    async def config(self, run: AgentRun) -> Config | ConfigError | None:
        """Fetches what the run's config is made of; the engine's validate() judges it."""
        namespace = run.metadata["namespace"]
        agent_body = await self._lookup("Agent", namespace, run.spec.agentRef, kube.get_agent)
        fetched = engine_config.Fetched(agent=agent_body, tools={})
        agent = engine_config.read_agent(run, namespace, agent_body)
        if isinstance(agent, AgentSpec):
            fetched = await self._fetch_config(run, namespace, agent_body, agent)
        if fetched.waiting:
            log.info("Waited for MCPServer listing: %s", ", ".join(fetched.waiting))
            return None
        return engine_config.validate(run, namespace, fetched, self.settings.policy)

    async def _fetch_config(
        self, run: AgentRun, namespace: str, agent_body: dict[str, Any] | None, agent: AgentSpec
    ) -> engine_config.Fetched:
        """The Agent's tools, in order up to the first that is unusable (the later ones cannot
        change the verdict), which of them are writes by their ServiceAccount, and the prompt."""
        tools: dict[str, engine_config.Tool | engine_config.ConfigError | None] = {}
        writers: set[str] = set()
        waiting: list[str] = []
        for tool_name in agent.tools:
            tool = await self._agent_tool(namespace, tool_name)
            if tool is None and tool_name.startswith(MCP_PREFIX):
                waiting.append(tool_name)
                continue
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
            self._prompt_texts[loaded.sha256] = loaded.text
        return engine_config.Fetched(
            agent=agent_body,
            tools=tools,
            writers=frozenset(writers),
            prompt=prompt,
            waiting=tuple(waiting),
        )

    async def _agent_tool(
        self, namespace: str, name: str
    ) -> engine_config.Tool | engine_config.ConfigError | None:
        """An AgentTool, or an MCP tool (mcp:SERVER/TOOL) from its MCPServer's listing."""
        ref = parse_mcp_ref(name)
        if name.startswith(MCP_PREFIX):
            server = ref[0] if ref else ""
            body = await self._lookup("MCPServer", namespace, server, kube.get_mcp_server)
            return mcp.read_mcp_tool(
                name,
                body,
                namespace,
                self.settings.policy,
                check_parameters=toolcall.validator_for,
                reserved=toolcall.BUILTIN_TOOLS,
            )
        body = await self._lookup("AgentTool", namespace, name, kube.get_tool)
        return None if body is None else self._read_tool(namespace, name, body)

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

    # ------------------------------------------------------------ the current Job

    async def job(self, run: AgentRun, hint: dict[str, Any] | None, seen: set[str]) -> JobSeen:
        """The current action's Job, checked to be the one the operator built for it.
        `hint`: the Job from the trigger, if any; `seen`: the run's Jobs seen existing (one
        missing now was deleted, which decide() must tell from one not created yet)."""
        current = run.status.currentAction
        if current is None or current.state is ActionState.AWAITING_APPROVAL:
            return JobSeen(None)
        return (await self._observe(run, [current], hint, seen))[0]

    async def batch(
        self, run: AgentRun, hint: dict[str, Any] | None, seen: set[str]
    ) -> list[JobSeen]:
        """The Jobs of the run's batch still without a result, observed together; a grouped
        Job once, for each of its calls (by batch_key)."""
        groups: dict[str, list[BatchCall]] = {}
        for call in run.status.batch:
            groups.setdefault(call.jobRef, []).append(call)
        open_ = [g for g in groups.values() if any(c.result is None for c in g)]
        found = await asyncio.gather(*(self._observe(run, g, hint, seen) for g in open_))
        return [s for group in found for s in group]

    async def _observe(
        self,
        run: AgentRun,
        calls: Sequence[CurrentAction],
        hint: dict[str, Any] | None,
        seen: set[str],
    ) -> list[JobSeen]:
        """One Job, for the calls it runs (one, or a grouped Job's)."""
        namespace, name = run.metadata["namespace"], calls[0].jobRef
        keys = [_key(c) for c in calls]
        known = self.ledger.uid(namespace, name)
        manifest = self.manifest(run, calls)
        job = await self._current_job(namespace, name, hint, known, manifest)
        if job is None:
            existed = name in seen
            return [
                JobSeen(JobObservation(name=k, phase=JobPhase.NOT_FOUND, existed=existed))
                for k in keys
            ]
        uid = str(job["metadata"].get("uid") or "")
        if known is not None and uid != known:
            why = f"Job {name} was replaced (uid {uid}, ours was {known})"
            return self._forged(run, name, keys, why)
        if known is None and manifest is not None:
            differs = jobs.job_mismatch(job, manifest)
            if differs is not None:
                return self._forged(run, name, keys, differs)
            self.ledger.verified(namespace, name, uid)
        seen.add(name)
        self.ledger.exists(namespace, run.metadata["name"], name)
        if not jobs.job_finished(job):
            return [JobSeen(JobObservation(name=k, phase=JobPhase.RUNNING)) for k in keys]
        return await self._job_result(run, calls, job, uid)

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
        # So is the Job as the watch last saw it: a Job not finished there is still running
        # (its finishing event steps the run again); no GET on a step's path.
        watched = self.ledger.state(namespace, name)
        if watched is not None and manifest is not None:
            watched["spec"] = manifest["spec"]
            return watched
        found: dict[str, Any] | None = await asyncio.to_thread(
            kube.read_job, self.api, namespace, name
        )
        return found

    async def _job_result(
        self, run: AgentRun, calls: Sequence[CurrentAction], job: dict[str, Any], uid: str
    ) -> list[JobSeen]:
        """What a finished Job of ours returned, read from its own pod: each call's outcome
        from its own container's state and log."""
        namespace, name = run.metadata["namespace"], calls[0].jobRef
        pod = await self.pods.finished_pod(namespace, name)
        if pod is not None and "spec" in job:
            alien = jobs.pod_mismatch(pod, job)
            if alien is not None:
                return self._forged(run, name, [_key(c) for c in calls], alien)
        found = await asyncio.gather(*(self._call_result(run, c, job, pod, uid) for c in calls))
        return list(found)

    async def _call_result(
        self,
        run: AgentRun,
        current: CurrentAction,
        job: dict[str, Any],
        pod: dict[str, Any] | None,
        uid: str,
    ) -> JobSeen:
        namespace = run.metadata["namespace"]
        container = _container(current)
        text: str | None = None
        if pod is not None:
            text = await self.pods.log(
                namespace, current.jobRef, pod["metadata"]["name"], container or jobs.CONTAINER
            )
        if text:
            # Custom tools and crash logs bypass the tool runner's own masking. In a worker
            # thread: up to a MiB of text, and the event loop also answers the webhook.
            text = await asyncio.to_thread(redact, text)
        output = self._output(run, current, text)
        ref = None if output is None else output["metadata"]["name"]
        stored = 0 if output is None else sum(len(v.encode()) for v in output["data"].values())
        observed = jobs.job_observation(job, pod, text, ref, container=container)
        observed = replace(
            observed,
            name=_key(current),
            content=redact(observed.content),
            message=redact(observed.message),
            uid=uid,
            storedBytes=stored,
        )
        _observe_duration(current.tool, job, observed)
        return JobSeen(observed, output)

    def _output(
        self, run: AgentRun, current: CurrentAction, text: str | None
    ) -> dict[str, Any] | None:
        """The ConfigMap to keep a raw output in, while the run's output budget lasts; only
        for an output longer than what the thread keeps of it (one request less per call)."""
        if not text or len(text) <= jobs.COMPACT_LIMIT:
            return None
        budget = self.settings.run_output_budget_bytes
        spent = run.status.storedOutputBytes
        if spent >= budget:
            log.warning(
                "Did not store the output of %s/%s: the run's output budget of %d bytes is spent",
                run.metadata["namespace"],
                current.jobRef,
                budget,
            )
            return None
        return jobs.output_configmap(
            run_name=run.metadata["name"],
            run_namespace=run.metadata["namespace"],
            run_uid=run.metadata["uid"],
            step=current.step,
            tool_name=current.tool,
            job_name=current.jobRef,
            raw=text,
            limit=min(self.settings.output_limit_bytes, budget - spent),
            container=_container(current),
        )

    def _forged(self, run: AgentRun, job: str, keys: list[str], why: str) -> list[JobSeen]:
        log.warning("Refused the result of %s/%s: %s", run.metadata["namespace"], job, why)
        return [JobSeen(jobs.forged(k, why)) for k in keys]

    @staticmethod
    def manifest(run: AgentRun, calls: Sequence[CurrentAction]) -> dict[str, Any] | None:
        """The Job the operator builds for these calls (None before snapshots): the current
        action's, or one Job of the batch (a grouped Job's, from all of its calls)."""
        if calls[0].snapshot is None:
            return None
        if isinstance(calls[0], BatchCall):
            made = batch_jobs([c for c in calls if isinstance(c, BatchCall)])
            return jobs.manifest_for(run, made[0]) if made else None
        return jobs.manifest_for(run, job_action(calls[0], calls[0].snapshot))


def _container(call: CurrentAction) -> str | None:
    return call.container if isinstance(call, BatchCall) else None


def _key(call: CurrentAction) -> str:
    return batch_key(call) if isinstance(call, BatchCall) else call.jobRef


def _observe_duration(tool: str, job: dict[str, Any], observed: JobObservation) -> None:
    status = job.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if start and end:
        outcome = "ok" if observed.phase is JobPhase.SUCCEEDED and observed.ok else "failed"
        seconds = (parse_time(end) - parse_time(start)).total_seconds()
        metrics.TOOL_JOB_SECONDS.labels(tool, outcome).observe(seconds)
