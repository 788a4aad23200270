"""kopf handlers: thin triggers handing every run to the Runner; the only module importing kopf."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from agentrun.api import ANNOTATION_DECIDED_BY, GROUP, LABEL_RUN, VERSION
from agentrun.engine.policy import Policy
from agentrun.kube import client as kube
from agentrun.llm.model import ModelClient
from agentrun.operator import admission, jobs, metrics, restart
from agentrun.operator import mcpservers as mcpservers_mod
from agentrun.operator.observe import Cached
from agentrun.operator.runner import Runner, Settings
from agentrun.operator.tracing import RunTracer
from agentrun.receiver import server as alert_receiver

RUNS = (GROUP, VERSION, "agentruns")
POD_FINISHED = "status.phase!=Pending,status.phase!=Running"
RESTART_SECONDS = 3
IDLE_WORKER_SECONDS = 0.5
STOP_GRACE_SECONDS = 15  # kopf's own stop takes ~5 s: its handlers' grace and queue draining
log = logging.getLogger("agentrun.operator")

admission_log = logging.getLogger("agentrun.operator.admission")
_approver_role = admission.DEFAULT_APPROVER_ROLE  # named in refusals; set from the flags
_approval_proxies: tuple[str, ...] = ()  # --approval-proxy: who may decide for others


def _runner(memo: Any) -> Runner:
    runner: Runner = memo.runner
    return runner


class _NoDiffBase(kopf.DiffBaseStorage):
    """All handlers here are event handlers: the runner decides from status what changed, so
    kopf need not deep-copy every body into an essence, nor store one on the object."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    agents: kopf.Index[Any, Any] | None = None,  # kopf passes every index, empty until filled
    agenttools: kopf.Index[Any, Any] | None = None,
    mcpservers: kopf.Index[Any, Any] | None = None,
    **_: Any,
) -> None:
    # Event handlers only: kopf keeps no progress, finalizer or diff-base on our objects.
    settings.persistence.diffbase_storage = _NoDiffBase()
    # Only the Jobs and pods of tool calls, selected by the API server: not every Job and pod.
    settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_RUN
    settings.watching.label_selectors["v1", "pods"] = LABEL_RUN
    # Of the pods, only finished ones: one event per tool pod instead of one per status change.
    settings.watching.field_selectors["v1", "pods"] = POD_FINISHED
    # Events are posted deliberately by the runner, one per transition, not per log line.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # kopf's per-object worker keeps the object's last event (a whole run, Job or pod body)
    # while it idles before exiting: 5 s by default, thousands of bodies at once in a burst of
    # runs, and the heap keeps that high-water mark after the burst (docs/benchmarks.md).
    settings.queueing.idle_timeout = IDLE_WORKER_SECONDS
    # A standby replica takes over this long after the active one stops renewing its lease.
    settings.peering.lifetime = int(os.environ.get("AGENTRUN_PEERING_LIFETIME", "15"))
    # Kubernetes calls run in threads; one per in-flight call, not the default handful.
    workers = int(os.environ.get("AGENTRUN_IO_THREADS", "32"))
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=workers))
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    # The pool is built with the client: size it in the configuration it is built from.
    configuration = k8s.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = workers
    api = k8s.ApiClient(configuration)
    memo.runner = runner = Runner(
        api,
        ModelClient(),
        Settings(
            policy=Policy.from_env(),
            coalesce_seconds=float(
                os.environ.get("AGENTRUN_COALESCE_SECONDS", Settings.coalesce_seconds)
            ),
            tool_start_seconds=int(
                os.environ.get("AGENTRUN_TOOL_START_SECONDS", Settings.tool_start_seconds)
            ),
            max_active_runs=int(
                os.environ.get("AGENTRUN_MAX_ACTIVE_RUNS", Settings.max_active_runs)
            ),
        ),
        RunTracer.from_env(),  # None unless OTEL_EXPORTER_OTLP_* asks for traces
    )
    if agents is not None and agenttools is not None and mcpservers is not None:
        runner.observer.cached = _cached(agents, agenttools, mcpservers)
    memo.mcp = mcp_scheduler = mcpservers_mod.Scheduler(
        mcpservers_mod.Lister(api, runner.settings.policy), lambda: datetime.now(UTC)
    )
    mcp_scheduler.start()

    # The alert receiver runs in-process when configured (its own Deployment is the default).
    memo.receiver = await alert_receiver.serve_from_env(api)
    address = os.environ.get("AGENTRUN_METRICS", "")
    if address:
        metrics.serve(
            address,
            metrics.RunsCollector(runner.snapshots, lambda: datetime.now(UTC), runner.load),
        )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    scheduler: mcpservers_mod.Scheduler | None = memo.get("mcp")
    if scheduler is not None:
        await scheduler.stop()
    runner: Runner | None = memo.get("runner")
    if runner is not None:
        await runner.model.close()
        if runner.trace is not None:  # the spans still batched go out before the exit
            await asyncio.to_thread(runner.trace.shutdown)
    receiver = memo.get("receiver")
    if receiver is not None:
        await receiver.cleanup()


