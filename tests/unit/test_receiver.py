"""The alert receiver without a cluster: routing, dedup keys, rate limits, and the HTTP
contract (auth, size, JSON, unrouted) against an in-memory store."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
from aiohttp.test_utils import TestClient, TestServer

from agentrun.api import AgentRunSpec, Limits
from agentrun.receiver import routing
from agentrun.receiver.routing import Matcher, ReceiverConfig, TokenBucket
from agentrun.receiver.server import Receiver, RequestError, Tokens, check_auth, parse_notification

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def alert(status: str = "firing", fingerprint: str = "fp1", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "KubePodCrashLooping",
            "namespace": "shop",
            "pod": "checkout-5d9c",
            "severity": "warning",
            **labels,
        },
        "annotations": {"summary": "Pod shop/checkout-5d9c is crash looping", "runbook": "rb"},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "2024-05-01T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph?g0.expr=vector%281%29",
        "fingerprint": fingerprint,
    }


def notification(
    *alerts: dict[str, Any], status: str = "firing", group_key: str = '{}:{alertname="X"}'
) -> dict[str, Any]:
    alerts = alerts or (alert(status),)
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "agentrun",
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {"alertname": "KubePodCrashLooping", "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


CONFIG: dict[str, Any] = {
    "defaultNamespace": "ops",
    "auth": {"allowUnauthenticated": False},
    "routes": [
        {
            "name": "crashloop",
            "matchers": ["alertname=KubePodCrashLooping", 'severity=~"warning|critical"'],
            "agent": "sre-agent",
            "task": "Pod {{ alert.labels.pod }} in {{ alert.labels.namespace }} crash loops: "
            "{{ alert.annotations.summary }}{{ alert.labels.nope }}",
            "allowedNamespaces": ["shop", "web"],
            "rateLimit": {"runs": 2, "perSeconds": 60},
        },
        {"name": "pinned", "matchers": ["team=payments"], "agent": "pay", "namespace": "pay"},
    ],
    "api": {"agents": ["sre-agent"]},
}


def config(**over: Any) -> ReceiverConfig:
    return routing.load_config({**copy.deepcopy(CONFIG), **over})


# ---------------------------------------------------------------- matchers and config


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("alertname=KubePodCrashLooping", {"alertname": "KubePodCrashLooping"}, True),
        ('alertname="KubePodCrashLooping"', {"alertname": "KubePodCrashLooping"}, True),
        ("alertname=KubePodCrashLooping", {"alertname": "KubePodNotReady"}, False),
        ("severity!=info", {"severity": "critical"}, True),
        ("severity!=info", {}, True),
        ('severity=~"warning|critical"', {"severity": "critical"}, True),
        ('severity=~"warning|critical"', {"severity": "critical-ish"}, False),  # anchored
        ("namespace=~kube-.*", {"namespace": "kube-system"}, True),
        ("namespace!~kube-.*", {"namespace": "kube-system"}, False),
        ("namespace!~kube-.*", {}, True),
        ("team=", {}, True),  # a missing label is the empty string
        ("team=", {"team": "x"}, False),
    ],
)
def test_matcher(text: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["", "alertname", "9x=1", 'x=~"("'])
def test_bad_matcher_is_a_config_error(text: str) -> None:
    with pytest.raises(routing.ConfigError):
        Matcher.parse(text)


def test_config_errors_name_the_field() -> None:
    bad = copy.deepcopy(CONFIG)
    bad["routes"][0]["matchers"] = ["severity=~("]
    with pytest.raises(routing.ConfigError, match=r"routes\.0\.matchers"):
        routing.load_config(bad)
    with pytest.raises(routing.ConfigError, match="unique"):
        routing.load_config({"routes": [CONFIG["routes"][0], CONFIG["routes"][0]]})
    with pytest.raises(routing.ConfigError, match=r"routes\.0\.agent"):
        routing.load_config({"routes": [{"name": "x", "agent": "Not_A_Name"}]})
    with pytest.raises(routing.ConfigError, match="surprise"):
        routing.load_config({"surprise": 1})


def test_first_matching_route_wins_then_default() -> None:
    cfg = config(default={"agent": "triage"})
    routes = cfg.all_routes()
    crash = {"alertname": "KubePodCrashLooping", "severity": "critical", "team": "payments"}
    assert routing.select_route(routes, crash).name == "crashloop"  # type: ignore[union-attr]
    other = {"alertname": "Other", "team": "payments"}
    assert routing.select_route(routes, other).name == "pinned"  # type: ignore[union-attr]
    assert routing.select_route(routes, {"alertname": "Other"}).name == "default"  # type: ignore[union-attr]
    assert routing.select_route(config().all_routes(), {"alertname": "Other"}) is None


def test_partition_namespace_is_the_routes_and_a_label_picks_only_among_its_list() -> None:
    cfg = config(default={"agent": "triage"})
    n = parse_notification(
        notification(
            alert(fingerprint="a"),
            alert(fingerprint="b", pod="other"),
            alert(fingerprint="w", namespace="web"),
            alert(fingerprint="c", alertname="X", team="payments", namespace="kube-system"),
            alert(fingerprint="d", alertname="Y", namespace="kube-system"),
            alert(fingerprint="e", namespace=""),
        )
    )
    parts, unrouted = routing.partition(n, cfg)
    assert unrouted == []
    got = [(p.route.name, p.namespace, [a.fingerprint for a in p.alerts]) for p in parts]
    assert got == [
        ("crashloop", "shop", ["a", "b"]),  # one group, one route, one namespace: one run
        ("crashloop", "web", ["w"]),  # listed in the route's allowedNamespaces
        ("pinned", "pay", ["c"]),  # the route's namespace, whatever the label says
        ("default", "ops", ["d"]),  # no namespace, no list: defaultNamespace, never the label
        ("crashloop", "ops", ["e"]),  # no label: the route's own namespace
    ]


def test_alert_label_cannot_pick_a_namespace_the_route_does_not_list() -> None:
    """The attacker's alert: `namespace: kube-system` on a route that names no such namespace."""
    cfg = routing.load_config(
        {"defaultNamespace": "sre", "routes": [{"name": "any", "agent": "sre-agent"}]}
    )
    n = parse_notification(notification(alert(namespace="kube-system")))
    (part,), unrouted = routing.partition(n, cfg)
    assert unrouted == [] and part.namespace == "sre"
    assert routing.run_manifest(part, n, 1, "T")["metadata"]["namespace"] == "sre"
    # The label is still context for the agent, just not a destination.
    assert part.alerts[0].labels["namespace"] == "kube-system"

    listed = config()  # crashloop lists shop and web; its runs otherwise go to ops
    for bad in ("kube-system", "agentrun-system", "pay", "Bad_Name"):
        n = parse_notification(notification(alert(fingerprint="x", namespace=bad)))
        parts, (refused,) = routing.partition(n, listed)
        assert parts == []
        assert refused.code == "NamespaceNotAllowed" and refused.route == "crashloop"
        assert refused.reason == (
            f"namespace {bad!r} is not allowed for route 'crashloop': its runs go to 'ops' or "
            "one of ['shop', 'web']"
        )
        assert refused.as_dict()["error"] == "NamespaceNotAllowed"


