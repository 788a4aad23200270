"""Alerts in: a real Prometheus rule fires, a real Alertmanager delivers to the receiver, and
exactly one AgentRun appears; repeats and the resolution are recorded on it; bad input is
refused clearly with nothing created. No operator is needed: this tests AgentRun creation.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrun.receiver import routing
from tests.cluster import LocalCluster
from tests.support import alerting
from tests.support.alerting import Alertmanager, Prometheus, ReceiverThread
from tests.support.stack import wait_for

TOKEN = f"tok-{uuid.uuid4().hex}"
POD = "checkout-5d9c8f7b6-x2x4k"


def rule(namespace: str, expr: str = "vector(1)") -> dict[str, Any]:
    """An always-true rule with the labels and annotations of kube-prometheus's alert."""
    return {
        "alert": "KubePodCrashLooping",
        "expr": expr,
        "labels": {
            "namespace": namespace,
            "pod": POD,
            "container": "checkout",
            "severity": "warning",
        },
        "annotations": {
            "summary": "Pod is crash looping.",
            "description": f"Pod {namespace}/{POD} (checkout) is in waiting state "
            "(reason: CrashLoopBackOff).",
            "runbook_url": "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/"
            "kubepodcrashlooping",
        },
    }


RECEIVER_CONFIG: dict[str, Any] = {
    "defaultNamespace": "agentrun-alerts",
    "routes": [
        {
            "name": "crashloop",
            "matchers": ["alertname=KubePodCrashLooping", 'severity=~"warning|critical"'],
            "agent": "sre-agent",
            "task": "Pod {{ alert.labels.pod }} in namespace {{ alert.labels.namespace }} is "
            "crash looping: {{ alert.annotations.description }} Find out why.",
            "rateLimit": {"runs": 5, "perSeconds": 60},
        }
    ],
}


@pytest.fixture
def alert_ns(stack_installed: LocalCluster) -> Iterator[str]:
    ns = f"a-{uuid.uuid4().hex[:8]}"
    stack_installed.kubectl("create", "namespace", ns)
    yield ns
    stack_installed.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def receiver(
    stack_installed: LocalCluster, alert_ns: str, tmp_path: Path
) -> Iterator[ReceiverThread]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    # The routes' runs go to alert_ns (an alert label never picks the namespace of a run).
    cfg = {
        **RECEIVER_CONFIG,
        "routes": [{**r, "namespace": alert_ns} for r in RECEIVER_CONFIG["routes"]],
        "api": {"agents": ["sre-agent"], "namespace": alert_ns},
        "auth": {"tokenFile": str(token_file), "tokenEnv": "UNSET_X"},
    }
    recv = ReceiverThread(cfg, stack_installed.kubeconfig)
    recv.start()
    yield recv
    recv.stop()


