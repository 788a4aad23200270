"""alert-workload: from an alert's labels to the workload, whatever labels the alert has.

The API is an in-memory dict of objects by path (label selectors matched by equality); the
real walk, under the read ServiceAccount, is in tests/integration/test_tools.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from agentrun.tool.builtins import alert_workload, recent_deploys
from agentrun.tool.builtins.common import api_path
from agentrun.tool.runner import execute

NS = "shop"


def meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "uid": f"uid-{name}", **extra}


def owner(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}]


def pod(
    name: str, labels: dict[str, str], owned: list[dict[str, Any]] | None = None, **kw: Any
) -> dict[str, Any]:
    status = kw.pop("status", {"phase": "Running"})
    return {
        "kind": "Pod",
        "metadata": meta(name, labels=labels, ownerReferences=owned or []),
        "spec": {"containers": [{"name": "app", "image": "app:1"}], **kw},
        "status": status,
    }


CRASHING = {
    "phase": "Running",
    "containerStatuses": [
        {
            "name": "app",
            "ready": False,
            "restartCount": 7,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
        }
    ],
}


def deployment(name: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": meta(name, annotations={"deployment.kubernetes.io/revision": "2"}),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": f"{name}:2", "env": [{"name": "DB_URL"}]}
                    ]
                }
            },
        },
        "status": {
            "readyReplicas": 0,
            "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicas"}],
        },
    }


def replicaset(name: str, deploy: str, revision: str, image: str) -> dict[str, Any]:
    return {
        "kind": "ReplicaSet",
        "metadata": meta(
            name,
            labels={"app": deploy},
            annotations={"deployment.kubernetes.io/revision": revision},
            ownerReferences=owner("Deployment", deploy),
            creationTimestamp=f"2025-06-0{revision}T00:00:00Z",
        ),
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "app", "image": image}]}},
        },
        "status": {},
    }


class FakeApi:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        for o in objs:
            self.add(o)

    def add(self, obj: dict[str, Any]) -> None:
        version, plural = alert_workload.PATHS[obj["kind"]]
        path = api_path(version, plural, NS, obj["metadata"]["name"])
        self.objects[path] = obj

    def request(self, method: str, path: str, query: Any = None, **_: Any) -> dict[str, Any]:
        self.calls.append(path)
        if path in self.objects:
            return dict(self.objects[path])
        plurals = {plural for _, plural in alert_workload.PATHS.values()} | {"controllerrevisions"}
        if path.rsplit("/", 1)[1] not in plurals:  # a named object that is not there
            raise ApiException(status=404, reason="Not Found")
        items = [o for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
        selector = dict(query or []).get("labelSelector")
        if selector:
            want = dict(part.split("=", 1) for part in selector.split(","))
            items = [
                o
                for o in items
                if want.items() <= ((o.get("metadata") or {}).get("labels") or {}).items()
            ]
        return {"items": [{k: v for k, v in o.items() if k != "kind"} for o in items]}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(alert_workload, "request", fake.request)
    monkeypatch.setattr(
        recent_deploys,
        "get_object",
        lambda p, w, query=None: fake.request("GET", p, query),
    )
    monkeypatch.setenv("AGENTRUN_NAMESPACE", "ops")
    return fake


def checkout(api: FakeApi) -> None:
    api.add(deployment("checkout"))
    api.add(replicaset("checkout-6f7d9c8b5", "checkout", "2", "checkout:2"))
    api.add(replicaset("checkout-84c5d7f9d", "checkout", "1", "checkout:1"))
    api.add(
        pod(
            "checkout-6f7d9c8b5-q2xvn",
            {"app": "checkout"},
            owner("ReplicaSet", "checkout-6f7d9c8b5"),
            status=CRASHING,
        )
    )


KSM = {"job": "kube-state-metrics", "service": "kube-state-metrics", "namespace": NS}


def test_a_pod_label_resolves_to_its_deployment_with_the_pod_state_and_rollouts(
    api: FakeApi,
) -> None:
    checkout(api)
    labels = {"alertname": "KubePodCrashLooping", "pod": "checkout-6f7d9c8b5-q2xvn", **KSM}
    out = alert_workload.run({"labels": labels})
    assert out["resolvedFrom"] == "pod=checkout-6f7d9c8b5-q2xvn"
    assert out["ownerChain"] == [
        "Pod/checkout-6f7d9c8b5-q2xvn",
        "ReplicaSet/checkout-6f7d9c8b5",
        "Deployment/checkout",
    ]
    assert out["summary"].startswith("Deployment shop/checkout: 0/1 ready")
    [container] = out["pod"]["containers"]
    assert container["lastTerminated"] == {"reason": "Error", "exitCode": 1}
    assert out["workload"]["failingConditions"][0]["type"] == "Available"
    assert out["workload"]["containers"][0]["image"] == "checkout:2"
    deploys = out["recentDeploys"]
    assert deploys["currentRevision"] == 2 and "checkout:1 -> checkout:2" in deploys["summary"]
    # The exporter's service label was never needed, so never looked up.
    assert not any("services" in c for c in api.calls) and "unresolved" not in out


def test_labels_that_name_nothing_are_reported_and_the_next_one_is_tried(api: FakeApi) -> None:
    checkout(api)
    labels = {"alertname": "KubeDeploymentReplicasMismatch", "deployment": "gone", **KSM}
    labels["statefulset"] = "nope"
    labels["job_name"] = "checkout"  # no Job of that name either
    out = alert_workload.run({"labels": labels})
    assert out["summary"].startswith("No workload found in namespace shop")
    assert out["labelsTried"] == ["deployment", "statefulset", "job_name", "service"]
    assert out["unresolved"] == [
        "deployment=gone: Deployment shop/gone not found",
        "statefulset=nope: StatefulSet shop/nope not found",
        "job_name=checkout: Job shop/checkout not found",
        "service=kube-state-metrics: Service shop/kube-state-metrics not found (on "
        "kube-state-metrics and node alerts this label names the scraped exporter, not the "
        "workload)",
    ]
    labels["daemonset"] = "checkout"
    labels["deployment"] = "checkout"
    out = alert_workload.run({"labels": labels})
    assert out["resolvedFrom"] == "deployment=checkout" and "unresolved" not in out
    assert out["pod"]["summary"].startswith("Pod shop/checkout-6f7d9c8b5-q2xvn")  # least healthy


def test_no_label_at_all_is_an_answer_not_an_error(api: FakeApi) -> None:
    envelope, code = execute(["alert-workload", '{"labels": {"alertname": "Watchdog"}}'])
    assert code == 0 and envelope.ok
    assert envelope.output == {
        "summary": "No workload found in namespace ops from the alert's labels: the alert has "
        "none of the labels pod, deployment, statefulset, daemonset, job_name, "
        "persistentvolumeclaim, service",
        "labelsTried": [],
    }
    assert api.calls == []


def test_a_replaced_pod_is_matched_to_its_controller_by_name(api: FakeApi) -> None:
    checkout(api)
    out = alert_workload.run({"labels": {"pod": "checkout-6f7d9c8b5-zzzzz", "namespace": NS}})
    assert out["resolvedFrom"] == "pod=checkout-6f7d9c8b5-zzzzz"
    assert out["ownerChain"] == ["Deployment/checkout"]
    assert out["notes"][0] == (
        "Pod checkout-6f7d9c8b5-zzzzz no longer exists; Deployment checkout is named like it"
    )
    out = alert_workload.run({"labels": {"pod": "nothing-like-it", "namespace": NS}})
    assert out["unresolved"] == [
        "pod=nothing-like-it: Pod shop/nothing-like-it not found, and no Deployment, "
        "StatefulSet or DaemonSet is named like it"
    ]


def test_a_claim_resolves_through_the_pod_that_mounts_it(api: FakeApi) -> None:
    api.add(
        {
            "kind": "StatefulSet",
            "metadata": meta("postgres"),
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pg"}}, "template": {}},
            "status": {"readyReplicas": 1},
        }
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-postgres-0"}}]
    api.add(pod("postgres-0", {"app": "pg"}, owner("StatefulSet", "postgres"), volumes=volumes))
    api.add(pod("web-1", {"app": "web"}))
    out = alert_workload.run(
        {
            "labels": {"persistentvolumeclaim": "data-postgres-0", "service": "kubelet"},
            "namespace": NS,
        }
    )
    assert out["ownerChain"] == ["Pod/postgres-0", "StatefulSet/postgres"]
    assert out["resolvedFrom"] == "persistentvolumeclaim=data-postgres-0"
    out = alert_workload.run({"labels": {"persistentvolumeclaim": "other"}, "namespace": NS})
    assert out["unresolved"] == [
        "persistentvolumeclaim=other: no pod in namespace shop mounts PersistentVolumeClaim other"
    ]


def test_a_service_resolves_to_its_pods_or_says_it_has_none(api: FakeApi) -> None:
    checkout(api)
    api.add(
        {
            "kind": "Service",
            "metadata": meta("checkout"),
            "spec": {"selector": {"app": "checkout"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )
    api.add(
        {
            "kind": "Service",
            "metadata": meta("inventory"),
            "spec": {"selector": {"app": "inventory"}, "ports": [{"port": 80, "targetPort": 9}]},
        }
    )
    out = alert_workload.run(
        {"labels": {"service": "checkout", "job": "checkout"}, "namespace": NS}
    )
    assert out["ownerChain"][-1] == "Deployment/checkout"
    assert out["service"]["ports"] == ["80->8080"]
    out = alert_workload.run({"labels": {"service": "inventory"}, "namespace": NS})
    assert out["ownerChain"] == ["Service/inventory"]
    assert out["notes"] == ["no pod matches selector app=inventory"]
    assert out["workload"]["selector"] == {"app": "inventory"}


def test_forbidden_is_reported_per_label(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: Any, **__: Any) -> dict[str, Any]:
        raise ApiException(status=403, reason="Forbidden", body='{"message": "no"}')

    monkeypatch.setattr(alert_workload, "request", forbidden)
    out = alert_workload.run({"labels": {"deployment": "x", "namespace": "prod"}})
    assert out["unresolved"] == [
        "deployment=x: forbidden: the tool's ServiceAccount may not access Deployment x in "
        "namespace prod: no"
    ]


def test_labels_are_bounded_strings() -> None:
    labels = {"pod": "p", "n": 3, "b": True, "l": ["x"], "e": " ", "long": "x" * 300}
    assert alert_workload.clean_labels(labels) == {"pod": "p", "n": "3", "long": "x" * 253}