def test_choose_namespace() -> None:
    assert routing.choose_namespace("r", "home", [], None) == "home"
    assert routing.choose_namespace("r", "home", [], "") == "home"
    assert routing.choose_namespace("r", "home", [], "home") == "home"
    assert routing.choose_namespace("r", "home", ["a"], "a") == "a"
    with pytest.raises(routing.NamespaceNotAllowed, match="its runs go to only 'home'"):
        routing.choose_namespace("r", "home", [], "a")
    with pytest.raises(routing.NamespaceNotAllowed, match="'home' or one of"):
        routing.choose_namespace("r", "home", ["a"], "b")


def test_global_allowed_namespaces_bound_every_route_at_load() -> None:
    ok = config(allowedNamespaces=["ops", "shop", "web", "pay"])
    assert ok.allowedNamespaces == ["ops", "shop", "web", "pay"]
    with pytest.raises(routing.ConfigError, match=r"route 'crashloop' .* \['web'\], outside"):
        config(allowedNamespaces=["ops", "shop", "pay"])
    with pytest.raises(routing.ConfigError, match=r"api may create runs in \['x'\]"):
        config(
            allowedNamespaces=["ops", "shop", "web", "pay"],
            api={"agents": ["a"], "allowedNamespaces": ["x"]},
        )
    with pytest.raises(routing.ConfigError, match=r"routes\.0\.allowedNamespaces\.0"):
        routing.load_config(
            {"routes": [{"name": "r", "agent": "a", "allowedNamespaces": ["Not_A_Namespace"]}]}
        )


