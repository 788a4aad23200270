"""Alert routing for the receiver (pure): config, matchers, dedup keys, run manifests, rate limits.

No I/O here: the receiver (receiver.py) feeds parsed payloads in and carries out the plans.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from agentrun.api import (
    API_VERSION,
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFAULT_MAX_STEPS,
    DEFAULT_TIMEOUT_SECONDS,
    GROUP,
    NAME_PATTERN,
    Limits,
)

# Labels and annotations the receiver puts on the AgentRuns it creates.
LABEL_SOURCE = f"{GROUP}/source"
LABEL_ALERT_GROUP = f"{GROUP}/alert-group"  # sha256(groupKey)[:16]
LABEL_ALERT_ROUTE = f"{GROUP}/alert-route"
LABEL_ALERT_SEQ = f"{GROUP}/alert-seq"  # 1, 2, ...: the n-th run of this group and route
ANNOTATION_GROUP_KEY = f"{GROUP}/alert-group-key"
ANNOTATION_FINGERPRINTS = f"{GROUP}/alert-fingerprints"
ANNOTATION_LAST_NOTIFIED = f"{GROUP}/last-notified"
ANNOTATION_NOTIFICATIONS = f"{GROUP}/notifications"
ANNOTATION_RESOLVED_AT = f"{GROUP}/resolved-at"
ANNOTATION_RESOLVED_FINGERPRINTS = f"{GROUP}/resolved-fingerprints"

SOURCE_ALERTMANAGER = "alertmanager"
SOURCE_API = "api"
MAX_ALERTS_IN_INPUT = 20  # alerts of one group copied into the run's input
MAX_ANNOTATION_CHARS = 4096
MAX_TASK_CHARS = 32768
MAX_UNROUTED_IN_REPLY = 20  # refused alerts listed in an answer (all are counted)

Namespace = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]

DEFAULT_TASK = (
    "Alert {{ alert.labels.alertname }} ({{ alert.labels.severity }}) is {{ alert.status }} "
    "in namespace {{ alert.labels.namespace }}: {{ alert.annotations.summary }} "
    "{{ alert.annotations.description }}\n"
    "Find the cause with read-only tools and propose a fix. The alert, its labels and "
    "annotations are in input.context.alert."
)


class ConfigError(ValueError):
    """The receiver's routing configuration is invalid."""


