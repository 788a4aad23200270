"""Tool pods as the operator's watch sees them: a step finds a finished Job's pod, and its
log, without a LIST and often without waiting for the log read."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client as k8s

from agentrun.kube import client as kube
from agentrun.operator.jobs import CONTAINER

POD_DONE = ("Succeeded", "Failed")


class ToolPods:
    def __init__(self, api: k8s.ApiClient, log_limit: int) -> None:
        self.api = api
        self.log_limit = log_limit
        # The newest pod per (namespace, Job) as last seen by the watch; a miss, or a pod not
        # yet seen finished, falls back to a LIST.
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        # A pod's log, read as soon as the watch sees the pod finish: a failed pod's run steps
        # only when the Job's Failed condition (with its reason) comes, a round of the job
        # controller later; a succeeded pod's run steps at once and finds the read under way.
        # Per container: a grouped Job's pod runs one call in each.
        self._logs: dict[tuple[str, str], tuple[str, dict[str, asyncio.Task[str]]]] = {}

    def observe(self, namespace: str, body: dict[str, Any], event: str | None) -> None:
        """Called from the watch of finished tool pods (selected on the server by label and
        phase: a pod comes in ADDED when it finishes); `event` is None for the listing."""
        meta = body.get("metadata") or {}
        job = (meta.get("labels") or {}).get("job-name")
        if not job:
            return
        key, cached = (namespace, job), self._pods.get((namespace, job))
        name = str(meta.get("name") or "")
        same = cached is not None and cached["metadata"]["name"] == name
        if event == "DELETED":
            if same:
                del self._pods[key]
            read = self._logs.get(key)
            if read is not None and read[0] == name:
                del self._logs[key]
                for task in read[1].values():
                    task.cancel()
            return
        created = meta.get("creationTimestamp") or ""
        if cached is None or same or created >= cached["metadata"].get("creationTimestamp", ""):
            # Only what a step reads: the name, for the log, the status, and what proves the
            # pod is its Job's own (owner, and what it ran).
            trimmed = {
                "name": name,
                "creationTimestamp": created,
                "ownerReferences": meta.get("ownerReferences") or [],
            }
            status = body.get("status") or {}
            self._pods[key] = {"metadata": trimmed, "status": status, "spec": _runs(body)}
            was = (cached or {}).get("status", {}).get("phase") if same else None
            # Not for pods listed at start-up: their runs may be long past.
            if event is not None and was not in POD_DONE and status.get("phase") in POD_DONE:
                tasks = {}
                for c in self._pods[key]["spec"]["containers"]:
                    container = str(c.get("name") or "")
                    task = asyncio.get_running_loop().create_task(
                        self._read_log(namespace, name, container)
                    )
                    # A failed early read is read again by the step; never an unretrieved error.
                    task.add_done_callback(lambda t: t.cancelled() or t.exception())
                    tasks[container] = task
                self._logs[key] = (name, tasks)

    async def _read_log(self, namespace: str, pod: str, container: str) -> str:
        text: str = await asyncio.to_thread(
            kube.read_pod_log, self.api, namespace, pod, self.log_limit, container
        )
        return text

    async def log(self, namespace: str, job: str, pod: str, container: str = CONTAINER) -> str:
        """A container's log: the one read when the pod finished, or read now."""
        read = self._logs.get((namespace, job))
        early = None
        if read is not None and read[0] == pod:
            early = read[1].pop(container, None)
            if not read[1]:
                del self._logs[(namespace, job)]
        if early is not None:
            await asyncio.wait({early})  # a cancelled or failed early read is not our failure
            if not early.cancelled() and early.exception() is None:
                return early.result()
        return await self._read_log(namespace, pod, container)

    def succeeded(self, namespace: str, job: str) -> dict[str, Any] | None:
        """The Job's pod if the watch has seen it succeed."""
        pod = self._pods.get((namespace, job))
        if pod is not None and (pod.get("status") or {}).get("phase") == "Succeeded":
            return pod
        return None

    async def finished_pod(self, namespace: str, job: str) -> dict[str, Any] | None:
        """The Job's pod as last seen finished by the watch, else from a LIST."""
        pod = self._pods.pop((namespace, job), None)
        if pod is not None and (pod.get("status") or {}).get("phase") in POD_DONE:
            return pod
        found: dict[str, Any] | None = await asyncio.to_thread(
            kube.find_job_pod, self.api, namespace, job
        )
        return found


def _runs(pod: dict[str, Any]) -> dict[str, Any]:
    """The part of a pod's spec that says what it runs (see jobs.pod_mismatch)."""
    spec = pod.get("spec") or {}
    keep = ("name", "image", "command", "args", "env", "envFrom")
    return {
        "serviceAccountName": spec.get("serviceAccountName"),
        "containers": [{k: c.get(k) for k in keep} for c in spec.get("containers") or []],
        "initContainers": [{"name": c.get("name")} for c in spec.get("initContainers") or []],
    }