@kopf.on.event(*RUNS)
async def run_changed(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Every event of a run (the listing at start-up included), but the echo of our own
    status writes, steps it: decide() is idempotent, and status says what is left to do."""
    runner = _runner(memo)
    if type == "DELETED":
        runner.forget(namespace or "", name)
    elif runner.observe_run(dict(body)):
        await runner.step(namespace or "", name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RUN: kopf.PRESENT})
async def job_changed(
    type: str, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    owner = next(
        (o for o in body.metadata.get("ownerReferences", []) if o.get("kind") == "AgentRun"), None
    )
    if owner is None:
        return
    job, runner, ns = dict(body), _runner(memo), namespace or ""
    name = body.metadata.get("name", "")
    runner.job_watched(ns, job, type)
    if type == "DELETED":
        runner.job_gone(ns, name)
        await runner.step(ns, owner["name"], for_job=name)
    elif jobs.job_finished(job):
        await runner.step(ns, owner["name"], job=job, for_job=name)


@kopf.on.event("v1", "pods", labels={LABEL_RUN: kopf.PRESENT})
async def pod_changed(
    type: str | None, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    runner, ns = _runner(memo), namespace or ""
    runner.pods.observe(ns, dict(body), type)
    job = body.metadata.get("labels", {}).get("job-name")
    if type in ("ADDED", "MODIFIED") and body.status.get("phase") == "Succeeded" and job:
        # The tool's result is final: step its run now, not when the Job says Complete.
        run = runner.pod_succeeded(ns, job)
        if run is not None:
            await runner.step(ns, run, for_job=job)


# Agents and AgentTools as the runs' config reads them, by (namespace, name): kopf starts the
# run handlers only once these are filled, so a restarted operator reads no Agent per run.
@kopf.index(GROUP, VERSION, "agents")
def agents(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): dict(body)}


@kopf.index(GROUP, VERSION, "agenttools")
def agenttools(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): dict(body)}


@kopf.index(GROUP, VERSION, "mcpservers")
def mcpservers(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    return {(namespace or "", name): dict(body)}


def _cached(
    agents: kopf.Index[Any, Any], tools: kopf.Index[Any, Any], servers: kopf.Index[Any, Any]
) -> Cached:
    by_kind = {"Agent": agents, "AgentTool": tools, "MCPServer": servers}

    def cached(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        store = by_kind[kind].get((namespace, name))
        found: dict[str, Any] | None = next(iter(store), None) if store is not None else None
        return found

    return cached


@kopf.on.event(GROUP, VERSION, "agenttools")
async def tool_changed(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    if type in ("MODIFIED", "DELETED"):
        # A run awaiting approval of this tool tells its approver what changed.
        runner = _runner(memo)
        for run in runner.awaiting(namespace or "", name):
            await runner.step(namespace or "", run)


@kopf.on.event(GROUP, VERSION, "mcpservers")
async def mcp_server_changed(
    type: str | None, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """The lister looks at a new or changed server now; runs of the namespace are stepped
    (one waiting for its first listing starts, one awaiting approval hears of a change)."""
    scheduler: mcpservers_mod.Scheduler = memo.mcp
    if type == "DELETED":
        scheduler.gone(namespace or "", name)
    else:
        scheduler.seen(dict(body))
    if type in ("MODIFIED", "DELETED"):
        runner = _runner(memo)
        for run in runner.unfinished(namespace or ""):
            await runner.step(namespace or "", run)


# ---------------------------------------------------------------- admission webhooks
# Registered by run() only when a webhook server is configured (kopf refuses to start with
# admission handlers but no server).


def _create_review(api: k8s.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return kube.create_access_review(api, body)
    except ApiException as exc:
        data = (exc.body or "").encode()
        raise RuntimeError(
            f"SubjectAccessReview failed: HTTP {exc.status}: {data[:300]!r}"
        ) from None


async def validate_run(
    *,
    userinfo: kopf.UserInfo,
    old: Any = None,
    new: Any = None,
    warnings: list[str],
    memo: Any,
    namespace: str | None,
    name: str,
    **_: Any,
) -> None:
    """Refuses decisions by users without `approve`, forged stamps, and mid-run spec edits."""
    old_body, new_body = dict(old) if old else None, dict(new) if new else None
    user = admission.User.from_userinfo(userinfo)
    problems = admission.spec_violations(old_body, new_body)
    forged = admission.forged_stamp(old_body, new_body, user.username, _approval_proxies)
    if forged:
        problems.append(forged)
    keys = admission.decisions_made(old_body, new_body)
    if keys:
        ns, run_name = namespace or "", name or ""
        review = admission.access_review(user, ns, run_name)
        allowed, why = admission.review_allowed(
            await asyncio.to_thread(_create_review, _runner(memo).api, review)
        )
        if not allowed:
            problems.append(admission.refusal(user, ns, keys, _approver_role, why))
        stamped = ((new_body or {}).get("metadata") or {}).get("annotations") or {}
        on_behalf = (
            f" for {stamped.get(ANNOTATION_DECIDED_BY)}"
            if user.username in _approval_proxies
            else ""
        )
        admission_log.info(
            "%s %s on %s/%s by %s%s",
            "Allowed" if allowed else "Refused",
            ",".join(keys),
            ns,
            run_name,
            user.username,
            on_behalf,
            extra={"run_namespace": ns, "run": run_name, "user": user.username},
        )
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=403)
    warnings.extend(admission.spec_warnings(old_body, new_body))


async def mutate_run(
    *, userinfo: kopf.UserInfo, patch: kopf.Patch, old: Any = None, new: Any = None, **_: Any
) -> None:
    """Stamps the deciding user on the run, for the audit in status.approvals."""
    changes = admission.stamp(
        dict(old) if old else None,
        dict(new) if new else None,
        admission.User.from_userinfo(userinfo).username,
        _approval_proxies,
    )
    for key, value in changes.items():
        patch.metadata.annotations[key] = value


class _Server(kopf.WebhookServer):
    """kopf's server, failing closed on a path no handler serves (kopf would allow it)."""

    async def __call__(self, fn: Any) -> Any:
        async def guarded(
            request: Any,
            *,
            webhook: str | None = None,
            headers: dict[str, str] | None = None,
            sslpeer: dict[str, Any] | None = None,
        ) -> Any:
            if webhook not in admission.WEBHOOK_IDS:
                return admission.unknown_webhook(request, webhook)
            return await fn(request, webhook=webhook, headers=headers, sslpeer=sslpeer)

        async for client_config in super().__call__(guarded):
            yield client_config


def _self_signed(host: str) -> tuple[str, str]:
    """A throwaway serving cert for the local webhook (kopf's own needs `certbuilder`)."""
    folder = Path(tempfile.mkdtemp(prefix="agentrun-webhook-"))
    cert, key = folder / "tls.crt", folder / "tls.key"
    sans = ["IP:127.0.0.1", "DNS:localhost"]
    if host not in ("127.0.0.1", "localhost"):
        sans.append(
            f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
        )
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "365", "-subj", f"/CN={host}", "-keyout", str(key),
            "-out", str(cert), "-addext", f"subjectAltName={','.join(sans)}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def _configure_admission(settings: kopf.OperatorSettings, opts: admission.WebhookOptions) -> None:
    if opts.mode is admission.WebhookMode.LOCAL:
        host = opts.host or opts.addr or "127.0.0.1"
        cert, key = (opts.cert, opts.key) if opts.cert and opts.key else _self_signed(host)
        settings.admission.server = _Server(
            addr=opts.addr or "127.0.0.1", port=opts.port, host=host, certfile=cert, pkeyfile=key
        )
        # kopf creates and keeps the Validating/MutatingWebhookConfiguration of this name.
        settings.admission.managed = opts.config_name
    else:
        # The chart registers the configurations (Service reference, caBundle); kopf reloads
        # the cert/key files when they change (e.g. renewed by cert-manager).
        settings.admission.server = _Server(
            addr=opts.addr or "0.0.0.0", port=opts.port, certfile=opts.cert, pkeyfile=opts.key
        )
        settings.admission.managed = None
    admission_log.info("Admission webhooks on port %d (%s)", opts.port, opts.mode.value)


def _enable_admission(opts: admission.WebhookOptions) -> None:
    """Registers the webhook handlers and their server; failurePolicy Fail, kept while down."""
    global _approver_role, _approval_proxies
    _approver_role = opts.approver_role
    _approval_proxies = opts.approval_proxies
    common: dict[str, Any] = {
        "operations": ["CREATE", "UPDATE"],
        # failurePolicy: Fail -- while the webhook is down no decision slips through; and
        # persistent, so kopf leaves the configuration in place when the operator stops.
        "ignore_failures": False,
        "persistent": True,
    }
    kopf.on.validate(*RUNS, id=admission.VALIDATE_ID, **common)(validate_run)
    kopf.on.mutate(*RUNS, id=admission.MUTATE_ID, **common)(mutate_run)

    @kopf.on.startup()
    async def configure_admission(settings: kopf.OperatorSettings, **_: Any) -> None:
        _configure_admission(settings, opts)


# ---------------------------------------------------------------- logs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the run where known."""

    FIELDS = ("run_namespace", "run", "step", "user")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers
        if isinstance(ref, dict):
            entry["run_namespace"], entry["run"] = ref.get("namespace"), ref.get("name")
        for key in self.FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _configure_logging(verbose: bool, log_format: str) -> None:
    kopf.configure(verbose=verbose)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())


def run(
    namespaces: list[str],
    liveness: str | None,
    verbose: bool,
    peering: str = "",
    priority: int = 0,
    webhook: admission.WebhookOptions | None = None,
    log_format: str = "text",
) -> None:
    """Runs the operator until interrupted; with `peering`, as one of several replicas."""
    _configure_logging(verbose, log_format)
    if webhook is not None and webhook.mode is not admission.WebhookMode.NONE:
        _enable_admission(webhook)
    if not verbose:
        # kopf logs every handler call; the runner logs each transition instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    restart.watch_kopf(STOP_GRACE_SECONDS)
    try:
        kopf.run(
            standalone=not peering,
            peering_name=peering or None,
            priority=priority,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
        )
    except Exception as err:
        # Right after an apiserver restart, custom resource paths answer 404 for a moment
        # and kopf's watchers give up. The pause lets the apiserver finish starting.
        restart.reexec(f"{type(err).__name__}: {err}", RESTART_SECONDS)