# ---------------------------------------------------------------- matchers

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager-style label matcher: `name=value`, `!=`, `=~regex`, `!~regex`.

    Regexes are anchored (they must match the whole value) and a missing label matches as
    the empty string, both as in Alertmanager.
    """

    label: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise ConfigError(
                f"matcher {text!r}: expected label=value, label!=value, label=~regex "
                "or label!~regex"
            )
        label, op, value = m.group(1), m.group(2), m.group(3)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as err:
                raise ConfigError(f"matcher {text!r}: invalid regex: {err}") from None
        return cls(label, op, value, regex)  # type: ignore[arg-type]

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'


# ---------------------------------------------------------------- config


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RateLimit(_Model):
    runs: int = Field(default=10, ge=1, le=10000, description="New runs allowed per window.")
    perSeconds: float = Field(default=60, gt=0, le=86400)


class Route(_Model):
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    matchers: list[str] = Field(default_factory=list, description="All must match.")
    agent: str = Field(pattern=NAME_PATTERN, max_length=253)
    namespace: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=63,
        description="Namespace of the runs (else defaultNamespace); alert labels never change "
        "it unless allowedNamespaces lists the namespace they name.",
    )
    allowedNamespaces: list[Namespace] = Field(
        default_factory=list,
        description="Other namespaces the alert's namespace label may pick; any other "
        "namespace in that label is refused.",
    )
    task: str = Field(default=DEFAULT_TASK, min_length=1, max_length=MAX_TASK_CHARS)
    limits: Limits | None = None
    rateLimit: RateLimit = Field(default_factory=RateLimit)
    _parsed: list[Matcher] = PrivateAttr(default_factory=list)

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)  # raises ConfigError (a ValueError) -> a ValidationError
        return value

    def model_post_init(self, __context: Any) -> None:
        self._parsed = [Matcher.parse(t) for t in self.matchers]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self._parsed)


class DefaultRoute(_Model):
    agent: str = Field(pattern=NAME_PATTERN, max_length=253)
    namespace: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=63)
    allowedNamespaces: list[Namespace] = Field(default_factory=list)
    task: str = Field(default=DEFAULT_TASK, min_length=1, max_length=MAX_TASK_CHARS)
    limits: Limits | None = None
    rateLimit: RateLimit = Field(default_factory=RateLimit)

    def as_route(self) -> Route:
        return Route(
            name="default",
            agent=self.agent,
            namespace=self.namespace,
            allowedNamespaces=self.allowedNamespaces,
            task=self.task,
            limits=self.limits,
            rateLimit=self.rateLimit,
        )


class ApiEndpoint(_Model):
    """`POST /runs`, the generic JSON endpoint, is one route: the agents a caller may name,
    the namespace(s) it may name, and the limits it may not exceed."""

    enabled: bool = True
    agents: list[Annotated[str, Field(pattern=NAME_PATTERN, max_length=253)]] = Field(
        default_factory=list,
        description="Agents a caller may name; with none, every request is refused.",
    )
    namespace: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=63,
        description="Namespace of the runs; else defaultNamespace.",
    )
    allowedNamespaces: list[Namespace] = Field(
        default_factory=list, description="Other namespaces a caller may name."
    )
    limits: Limits | None = Field(
        default=None,
        description="The run's limits when the caller names none, and the most a caller may "
        "ask for (a field left out here caps at the Agent's limit, else the built-in default).",
    )
    rateLimit: RateLimit = Field(default_factory=lambda: RateLimit(runs=30, perSeconds=60))


class AuthConfig(_Model):
    tokenFile: str | None = Field(
        default=None,
        description="File with the bearer token(s), one a line (a mounted Secret); re-read "
        "when it changes, so a rotated Secret takes effect without a restart.",
    )
    tokenEnv: str = Field(
        default="AGENTRUN_RECEIVER_TOKEN", description="Environment variable with the token."
    )
    allowUnauthenticated: bool = Field(
        default=False, description="Serve without a token (local experiments only)."
    )


class ConfigMapKey(_Model):
    namespace: str = Field(pattern=NAME_PATTERN, max_length=63)
    name: str = Field(default="agentrun-slack-users", pattern=NAME_PATTERN, max_length=253)
    key: str = Field(default="users.yaml", min_length=1, max_length=253)


class SlackConfig(_Model):
    """POST /slack/interactions: Approve/Reject/Answer buttons of the operator's Slack cards."""

    signingSecretFile: str | None = Field(
        default=None,
        description="File with the Slack app's signing secret(s), one a line (a mounted "
        "Secret; two during a rotation); re-read when it changes.",
    )
    signingSecretEnv: str = Field(default="AGENTRUN_SLACK_SIGNING_SECRET")
    userMapping: ConfigMapKey = Field(
        description="The ConfigMap mapping Slack users to Kubernetes users and groups "
        "(owned by the platform team; read on every click, so an edit applies at once)."
    )
    botTokenFile: str | None = Field(
        default=None,
        description="File with the bot token; needed only for mapping rows by e-mail "
        "(users.info, scope users:read.email).",
    )
    botTokenEnv: str = Field(default="AGENTRUN_SLACK_BOT_TOKEN")
    apiURL: str = Field(default="https://slack.com/api", pattern=r"^https?://")
    allowedURLs: list[str] = Field(
        default_factory=lambda: ["https://hooks.slack.com/", "https://slack.com/api/"],
        description="The only URLs the receiver calls: a click's response_url and apiURL "
        "must be under one of them.",
    )


