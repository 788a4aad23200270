"""The MCPServer lister: tools/list into the resource's status, from a Job.

The operator never speaks MCP itself: a stdio server runs only inside a tool pod, and an HTTP
server is reached from one too. So listing is a Job like a read tool call (`agentrun-tool
mcp-list`, the server's image, a read ServiceAccount), one per spec generation and refresh
period (its name says which, so a repeated create is a harmless 409); its envelope is read
from the pod log into status.tools and status.digest, with a Ready condition saying why not
when the server could not be reached or answered garbage.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from pydantic import ValidationError

from agentrun.api import (
    API_VERSION,
    LABEL_MCP_SERVER,
    ConditionStatus,
    MCPServer,
    MCPServerStatus,
    MCPToolInfo,
)
from agentrun.api.naming import canonical_json
from agentrun.engine import conditions as cond
from agentrun.engine import mcp
from agentrun.engine.config import field_path
from agentrun.engine.core import iso
from agentrun.engine.policy import Policy, PolicyError, snapshot
from agentrun.kube import client as kube
from agentrun.operator import jobs
from agentrun.tool.envelope import Envelope
from agentrun.tool.mcp_digest import digest_tools, tool_entry

log = logging.getLogger("agentrun.operator.mcpservers")
MAX_TOOLS = 256
LOG_LIMIT = 1024 * 1024
STUCK_GRACE_SECONDS = 30  # past the Job's own deadline: it is gone or never ran


@dataclass(frozen=True)
class Tick:
    """What one look at an MCPServer decided: a status patch (or None) and when to look again."""

    status: dict[str, Any] | None
    again: float


def list_key(server: MCPServer, now: datetime) -> str:
    """Which listing is due: the spec as it is now and the refresh period we are in."""
    spec = canonical_json(server.spec.model_dump(mode="json"))
    period = int(now.timestamp()) // server.spec.refreshSeconds
    return hashlib.sha256(f"{spec}/{period}".encode()).hexdigest()[:10]


def job_name(server: str, key: str) -> str:
    return f"mcp-list-{server[:40].rstrip('-')}-{key}"


def list_job(
    server: MCPServer, name: str, namespace: str, uid: str, key: str, policy: Policy
) -> dict[str, Any]:
    """The tools/list Job: a read tool Job owned by the MCPServer, labelled as its listing."""
    spec = mcp.list_spec(server.spec, policy)
    snap = snapshot(mcp.LIST_BUILTIN, spec, policy, env_from_secret=_headers(server))
    manifest = jobs.build_job(
        run_name=name,
        run_namespace=namespace,
        run_uid=uid,
        step=0,
        tool_name=mcp.LIST_BUILTIN,
        tool=snap,
        arguments={},
        job_name=job_name(name, key),
        action_hash=key,
    )
    labels = {LABEL_MCP_SERVER: jobs.label_value(name), jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}
    meta = manifest["metadata"]
    meta["labels"] = labels
    meta["ownerReferences"] = [
        {
            "apiVersion": API_VERSION,
            "kind": "MCPServer",
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    manifest["spec"]["template"]["metadata"]["labels"] = dict(labels)
    manifest["spec"]["ttlSecondsAfterFinished"] = 600
    return manifest


def _headers(server: MCPServer) -> str | None:
    http = server.spec.streamableHttp
    return http.headersSecretRef if http is not None else None


def _condition(
    server: MCPServer, status: ConditionStatus, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    generation = server.metadata.get("generation")
    conditions = cond.set_condition(
        server.status.conditions, mcp.READY, status, reason, message[:1000], now, generation
    )
    return [c.model_dump(mode="json", exclude_none=True) for c in conditions]


def _same(server: MCPServer, status: ConditionStatus, reason: str) -> bool:
    ready = cond.get(server.status.conditions, mcp.READY)
    return ready is not None and ready.status is status and ready.reason == reason


def result_status(
    envelope: Envelope | None, job_message: str
) -> tuple[dict[str, Any] | None, str, str]:
    """(tools and digest, reason, message) from a list Job's envelope; None when it failed."""
    if envelope is None:
        if "no valid answer" in job_message:
            return None, "NoAnswer", f"{job_message} (spec.timeoutSeconds)"
        return None, "ListFailed", job_message or "the list Job gave no result"
    if not envelope.ok:
        error = envelope.error or "the list failed"
        reason = "Unreachable"
        if "no valid answer" in error:
            reason = "NoAnswer"
        return None, reason, error
    out = envelope.output
    if envelope.truncated or not isinstance(out, dict):
        return (
            None,
            "ListTooLarge" if envelope.truncated else "InvalidList",
            "the tools/list result was over the output limit (spec.outputLimitBytes)"
            if envelope.truncated
            else "the tools/list result is not an object",
        )
    raw = out.get("tools")
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        return None, "InvalidList", "the tools/list result has no list of tools"
    if len(raw) > MAX_TOOLS:
        return None, "ListTooLarge", f"the server lists {len(raw)} tools, over {MAX_TOOLS}"
    try:
        tools = [MCPToolInfo.model_validate(tool_entry(t)) for t in raw]
    except ValidationError as err:
        return None, "InvalidList", f"a listed tool is malformed: {field_path(err)}"
    entries = [t.model_dump(mode="json", exclude_none=True) for t in tools]
    # Over the tools as the server listed them: the call Job's client recomputes it so.
    digest = digest_tools([tool_entry(t) for t in raw])
    listed = {"tools": entries, "digest": digest}
    return listed, "Listed", f"{len(tools)} tools, digest {digest[:12]}"