def test_partition_reports_unrouted_alerts() -> None:
    n = parse_notification(
        notification(alert(fingerprint="a", namespace="x"), alert("firing", "b", alertname="Z"))
    )
    parts, unrouted = routing.partition(n, config())
    assert parts == []
    assert [(u.fingerprint, u.code) for u in unrouted] == [
        ("a", "NamespaceNotAllowed"),
        ("b", "NoRoute"),
    ]
    assert "no route" in unrouted[1].reason


def test_a_huge_group_makes_at_most_one_partition_per_allowed_namespace() -> None:
    """Thousands of alerts, each naming another namespace: bounded by the config."""
    n = parse_notification(
        notification(*(alert(fingerprint=f"f{i}", namespace=f"ns-{i}") for i in range(3000)))
    )
    parts, unrouted = routing.partition(n, config())
    assert parts == [] and len(unrouted) == 3000
    n = parse_notification(
        notification(
            *(alert(fingerprint=f"f{i}", namespace=("shop", "web", "")[i % 3]) for i in range(3000))
        )
    )
    parts, unrouted = routing.partition(n, config())
    assert [(p.namespace, len(p.alerts)) for p in parts] == [
        ("shop", 1000),
        ("web", 1000),
        ("ops", 1000),
    ]
    run = routing.run_manifest(parts[0], n, 1, "T")
    assert len(run["spec"]["input"]["context"]["alerts"]) == routing.MAX_ALERTS_IN_INPUT
    notes = run["metadata"]["annotations"]
    assert len(notes[routing.ANNOTATION_FINGERPRINTS]) <= routing.MAX_ANNOTATION_CHARS


# ---------------------------------------------------------------- /runs limits


def test_capped_limits_only_tighten() -> None:
    L = Limits
    route = L(maxSteps=10, timeoutSeconds=600)
    agent = L(maxSteps=50, maxConsecutiveErrors=2, maxTotalTokens=1000)
    # Nothing asked: the route's limits.
    assert routing.capped_limits(None, route, agent, "a") == {"maxSteps": 10, "timeoutSeconds": 600}
    assert routing.capped_limits(None, None, agent, "a") == {}
    # Less is fine, merged over the route's.
    asked = L(maxSteps=5, maxConsecutiveErrors=1, maxTotalTokens=10, approvalTimeoutSeconds=60)
    assert routing.capped_limits(asked, route, agent, "a") == {
        "maxSteps": 5,
        "timeoutSeconds": 600,
        "maxConsecutiveErrors": 1,
        "maxTotalTokens": 10,
        "approvalTimeoutSeconds": 60,
    }
    # More is refused, naming the field and whose ceiling it is.
    cases = [
        (L(maxSteps=11), "limits.maxSteps=11 exceeds 10, the most the /runs route allows"),
        (L(timeoutSeconds=601), "limits.timeoutSeconds=601 exceeds 600, the most the /runs"),
        (L(maxConsecutiveErrors=3), "limits.maxConsecutiveErrors=3 exceeds 2, the most Agent 'a'"),
        (L(maxTotalTokens=1001), "limits.maxTotalTokens=1001 exceeds 1000, the most Agent 'a'"),
        (
            L(approvalTimeoutSeconds=24 * 3600 + 1),
            "limits.approvalTimeoutSeconds=86401 exceeds 86400, the most the built-in default",
        ),
    ]
    for ask, message in cases:
        with pytest.raises(routing.LimitTooHigh) as err:
            routing.capped_limits(ask, route, agent, "a")
        assert str(err.value).startswith(message)
        assert err.value.field == message.split("=")[0]
    # Neither route nor Agent: the built-in defaults; maxTotalTokens has none.
    with pytest.raises(routing.LimitTooHigh, match="exceeds 20, the most the built-in"):
        routing.capped_limits(L(maxSteps=21), None, None, "a")
    assert routing.capped_limits(L(maxTotalTokens=10**9), None, None, "a") == {
        "maxTotalTokens": 10**9
    }


# ---------------------------------------------------------------- keys and manifests


def test_group_hash_and_run_names_are_deterministic() -> None:
    key = '{}/{}:{alertname="KubePodCrashLooping"}'
    assert routing.group_hash(key) == routing.group_hash(key)
    assert len(routing.group_hash(key)) == 16 and routing.group_hash(key) != routing.group_hash(
        key + "x"
    )
    a = routing.run_name(key, "crashloop", 1, "KubePodCrashLooping")
    assert a == routing.run_name(key, "crashloop", 1, "KubePodCrashLooping")
    assert a.startswith("kubepodcrashlooping-") and a.endswith("-1")
    assert routing.run_name(key, "crashloop", 2, "x") != routing.run_name(key, "crashloop", 1, "x")
    assert routing.run_name(key, "other", 1, "x") != routing.run_name(key, "crashloop", 1, "x")
    assert routing.run_name(key, "r", 1, "!!!").startswith("alert-")


