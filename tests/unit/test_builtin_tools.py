"""The built-in tools' pure parts: shaping, diffing, summarising, bounds. No cluster.

Where a tool's run() is exercised, its API helpers are replaced by fakes; the real thing
runs in tests/integration/test_tools.py.
"""

from __future__ import annotations

import http.server
import json
import math
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from agentrun.tool import runner as toolrunner
from agentrun.tool.builtins import (
    ToolError,
    common,
    delete_pod,
    k8s_describe,
    k8s_events,
    pod_logs,
    prometheus_query,
    recent_deploys,
    rollout_undo,
    runbook,
    scale,
)

ROOT = Path(__file__).resolve().parents[2]


def forbidden() -> ApiException:
    return ApiException(status=403, reason="Forbidden", body='{"message": "no"}')


# ---------------------------------------------------------------- common


def test_typed_arguments() -> None:
    types: dict[str, type | tuple[type, ...]] = {"n": int, "s": str, "b": bool}
    common.arguments({"n": 1, "s": "x", "b": False}, types, {"s"})
    with pytest.raises(ToolError, match="unknown arguments"):
        common.arguments({"x": 1}, types, set())
    with pytest.raises(ToolError, match="missing required"):
        common.arguments({"n": 1}, types, {"s"})
    with pytest.raises(ToolError, match="'n' must be an integer"):
        common.arguments({"n": True}, types, set())  # JSON true is not 1
    with pytest.raises(ToolError, match="'s' must be a string"):
        common.arguments({"s": 3}, types, set())


def test_int_arg_clamps_reads_and_refuses_writes() -> None:
    assert common.int_arg({}, "n", 5, 1, 10) == 5
    assert common.int_arg({"n": 50}, "n", 5, 1, 10) == 10
    with pytest.raises(ToolError, match="between 0 and 3"):
        common.int_arg({"n": 4}, "n", 1, 0, 3, clamp=False)


def test_selector_string() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert common.selector_string(selector) == "a=1,b=2,tier in (web,api),!canary"
    assert common.selector_string(None) == ""


def test_env_summary_never_shows_secret_or_credential_values() -> None:
    env: list[dict[str, Any]] = [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "value": "literal-token"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    assert common.env_summary(env) == [
        "LOG_LEVEL=debug",
        "API_TOKEN=****",
        "DB_PASSWORD (from Secret db key pw)",
        "MODE (from ConfigMap cfg key mode)",
        "POD (from field metadata.name)",
    ]


def test_the_tool_runner_masks_every_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentrun.tool import builtins as builtin_tools

    monkeypatch.setitem(builtin_tools.REGISTRY, "leaky", lambda a: {"log": "password=hunter2"})
    toolrunner.main(["leaky", "{}"])
    out = capsys.readouterr().out
    assert "hunter2" not in out and json.loads(out)["output"] == {"log": "password=****"}


# ---------------------------------------------------------------- k8s-describe

CRASH_POD: dict[str, Any] = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "web-1",
        "namespace": "prod",
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8", "controller": True}
        ],
    },
    "spec": {
        "nodeName": "n1",
        "containers": [
            {
                "name": "web",
                "image": "web:2",
                "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            }
        ],
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [
            {
                "name": "web",
                "ready": False,
                "restartCount": 7,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
            }
        ],
    },
}


def test_describe_pod_summary_conditions_and_states() -> None:
    out = k8s_describe.describe(CRASH_POD)
    assert out["summary"] == (
        "Pod prod/web-1: Running, ready 0/1, 7 restarts, node n1; web: CrashLoopBackOff; "
        "web last exit: Error (1)"
    )
    assert [c["type"] for c in out["conditions"]] == ["Ready", "PodScheduled"]  # bad first
    [state] = out["containers"]
    assert state["state"] == "waiting" and state["reason"] == "CrashLoopBackOff"
    assert state["lastTerminated"] == {"reason": "Error", "exitCode": 1}
    assert out["spec"][0]["env"] == ["PW (from Secret s key k)"]


def test_describe_conditions_pressure_is_bad_when_true() -> None:
    rows = k8s_describe.conditions(
        {
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
            ]
        }
    )
    assert [r["type"] for r in rows] == ["MemoryPressure", "Ready", "DiskPressure"]