class Lister:
    def __init__(self, api: k8s.ApiClient, policy: Policy) -> None:
        self.api = api
        self.policy = policy

    async def tick(self, body: dict[str, Any], now: datetime) -> Tick:
        """One look at an MCPServer: start its due listing, or take a finished one's result."""
        meta = body.get("metadata") or {}
        name, namespace, uid = meta.get("name", ""), meta.get("namespace", ""), meta.get("uid", "")
        try:
            server = MCPServer.model_validate({**body, "status": body.get("status") or {}})
        except ValidationError as err:
            return self._refused(body, "InvalidSpec", field_path(err), now)
        problem = mcp.server_problem(server.spec, self.policy)
        if problem is not None:
            return self._refused(body, "NotAllowed", problem, now, server)
        key = list_key(server, now)
        if server.status.listKey == key:
            return Tick(None, min(60.0, server.spec.refreshSeconds))
        try:
            manifest = list_job(server, name, namespace, uid, key, self.policy)
        except PolicyError as err:
            return self._refused(body, "NotAllowed", str(err), now, server)
        job = await asyncio.to_thread(
            kube.read_job, self.api, namespace, manifest["metadata"]["name"]
        )
        if job is None:
            await asyncio.to_thread(kube.create_job, self.api, manifest)
            log.info("Started tools/list of MCPServer %s/%s", namespace, name)
            listing: dict[str, Any] | None = None
            if server.status.digest is None and not _same(
                server, ConditionStatus.UNKNOWN, "Listing"
            ):
                listing = {
                    "conditions": _condition(
                        server,
                        ConditionStatus.UNKNOWN,
                        "Listing",
                        "tools/list is running",
                        iso(now),
                    )
                }
            return Tick(listing, 2.0)
        if not jobs.job_finished(job):
            return Tick(None, 2.0)
        envelope, message = await self._result(namespace, job)
        listed, reason, text = result_status(envelope, message)
        status: dict[str, Any] = {"listKey": key, "observedGeneration": meta.get("generation")}
        if listed is not None:
            status |= listed | {"lastListTime": iso(now)}
            status["conditions"] = _condition(server, ConditionStatus.TRUE, reason, text, iso(now))
            log.info("Listed MCPServer %s/%s: %s", namespace, name, text)
        else:
            # The last good list stays (its digest still pins calls); Ready says what failed.
            status["conditions"] = _condition(server, ConditionStatus.FALSE, reason, text, iso(now))
            log.warning(
                "Failed tools/list of MCPServer %s/%s: %s: %s", namespace, name, reason, text
            )
        await asyncio.to_thread(kube.delete_job, self.api, namespace, job["metadata"]["name"])
        return Tick(status, min(60.0, server.spec.refreshSeconds))

    async def _result(self, namespace: str, job: dict[str, Any]) -> tuple[Envelope | None, str]:
        name = job["metadata"]["name"]
        pod = await asyncio.to_thread(kube.find_job_pod, self.api, namespace, name)
        observation = jobs.job_observation(job, pod, None, None)
        envelope = None
        if pod is not None:
            text = await asyncio.to_thread(
                kube.read_pod_log, self.api, namespace, pod["metadata"]["name"], LOG_LIMIT
            )
            envelope = jobs.parse_envelope(text)
        if envelope is None and "DeadlineExceeded" in (observation.reason, observation.message):
            return (
                None,
                "the MCP server gave no valid answer to tools/list before the Job's deadline",
            )
        return envelope, observation.message or observation.reason

    def _refused(
        self,
        body: dict[str, Any],
        reason: str,
        message: str,
        now: datetime,
        server: MCPServer | None = None,
    ) -> Tick:
        status = server.status if server is not None else _status_of(body)
        ready = cond.get(status.conditions, mcp.READY)
        if ready is not None and ready.status is ConditionStatus.FALSE and ready.reason == reason:
            return Tick(None, 60.0)
        generation = (body.get("metadata") or {}).get("generation")
        conditions = cond.set_condition(
            status.conditions,
            mcp.READY,
            ConditionStatus.FALSE,
            reason,
            message[:1000],
            iso(now),
            generation,
        )
        patch = {
            "conditions": [c.model_dump(mode="json", exclude_none=True) for c in conditions],
            "observedGeneration": generation,
        }
        return Tick(patch, 60.0)


def _status_of(body: dict[str, Any]) -> MCPServerStatus:
    try:
        return MCPServerStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return MCPServerStatus()


class Scheduler:
    """Looks at each MCPServer when it changes and whenever its Tick asked: one task, no
    finalizer or kopf timer state on the objects (they are deleted without the operator)."""

    POLL_SECONDS = 1.0

    def __init__(self, lister: Lister, clock: Any) -> None:
        self.lister = lister
        self.clock = clock
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._due: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    def seen(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        before = self._bodies.get(key)
        self._bodies[key] = body
        if before is None or (before.get("metadata") or {}).get("generation") != meta.get(
            "generation"
        ):
            self._due[key] = 0.0  # new or changed spec: list now

    def gone(self, namespace: str, name: str) -> None:
        self._bodies.pop((namespace, name), None)
        self._due.pop((namespace, name), None)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for key in [k for k, at in self._due.items() if at <= now]:
                await self._look(key, now)
            await asyncio.sleep(self.POLL_SECONDS)

    async def _look(self, key: tuple[str, str], now: float) -> None:
        body = self._bodies.get(key)
        if body is None:
            self._due.pop(key, None)
            return
        try:
            tick = await self.lister.tick(body, self.clock())
            if tick.status is not None:
                await asyncio.to_thread(
                    kube.patch_mcp_server_status, self.lister.api, *key, tick.status
                )
            self._due[key] = now + tick.again
        except Exception:
            log.exception("Failed to look at MCPServer %s/%s; retrying in 10 s", *key)
            self._due[key] = now + 10.0