def test_run_manifest_carries_the_alert_and_the_dedup_keys() -> None:
    cfg = config()
    n = parse_notification(notification(alert(fingerprint="b"), alert(fingerprint="a", pod="p2")))
    (part,), _ = routing.partition(n, cfg)
    run = routing.run_manifest(part, n, 3, "2024-05-01T10:00:01Z")
    meta = run["metadata"]
    assert meta["namespace"] == "shop"
    assert meta["labels"] == {
        "agentrun.dev/source": "alertmanager",
        "agentrun.dev/alert-group": routing.group_hash(n.groupKey),
        "agentrun.dev/alert-route": "crashloop",
        "agentrun.dev/alert-seq": "3",
    }
    assert meta["annotations"]["agentrun.dev/alert-group-key"] == n.groupKey
    assert meta["annotations"]["agentrun.dev/alert-fingerprints"] == "a,b"
    spec = AgentRunSpec.model_validate(run["spec"])  # valid against the CRD's model
    assert spec.agentRef == "sre-agent"
    assert spec.input.task == (
        "Pod checkout-5d9c in shop crash loops: Pod shop/checkout-5d9c is crash looping"
    )
    ctx = spec.input.context
    assert ctx["alert"] == {
        "status": "firing",
        "labels": alert()["labels"],
        "annotations": alert()["annotations"],
        "startsAt": "2024-05-01T10:00:00Z",
        "generatorURL": alert()["generatorURL"],
        "fingerprint": "b",
        "commonLabels": n.commonLabels,
    }
    assert [a["fingerprint"] for a in ctx["alerts"]] == ["b", "a"]
    assert ctx["group"]["key"] == n.groupKey and ctx["group"]["alertCount"] == 2
    sel = routing.group_selector(n.groupKey, "crashloop")
    group = routing.group_hash(n.groupKey)
    assert sel == f"agentrun.dev/alert-group={group},agentrun.dev/alert-route=crashloop"


def test_default_task_renders_without_missing_values() -> None:
    cfg = routing.load_config({"default": {"agent": "triage"}})
    n = parse_notification(notification(alert()))
    (part,), _ = routing.partition(n, cfg)
    task = routing.run_input(part, n)["task"]
    assert task.startswith("Alert KubePodCrashLooping (warning) is firing in namespace shop:")
    assert "{{" not in task


def test_active_and_latest() -> None:
    runs: list[dict[str, Any]] = [
        {"metadata": {"labels": {routing.LABEL_ALERT_SEQ: "1"}}, "status": {"phase": "Failed"}},
        {"metadata": {"labels": {routing.LABEL_ALERT_SEQ: "2"}}},
    ]
    assert [routing.is_active(r) for r in runs] == [False, True]
    assert routing.latest(runs) is runs[1]
    assert routing.latest([]) is None


def test_repeat_and_resolved_annotations() -> None:
    n = parse_notification(notification(alert(fingerprint="b")))
    (part,), _ = routing.partition(n, config())
    run = {
        "metadata": {
            "annotations": {
                routing.ANNOTATION_NOTIFICATIONS: "2",
                routing.ANNOTATION_FINGERPRINTS: "a",
            }
        }
    }
    assert routing.repeat_annotations(run, part, "T") == {
        routing.ANNOTATION_LAST_NOTIFIED: "T",
        routing.ANNOTATION_NOTIFICATIONS: "3",
        routing.ANNOTATION_FINGERPRINTS: "a,b",
    }
    r = parse_notification(notification(alert("resolved", "b"), status="resolved"))
    (rpart,), _ = routing.partition(r, config())
    assert routing.resolved_annotations(rpart, "T") == {
        routing.ANNOTATION_RESOLVED_AT: "2024-05-01T10:05:00Z",
        routing.ANNOTATION_RESOLVED_FINGERPRINTS: "b",
        routing.ANNOTATION_LAST_NOTIFIED: "T",
    }


def test_token_bucket() -> None:
    b = TokenBucket.of(routing.RateLimit(runs=2, perSeconds=60), now=0)
    assert b.take(1, 0) and b.take(1, 0)
    assert not b.take(1, 1) and b.retry_after(1, 1) == 29
    assert not b.can_take(1, 29) and b.take(1, 30)
    assert not b.take(3, 1000)  # never more than the capacity
    assert b.take(2, 1000)