def test_describe_deployment() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}},
        },
        "status": {
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "availableReplicas": 1,
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}
            ],
        },
    }
    out = k8s_describe.describe(dep)
    assert out["summary"] == "Deployment prod/web: 1/3 ready, 2 updated, 1 available"
    assert out["selector"] == "app=web"
    assert out["template"]["containers"] == [{"name": "web", "image": "web:2"}]
    assert out["conditions"][0]["reason"] == "MinimumReplicasUnavailable"


def test_owner_chain_walks_up_and_stops_readably(monkeypatch: pytest.MonkeyPatch) -> None:
    objects: dict[str, dict[str, Any]] = {
        "/apis/apps/v1/namespaces/prod/replicasets/web-5d8": {
            "metadata": {
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}]
            }
        },
        "/apis/apps/v1/namespaces/prod/deployments/web": {"metadata": {}},
    }

    def fake(method: str, path: str, **kw: Any) -> dict[str, Any]:
        if path not in objects:
            raise forbidden()
        return objects[path]

    monkeypatch.setattr(k8s_describe, "request", fake)
    assert k8s_describe.owner_chain(CRASH_POD, "prod") == [
        "ReplicaSet/web-5d8",
        "Deployment/web",
    ]
    del objects["/apis/apps/v1/namespaces/prod/deployments/web"]
    chain = k8s_describe.owner_chain(CRASH_POD, "prod")
    assert chain[-1].startswith("(stopped: cannot read Deployment/web")


def test_replicasets_sorted_by_revision() -> None:
    rows = [
        k8s_describe.replicaset_row(
            {"metadata": {"name": f"rs{r}", "annotations": {recent_deploys.REVISION: str(r)}}}
        )
        for r in (2, 10, 1)
    ]
    assert [r["name"] for r in sorted(rows, key=k8s_describe._revision, reverse=True)] == [
        "rs10",
        "rs2",
        "rs1",
    ]


# ---------------------------------------------------------------- k8s-events


def event(reason: str, seen: str, count: int = 1, type_: str = "Warning", obj: str = "p1") -> Any:
    return {
        "type": type_,
        "reason": reason,
        "involvedObject": {"kind": "Pod", "name": obj},
        "message": f"{reason} at {seen}",
        "count": count,
        "firstTimestamp": seen,
        "lastTimestamp": seen,
    }


EVENTS = [
    event("BackOff", "2026-01-01T00:01:00Z", 4),
    event("BackOff", "2026-01-01T00:05:00Z", 6),
    event("BackOff", "2026-01-01T00:03:00Z", 1, obj="p2"),
    event("Pulled", "2026-01-01T00:00:30Z", type_="Normal"),
    event("Unhealthy", "2026-01-01T00:04:00Z", 2),
]


def test_events_dedup_newest_first_with_counts() -> None:
    rows = k8s_events.dedup(EVENTS)
    assert [(r["reason"], r["object"], r["count"]) for r in rows] == [
        ("BackOff", "Pod/p1", 10),
        ("Unhealthy", "Pod/p1", 2),
        ("BackOff", "Pod/p2", 1),
        ("Pulled", "Pod/p1", 1),
    ]
    first = rows[0]
    assert first["message"] == "BackOff at 2026-01-01T00:05:00Z"  # the newest message
    assert first["firstSeen"] == "2026-01-01T00:01:00Z"
    assert first["lastSeen"] == "2026-01-01T00:05:00Z"


def test_events_shape_filters_and_notes() -> None:
    now = datetime(2026, 1, 1, 0, 6, tzinfo=UTC)
    out = k8s_events.shape(
        EVENTS, namespace="prod", target=None, type_="Warning", limit=2, since_minutes=0, now=now
    )
    assert [r["reason"] for r in out["events"]] == ["BackOff", "Unhealthy"]
    assert "showing 2 of 3 rows" in out["note"]
    assert "13 Warning" in out["summary"]
    recent = k8s_events.shape(
        EVENTS, namespace="prod", target=None, type_=None, limit=20, since_minutes=1, now=now
    )
    assert [r["reason"] for r in recent["events"]] == ["BackOff"]  # only 00:05 is within 1 min
    empty = k8s_events.shape(
        [], namespace="prod", target=None, type_=None, limit=20, since_minutes=0, now=now
    )
    assert empty["events"] == [] and "no events" in empty["summary"]


