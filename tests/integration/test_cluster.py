"""The local control plane behaves like a cluster: API, controllers, scheduler, node, RBAC."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.cluster import Kubectl, LocalCluster


def apply(kubectl: Kubectl, namespace: str, *docs: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))


def pod_json(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
    )
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def wait_phase(kubectl: Kubectl, namespace: str, pod: str, phase: str, timeout: int = 60) -> None:
    kubectl(
        "wait",
        "-n",
        namespace,
        f"pod/{pod}",
        f"--for=jsonpath={{.status.phase}}={phase}",
        f"--timeout={timeout}s",
    )


def pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
            **spec,
        },
    }


def job(name: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}
                    ],
                }
            },
        },
    }


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_server_version_is_1_20_2(kubectl: Kubectl) -> None:
    out = json.loads(kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == "v1.20.2"


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.agentrun.dev"},
    "spec": {
        "group": "test.agentrun.dev",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
        },
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_with_status_subresource_and_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(CRD))
    kubectl("wait", "--for=condition=established", "crd/widgets.test.agentrun.dev", "--timeout=30s")
    widget = {
        "apiVersion": "test.agentrun.dev/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 2, "color": "red"},
    }
    # discovery of a fresh CRD can lag a moment behind Established
    wait_until(
        lambda: (
            kubectl(
                "apply", "-n", namespace, "-f", "-", input=json.dumps(widget), check=False
            ).returncode
            == 0
        ),
        15,
        "the Widget to be accepted",
    )
    bad = {**widget, "metadata": {"name": "w2"}, "spec": {"size": 0, "color": "green"}}
    # --validate=false: the apiserver must refuse it, not kubectl's client-side check
    server = ("apply", "--validate=false", "-n", namespace, "-f", "-")
    refused = kubectl(*server, input=json.dumps(bad), check=False)
    assert refused.returncode != 0
    assert "is invalid" in refused.stderr, refused.stderr
    assert "spec.size" in refused.stderr and "spec.color" in refused.stderr
    missing = {**widget, "metadata": {"name": "w3"}, "spec": {"color": "blue"}}
    refused = kubectl(*server, input=json.dumps(missing), check=False)
    assert refused.returncode != 0 and "spec.size: Required value" in refused.stderr

    # status only changes through the subresource
    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ignored"}}',
    )
    assert "Ignored" not in kubectl("get", "widget", "w1", "-n", namespace, "-o", "json").stdout
    kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ready"}}',
    )
    table = kubectl("get", "wd", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "SIZE", "PHASE"]
    assert table[1].split()[:3] == ["w1", "2", "Ready"]


NOTES_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "notes.test.agentrun.dev"},
    "spec": {
        "group": "test.agentrun.dev",
        "scope": "Namespaced",
        "names": {"plural": "notes", "singular": "note", "kind": "Note"},
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"text": {"type": "string"}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {"message": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_custom_resource_empty_string_is_stored_as_empty_string(
    kubectl: Kubectl, namespace: str
) -> None:
    # Regression: built with Go >= 1.16, kube-openapi's validator took "" for null and
    # refused it with `Invalid value: "null": ... must be of type string` (build.sh patches it).
    kubectl("apply", "-f", "-", input=json.dumps(NOTES_CRD))
    kubectl("wait", "--for=condition=established", "crd/notes.test.agentrun.dev", "--timeout=30s")
    note = {
        "apiVersion": "test.agentrun.dev/v1alpha1",
        "kind": "Note",
        "metadata": {"name": "n1"},
        "spec": {"text": ""},
    }
    last_error = [""]

    def created() -> bool:
        done = kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(note), check=False)
        last_error[0] = done.stderr
        # discovery of a fresh CRD can lag a moment behind Established; a 422 is final
        return done.returncode == 0 or "is invalid" in done.stderr

    wait_until(created, 15, "the Note to be created")
    assert "is invalid" not in last_error[0], last_error[0]
    kubectl(
        "patch",
        "note",
        "n1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"message": ""}}),
    )
    stored = json.loads(kubectl("get", "note", "n1", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"] == {"text": ""}
    assert stored["status"] == {"message": ""}
    # and survives (and may be set by) an update of the main resource
    touch = {"metadata": {"labels": {"touched": "yes"}}, "spec": {"text": ""}}
    kubectl("patch", "note", "n1", "-n", namespace, "--type=merge", "-p", json.dumps(touch))
    stored = json.loads(kubectl("get", "note", "n1", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"] == {"text": ""} and stored["status"] == {"message": ""}


def test_job_completes_and_its_log_is_served(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, job("hello", "echo hello; exit 0"))
    kubectl("wait", "-n", namespace, "--for=condition=complete", "job/hello", "--timeout=60s")
    assert kubectl("logs", "-n", namespace, "job/hello").stdout == "hello\n"
    name = kubectl(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        "job-name=hello",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout
    terminated = pod_json(kubectl, namespace, name)["status"]["containerStatuses"][0]["state"]
    assert terminated["terminated"]["reason"] == "Completed"
    # the Python client reads the same log
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))  # type: ignore[no-untyped-call]
    assert api.read_namespaced_pod_log(name, namespace) == "hello\n"
    assert api.read_namespaced_pod_log(name, namespace, tail_lines=1) == "hello\n"


def test_failing_command_fails_the_job_with_its_exit_code(kubectl: Kubectl, namespace: str) -> None:
    spec = job("boom", "echo about to fail >&2; exit 3")
    spec["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = (
        "FallbackToLogsOnError"
    )
    apply(kubectl, namespace, spec)
    kubectl("wait", "-n", namespace, "--for=condition=failed", "job/boom", "--timeout=60s")
    pods = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", "job-name=boom", "-o", "json").stdout
    )["items"]
    assert len(pods) == 1
    assert pods[0]["status"]["phase"] == "Failed"
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "about to fail"


def test_command_not_found_fails_the_pod_clearly(kubectl: Kubectl, namespace: str) -> None:
    spec = pod("missing", "")
    spec["spec"]["containers"][0]["command"] = ["no-such-command-agentrun"]
    apply(kubectl, namespace, spec)
    wait_phase(kubectl, namespace, "missing", "Failed")
    status = pod_json(kubectl, namespace, "missing")["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "ContainerCannotRun"
    assert "no-such-command-agentrun" in terminated["message"]


def test_env_values_and_field_refs(kubectl: Kubectl, namespace: str) -> None:
    spec = pod("env", 'echo "$GREETING $POD_NAME/$POD_NS $HOME_SET"')
    spec["spec"]["containers"][0]["env"] = [
        {"name": "GREETING", "value": "hi"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOME_SET", "value": "$(GREETING)-x"},
    ]
    apply(kubectl, namespace, spec)
    wait_phase(kubectl, namespace, "env", "Succeeded")
    assert kubectl("logs", "-n", namespace, "env").stdout == f"hi env/{namespace} hi-x\n"


def test_pods_run_with_their_own_serviceaccount_under_rbac(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    rbac = textwrap.dedent(
        """
        apiVersion: v1
        kind: ServiceAccount
        metadata: {name: reader}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata: {name: pod-reader}
        rules:
        - apiGroups: [""]
          resources: [pods]
          verbs: [get, list, watch]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {name: reader-reads-pods}
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
        subjects:
        - {kind: ServiceAccount, name: reader}
        """
    )
    kubectl("apply", "-n", namespace, "-f", "-", input=rbac)
    cluster.wait_for_serviceaccount(namespace, "reader")
    apply(
        kubectl,
        namespace,
        pod("secrets", "kubectl get secrets", serviceAccountName="reader"),
        pod("pods", "kubectl get pods -o name", serviceAccountName="reader"),
        pod(
            "nocreds",
            "echo KUBECONFIG=${KUBECONFIG:-none}",
            serviceAccountName="reader",
            automountServiceAccountToken=False,
        ),
    )
    wait_phase(kubectl, namespace, "secrets", "Failed")
    log = kubectl("logs", "-n", namespace, "secrets").stdout
    assert "Forbidden" in log
    assert f"system:serviceaccount:{namespace}:reader" in log
    wait_phase(kubectl, namespace, "pods", "Succeeded")
    assert "pod/pods" in kubectl("logs", "-n", namespace, "pods").stdout
    wait_phase(kubectl, namespace, "nocreds", "Succeeded")
    assert kubectl("logs", "-n", namespace, "nocreds").stdout == "KUBECONFIG=none\n"


def test_active_deadline_kills_the_process(kubectl: Kubectl, namespace: str) -> None:
    # "$$$$": Kubernetes reduces "$$" to "$" in commands, so the shell sees "$$" (its pid)
    apply(kubectl, namespace, pod("sleepy", "echo $$$$; exec sleep 300", activeDeadlineSeconds=2))
    wait_phase(kubectl, namespace, "sleepy", "Failed", timeout=30)
    status = pod_json(kubectl, namespace, "sleepy")["status"]
    assert status["reason"] == "DeadlineExceeded"
    pid = int(kubectl("logs", "-n", namespace, "sleepy").stdout.split()[0])
    assert not pid_alive(pid)


def test_deployment_pod_becomes_ready_and_deletion_kills_it(
    kubectl: Kubectl, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx",
                            "command": ["sh", "-c", "echo $$$$; exec sleep 3600"],
                        }
                    ],
                },
            },
        },
    }
    apply(kubectl, namespace, deployment)
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    pods = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout
    )["items"]
    assert len(pods) == 1
    first = pods[0]
    ready = {c["type"]: c["status"] for c in first["status"]["conditions"]}
    assert first["status"]["phase"] == "Running" and ready["Ready"] == "True"
    name = first["metadata"]["name"]
    wait_until(
        lambda: kubectl("logs", "-n", namespace, name).stdout.strip() != "", 10, "the pod's log"
    )
    pid = int(kubectl("logs", "-n", namespace, name).stdout.split()[0])
    assert pid_alive(pid)
    kubectl("delete", "pod", "-n", namespace, name, "--timeout=30s")
    assert not pid_alive(pid)
    # the ReplicaSet replaces it
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    wait_until(
        lambda: (
            kubectl(
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ).stdout
            not in ("", name)
        ),
        30,
        "a replacement pod",
    )


def test_kubectl_logs_follow_streams_until_the_process_ends(
    kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, pod("ticker", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"))
    wait_until(
        lambda: (
            pod_json(kubectl, namespace, "ticker")["status"].get("phase")
            in ("Running", "Succeeded")
        ),
        30,
        "the ticker to start",
    )
    out = kubectl("logs", "-f", "-n", namespace, "ticker", timeout=30).stdout
    assert out == "tick 1\ntick 2\ntick 3\n"
    assert kubectl("logs", "--tail=1", "-n", namespace, "ticker").stdout == "tick 3\n"
    previous = kubectl("logs", "-p", "-n", namespace, "ticker", check=False)
    assert previous.returncode != 0