class ReceiverConfig(_Model):
    listen: str = Field(default="0.0.0.0:8081", description="host:port to serve on.")
    defaultNamespace: str = Field(default="default", pattern=NAME_PATTERN, max_length=63)
    namespaceLabel: str = Field(
        default="namespace",
        description="Alert label that may pick the run's namespace among a route's "
        "allowedNamespaces.",
    )
    allowedNamespaces: list[Namespace] = Field(
        default_factory=list,
        description="Upper bound on every route's namespaces, checked when the config loads; "
        "no bound when empty. It lets no alert pick a namespace: a route's own list does.",
    )
    maxBodyBytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    routes: list[Route] = Field(default_factory=list)
    default: DefaultRoute | None = None
    api: ApiEndpoint = Field(default_factory=ApiEndpoint)
    slack: SlackConfig | None = None

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: list[Route]) -> list[Route]:
        names = [r.name for r in routes]
        # "default" and "api" name the default route and /runs (metrics, messages).
        dupes = sorted({n for n in names if names.count(n) > 1} | ({"default", "api"} & set(names)))
        if dupes:
            raise ValueError(f"route names must be unique and not 'default' or 'api': {dupes}")
        return routes

    @model_validator(mode="after")
    def _within_bound(self) -> ReceiverConfig:
        bound = set(self.allowedNamespaces)
        if not bound:
            return self
        where: list[tuple[str, str | None, list[str]]] = [
            (f"route {r.name!r}", r.namespace, r.allowedNamespaces) for r in self.all_routes()
        ]
        where.append(("api", self.api.namespace, self.api.allowedNamespaces))
        for what, namespace, allowed in where:
            outside = sorted({namespace or self.defaultNamespace, *allowed} - bound)
            if outside:
                raise ValueError(
                    f"{what} may create runs in {outside}, outside allowedNamespaces "
                    f"{sorted(bound)}"
                )
        return self

    def all_routes(self) -> list[Route]:
        return [*self.routes, *([self.default.as_route()] if self.default else [])]


def load_config(data: Any) -> ReceiverConfig:
    """Validates the parsed YAML; raises ConfigError naming the first bad field."""
    try:
        return ReceiverConfig.model_validate(data or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"receiver config: {where}: {first['msg']}") from None


# ---------------------------------------------------------------- Alertmanager payload


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class Notification(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(extra="allow")

    version: Literal["4"]
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1)


# ---------------------------------------------------------------- routing and planning


def group_hash(group_key: str) -> str:
    """The value of the alert-group label: sha256(groupKey)[:16]."""
    return hashlib.sha256(group_key.encode()).hexdigest()[:16]


def _slug(text: str, limit: int) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-")


def run_name(group_key: str, route: str, seq: int, hint: str = "") -> str:
    """Deterministic: the same group, route and counter always name the same run, so two
    receivers (or an Alertmanager HA pair) racing on one notification create it once (409)."""
    digest = hashlib.sha256(f"{group_key}\n{route}".encode()).hexdigest()[:10]
    base = _slug(hint, 30) or "alert"
    return f"{base}-{digest}-{seq}"


def select_route(routes: list[Route], labels: dict[str, str]) -> Route | None:
    """The first route whose matchers all match (the default, when configured, is last)."""
    return next((r for r in routes if r.matches(labels)), None)


@dataclass
class Partition:
    """The alerts of one notification that go to one route in one namespace: one run."""

    route: Route
    namespace: str
    alerts: list[Alert] = field(default_factory=list)


NO_ROUTE = "NoRoute"
NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"


@dataclass
class Unrouted:
    fingerprint: str
    labels: dict[str, str]
    reason: str
    code: str = NO_ROUTE
    route: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {"fingerprint": self.fingerprint, "labels": self.labels, "reason": self.reason}
        return {**out, "error": self.code, **({"route": self.route} if self.route else {})}


class NamespaceNotAllowed(ValueError):
    """A sender named a namespace its route does not allow."""


def choose_namespace(route: str, home: str, allowed: list[str], asked: str | None) -> str:
    """The namespace of a run: the route's own (`home`) unless the sender asked for one the
    route's allowedNamespaces lists. Anything else raises NamespaceNotAllowed: a sender never
    picks a namespace the platform admin did not name for that route."""
    if not asked or asked == home:
        return home
    if asked in allowed:
        return asked
    choices = f"{home!r} or one of {allowed}" if allowed else f"only {home!r}"
    raise NamespaceNotAllowed(
        f"namespace {asked!r} is not allowed for route {route!r}: its runs go to {choices}"
    )


def namespace_for(route: Route, labels: dict[str, str], config: ReceiverConfig) -> str:
    """Without allowedNamespaces the alert's namespace label is context, never consulted;
    with them it picks among them (else NamespaceNotAllowed)."""
    asked = labels.get(config.namespaceLabel) if route.allowedNamespaces else None
    home = route.namespace or config.defaultNamespace
    return choose_namespace(route.name, home, route.allowedNamespaces, asked)