def test_events_run_validates_type_and_uses_field_selectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, str]] = []

    def fake(method: str, path: str, **kw: Any) -> dict[str, Any]:
        seen.append(dict(kw.get("query") or []))
        return {"items": EVENTS}

    monkeypatch.setattr(k8s_events, "request", fake)
    with pytest.raises(ToolError, match="type must be one of"):
        k8s_events.run({"type": "Error"})
    out = k8s_events.run({"namespace": "prod", "kind": "Pod", "name": "p1", "type": "warning"})
    assert seen[0]["fieldSelector"] == "involvedObject.kind=Pod,involvedObject.name=p1,type=Warning"
    assert out["object"] == "Pod/p1"
    with pytest.raises(ToolError, match="Secrets are never read"):
        k8s_events.run({"kind": "Secret"})


# ---------------------------------------------------------------- pod-logs


def test_shape_log_tail_grep_and_bounds() -> None:
    text = "\n".join(f"line {i} {'ERROR' if i % 10 == 0 else 'ok'}" for i in range(100))
    out = pod_logs.shape_log(text, tail=3, pattern=pod_logs.compile_grep("ERROR"))
    assert out["log"].splitlines() == ["line 70 ERROR", "line 80 ERROR", "line 90 ERROR"]
    assert out["grep"] == "10 of the last 100 lines match 'ERROR'"
    assert "showing the last 3 of 10 matching lines" in out["note"]

    plain = pod_logs.shape_log("a\nb\nc", tail=2, pattern=None)
    assert plain["log"] == "b\nc" and "earlier lines not shown" in plain["note"]
    assert "note" not in pod_logs.shape_log("a\nb", tail=2, pattern=None)

    long = pod_logs.shape_log("x" * 2000, tail=10, pattern=None)
    assert long["log"].endswith("...[line cut]") and "1 lines longer" in long["note"]

    huge = pod_logs.shape_log("\n".join(["y" * 400] * 1000), tail=1000, pattern=None)
    assert len(huge["log"]) <= pod_logs.MAX_LOG_CHARS
    assert "showing the last" in huge["note"]

    assert pod_logs.shape_log("", tail=5, pattern=None)["note"].startswith("the log is empty")
    assert "****" in pod_logs.shape_log("token=abc123", tail=5, pattern=None)["log"]


def test_grep_must_be_a_regex() -> None:
    with pytest.raises(ToolError, match="not a valid regular expression"):
        pod_logs.compile_grep("(unclosed")


def pod(name: str, ready: bool, restarts: int, created: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]},
        "status": {"containerStatuses": [{"ready": ready, "restartCount": restarts}]},
    }


def test_rank_pods_least_healthy_first() -> None:
    pods = [
        pod("ok-old", True, 0, "2026-01-01T00:00:00Z"),
        pod("crash-few", False, 2, "2026-01-01T00:00:00Z"),
        pod("crash-many", False, 9, "2026-01-01T00:00:00Z"),
        pod("ok-new", True, 0, "2026-01-02T00:00:00Z"),
    ]
    names = [p["metadata"]["name"] for p in pod_logs.rank_pods(pods)]
    assert names == ["crash-many", "crash-few", "ok-new", "ok-old"]


def test_pick_container() -> None:
    p = pod("p", True, 0, "")
    assert pod_logs.pick_container(p, None) == ("app", ["app", "sidecar"])
    assert pod_logs.pick_container(p, "sidecar")[0] == "sidecar"
    p["metadata"]["annotations"] = {pod_logs.DEFAULT_CONTAINER: "sidecar"}
    assert pod_logs.pick_container(p, None)[0] == "sidecar"
    with pytest.raises(ToolError, match="no container 'db'"):
        pod_logs.pick_container(p, "db")


def test_previous_log_error_is_clear() -> None:
    exc = ApiException(status=400, reason="Bad Request", body='{"message": "previous not found"}')
    error = str(pod_logs.log_error(exc, "p", "app", previous=True))
    assert "no previous log for container app of pod p" in error
    assert "previous not found" in error and "without previous" in error


