"""Tool Jobs as the operator builds them (``agentrun.operator.jobs.build_job``), run on the
real node, and what the operator would observe of them."""

from __future__ import annotations

import json
import time
from typing import Any

from agentrun.api import Effect, ToolSnapshot
from agentrun.operator.jobs import GroupCall, build_group_job, build_job
from tests.cluster import LocalCluster
from tests.cluster.kube import ApiError, KubeClient


def tool(
    image: str,
    command: list[str],
    *,
    builtin: str | None = None,
    memory: str = "256Mi",
    service_account: str = "default",
) -> ToolSnapshot:
    return ToolSnapshot.model_validate(
        {
            "builtin": builtin,
            "effect": Effect.READ,
            "image": image,
            "command": command,
            "serviceAccountName": service_account,
            "resources": {
                "requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"cpu": "1", "memory": memory},
            },
            "timeoutSeconds": 120,
            "outputLimitBytes": 65536,
            "specDigest": "test",
        }
    )


def job_manifest(
    namespace: str, name: str, snapshot: ToolSnapshot, arguments: dict[str, Any]
) -> dict[str, Any]:
    job = build_job(
        run_name=name,
        run_namespace=namespace,
        run_uid="00000000-0000-0000-0000-000000000000",
        step=1,
        tool_name=snapshot.builtin or "probe",
        tool=snapshot,
        arguments=arguments,
        job_name=name,
        action_hash="test",
    )
    # no AgentRun exists here: without its owner the garbage collector would delete the Job
    job["metadata"].pop("ownerReferences", None)
    return job


def group_manifest(
    namespace: str, name: str, calls: list[tuple[ToolSnapshot, str]]
) -> dict[str, Any]:
    """A grouped Job as the operator builds it: a container per (snapshot, argument)."""
    job = build_group_job(
        run_name=name,
        run_namespace=namespace,
        run_uid="00000000-0000-0000-0000-000000000000",
        job_name=name,
        calls=[
            GroupCall(f"tool-{i}", 1 + i, "probe", snapshot, {"arg": arg}, "test")
            for i, (snapshot, arg) in enumerate(calls)
        ],
    )
    job["metadata"].pop("ownerReferences", None)  # no AgentRun here (see job_manifest)
    return job


def run_job(
    cluster: LocalCluster, job: dict[str, Any], timeout: float = 120
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Create the Job, wait until it is Complete or Failed; (job, its pod, the pod's log
    read with ``kubectl logs``; of a grouped Job, its containers' logs joined by NUL)."""
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
    api = KubeClient.from_kubeconfig(cluster.kubeconfig)
    deadline = time.monotonic() + timeout
    while True:
        current = api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
        conds = current.get("status", {}).get("conditions") or []
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds):
            break
        if time.monotonic() > deadline:
            pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
            raise AssertionError(f"Job {ns}/{name} did not finish in {timeout}s: {pods}")
        time.sleep(0.2)
    pods = api.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"job-name={name}")["items"]
    assert len(pods) == 1, pods
    containers = job["spec"]["template"]["spec"]["containers"]
    if len(containers) > 1:  # a grouped Job: each container's log, one after the other
        logs = [
            cluster.kubectl("logs", "-n", ns, f"job/{name}", "-c", c["name"], check=False).stdout
            for c in containers
        ]
        return current, pods[0], "\0".join(logs)
    log = cluster.kubectl("logs", "-n", ns, f"job/{name}", check=False).stdout
    return current, pods[0], log


def wait_deleted(api: KubeClient, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.get(path)
        except ApiError as e:
            if e.status == 404:
                return
        time.sleep(0.2)
    raise AssertionError(f"{path} still exists after {timeout}s")