def partition(
    notification: Notification, config: ReceiverConfig
) -> tuple[list[Partition], list[Unrouted]]:
    """Routes each alert, then groups alerts by (route, namespace), in order of appearance.

    Bounded by the config, not the payload: at most one partition per route and namespace
    the route allows, however many alerts (or namespace labels) a notification carries."""
    routes = config.all_routes()
    parts: dict[tuple[str, str], Partition] = {}
    unrouted: list[Unrouted] = []
    for alert in notification.alerts:
        route = select_route(routes, alert.labels)
        if route is None:
            unrouted.append(
                Unrouted(alert.fingerprint, alert.labels, "no route matches and no default route")
            )
            continue
        try:
            ns = namespace_for(route, alert.labels, config)
        except NamespaceNotAllowed as err:
            unrouted.append(
                Unrouted(
                    alert.fingerprint, alert.labels, str(err), NAMESPACE_NOT_ALLOWED, route.name
                )
            )
            continue
        parts.setdefault((route.name, ns), Partition(route, ns)).alerts.append(alert)
    return list(parts.values()), unrouted


def alert_context(alert: Alert, notification: Notification) -> dict[str, Any]:
    return {
        "status": alert.status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": alert.startsAt,
        "generatorURL": alert.generatorURL,
        "fingerprint": alert.fingerprint,
        "commonLabels": dict(notification.commonLabels),
    }


def run_input(part: Partition, notification: Notification) -> dict[str, Any]:
    """spec.input: the task from the route's template and the alert(s) as context."""
    firing = [a for a in part.alerts if a.status == "firing"] or part.alerts
    alert = alert_context(firing[0], notification)
    group = {
        "key": notification.groupKey,
        "receiver": notification.receiver,
        "labels": dict(notification.groupLabels),
        "commonLabels": dict(notification.commonLabels),
        "commonAnnotations": dict(notification.commonAnnotations),
        "externalURL": notification.externalURL,
        "alertCount": len(part.alerts),
    }
    context: dict[str, Any] = {"source": SOURCE_ALERTMANAGER, "alert": alert, "group": group}
    if len(part.alerts) > 1:
        context["alerts"] = [
            alert_context(a, notification) for a in part.alerts[:MAX_ALERTS_IN_INPUT]
        ]
    values = {"alert": alert, "group": group, "route": {"name": part.route.name}}
    task = render(part.route.task, values)[:MAX_TASK_CHARS].strip() or "Investigate the alert."
    return {"task": task, "context": context}


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")


def render(template: str, values: dict[str, Any]) -> str:
    """Fills `{{ alert.labels.pod }}` placeholders; a missing value renders as empty."""

    def one(m: re.Match[str]) -> str:
        node: Any = values
        for part in m.group(1).split("."):
            if not isinstance(node, dict) or part not in node:
                return ""
            node = node[part]
        return "" if node is None else str(node)

    return _PLACEHOLDER.sub(one, template)


def fingerprints(alerts: list[Alert]) -> str:
    return ",".join(sorted({a.fingerprint for a in alerts if a.fingerprint}))[:MAX_ANNOTATION_CHARS]


def run_manifest(part: Partition, notification: Notification, seq: int, now: str) -> dict[str, Any]:
    """The AgentRun for a partition: labels and annotations make the dedup survive restarts."""
    route = part.route
    hint = part.alerts[0].labels.get("alertname", "") or route.name
    spec: dict[str, Any] = {"agentRef": route.agent, "input": run_input(part, notification)}
    if route.limits is not None:
        spec["limits"] = route.limits.model_dump(exclude_none=True)
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentRun",
        "metadata": {
            "name": run_name(notification.groupKey, route.name, seq, hint),
            "namespace": part.namespace,
            "labels": {
                LABEL_SOURCE: SOURCE_ALERTMANAGER,
                LABEL_ALERT_GROUP: group_hash(notification.groupKey),
                LABEL_ALERT_ROUTE: route.name,
                LABEL_ALERT_SEQ: str(seq),
            },
            "annotations": {
                ANNOTATION_GROUP_KEY: notification.groupKey[:MAX_ANNOTATION_CHARS],
                ANNOTATION_FINGERPRINTS: fingerprints(part.alerts),
                ANNOTATION_LAST_NOTIFIED: now,
                ANNOTATION_NOTIFICATIONS: "1",
            },
        },
        "spec": spec,
    }


def group_selector(group_key: str, route: str) -> str:
    return f"{LABEL_ALERT_GROUP}={group_hash(group_key)},{LABEL_ALERT_ROUTE}={route}"


def seq_of(run: dict[str, Any]) -> int:
    labels = (run.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels.get(LABEL_ALERT_SEQ, "0"))
    except ValueError:
        return 0