def test_pod_logs_run_picks_from_a_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    objects: dict[str, dict[str, Any]] = {
        "/apis/apps/v1/namespaces/prod/deployments/web": {
            "spec": {"selector": {"matchLabels": {"app": "web"}}}
        },
        "/api/v1/namespaces/prod/pods": {
            "items": [
                pod("web-ok", True, 0, "2026-01-01T00:00:00Z"),
                pod("web-bad", False, 3, "2026-01-01T00:00:00Z"),
            ]
        },
    }
    queries: dict[str, Any] = {}

    def get_object(path: str, what: str, query: Any = None) -> dict[str, Any]:
        queries[path] = query
        return objects[path]

    def request_text(path: str, query: Any = None) -> str:
        queries[path] = dict(query)
        return "a\nb\nc\n"

    monkeypatch.setattr(pod_logs, "get_object", get_object)
    monkeypatch.setattr(pod_logs, "request_text", request_text)
    out = pod_logs.run({"namespace": "prod", "deployment": "web", "tailLines": 2})
    assert out["pod"] == "web-bad" and out["container"] == "app"
    assert out["otherPods"] == [{"name": "web-ok", "ready": True, "restarts": 0}]
    assert out["containers"] == ["app", "sidecar"]
    assert queries["/api/v1/namespaces/prod/pods"] == [("labelSelector", "app=web")]
    log_query = queries["/api/v1/namespaces/prod/pods/web-bad/log"]
    assert log_query == {"container": "app", "previous": "false", "tailLines": "3"}
    assert out["log"] == "b\nc"
    with pytest.raises(ToolError, match="exactly one of"):
        pod_logs.run({"pod": "a", "deployment": "b"})


# ---------------------------------------------------------------- recent-deploys


def template(image: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "web", "pod-template-hash": image[-1]}},
        "spec": {"containers": [{"name": "app", "image": image, **container}]},
    }


def rs(revision: int, image: str, created: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{revision}",
            "creationTimestamp": created,
            "annotations": {
                recent_deploys.REVISION: str(revision),
                recent_deploys.CHANGE_CAUSE: f"deploy {image}",
            },
        },
        "spec": {"replicas": 1, "template": template(image, **container)},
        "status": {"readyReplicas": 1},
    }


def test_template_diff_shows_names_never_values() -> None:
    old = template(
        "web:1",
        env=[
            {"name": "A", "value": "1"},
            {"name": "GONE", "value": "x"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "old"}}},
        ],
        resources={"limits": {"memory": "128Mi"}},
        args=["--port=80"],
    )
    new = template(
        "web:2",
        env=[
            {"name": "A", "value": "2"},
            {"name": "NEW", "value": "hunter2"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "new"}}},
        ],
        resources={"limits": {"memory": "256Mi"}},
        args=["--port=8080"],
        readinessProbe={"httpGet": {"path": "/ready"}},
    )
    new["metadata"]["annotations"] = {recent_deploys.RESTARTED_AT: "2026-01-01T00:00:00Z"}
    new["spec"]["serviceAccountName"] = "web"
    diff = recent_deploys.template_diff(old, new)
    assert diff["images"] == {"app": {"from": "web:1", "to": "web:2"}}
    assert diff["env"] == {"app": {"added": ["NEW"], "removed": ["GONE"], "changed": ["A", "PW"]}}
    assert diff["resources"]["app"]["to"] == {"limits": {"memory": "256Mi"}}
    assert diff["commandArgs"] == {"app": {"args": {"from": ["--port=80"], "to": ["--port=8080"]}}}
    assert diff["restartedAt"] == "2026-01-01T00:00:00Z"
    assert diff["otherFieldsChanged"] == ["serviceAccountName", "app.readinessProbe"]
    assert "podLabelsChanged" not in diff  # the hash label is not a change
    text = json.dumps(diff)
    assert "hunter2" not in text and "secretKeyRef" not in text and '"value"' not in text


def test_template_diff_of_identical_templates_is_empty() -> None:
    assert recent_deploys.template_diff(template("web:1"), template("web:1")) == {}


