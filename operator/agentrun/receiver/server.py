"""The alert receiver: Alertmanager webhooks (and plain JSON) in, AgentRuns out.

- ``POST /alertmanager``: Alertmanager's webhook payload (version 4). Each alert is routed
  by label matchers (routing.py); alerts of one group going to one route and namespace
  make one AgentRun, named deterministically from the group key and a counter, and
  labelled with the group so a repeat finds it after any restart. While that run is not
  terminal, repeats only record ``agentrun.dev/last-notified``; a resolved notification
  records ``agentrun.dev/resolved-at`` without starting anything.
- ``POST /runs``: ``{agent, task, context?, name?, namespace?, limits?}``, for a cron, a chat
  bot or a CI job. The ``api`` section of the config is its route: the agents a caller may
  name, its namespace(s), and the limits a caller may only lower.

A sender never steers a run outside its route: the route fixes the namespace (an alert label
or a caller's ``namespace`` picks one only among the route's ``allowedNamespaces``), the agent
and the ceiling of every limit.
- ``GET /healthz`` (no auth), ``GET /metrics`` (Prometheus text format, no auth).

With the standard OTEL_* variables set (agentrun.otel), each POST is a server span linked to
every run it created or recorded on (that run's trace); off, nothing of it is imported.

Every answer is JSON; every error has ``error`` (a code) and ``message``, and creates nothing.
Run it standalone with ``python -m agentrun.receiver.server --config receiver.yaml`` or in the
operator process with :func:`serve_from_env` (docs/receiver.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import urllib3
import yaml
from aiohttp import web
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentrun import otel
from agentrun.api import API_VERSION, NAME_PATTERN, Limits, RunInput
from agentrun.api.naming import RUN_SPAN, span_id, trace_id
from agentrun.kube import client as kube
from agentrun.receiver import interact, routing
from agentrun.receiver.routing import (
    LABEL_SOURCE,
    SOURCE_API,
    Notification,
    Partition,
    ReceiverConfig,
    TokenBucket,
)
from agentrun.receiver.slack import SlackRefused

log = logging.getLogger("agentrun.receiver.server")

CONFIG_ENV = "AGENTRUN_RECEIVER_CONFIG"
SLACK_PATH = "/slack/interactions"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# The runs the request being handled created or recorded on (tracing on; else None).
_LINKS: ContextVar[list[otel.Link] | None] = ContextVar("agentrun_receiver_links", default=None)


def link_run(run: Mapping[str, Any], why: str) -> None:
    """Links the request's span to the run's trace (its invoke_agent span, from its uid)."""
    links = _LINKS.get()
    meta = run.get("metadata") or {}
    uid = meta.get("uid")
    if links is None or not uid:
        return
    attrs = {
        "agentrun.link": why,
        "agentrun.run.name": str(meta.get("name", "")),
        "agentrun.run.namespace": str(meta.get("namespace", "")),
    }
    links.append(otel.Link(trace_id(str(uid)), span_id(str(uid), RUN_SPAN), attrs))


class RequestError(Exception):
    """An answer other than 2xx: an HTTP status, a code, and a message for the caller."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}


# ---------------------------------------------------------------- auth and body checks


class Tokens:
    """Accepted bearer tokens: lines of a file (a mounted Secret, re-read when it changes)
    and an environment variable. Compared in constant time; never logged."""

    def __init__(self, token_file: str | None, env: str | None = None) -> None:
        self.path = Path(token_file) if token_file else None
        self.env = env
        self._mtime: float | None = None
        self._from_file: list[str] = []

    def _load(self) -> list[str]:
        tokens: list[str] = []
        if self.path is not None:
            try:
                mtime = self.path.stat().st_mtime
                if mtime != self._mtime:
                    lines = self.path.read_text().splitlines()
                    self._from_file = [t.strip() for t in lines if t.strip()]
                    self._mtime = mtime
            except OSError as err:
                log.error("Cannot read the receiver token file: %s", err.strerror)
                self._from_file = []
                self._mtime = None
            tokens += self._from_file
        value = os.environ.get(self.env, "").strip() if self.env else ""
        if value:
            tokens.append(value)
        return tokens

    def configured(self) -> bool:
        return bool(self._load())

    def values(self) -> list[str]:
        return self._load()

    def check(self, header: str | None) -> bool:
        """True when the Authorization header is `Bearer <one of the tokens>`."""
        if not header:
            return False
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        given = presented.strip().encode()
        # Compare against every token (no early exit) so timing says nothing about which.
        results = [hmac.compare_digest(given, t.encode()) for t in self._load()]
        return any(results)