def runs(cluster: LocalCluster, ns: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "agentruns", "-n", ns, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_prometheus_alert_through_alertmanager_makes_one_run(
    stack_installed: LocalCluster,
    alert_ns: str,
    receiver: ReceiverThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alerting.ensure_installed()
    am = Alertmanager(tmp_path / "am")
    prom = Prometheus(tmp_path / "prom")
    try:
        am.start(f"{receiver.url}/alertmanager", TOKEN)
        t0 = time.monotonic()
        prom.start(am.url, [rule(alert_ns)])
        fired = wait_for(prom.firing, 30, "the rule to fire in Prometheus")
        t_fired = time.monotonic()
        assert fired[0]["labels"]["alertname"] == "KubePodCrashLooping"

        try:
            (run,) = wait_for(lambda: runs(stack_installed, alert_ns), 60, "an AgentRun")
        except TimeoutError:
            raise AssertionError(
                f"no AgentRun; alertmanager log:\n{am.log_tail()}\nprometheus log:\n"
                f"{prom.log_tail()}"
            ) from None
        t_created = time.monotonic()

        meta, spec = run["metadata"], run["spec"]
        assert spec["agentRef"] == "sre-agent"
        assert spec["input"]["task"] == (
            f"Pod {POD} in namespace {alert_ns} is crash looping: Pod {alert_ns}/{POD} "
            "(checkout) is in waiting state (reason: CrashLoopBackOff). Find out why."
        )
        alert = spec["input"]["context"]["alert"]
        assert alert["status"] == "firing"
        assert alert["labels"] == {"alertname": "KubePodCrashLooping", **rule(alert_ns)["labels"]}
        assert alert["annotations"] == rule(alert_ns)["annotations"]
        assert alert["generatorURL"].startswith(prom.url) and alert["startsAt"]
        assert len(alert["fingerprint"]) == 16
        assert alert["commonLabels"]["alertname"] == "KubePodCrashLooping"
        group_key = meta["annotations"][routing.ANNOTATION_GROUP_KEY]
        assert "KubePodCrashLooping" in group_key and alert_ns in group_key
        assert meta["labels"][routing.LABEL_ALERT_GROUP] == routing.group_hash(group_key)
        assert meta["labels"][routing.LABEL_ALERT_SEQ] == "1"
        assert meta["annotations"][routing.ANNOTATION_FINGERPRINTS] == alert["fingerprint"]
        assert meta["name"] == routing.run_name(group_key, "crashloop", 1, "KubePodCrashLooping")

        # Alertmanager repeats the notification (repeat_interval 2s): no second run.
        wait_for(
            lambda: receiver.metric("agentrun_receiver_deduplicated_total") >= 2,
            30,
            "two repeat notifications",
        )
        t_repeats = time.monotonic()
        (same,) = runs(stack_installed, alert_ns)
        assert same["metadata"]["uid"] == meta["uid"]
        notes = same["metadata"]["annotations"]
        assert int(notes[routing.ANNOTATION_NOTIFICATIONS]) >= 3
        assert notes[routing.ANNOTATION_LAST_NOTIFIED]
        assert receiver.metric("agentrun_receiver_runs_created_total") == 1

        # Resolve: the rule stops matching; Prometheus reloads; Alertmanager sends "resolved".
        prom.write_rules([rule(alert_ns, expr="vector(1) > 1")])
        t_resolve = time.monotonic()
        prom.reload()

        def resolved() -> dict[str, Any] | None:
            items = runs(stack_installed, alert_ns)
            annotations = items[0]["metadata"]["annotations"] if items else {}
            return items[0] if routing.ANNOTATION_RESOLVED_AT in annotations else None

        done = wait_for(resolved, 60, "the resolution recorded on the run")
        t_resolved = time.monotonic()
        notes = done["metadata"]["annotations"]
        assert notes[routing.ANNOTATION_RESOLVED_FINGERPRINTS] == alert["fingerprint"]
        assert notes[routing.ANNOTATION_RESOLVED_AT] > alert["startsAt"]
        assert len(runs(stack_installed, alert_ns)) == 1
        assert receiver.metric("agentrun_receiver_runs_created_total") == 1
        assert receiver.metric("agentrun_receiver_requests_total", code="200") >= 4
        assert receiver.metric("agentrun_receiver_requests_total", code="401") == 0
        with capsys.disabled():
            print(
                f"\n[alerts] prometheus up->firing {t_fired - t0:.1f}s, "
                f"firing->AgentRun {t_created - t_fired:.1f}s, "
                f"+2 repeats {t_repeats - t_created:.1f}s, "
                f"rule removed->resolved recorded {t_resolved - t_resolve:.1f}s"
            )
    finally:
        prom.stop()
        am.stop()


def _post(
    url: str, body: bytes, token: str | None = TOKEN, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _notification(ns: str, alertname: str = "KubePodCrashLooping") -> dict[str, Any]:
    labels = {"alertname": alertname, **rule(ns)["labels"]}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}", namespace="{ns}"}}',
        "status": "firing",
        "receiver": "agentrun",
        "groupLabels": {"alertname": alertname, "namespace": ns},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "s"},
                "startsAt": "2024-05-01T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus",
                "fingerprint": "0123456789abcdef",
            }
        ],
    }


def test_bad_input_is_refused_clearly_and_creates_nothing(
    stack_installed: LocalCluster, alert_ns: str, receiver: ReceiverThread
) -> None:
    url = f"{receiver.url}/alertmanager"
    good = json.dumps(_notification(alert_ns)).encode()
    huge = json.dumps({**_notification(alert_ns), "pad": "x" * (1024 * 1024)}).encode()
    unmatched = json.dumps(_notification(alert_ns, "DiskFull")).encode()
    cases = [
        ("wrong token", _post(url, good, token="wrong"), 401, "Unauthorized"),
        ("no token", _post(url, good, token=None), 401, "Unauthorized"),
        (
            "malformed JSON",
            _post(url, b'{"version": "4", "alerts": [', TOKEN),
            400,
            "MalformedJSON",
        ),
        ("not a v4 payload", _post(url, b'{"version": "3"}'), 400, "InvalidPayload"),
        ("oversized body", _post(url, huge), 413, "PayloadTooLarge"),
        ("unmatched alert", _post(url, unmatched), 422, "Unrouted"),
    ]
    for what, (status, body), code, error in cases:
        assert (status, body.get("error")) == (code, error), f"{what}: {status} {body}"
        assert body["message"], what
    assert runs(stack_installed, alert_ns) == []
    assert cases[-1][1][1]["unrouted"][0]["labels"]["alertname"] == "DiskFull"
    assert "1048576 bytes" in cases[4][1][1]["message"]

    # Still serving: a good notification creates its run, once.
    for _ in range(2):
        status, body = _post(url, good)
        assert status == 200, body
    (run,) = runs(stack_installed, alert_ns)
    assert run["spec"]["input"]["context"]["alert"]["fingerprint"] == "0123456789abcdef"

    # The generic endpoint, on the real API.
    req = {"agent": "sre-agent", "task": "Check the nightly backup.", "namespace": alert_ns}
    status, body = _post(f"{receiver.url}/runs", json.dumps(req).encode())
    assert status == 422 and body["error"] == "AgentNotFound"
    stack_installed.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "agentrun.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "sre-agent", "namespace": alert_ns},
                "spec": {"model": {"name": "m"}},
            }
        ),
    )
    status, body = _post(f"{receiver.url}/runs", json.dumps(req).encode())
    assert status == 201, body
    assert len(runs(stack_installed, alert_ns)) == 2