def test_history_of_a_deployment() -> None:
    rows = recent_deploys.replicaset_revisions(
        [
            rs(1, "web:1", "2026-01-01T00:00:00Z"),
            rs(3, "web:3", "2026-01-03T00:00:00Z"),
            rs(2, "web:2", "2026-01-02T00:00:00Z"),
        ]
    )
    dep = {
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "annotations": {"deployment.kubernetes.io/revision": "3"},
        }
    }
    out = recent_deploys.history("Deployment", dep, rows, limit=2)
    assert out["summary"].startswith(
        "Deployment prod/web: revision 3 (created 2026-01-03T00:00:00Z) replaced revision 2"
    )
    assert "image of app web:2 -> web:3" in out["summary"]
    assert [r["revision"] for r in out["revisions"]] == [3, 2]
    assert out["revisions"][0] == {
        "revision": 3,
        "current": True,
        "created": "2026-01-03T00:00:00Z",
        "images": {"app": "web:3"},
        "changeCause": "deploy web:3",
        "replicas": "1/1 ready",
        "name": "web-3",
    }
    assert out["note"] == "showing the newest 2 of 3 revisions"
    single = recent_deploys.history("Deployment", dep, rows[-1:], limit=5)
    assert "nothing to compare" in single["summary"]
    assert "no recorded revisions" in recent_deploys.history("Deployment", dep, [], 5)["summary"]


def test_controller_revisions_of_a_statefulset() -> None:
    def cr(rev: int, image: str) -> dict[str, Any]:
        tmpl = {**template(image), "$patch": "replace"}
        return {
            "metadata": {"name": f"db-{rev}"},
            "revision": rev,
            "data": {"spec": {"template": tmpl}},
        }

    rows = recent_deploys.controller_revisions([cr(1, "db:1"), cr(2, "db:2")])
    assert [r["revision"] for r in rows] == [2, 1] and "$patch" not in rows[0]["template"]
    sts = {"metadata": {"name": "db", "namespace": "p"}, "status": {"updateRevision": "db-2"}}
    out = recent_deploys.history("StatefulSet", sts, rows, limit=5)
    assert out["lastChange"]["images"] == {"app": {"from": "db:1", "to": "db:2"}}
    assert out["currentRevision"] == 2


def test_recent_deploys_refuses_other_kinds() -> None:
    with pytest.raises(ToolError, match="kind must be Deployment, StatefulSet or DaemonSet"):
        recent_deploys.run({"kind": "Pod", "name": "x"})


# ---------------------------------------------------------------- prometheus-query


def test_summarise_vector_sorted_and_cut() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"job": "a"}, "value": [1700000000.123, "0"]},
                {"metric": {"job": "b"}, "value": [1700000000.123, "3.14159265"]},
                {"metric": {"job": "c"}, "value": [1700000000.123, "NaN"]},
            ],
        },
    }
    out = prometheus_query.summarise(body, max_series=2)
    assert out["seriesCount"] == 3
    assert [s["labels"]["job"] for s in out["series"]] == ["b", "a"]  # highest last first
    assert out["series"][0]["last"] == 3.14159 and out["series"][0]["at"] == 1700000000.123
    assert "showing 2 of 3 series" in out["note"]


def test_summarise_matrix_min_max_last() -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"pod": "p"}, "values": [[1, "2"], [2, "NaN"], [3, "5"], [4, "4"]]},
            ],
        },
        "warnings": ["partial response"],
    }
    [series] = prometheus_query.summarise(body, 10)["series"]
    assert (series["min"], series["max"], series["last"], series["samples"]) == (2, 5, 4, 4)
    assert series["avg"] == pytest.approx(3.66667)
    assert (series["from"], series["to"]) == (1, 4)
    assert prometheus_query.summarise(body, 10)["warnings"] == ["partial response"]


def test_summarise_scalar_and_empty() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "+Inf"]}}
    assert prometheus_query.summarise(scalar, 10)["value"] == "inf"
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert prometheus_query.summarise(empty, 10)["note"].startswith("no series")


def test_durations_and_steps() -> None:
    assert prometheus_query.parse_duration("15m", "range") == 900
    assert prometheus_query.default_step(3600) == 60
    assert prometheus_query.default_step(30) == 1
    with pytest.raises(ToolError, match="duration"):
        prometheus_query.parse_duration("an hour", "range")
    assert prometheus_query.parse_time("1700000000") == 1700000000
    assert prometheus_query.parse_time("2023-11-14T22:13:20Z") == 1700000000
    assert math.isnan(prometheus_query._num("nope"))