def check_auth(tokens: Tokens | None, header: str | None) -> None:
    """Raises a 401 RequestError unless the header carries an accepted token."""
    if tokens is None:
        return
    if not header:
        raise RequestError(
            401, "Unauthorized", "missing Authorization header: send 'Bearer <token>'"
        )
    if not tokens.check(header):
        raise RequestError(401, "Unauthorized", "invalid bearer token")


def check_length(content_length: int | None, limit: int) -> None:
    if content_length is not None and content_length > limit:
        raise too_large(limit)


def too_large(limit: int) -> RequestError:
    return RequestError(
        413, "PayloadTooLarge", f"request body exceeds {limit} bytes", limitBytes=limit
    )


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, "MalformedJSON", f"request body is not valid JSON: {err}") from None


def _field_error(err: ValidationError, what: str) -> RequestError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(body)"
    return RequestError(400, "InvalidPayload", f"{what}: {where}: {first['msg']}", field=where)


def parse_notification(data: Any) -> Notification:
    if isinstance(data, dict) and data.get("version") not in (None, "4"):
        raise RequestError(
            400,
            "InvalidPayload",
            f"unsupported Alertmanager webhook version {data.get('version')!r}; expected '4'",
            field="version",
        )
    try:
        return Notification.model_validate(data)
    except ValidationError as err:
        raise _field_error(err, "not an Alertmanager webhook payload (version 4)") from None


class RunRequest(BaseModel):
    """`POST /runs`."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(pattern=NAME_PATTERN, max_length=253)
    task: str = Field(min_length=1, max_length=32768)
    context: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=253)
    namespace: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    limits: Limits | None = None


def parse_run_request(data: Any) -> RunRequest:
    try:
        return RunRequest.model_validate(data)
    except ValidationError as err:
        raise _field_error(err, "invalid run request") from None


def generic_run_manifest(
    req: RunRequest, namespace: str, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The AgentRun of a /runs request: only agentRef, input and the checked limits; the
    caller sets nothing else (RunRequest forbids other fields)."""
    RunInput(task=req.task, context=req.context)  # the CRD's own constraints
    metadata: dict[str, Any] = {"namespace": namespace, "labels": {LABEL_SOURCE: SOURCE_API}}
    if req.name:
        metadata["name"] = req.name
    else:
        metadata["generateName"] = f"{req.agent[:40].rstrip('-')}-"
    spec: dict[str, Any] = {
        "agentRef": req.agent,
        "input": {"task": req.task, "context": req.context},
    }
    if limits:
        spec["limits"] = limits
    return {"apiVersion": API_VERSION, "kind": "AgentRun", "metadata": metadata, "spec": spec}


# ---------------------------------------------------------------- Kubernetes