# ---------------------------------------------------------------- auth and payload checks


def test_tokens_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "token"
    f.write_text("old-token\n new-token \n")
    monkeypatch.setenv("RECV_TOKEN", "env-token")
    tokens = Tokens(str(f), "RECV_TOKEN")
    for good in ("Bearer old-token", "bearer new-token", "Bearer env-token"):
        assert tokens.check(good)
    for bad in (None, "", "Bearer", "Bearer wrong", "Basic old-token", "old-token"):
        assert not tokens.check(bad)
    with pytest.raises(RequestError) as err:
        check_auth(tokens, None)
    assert err.value.status == 401 and "missing" in err.value.message
    with pytest.raises(RequestError, match="invalid bearer token"):
        check_auth(tokens, "Bearer nope")
    assert not Tokens(str(tmp_path / "absent")).configured()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"version": "3", "groupKey": "k", "status": "firing", "alerts": []}, "version '3'"),
        ({"version": "4", "status": "firing", "alerts": [alert()]}, "groupKey"),
        ({"version": "4", "groupKey": "k", "status": "firing", "alerts": []}, "alerts"),
        ([1, 2], "not an Alertmanager"),
    ],
)
def test_invalid_notifications(body: Any, fragment: str) -> None:
    with pytest.raises(RequestError) as err:
        parse_notification(body)
    assert err.value.status == 400 and fragment in err.value.message


# ---------------------------------------------------------------- HTTP, on a fake store