def test_prometheus_run_builds_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}

    def fetch(url: str, base: str) -> dict[str, Any]:
        seen.append(url)
        return empty

    monkeypatch.setattr(prometheus_query, "fetch", fetch)
    monkeypatch.delenv(prometheus_query.URL_ENV, raising=False)
    with pytest.raises(ToolError, match="no Prometheus URL configured"):
        prometheus_query.run({"query": "up"})
    monkeypatch.setenv(prometheus_query.URL_ENV, "file:///etc/passwd")
    with pytest.raises(ToolError, match="http"):
        prometheus_query.run({"query": "up"})
    monkeypatch.setenv(prometheus_query.URL_ENV, "http://prom:9090/")
    out = prometheus_query.run({"query": "up", "range": "1h", "time": "1700000000"})
    assert seen[-1].startswith("http://prom:9090/api/v1/query_range?query=up&start=1699996400")
    assert "step=60" in seen[-1] and out["step"] == "60"
    prometheus_query.run({"query": "up"})
    assert "/api/v1/query?query=up&time=" in seen[-1]
    with pytest.raises(ToolError, match="11000 points"):
        prometheus_query.run({"query": "up", "range": "7d", "step": "1s"})


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback HTTP server: answers Prometheus JSON, or a redirect, and records paths."""

    def do_GET(self) -> None:
        server: Any = self.server
        server.paths.append(self.path)
        if server.redirect_to:
            self.send_response(302)
            self.send_header("Location", server.redirect_to + self.path)
            self.end_headers()
            return
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_servers() -> Iterator[list[Any]]:
    """Two loopback servers: [0] plays the configured Prometheus, [1] the attacker's host."""
    servers: list[Any] = []
    for _ in range(2):
        server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.paths, server.redirect_to = [], ""
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _url(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_prometheus_query_goes_only_to_the_configured_url(
    monkeypatch: pytest.MonkeyPatch, http_servers: list[Any]
) -> None:
    """A prompt injection asks the read tool to send a query (data) to its own host: refused
    before any request; the configured Prometheus gets the query, and a redirect from it is
    not followed."""
    prometheus, attacker = http_servers
    monkeypatch.setenv(prometheus_query.URL_ENV, _url(prometheus))
    with pytest.raises(ToolError, match=r"unknown arguments \['url'\]"):
        prometheus_query.run({"query": "secret_data", "url": _url(attacker)})
    assert prometheus.paths == [] and attacker.paths == []
    assert "url" not in prometheus_query.ARGUMENTS

    out = prometheus_query.run({"query": "up"})
    assert out["resultType"] == "vector"
    assert [p.split("?")[0] for p in prometheus.paths] == ["/api/v1/query"]

    prometheus.redirect_to = _url(attacker)
    with pytest.raises(ToolError, match=r"redirect \(HTTP 302\), which is not followed"):
        prometheus_query.run({"query": "secret_data"})
    assert attacker.paths == []


# ---------------------------------------------------------------- runbook

BOOK = """---
alerts: [HighLatency, SlowRequests]
title: Requests are slow
severity: critical
---
# High latency

What it means.

## Mitigation
Scale up.

## Background
History.

## Diagnosis
Look at p99.
"""


def test_runbook_parse_and_best_section_first() -> None:
    book = runbook.parse(BOOK, "dir/latency.md")
    assert book["alerts"] == ["HighLatency", "SlowRequests"]
    assert book["title"] == "Requests are slow" and book["summary"] == "What it means."
    out = runbook.lookup([book], "slowrequests", None, [])
    assert [s["title"] for s in out["sections"]] == ["Diagnosis", "Mitigation", "Background"]
    assert out["severity"] == "critical"
    only = runbook.lookup([book], "HighLatency", "mitigation", [])
    assert only["sections"] == [{"title": "Mitigation", "text": "Scale up."}]


def test_runbook_match_order_and_unknown_alert() -> None:
    by_name = runbook.parse("# TargetDown\n## Diagnosis\nx\n", "configmap/c/TargetDown.md")
    by_front = runbook.parse("---\nalerts: TargetDown\n---\n## Diagnosis\ny\n", "dir/t.md")
    out = runbook.lookup([by_name, by_front], "TargetDown", None, [])
    assert out["source"] == "dir/t.md"  # front matter beats the file name
    assert out["otherRunbooks"] == ["configmap/c/TargetDown.md"]
    with pytest.raises(ToolError, match=r"no runbook for alert 'Nope'.*TargetDown"):
        runbook.lookup([by_name, by_front], "Nope", None, [])


def test_runbook_without_front_matter_or_sections() -> None:
    book = runbook.parse("Just text, no headings.", "d/Plain.md")
    assert book["alerts"] == [] and book["sections"] == []
    out = runbook.lookup([book], "plain", "diagnosis", [])
    assert out["summary"] == "Just text, no headings." and "no diagnosis section" in out["note"]


def test_runbook_run_reads_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "latency.md").write_text(BOOK)
    monkeypatch.setenv(runbook.DIR_ENV, str(tmp_path))
    monkeypatch.delenv(runbook.CONFIGMAP_ENV, raising=False)
    out = runbook.run({"alert": "HighLatency"})
    assert out["source"] == f"{tmp_path.name}/latency.md"
    with pytest.raises(ToolError, match="section must be"):
        runbook.run({"alert": "HighLatency", "section": "Everything"})
    monkeypatch.setenv(runbook.DIR_ENV, str(tmp_path / "missing"))
    monkeypatch.setattr(runbook, "REPO_RUNBOOKS", tmp_path / "missing")
    with pytest.raises(ToolError, match="no runbooks configured"):
        runbook.run({"alert": "HighLatency"})