class Store(Protocol):
    """What the receiver needs from the cluster (a fake in unit tests)."""

    async def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    async def create_run(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The created run; None when a run of that name exists (409)."""

    async def annotate_run(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> None: ...

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class KubeStore:
    """The Store on the Kubernetes API (needs: agentruns list/create/patch, agents get)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

    async def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(kube.list_runs, self.api, namespace, selector)

    async def create_run(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        return await asyncio.to_thread(kube.create_run, self.api, manifest)

    async def annotate_run(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await asyncio.to_thread(kube.annotate_run, self.api, namespace, name, annotations)

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(kube.get_agent, self.api, namespace, name)


def _api_error(exc: ApiException | urllib3.exceptions.HTTPError) -> RequestError:
    # 5xx: Alertmanager retries, and the creates are idempotent (deterministic names).
    if not isinstance(exc, ApiException):
        return RequestError(
            503,
            "KubernetesUnavailable",
            f"cannot reach the Kubernetes API ({type(exc).__name__}); retry later",
        )
    reason = exc.reason or ""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        reason = json.loads(exc.body or "{}").get("message") or reason
    return RequestError(
        502, "KubernetesError", f"the Kubernetes API refused ({exc.status}): {reason}"
    )


# ---------------------------------------------------------------- the receiver


class Metrics:
    """The receiver's counters, on a registry of its own (the operator's is separate, and
    both may live in one process)."""

    # name -> (help, label names); label names sorted, as the samples have always shown them.
    SPEC: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {
        "agentrun_receiver_requests_total": (
            "Requests by endpoint and HTTP status code.",
            ("code", "endpoint"),
        ),
        "agentrun_receiver_runs_created_total": ("AgentRuns created, by route.", ("route",)),
        "agentrun_receiver_deduplicated_total": (
            "Notifications folded into an active run.",
            ("route",),
        ),
        "agentrun_receiver_resolved_total": (
            "Resolved notifications recorded on a run.",
            ("route",),
        ),
        "agentrun_receiver_rate_limited_total": (
            "Requests refused by a route's rate limit.",
            ("route",),
        ),
        "agentrun_receiver_unrouted_alerts_total": ("Alerts that matched no route.", ()),
        "agentrun_receiver_refused_total": (
            "Alerts and /runs requests refused by their route's "
            "rules (namespace, agent, limits), by route and reason.",
            ("reason", "route"),
        ),
    }

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.counters = {
            name: PromCounter(name, help_, labels, registry=self.registry)
            for name, (help_, labels) in self.SPEC.items()
        }

    def inc(self, name: str, n: int = 1, **labels: str) -> None:
        counter = self.counters[name]
        (counter.labels(**labels) if labels else counter).inc(n)

    def get(self, name: str, **labels: str) -> int:
        """The sum over the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return int(
            sum(
                sample.value
                for metric in self.counters[name].collect()
                for sample in metric.samples
                if sample.name == name and want <= set(sample.labels.items())
            )
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Receiver:
    def __init__(
        self,
        config: ReceiverConfig,
        store: Store,
        tokens: Tokens | None = None,
        clock: Callable[[], float] = time.monotonic,
        slack_store: interact.SlackStore | None = None,
        tracer: otel.Tracer | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.tracer = tracer
        self.slack: interact.Interactions | None = None
        if config.slack is not None and slack_store is not None:
            s = config.slack
            self.slack = interact.Interactions(
                s,
                slack_store,
                Tokens(s.signingSecretFile, s.signingSecretEnv).values,
                Tokens(s.botTokenFile, s.botTokenEnv).values,
            )
        if tokens is None and not config.auth.allowUnauthenticated:
            tokens = Tokens(config.auth.tokenFile, config.auth.tokenEnv)
        self.tokens = tokens
        self.clock = clock
        self.metrics = Metrics()
        self.buckets: dict[str, TokenBucket] = {
            r.name: TokenBucket.of(r.rateLimit, clock()) for r in config.all_routes()
        }
        self.api_bucket = TokenBucket.of(config.api.rateLimit, clock())
        # One notification at a time: the check for an active run and the create are atomic
        # here; across processes the deterministic names make a racing create a 409.
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ HTTP plumbing

    def app(self) -> web.Application:
        # aiohttp enforces client_max_size on read() as a bare 413; the middleware dresses it.
        app = web.Application(
            client_max_size=self.config.maxBodyBytes, middlewares=[self._middleware]
        )
        app.router.add_post("/alertmanager", self.alertmanager)
        app.router.add_post("/runs", self.runs)
        if self.slack is not None:
            app.router.add_post(SLACK_PATH, self.slack_interactions)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.tracer is None or request.method != "POST":
            return await self._answer(request, handler)
        began = datetime.now(UTC)
        links: list[otel.Link] = []
        token = _LINKS.set(links)
        try:
            response = await self._answer(request, handler)
        finally:
            _LINKS.reset(token)
        self._send_span(request, response.status, (began, datetime.now(UTC)), links)
        return response

    def _send_span(
        self,
        request: web.Request,
        status: int,
        times: tuple[datetime, datetime],
        links: list[otel.Link],
    ) -> None:
        """The request's server span (HTTP semantic conventions), linked to its runs; a
        caller's traceparent header is its parent."""
        assert self.tracer is not None
        route = _endpoint(request)
        parent = otel.parse_traceparent(request.headers.get("traceparent"))
        attrs: dict[str, otel.Attr] = {
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
            "http.response.status_code": status,
        }
        if status >= 500:
            attrs["error.type"] = str(status)
        span = otel.Span(
            name=f"{request.method} {route}",
            trace_id=parent[0] if parent else otel.new_trace_id(),
            parent=parent[1] if parent else None,
            start=times[0],
            end=times[1],
            kind="server",
            attributes=attrs,
            error=str(status) if status >= 500 else None,
            links=links,
        )
        try:
            self.tracer.emit(span)
        except Exception as err:  # tracing never fails a request
            log.warning("Span %s not recorded: %s: %s", span.name, type(err).__name__, err)

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except RequestError as err:
            response = _json(err.status, error_body(err.code, err.message, **err.extra))
            if err.status == 429 and "retryAfterSeconds" in err.extra:
                response.headers["Retry-After"] = str(err.extra["retryAfterSeconds"])
            level = logging.INFO if err.status < 500 else logging.WARNING
            log.log(
                level,
                "%s %s -> %d %s: %s",
                request.method,
                request.path,
                err.status,
                err.code,
                err.message,
            )
        except web.HTTPException as exc:
            if exc.status == 413:
                body = error_body(
                    "PayloadTooLarge",
                    f"request body exceeds {self.config.maxBodyBytes} bytes",
                    limitBytes=self.config.maxBodyBytes,
                )
            else:
                body = error_body(
                    exc.reason.replace(" ", ""), f"{request.method} {request.path}: {exc.reason}"
                )
            response = _json(exc.status, body)
        except Exception:
            log.exception("Receiver error on %s %s", request.method, request.path)
            response = _json(500, error_body("InternalError", "internal error; see the logs"))
        self.metrics.inc(
            "agentrun_receiver_requests_total",
            endpoint=_endpoint(request),
            code=str(response.status),
        )
        return response

    async def _body(self, request: web.Request) -> Any:
        check_auth(self.tokens, request.headers.get("Authorization"))
        check_length(request.content_length, self.config.maxBodyBytes)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(self.config.maxBodyBytes) from None
        return parse_json(raw)

    async def slack_interactions(self, request: web.Request) -> web.Response:
        """Slack's interactivity Request URL; authenticated by Slack's signature, not a token."""
        assert self.slack is not None
        check_length(request.content_length, self.config.maxBodyBytes)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(self.config.maxBodyBytes) from None
        try:
            status, body = await self.slack.handle(request.headers, raw)
        except SlackRefused as err:
            raise RequestError(err.status, err.code, f"{err.message}; nothing was done") from None
        return _json(status, body)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # ------------------------------------------------------------ /alertmanager

    async def alertmanager(self, request: web.Request) -> web.Response:
        notification = parse_notification(await self._body(request))
        parts, unrouted = routing.partition(notification, self.config)
        refused = [u for u in unrouted if u.code == routing.NAMESPACE_NOT_ALLOWED]
        if len(refused) < len(unrouted):
            self.metrics.inc(
                "agentrun_receiver_unrouted_alerts_total", len(unrouted) - len(refused)
            )
        if refused:
            for route, n in Counter(u.route for u in refused).items():
                self.metrics.inc(
                    "agentrun_receiver_refused_total", n, route=route, reason="NamespaceNotAllowed"
                )
            # One line per notification, however many alerts it carries.
            log.warning(
                "Refused %d alert(s) of group %r: %s",
                len(refused),
                notification.groupKey[:200],
                refused[0].reason,
            )
        listed = {
            "unrouted": [u.as_dict() for u in unrouted[: routing.MAX_UNROUTED_IN_REPLY]],
            "unroutedCount": len(unrouted),
        }
        if not parts:
            if len(refused) == len(unrouted):
                raise RequestError(
                    403,
                    "NamespaceNotAllowed",
                    f"{refused[0].reason}; nothing was created",
                    **listed,
                )
            raise RequestError(
                422,
                "Unrouted",
                f"none of the {len(notification.alerts)} alert(s) matches a route and no "
                "default route is configured; nothing was created",
                **listed,
            )
        result: dict[str, Any] = {
            "created": [],
            "deduplicated": [],
            "resolved": [],
            "ignored": [],
            **listed,
        }
        try:
            async with self._lock:
                if notification.status == "resolved":
                    await self._resolve(notification, parts, result)
                else:
                    await self._fire(notification, parts, result)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise _api_error(exc) from None
        return _json(200, result)

    async def _resolve(
        self, notification: Notification, parts: list[Partition], result: dict[str, Any]
    ) -> None:
        now = _now()
        for part in parts:
            selector = routing.group_selector(notification.groupKey, part.route.name)
            run = routing.latest(await self.store.list_runs(part.namespace, selector))
            ref = {"namespace": part.namespace, "route": part.route.name}
            if run is None:
                result["ignored"].append({**ref, "reason": "no run for this alert group"})
                continue
            name = run["metadata"]["name"]
            await self.store.annotate_run(
                part.namespace, name, routing.resolved_annotations(part, now)
            )
            self.metrics.inc("agentrun_receiver_resolved_total", route=part.route.name)
            link_run(run, "resolved")
            result["resolved"].append({**ref, "name": name})
            log.info("Recorded resolution of alert group on %s/%s", part.namespace, name)

    async def _fire(
        self, notification: Notification, parts: list[Partition], result: dict[str, Any]
    ) -> None:
        now = _now()
        plan: list[tuple[Partition, list[dict[str, Any]]]] = []
        for part in parts:
            selector = routing.group_selector(notification.groupKey, part.route.name)
            plan.append((part, await self.store.list_runs(part.namespace, selector)))
        new = Counter(p.route.name for p, runs in plan if not any(map(routing.is_active, runs)))
        # All or nothing: over any route's limit, nothing is created nor recorded.
        clock = self.clock()
        for route, n in new.items():
            bucket = self.buckets[route]
            if not bucket.can_take(n, clock):
                self.metrics.inc("agentrun_receiver_rate_limited_total", route=route)
                limit = next(r for r in self.config.all_routes() if r.name == route).rateLimit
                retry = bucket.retry_after(n, clock)
                raise RequestError(
                    429,
                    "RateLimited",
                    f"route {route!r} allows {limit.runs} new run(s) per {limit.perSeconds:g}s "
                    f"and that budget is spent; nothing was created; retry in {retry}s",
                    route=route,
                    retryAfterSeconds=retry,
                )
        for route, n in new.items():
            self.buckets[route].take(n, clock)
        for part, runs in plan:
            ref = {"namespace": part.namespace, "route": part.route.name}
            active = [r for r in runs if routing.is_active(r)]
            if active:
                run = routing.latest(active)
                assert run is not None
                link_run(run, "deduplicated")
                await self._repeat(run, part, now, ref, result)
                continue
            seq = max((routing.seq_of(r) for r in runs), default=0) + 1
            manifest = routing.run_manifest(part, notification, seq, now)
            created = await self.store.create_run(manifest)
            if created is None:
                name = manifest["metadata"]["name"]
                mine = await self.store.list_runs(part.namespace, selector_of(part, notification))
                theirs = [r for r in mine if r["metadata"]["name"] == name]
                if theirs:
                    # Another receiver made it first.
                    link_run(theirs[0], "deduplicated")
                    await self._repeat(manifest, part, now, ref, result)
                    continue
                # A run of this name that is not this group's (e.g. a /runs caller chose the
                # name): never fold the alert into it.
                log.warning(
                    "AgentRun %s/%s exists but is not alert group %r's; nothing recorded",
                    part.namespace,
                    name,
                    notification.groupKey[:200],
                )
                result["ignored"].append(
                    {**ref, "name": name, "reason": "a run of this name belongs to no alert group"}
                )
                continue
            name = created["metadata"]["name"]
            self.metrics.inc("agentrun_receiver_runs_created_total", route=part.route.name)
            link_run(created, "created")
            result["created"].append({**ref, "name": name, "agent": part.route.agent})
            log.info(
                "Created AgentRun %s/%s (agent %s) for %d alert(s) of route %s",
                part.namespace,
                name,
                part.route.agent,
                len(part.alerts),
                part.route.name,
            )

    async def _repeat(
        self,
        run: dict[str, Any],
        part: Partition,
        now: str,
        ref: dict[str, str],
        result: dict[str, Any],
    ) -> None:
        name = run["metadata"]["name"]
        annotations = routing.repeat_annotations(run, part, now)
        await self.store.annotate_run(part.namespace, name, annotations)
        self.metrics.inc("agentrun_receiver_deduplicated_total", route=part.route.name)
        result["deduplicated"].append({**ref, "name": name})

    # ------------------------------------------------------------ /runs

    def _refused(self, status: int, code: str, message: str, **extra: Any) -> RequestError:
        """A /runs request its route does not allow: counted; the middleware logs it."""
        self.metrics.inc("agentrun_receiver_refused_total", route="api", reason=code)
        return RequestError(status, code, f"{message}; nothing was created", **extra)

    async def runs(self, request: web.Request) -> web.Response:
        if not self.config.api.enabled:
            raise RequestError(404, "NotFound", "the /runs endpoint is disabled")
        req = parse_run_request(await self._body(request))
        api = self.config.api
        try:
            namespace = routing.choose_namespace(
                "api",
                api.namespace or self.config.defaultNamespace,
                api.allowedNamespaces,
                req.namespace,
            )
        except routing.NamespaceNotAllowed as err:
            raise self._refused(403, "NamespaceNotAllowed", str(err), field="namespace") from None
        if req.agent not in api.agents:
            allowed = f"one of {api.agents}" if api.agents else "none (set api.agents)"
            raise self._refused(
                403,
                "AgentNotAllowed",
                f"agent {req.agent!r} is not allowed for route 'api': it allows {allowed}",
                field="agent",
            )
        try:
            agent = await self.store.get_agent(namespace, req.agent)
            if agent is None:
                raise RequestError(
                    422, "AgentNotFound", f"no Agent {req.agent!r} in namespace {namespace!r}"
                )
            try:
                agent_limits: Limits | None = Limits.model_validate(
                    (agent.get("spec") or {}).get("limits") or {}
                )
            except ValidationError:  # fields of a newer version: cap at the route/defaults
                agent_limits = None
            try:
                limits = routing.capped_limits(req.limits, api.limits, agent_limits, req.agent)
            except routing.LimitTooHigh as err:
                raise self._refused(422, "LimitTooHigh", str(err), field=err.field) from None
            manifest = generic_run_manifest(req, namespace, limits)
            clock = self.clock()
            if not self.api_bucket.take(1, clock):
                self.metrics.inc("agentrun_receiver_rate_limited_total", route="api")
                retry = self.api_bucket.retry_after(1, clock)
                limit = self.config.api.rateLimit
                raise RequestError(
                    429,
                    "RateLimited",
                    f"/runs allows {limit.runs} new run(s) per {limit.perSeconds:g}s; "
                    f"nothing was created; retry in {retry}s",
                    route="api",
                    retryAfterSeconds=retry,
                )
            created = await self.store.create_run(manifest)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise _api_error(exc) from None
        if created is None:
            raise RequestError(
                409, "AlreadyExists", f"AgentRun {namespace}/{req.name} already exists"
            )
        name = created["metadata"]["name"]
        self.metrics.inc("agentrun_receiver_runs_created_total", route="api")
        link_run(created, "created")
        log.info("Created AgentRun %s/%s (agent %s) from /runs", namespace, name, req.agent)
        return _json(
            201,
            {
                "created": {"name": name, "namespace": namespace, "agent": req.agent},
                "watch": f"kubectl get agentrun {name} -n {namespace} -w",
            },
        )


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route.resource
    return route.canonical if route is not None else "other"


def selector_of(part: Partition, notification: Notification) -> str:
    return routing.group_selector(notification.groupKey, part.route.name)


RECEIVER_KEY = web.AppKey("receiver", Receiver)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, indent=1))


# ---------------------------------------------------------------- serving


def load_config_file(path: str | Path) -> ReceiverConfig:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise routing.ConfigError(f"cannot read receiver config {path}: {err}") from None
    return routing.load_config(data)


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(
    config: ReceiverConfig,
    api: k8s.ApiClient,
    *,
    store: Store | None = None,
    tokens: Tokens | None = None,
) -> web.AppRunner:
    """Starts serving on config.listen (port 0: any free port, see bound_port) in the running
    loop and returns the aiohttp runner; `await runner.cleanup()` stops it."""
    slack_store = interact.KubeSlackStore(api) if config.slack is not None else None
    tracer = otel.setup("agentrun-receiver")
    receiver = Receiver(
        config, store or KubeStore(api), tokens, slack_store=slack_store, tracer=tracer
    )
    if receiver.slack is not None and not receiver.slack.secrets():
        raise routing.ConfigError(
            "slack is configured but there is no signing secret: set slack.signingSecretFile "
            f"(a mounted Secret) or the {config.slack.signingSecretEnv if config.slack else ''} "
            "environment variable"
        )
    if receiver.tokens is not None and not receiver.tokens.configured():
        raise routing.ConfigError(
            "no receiver token: set auth.tokenFile (a mounted Secret) or the "
            f"{config.auth.tokenEnv} environment variable, or auth.allowUnauthenticated"
        )
    app = receiver.app()
    app[RECEIVER_KEY] = receiver
    if tracer is not None:

        async def flush(_: web.Application) -> None:  # the spans still batched go out
            await asyncio.to_thread(tracer.shutdown)

        app.on_cleanup.append(flush)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = _split_listen(config.listen)
    await web.TCPSite(runner, host, port).start()
    log.info(
        "Alert receiver listening on %s:%d (%d route(s)%s)",
        host,
        bound_port(runner),
        len(config.routes),
        ", with a default" if config.default else "",
    )
    return runner


def bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


def receiver_of(runner: web.AppRunner) -> Receiver:
    return runner.app[RECEIVER_KEY]


async def serve_from_env(api: k8s.ApiClient) -> web.AppRunner | None:
    """For the operator process: serves when AGENTRUN_RECEIVER_CONFIG names a config file."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return None
    return await serve(load_config_file(path), api)


def _kube_api() -> k8s.ApiClient:
    from kubernetes import config as k8s_config

    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    return k8s.ApiClient()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agentrun-receiver", description="Alertmanager webhooks in, AgentRuns out."
    )
    parser.add_argument("--config", default=os.environ.get(CONFIG_ENV), help="routing YAML")
    parser.add_argument("--listen", help="host:port, overriding the config's listen")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.config:
        parser.error(f"--config (or {CONFIG_ENV}) is required")
    try:
        config = load_config_file(args.config)
        if args.listen:
            config = config.model_copy(update={"listen": args.listen})
        auth = config.auth
        if not auth.allowUnauthenticated and not Tokens(auth.tokenFile, auth.tokenEnv).configured():
            raise routing.ConfigError(
                "no receiver token: set auth.tokenFile (a mounted Secret) or the "
                f"{auth.tokenEnv} environment variable, or auth.allowUnauthenticated"
            )
    except routing.ConfigError as err:
        print(f"agentrun-receiver: {err}", file=sys.stderr)
        return 2

    from kubernetes.config import ConfigException

    try:
        api = _kube_api()
    except ConfigException as err:
        print(f"agentrun-receiver: no Kubernetes configuration: {err}", file=sys.stderr)
        return 2

    async def run() -> None:
        runner = await serve(config, api)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(run())
    except routing.ConfigError as err:
        print(f"agentrun-receiver: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