def latest(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(runs, key=seq_of, default=None)


def is_active(run: dict[str, Any]) -> bool:
    """Not terminal: a run without status yet (no operator has seen it) counts as active."""
    phase = ((run.get("status") or {}).get("phase")) or "Pending"
    return phase not in ("Succeeded", "Failed", "Cancelled")


def repeat_annotations(run: dict[str, Any], part: Partition, now: str) -> dict[str, str]:
    """What a repeat notification records on the active run of its group."""
    annotations = (run.get("metadata") or {}).get("annotations") or {}
    try:
        count = int(annotations.get(ANNOTATION_NOTIFICATIONS, "1")) + 1
    except ValueError:
        count = 1
    seen = set(filter(None, annotations.get(ANNOTATION_FINGERPRINTS, "").split(",")))
    seen |= {a.fingerprint for a in part.alerts if a.fingerprint}
    return {
        ANNOTATION_LAST_NOTIFIED: now,
        ANNOTATION_NOTIFICATIONS: str(count),
        ANNOTATION_FINGERPRINTS: ",".join(sorted(seen))[:MAX_ANNOTATION_CHARS],
    }


def resolved_annotations(part: Partition, now: str) -> dict[str, str]:
    """What a resolved notification records: when (the latest endsAt) and which alerts."""
    ends = [a.endsAt for a in part.alerts if a.endsAt and not a.endsAt.startswith("0001-")]
    return {
        ANNOTATION_RESOLVED_AT: max(ends) if ends else now,
        ANNOTATION_RESOLVED_FINGERPRINTS: fingerprints(part.alerts),
        ANNOTATION_LAST_NOTIFIED: now,
    }


# ---------------------------------------------------------------- /runs limits

# What a run gets for a field neither it nor its Agent sets (core.effective_limits).
BUILTIN_LIMITS = Limits(
    maxSteps=DEFAULT_MAX_STEPS,
    maxConsecutiveErrors=DEFAULT_MAX_CONSECUTIVE_ERRORS,
    timeoutSeconds=DEFAULT_TIMEOUT_SECONDS,
    approvalTimeoutSeconds=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
)


class LimitTooHigh(ValueError):
    """A /runs caller asked for more than its route allows."""

    def __init__(self, field: str, asked: int, ceiling: int, source: str) -> None:
        super().__init__(
            f"limits.{field}={asked} exceeds {ceiling}, the most {source} allows; "
            "ask for less or leave it out"
        )
        self.field = f"limits.{field}"


def capped_limits(
    asked: Limits | None, route: Limits | None, agent: Limits | None, agent_name: str
) -> dict[str, Any]:
    """spec.limits of a /runs run: the route's limits, under the caller's where it asks for
    less. A caller may only tighten: each field's ceiling is the route's value, else the
    Agent's, else the built-in default (none for maxTotalTokens), i.e. what the run would get
    without the caller. Asking for more raises LimitTooHigh: refused, not clamped, so a caller
    never runs under limits other than those it was told."""
    merged = route.model_dump(exclude_none=True) if route is not None else {}
    for name, value in (asked.model_dump(exclude_none=True) if asked is not None else {}).items():
        sources = [
            (route, "the /runs route"),
            (agent, f"Agent {agent_name!r}"),
            (BUILTIN_LIMITS, "the built-in default"),
        ]
        ceiling, source = next(
            (
                (getattr(lim, name), src)
                for lim, src in sources
                if lim is not None and getattr(lim, name) is not None
            ),
            (None, ""),
        )
        if ceiling is not None and value > ceiling:
            raise LimitTooHigh(name, value, ceiling, source)
        merged[name] = value
    return merged


# ---------------------------------------------------------------- rate limit


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled continuously at capacity/per_seconds; one token per run."""

    capacity: float
    per_seconds: float
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    @classmethod
    def of(cls, limit: RateLimit, now: float) -> TokenBucket:
        return cls(float(limit.runs), limit.perSeconds, updated=now)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.capacity / self.per_seconds)
        self.updated = now

    def can_take(self, n: int, now: float) -> bool:
        self._refill(now)
        return self.tokens >= n

    def take(self, n: int, now: float) -> bool:
        if not self.can_take(n, now):
            return False
        self.tokens -= n
        return True

    def retry_after(self, n: int, now: float) -> int:
        """Whole seconds until n tokens are there."""
        self._refill(now)
        missing = max(0.0, n - self.tokens)
        return max(1, math.ceil(missing * self.per_seconds / self.capacity))