def test_runbook_sources_come_from_settings_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model names an alert, never a source: no ConfigMap argument, and an alert that
    looks like a path reads nothing outside the configured directory."""
    books = tmp_path / "runbooks"
    books.mkdir()
    (books / "latency.md").write_text(BOOK)
    (tmp_path / "outside.md").write_text("---\nalerts: [Outside]\n---\n## Diagnosis\nleak\n")
    monkeypatch.setenv(runbook.DIR_ENV, str(books))
    monkeypatch.delenv(runbook.CONFIGMAP_ENV, raising=False)
    assert {"alert", "section"} == runbook.ARGUMENTS
    with pytest.raises(ToolError, match=r"unknown arguments \['configMap'\]"):
        runbook.run({"alert": "HighLatency", "configMap": "kube-root-ca.crt"})
    for alert in ("../outside", "../outside.md", str(tmp_path / "outside"), "Outside"):
        with pytest.raises(ToolError, match="no runbook for alert") as err:
            runbook.run({"alert": alert})
        assert "leak" not in str(err.value) and "Outside" not in str(err.value).split(";")[1]


def test_the_shipped_runbooks_parse() -> None:
    books = [runbook.parse(p.read_text(), p.name) for p in (ROOT / "tools/runbooks").glob("*.md")]
    alerts = {a for b in books for a in b["alerts"]}
    assert {"KubePodCrashLooping", "KubeDeploymentReplicasMismatch", "TargetDown"} <= alerts
    for book in books:
        titles = [s["title"] for s in book["sections"]]
        assert titles[:2] == ["Diagnosis", "Mitigation"], book["source"]


# ---------------------------------------------------------------- scale


def test_scale_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(scale.MAX_ENV, raising=False)
    assert scale.scale_max() == scale.DEFAULT_MAX
    monkeypatch.setenv(scale.MAX_ENV, "5")
    assert scale.scale_max() == 5
    monkeypatch.setenv(scale.MAX_ENV, "many")
    assert scale.scale_max() == 0  # a broken bound allows nothing
    assert scale.check_replicas(5, 5) == 5
    with pytest.raises(ToolError, match="over this tool's maximum of 5"):
        scale.check_replicas(6, 5)
    with pytest.raises(ToolError, match="0 or more"):
        scale.check_replicas(-1, 5)


def test_scale_patches_the_scale_subresource(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, Any]] = []

    def fake(method: str, path: str, **kw: Any) -> dict[str, Any]:
        calls.append((method, path, kw.get("body")))
        return {"spec": {"replicas": 4 if method == "PATCH" else 2}, "status": {}}

    monkeypatch.setattr(scale, "request", fake)
    monkeypatch.setattr(common, "request", fake)
    monkeypatch.delenv(scale.MAX_ENV, raising=False)
    out = scale.run({"name": "web", "namespace": "prod", "replicas": 4, "kind": "StatefulSet"})
    assert calls[-1] == (
        "PATCH",
        "/apis/apps/v1/namespaces/prod/statefulsets/web/scale",
        {"spec": {"replicas": 4}},
    )
    assert (out["from"], out["to"]) == (2, 4)
    calls.clear()
    with pytest.raises(ToolError, match="maximum"):
        scale.run({"name": "web", "namespace": "prod", "replicas": 21})
    assert calls == []  # refused before any API call
    with pytest.raises(ToolError, match="kind must be"):
        scale.run({"name": "web", "namespace": "prod", "replicas": 1, "kind": "DaemonSet"})


# ---------------------------------------------------------------- rollout-undo


def deployment(revision: int, image: str, paused: bool = False) -> dict[str, Any]:
    tmpl = template(image)
    tmpl["metadata"]["labels"].pop("pod-template-hash")
    return {
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "resourceVersion": "42",
            "annotations": {recent_deploys.REVISION: str(revision), "team": "shop"},
        },
        "spec": {"paused": paused, "template": tmpl},
    }


REPLICASETS = [
    rs(1, "web:1", "2026-01-01T00:00:00Z"),
    rs(2, "web:2", "2026-01-02T00:00:00Z"),
    rs(3, "web:3", "2026-01-03T00:00:00Z"),
]


def test_undo_to_the_previous_revision() -> None:
    patch, info = rollout_undo.plan(deployment(3, "web:3"), REPLICASETS, 0)
    assert patch is not None
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    template_op, annotations_op = patch[1], patch[2]
    assert template_op["path"] == "/spec/template"
    assert template_op["value"]["spec"]["containers"][0]["image"] == "web:2"
    assert template_op["value"]["metadata"]["labels"] == {"app": "web"}  # no hash label
    annotations = annotations_op["value"]
    assert annotations["team"] == "shop"
    assert annotations[recent_deploys.CHANGE_CAUSE] == "deploy web:2"  # copied from the RS
    assert annotations[recent_deploys.REVISION] == "3"  # the RS's own revision is not copied
    assert (info["fromRevision"], info["toRevision"]) == (3, 2)
    assert info["changes"]["images"] == {"app": {"from": "web:3", "to": "web:2"}}
    assert "rolled back from revision 3" in info["summary"]


def test_undo_to_a_revision_and_refusals() -> None:
    patch, info = rollout_undo.plan(deployment(3, "web:3"), REPLICASETS, 1)
    assert patch is not None and info["toRevision"] == 1
    with pytest.raises(ToolError, match=r"no revision 7; revisions: \[3, 2, 1\]"):
        rollout_undo.plan(deployment(3, "web:3"), REPLICASETS, 7)
    with pytest.raises(ToolError, match="paused"):
        rollout_undo.plan(deployment(3, "web:3", paused=True), REPLICASETS, 0)
    with pytest.raises(ToolError, match="no revision before 1"):
        rollout_undo.plan(deployment(1, "web:1"), REPLICASETS[:1], 0)


def test_undo_to_the_same_template_is_skipped() -> None:
    patch, info = rollout_undo.plan(deployment(3, "web:3"), REPLICASETS, 3)
    assert patch is None and "skipped" in info["summary"]
    # A Deployment already back on revision 2's template (say, edited by hand)
    patch, info = rollout_undo.plan(deployment(3, "web:2"), REPLICASETS, 2)
    assert patch is None and "already equals revision 2" in info["summary"]


# ---------------------------------------------------------------- delete-pod


def test_delete_pod_with_uid_precondition(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, Any]] = []
    owned = {
        "metadata": {
            "uid": "u1",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "w", "controller": True}],
        }
    }

    def fake(method: str, path: str, **kw: Any) -> dict[str, Any]:
        calls.append((method, path, kw.get("body")))
        return owned

    monkeypatch.setattr(delete_pod, "request", fake)
    monkeypatch.setattr(common, "request", fake)
    out = delete_pod.run({"name": "p", "namespace": "prod", "gracePeriodSeconds": 0})
    method, path, body = calls[-1]
    assert (method, path) == ("DELETE", "/api/v1/namespaces/prod/pods/p")
    assert body["preconditions"] == {"uid": "u1"} and body["gracePeriodSeconds"] == 0
    assert "ReplicaSet/w creates a replacement" in out["summary"]
    assert "NOTHING recreates it" in delete_pod.replacement({"metadata": {}})
    with pytest.raises(ToolError, match="between 0 and 300"):
        delete_pod.run({"name": "p", "namespace": "prod", "gracePeriodSeconds": 900})


def test_no_tool_module_prints_secret_values() -> None:
    """A crude guard: no builtin reads a Secret's `data`."""
    for path in (ROOT / "operator/agentrun/builtin_tools").glob("*.py"):
        source = path.read_text()
        assert not re.search(r"/secrets\b", source), path.name
