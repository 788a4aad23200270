"""kopf handlers: thin triggers handing every run to the Runner; the only module importing kopf."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from . import jobs, metrics
from . import receiver as alert_receiver
from .api import GROUP, LABEL_RUN, VERSION
from .model import ModelClient
from .runner import Runner, Settings

RUNS = (GROUP, VERSION, "agentruns")
KOPF_PREFIX = f"kopf.{GROUP}"


def _runner(memo: Any) -> Runner:
    runner: Runner = memo.runner
    return runner


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping lives under our domain, but not under agentrun.dev/ itself: kopf
    # ignores every annotation under its own prefix, and approvals must be seen as changes.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Events are posted deliberately by the runner, one per transition, not per log line.
    settings.posting.enabled = False
    settings.queueing.batch_window = float(os.environ.get("AGENTRUN_BATCH_WINDOW", "0.02"))
    settings.watching.server_timeout = 300
    # A standby replica takes over this long after the active one stops renewing its lease.
    settings.peering.lifetime = int(os.environ.get("AGENTRUN_PEERING_LIFETIME", "15"))
    # Kubernetes calls run in threads; one per in-flight call, not the default handful.
    workers = int(os.environ.get("AGENTRUN_IO_THREADS", "32"))
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=workers))
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    api = k8s.ApiClient()
    api.configuration.connection_pool_maxsize = workers
    memo.runner = runner = Runner(
        api,
        ModelClient(),
        Settings(tool_image=os.environ.get("AGENTRUN_TOOL_IMAGE", Settings.tool_image)),
    )

    # The alert receiver runs in-process when configured (its own Deployment is the default).
    memo.receiver = await alert_receiver.serve_from_env(api)
    address = os.environ.get("AGENTRUN_METRICS", "")
    if address:
        metrics.serve(address, metrics.RunsCollector(runner.snapshots, lambda: datetime.now(UTC)))


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runner: Runner | None = memo.get("runner")
    if runner is not None:
        await runner.model.close()
    receiver = memo.get("receiver")
    if receiver is not None:
        await receiver.cleanup()


@kopf.on.resume(*RUNS)
@kopf.on.create(*RUNS)
@kopf.on.update(*RUNS)
async def reconcile(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _runner(memo).step(namespace or "", name)


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*RUNS, when=_deleted)
async def forget(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _runner(memo).forget(namespace or "", name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RUN: kopf.PRESENT})
async def job_changed(
    type: str, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    owner = next(
        (o for o in body.metadata.get("ownerReferences", []) if o.get("kind") == "AgentRun"), None
    )
    if owner is None:
        return
    job = dict(body)
    if type == "DELETED" or jobs.job_finished(job):
        await _runner(memo).step(
            namespace or "", owner["name"], job=None if type == "DELETED" else job
        )


@kopf.on.event(GROUP, VERSION, "agents")
async def agent_changed(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    _runner(memo).observe_object(
        "Agent", namespace or "", name, None if type == "DELETED" else dict(body)
    )


@kopf.on.event(GROUP, VERSION, "agenttools")
async def tool_changed(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    _runner(memo).observe_object(
        "AgentTool", namespace or "", name, None if type == "DELETED" else dict(body)
    )


def run(
    namespaces: list[str],
    liveness: str | None,
    verbose: bool,
    peering: str = "",
    priority: int = 0,
) -> None:
    """Runs the operator until interrupted; with `peering`, as one of several replicas."""
    kopf.configure(verbose=verbose)
    if not verbose:
        # kopf logs every handler call; the runner logs each transition instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=not peering,
        peering_name=peering or None,
        priority=priority,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