class FakeStore:
    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.agents: dict[tuple[str, str], dict[str, Any]] = {
            ("ops", "sre-agent"): {"spec": {"limits": {"maxSteps": 30}}},
            ("shop", "sre-agent"): {"spec": {}},
            ("kube-system", "sre-agent"): {"spec": {}},
            ("ops", "other-agent"): {"spec": {}},
        }
        self.fail_with: Exception | None = None

    async def list_runs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        if self.fail_with:
            raise self.fail_with
        want = dict(kv.split("=", 1) for kv in selector.split(","))
        return [
            copy.deepcopy(r)
            for (ns, _), r in self.runs.items()
            if ns == namespace and want.items() <= r["metadata"].get("labels", {}).items()
        ]

    async def create_run(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        meta = manifest["metadata"]
        name = meta.get("name") or meta["generateName"] + f"{len(self.runs):05d}"
        key = (meta["namespace"], name)
        if key in self.runs:
            return None
        self.runs[key] = copy.deepcopy({**manifest, "metadata": {**meta, "name": name}})
        return self.runs[key]

    async def annotate_run(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.runs[(namespace, name)]["metadata"].setdefault("annotations", {}).update(annotations)

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.agents.get((namespace, name))


def with_client(
    cfg: ReceiverConfig, test: Callable[[Any, FakeStore, Receiver], Awaitable[None]]
) -> None:
    async def main() -> None:
        store = FakeStore()
        now = [0.0]
        recv = Receiver(cfg, store, Tokens(None, None), clock=lambda: now[0])
        recv.tokens = _StaticTokens()
        async with TestClient(TestServer(recv.app())) as client:
            await test(client, store, recv)

    asyncio.run(main())


class _StaticTokens(Tokens):
    def __init__(self) -> None:
        super().__init__(None, None)

    def _load(self) -> list[str]:
        return [TOKEN]


async def _post(client: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    resp = await client.post(path, data=data, headers=AUTH if headers is None else headers)
    return resp.status, await resp.json()


def test_http_one_run_per_group_then_repeat_then_resolved() -> None:
    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        status, body = await _post(client, "/alertmanager", notification())
        assert status == 200 and [c["namespace"] for c in body["created"]] == ["shop"]
        assert len(store.runs) == 1
        (run,) = store.runs.values()
        name = run["metadata"]["name"]
        status, body = await _post(client, "/alertmanager", notification())
        assert status == 200 and body["created"] == []
        assert body["deduplicated"] == [{"namespace": "shop", "route": "crashloop", "name": name}]
        assert run["metadata"]["annotations"][routing.ANNOTATION_NOTIFICATIONS] == "2"
        resolved = notification(alert("resolved"), status="resolved")
        status, body = await _post(client, "/alertmanager", resolved)
        assert status == 200 and body["resolved"][0]["name"] == name and body["created"] == []
        assert run["metadata"]["annotations"][routing.ANNOTATION_RESOLVED_AT] == (
            "2024-05-01T10:05:00Z"
        )
        assert len(store.runs) == 1
        # Once the run is terminal, the next firing of the group starts run #2.
        run["status"] = {"phase": "Succeeded"}
        status, body = await _post(client, "/alertmanager", notification())
        assert status == 200 and body["created"][0]["name"].endswith("-2")
        assert len(store.runs) == 2
        assert recv.metrics.get("agentrun_receiver_runs_created_total") == 2
        text = await (await client.get("/metrics")).text()
        assert 'agentrun_receiver_deduplicated_total{route="crashloop"} 1' in text

    with_client(config(), test)


def test_http_rate_limit_is_all_or_nothing() -> None:
    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        for key in ("g1", "g2"):
            status, _ = await _post(client, "/alertmanager", notification(group_key=key))
            assert status == 200
        resp = await client.post(
            "/alertmanager", data=json.dumps(notification(group_key="g3")), headers=AUTH
        )
        body = await resp.json()
        assert resp.status == 429 and body["error"] == "RateLimited"
        assert body["route"] == "crashloop" and body["retryAfterSeconds"] == 30
        assert resp.headers["Retry-After"] == "30"
        assert "nothing was created" in body["message"]
        assert len(store.runs) == 2
        # A repeat of an active group costs nothing and still goes through.
        status, body = await _post(client, "/alertmanager", notification(group_key="g1"))
        assert status == 200 and len(body["deduplicated"]) == 1

    with_client(config(), test)


def test_http_bad_input_is_answered_clearly_and_creates_nothing() -> None:
    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        cases: list[tuple[Any, dict[str, str] | None, int, str]] = [
            (notification(), {}, 401, "Unauthorized"),
            (notification(), {"Authorization": "Bearer wrong"}, 401, "Unauthorized"),
            (b"{not json", None, 400, "MalformedJSON"),
            (b"\xff\xfe", None, 400, "MalformedJSON"),
            ({"version": "4"}, None, 400, "InvalidPayload"),
            (b"x" * (recv.config.maxBodyBytes + 1), None, 413, "PayloadTooLarge"),
            (notification(alert(alertname="Unknown")), None, 422, "Unrouted"),
        ]
        for body, headers, code, error in cases:
            status, answer = await _post(client, "/alertmanager", body, headers)
            assert (status, answer["error"]) == (code, error), answer
            assert answer["message"]
        assert store.runs == {}
        _, answer = await _post(client, "/alertmanager", notification(alert(alertname="U")))
        assert answer["unrouted"][0]["labels"]["alertname"] == "U"
        resp = await client.get("/nowhere")
        assert resp.status == 404 and (await resp.json())["error"] == "NotFound"
        resp = await client.get("/alertmanager")
        assert resp.status == 405 and "message" in await resp.json()
        assert (await client.get("/healthz")).status == 200
        # Still serving.
        status, _ = await _post(client, "/alertmanager", notification())
        assert status == 200 and len(store.runs) == 1

    with_client(config(), test)


def test_http_oversized_chunked_body_is_413() -> None:
    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        async def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 65536

        resp = await client.post("/alertmanager", data=chunks(), headers=AUTH)
        assert resp.status == 413 and (await resp.json())["error"] == "PayloadTooLarge"
        assert store.runs == {}

    with_client(config(), test)


def test_http_kubernetes_failure_is_502() -> None:
    from kubernetes.client.exceptions import ApiException

    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = json.dumps({"message": "agentruns is forbidden: cannot list"})
        store.fail_with = exc
        status, body = await _post(client, "/alertmanager", notification())
        assert status == 502 and "agentruns is forbidden" in body["message"]
        store.fail_with = urllib3.exceptions.MaxRetryError(None, "/", None)  # type: ignore[arg-type]
        status, body = await _post(client, "/alertmanager", notification())
        assert (status, body["error"]) == (503, "KubernetesUnavailable")
        store.fail_with = None
        status, body = await _post(client, "/alertmanager", notification())
        assert status == 200 and len(store.runs) == 1

    with_client(config(), test)


def test_http_generic_runs_endpoint() -> None:
    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        req = {"agent": "sre-agent", "task": "Check the nightly backup.", "context": {"job": "x"}}
        status, body = await _post(client, "/runs", req)
        assert status == 201, body
        name = body["created"]["name"]
        assert body["created"]["namespace"] == "ops" and name.startswith("sre-agent-")
        run = store.runs[("ops", name)]
        assert run["spec"]["input"] == {
            "task": "Check the nightly backup.",
            "context": {"job": "x"},
        }
        assert run["metadata"]["labels"] == {"agentrun.dev/source": "api"}
        status, body = await _post(client, "/runs", {**req, "name": "nightly"})
        assert status == 201
        status, body = await _post(client, "/runs", {**req, "name": "nightly"})
        assert (status, body["error"]) == (409, "AlreadyExists")
        status, body = await _post(client, "/runs", {**req, "agent": "ghost"})
        assert (status, body["error"]) == (422, "AgentNotFound")
        status, body = await _post(client, "/runs", {"agent": "sre-agent"})
        assert (status, body["error"], body["field"]) == (400, "InvalidPayload", "task")
        status, body = await _post(client, "/runs", {**req, "extra": 1})
        assert (status, body["error"]) == (400, "InvalidPayload")
        status, body = await _post(client, "/runs", req, {})
        assert status == 401
        assert len(store.runs) == 2

    with_client(config(api={"agents": ["sre-agent", "ghost"]}), test)


def test_http_alert_cannot_steer_the_namespace() -> None:
    """An alert sender sets `namespace: kube-system`: no run there, whatever the route."""
    open_route = {"name": "open", "matchers": ["alertname=Open"], "agent": "sre-agent"}

    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        # A route without allowedNamespaces: the run is in the route's namespace.
        status, body = await _post(
            client,
            "/alertmanager",
            notification(alert(alertname="Open", namespace="kube-system"), group_key="g1"),
        )
        assert status == 200, body
        assert [(c["namespace"], c["route"]) for c in body["created"]] == [("ops", "open")]
        # A route with allowedNamespaces: anything else is refused, clearly, and counted.
        status, body = await _post(
            client, "/alertmanager", notification(alert(namespace="kube-system"), group_key="g2")
        )
        assert (status, body["error"]) == (403, "NamespaceNotAllowed"), body
        assert body["message"] == (
            "namespace 'kube-system' is not allowed for route 'crashloop': its runs go to "
            "'ops' or one of ['shop', 'web']; nothing was created"
        )
        assert body["unrouted"][0]["error"] == "NamespaceNotAllowed"
        assert (
            recv.metrics.get(
                "agentrun_receiver_refused_total", route="crashloop", reason="NamespaceNotAllowed"
            )
            == 1
        )
        # Mixed: the allowed part goes through, the rest is listed.
        mixed = notification(
            alert(fingerprint="ok"),
            alert(fingerprint="bad", namespace="kube-system"),
            group_key="g3",
        )
        status, body = await _post(client, "/alertmanager", mixed)
        assert status == 200 and [c["namespace"] for c in body["created"]] == ["shop"]
        assert [u["fingerprint"] for u in body["unrouted"]] == ["bad"]
        assert sorted({ns for ns, _ in store.runs}) == ["ops", "shop"]
        text = await (await client.get("/metrics")).text()
        assert (
            'agentrun_receiver_refused_total{reason="NamespaceNotAllowed",route="crashloop"} 2'
            in text
        )

    with_client(config(routes=[*CONFIG["routes"], open_route]), test)


def test_http_huge_group_creates_bounded_runs_and_a_bounded_answer() -> None:
    big = {"runs": 10000, "perSeconds": 1}
    route = {"name": "open", "agent": "sre-agent", "rateLimit": big}

    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        alerts = [alert(fingerprint=f"f{i}", namespace=f"ns-{i}") for i in range(2000)]
        status, body = await _post(client, "/alertmanager", notification(*alerts))
        assert status == 200, body
        assert len(store.runs) == 1 and body["created"][0]["namespace"] == "ops"

    with_client(config(routes=[route]), test)

    async def listed(client: Any, store: FakeStore, recv: Receiver) -> None:
        alerts = [alert(fingerprint=f"f{i}", namespace=f"ns-{i}") for i in range(2000)]
        status, body = await _post(client, "/alertmanager", notification(*alerts))
        assert (status, body["error"]) == (403, "NamespaceNotAllowed")
        assert len(body["unrouted"]) == routing.MAX_UNROUTED_IN_REPLY
        assert body["unroutedCount"] == 2000 and store.runs == {}

    listed_route = {**route, "allowedNamespaces": ["shop"]}
    with_client(config(routes=[listed_route]), listed)


def test_http_alert_never_folds_into_a_run_it_did_not_create() -> None:
    """A /runs caller names its run like the alert group's next run: the alert does not
    record itself on it (nor take it as its own)."""

    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        n = parse_notification(notification(group_key="g"))
        (part,), _ = routing.partition(n, recv.config)
        squat = routing.run_manifest(part, n, 1, "T")["metadata"]["name"]
        store.runs[("shop", squat)] = {"metadata": {"name": squat, "namespace": "shop"}}
        status, body = await _post(client, "/alertmanager", notification(group_key="g"))
        assert status == 200 and body["created"] == [] and body["deduplicated"] == []
        assert body["ignored"][0]["name"] == squat
        assert "annotations" not in store.runs[("shop", squat)]["metadata"]

    with_client(config(), test)


def test_http_runs_caller_is_bound_to_its_route() -> None:
    api: dict[str, Any] = {
        "agents": ["sre-agent"],
        "allowedNamespaces": ["shop"],
        "limits": {"maxSteps": 10, "timeoutSeconds": 600, "maxTotalTokens": 5000},
    }

    async def test(client: Any, store: FakeStore, recv: Receiver) -> None:
        req = {"agent": "sre-agent", "task": "Check the nightly backup."}
        refusals: list[tuple[dict[str, Any], int, str, str]] = [
            ({"namespace": "kube-system"}, 403, "NamespaceNotAllowed", "namespace"),
            ({"agent": "other-agent"}, 403, "AgentNotAllowed", "agent"),
            ({"limits": {"maxSteps": 11}}, 422, "LimitTooHigh", "limits.maxSteps"),
            ({"limits": {"timeoutSeconds": 601}}, 422, "LimitTooHigh", "limits.timeoutSeconds"),
            ({"limits": {"maxTotalTokens": 5001}}, 422, "LimitTooHigh", "limits.maxTotalTokens"),
            (
                {"limits": {"maxConsecutiveErrors": 4}},
                422,
                "LimitTooHigh",
                "limits.maxConsecutiveErrors",
            ),
            (
                {"limits": {"approvalTimeoutSeconds": 86401}},
                422,
                "LimitTooHigh",
                "limits.approvalTimeoutSeconds",
            ),
            ({"cancel": True}, 400, "InvalidPayload", "cancel"),
            ({"spec": {"cancel": True}}, 400, "InvalidPayload", "spec"),
            ({"limits": {"maxSteps": 5, "x": 1}}, 400, "InvalidPayload", "limits.x"),
            ({"labels": {"a": "b"}}, 400, "InvalidPayload", "labels"),
        ]
        for extra, code, error, field in refusals:
            status, body = await _post(client, "/runs", {**req, **extra})
            assert (status, body["error"], body.get("field")) == (code, error, field), body
            assert body["message"]
        assert store.runs == {}
        assert recv.metrics.get("agentrun_receiver_refused_total", route="api") == 7
        assert (
            recv.metrics.get("agentrun_receiver_refused_total", route="api", reason="LimitTooHigh")
            == 5
        )
        # The route's limits when the caller names none; less when it asks for less.
        status, body = await _post(client, "/runs", req)
        assert status == 201 and body["created"]["namespace"] == "ops"
        run = store.runs[("ops", body["created"]["name"])]
        assert run["spec"]["limits"] == api["limits"]
        assert set(run["spec"]) == {"agentRef", "input", "limits"}
        status, body = await _post(
            client, "/runs", {**req, "namespace": "shop", "limits": {"maxSteps": 3}}
        )
        assert status == 201 and body["created"]["namespace"] == "shop"
        run = store.runs[("shop", body["created"]["name"])]
        assert run["spec"]["limits"] == {**api["limits"], "maxSteps": 3}

    with_client(config(api=api), test)

    async def no_agents(client: Any, store: FakeStore, recv: Receiver) -> None:
        status, body = await _post(client, "/runs", {"agent": "sre-agent", "task": "t"})
        assert (status, body["error"]) == (403, "AgentNotAllowed")
        assert "allows none (set api.agents)" in body["message"] and store.runs == {}

    with_client(config(api={}), no_agents)

    async def agent_ceiling(client: Any, store: FakeStore, recv: Receiver) -> None:
        # No route limit for maxSteps: the Agent's (30) is the ceiling, not the CRD's 1000.
        req = {"agent": "sre-agent", "task": "t", "limits": {"maxSteps": 31}}
        status, body = await _post(client, "/runs", req)
        assert (status, body["field"]) == (422, "limits.maxSteps")
        assert "Agent 'sre-agent'" in body["message"] and store.runs == {}

    with_client(config(), agent_ceiling)
