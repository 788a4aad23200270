"""Tool Jobs exactly as the operator builds them, run from the image ``make image`` built,
on a real kubelet (containerd, runc): the securityContext, the resource limits, the API
through the ``kubernetes`` Service, and the node's network isolation are enforced for real.
Tier: real node (the stand-in node runs commands as local processes and enforces none of
this)."""

from __future__ import annotations

import socket

import pytest

from agentrun.engine.core import JobPhase
from agentrun.operator.jobs import TOOL_UID, job_observation, parse_envelope
from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode
from tests.realnode.jobs import group_manifest, job_manifest, run_job, tool

READER_RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: {ns}}}
rules:
- apiGroups: [""]
  resources: [configmaps, events]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]
"""


def test_builtin_tool_runs_in_the_image_and_reads_the_api_through_the_service(
    realnode: RealNode, real_cluster: LocalCluster, real_namespace: str
) -> None:
    ns = real_namespace
    real_cluster.kubectl("apply", "-f", "-", input=READER_RBAC.format(ns=ns))
    real_cluster.wait_for_serviceaccount(ns, "reader")
    real_cluster.kubectl("create", "configmap", "probe", "-n", ns, "--from-literal=answer=42")
    snapshot = tool(realnode.image, ["agentrun-tool"], builtin="k8s-get", service_account="reader")
    job = job_manifest(ns, "get-probe", snapshot, {"kind": "ConfigMap", "name": "probe"})

    finished, pod, log = run_job(real_cluster, job)

    assert pod["spec"]["nodeName"] == realnode.name
    assert pod["spec"]["containers"][0]["image"] == realnode.image
    envelope = parse_envelope(log)  # the log came through `kubectl logs`
    assert envelope is not None, log
    assert envelope.ok, envelope.error
    assert "42" in str(envelope.output)  # read in-cluster: KUBERNETES_SERVICE_HOST, kube-proxy
    seen = job_observation(finished, pod, log, None)
    assert seen.phase is JobPhase.SUCCEEDED and seen.ok


SECURITY_PROBE = """
echo "uid=$(id -u) gid=$(id -g)"
touch /probe 2>&1 || true
echo scratch > /tmp/scratch && echo "tmp writable"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
"""


def test_tool_job_security_context_is_enforced(
    realnode: RealNode, real_cluster: LocalCluster, real_namespace: str
) -> None:
    snapshot = tool(realnode.image, ["sh", "-c", SECURITY_PROBE])
    job = job_manifest(real_namespace, "security-probe", snapshot, {})

    _finished, pod, log = run_job(real_cluster, job)

    assert pod["status"]["phase"] == "Succeeded", log
    assert f"uid={TOOL_UID} gid={TOOL_UID}" in log
    assert "touch: cannot touch '/probe': Read-only file system" in log
    assert "tmp writable" in log  # the Job's emptyDir on /tmp
    fields = dict(line.split(":\t", 1) for line in log.splitlines() if ":\t" in line)
    assert fields["CapEff"] == "0000000000000000"  # capabilities: drop ALL
    assert fields["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert fields["Seccomp"] == "2"  # seccompProfile RuntimeDefault (filter mode)


def test_tool_over_its_memory_limit_is_oom_killed(
    realnode: RealNode, real_cluster: LocalCluster, real_namespace: str
) -> None:
    hog = "x = bytearray(256 * 1024 * 1024); print('allocated', len(x))"
    snapshot = tool(realnode.image, ["python3", "-c", hog], memory="64Mi")
    job = job_manifest(real_namespace, "memory-hog", snapshot, {})

    finished, pod, log = run_job(real_cluster, job)

    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (state["reason"], state["exitCode"]) == ("OOMKilled", 137), state
    assert "allocated" not in log
    seen = job_observation(finished, pod, log, None)
    assert seen.phase is JobPhase.FAILED
    assert "exit code 137" in seen.message and "OOMKilled" in seen.message, seen


REACH = """
import socket, sys
for host, port in (("10.0.0.1", 443), (sys.argv[1], int(sys.argv[2]))):
    try:
        socket.create_connection((host, port), timeout=3).close()
        print(host, "reached")
    except OSError as e:
        print(host, "blocked", e)
"""


def test_pod_traffic_never_leaves_the_node(
    realnode: RealNode, real_cluster: LocalCluster, real_namespace: str
) -> None:
    # a listener on the host's end of the node's veth: the nearest address outside the node
    with socket.create_server((realnode.host_ip, 0)) as listener:
        port = listener.getsockname()[1]
        snapshot = tool(realnode.image, ["python3", "-c", REACH, realnode.host_ip, str(port)])
        job = job_manifest(real_namespace, "reach", snapshot, {})

        _, pod, log = run_job(real_cluster, job)

        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection ever got through
    assert pod["status"]["phase"] == "Succeeded", log
    assert "10.0.0.1 reached" in log  # the kubernetes Service (positive control)
    assert f"{realnode.host_ip} blocked" in log


GROUPED_PROBE = """
echo "uid=$(id -u) gid=$(id -g)"
touch /probe 2>&1 || true
echo mine > /tmp/mine && echo "tmp writable"
sleep 3
ls /tmp | tr '\\n' ' '; echo "<- tmp"
ls /proc | grep -c '^[0-9]' | sed 's/^/pids: /'
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
"""


def test_a_grouped_job_runs_each_call_in_its_own_container_and_an_oom_is_its_own(
    realnode: RealNode, real_cluster: LocalCluster, real_namespace: str
) -> None:
    probe = tool(realnode.image, ["sh", "-c", GROUPED_PROBE])
    hog = "import time; time.sleep(1); x = bytearray(256 * 1024 * 1024); print('allocated')"
    hogging = tool(realnode.image, ["python3", "-c", hog], memory="64Mi")
    job = group_manifest(real_namespace, "grouped", [(probe, "a"), (hogging, "b"), (probe, "c")])

    finished, pod, logs = run_job(real_cluster, job)
    first, oom, third = logs.split("\0")

    # The pod failed (one container did), but each call has the outcome of its own container.
    assert pod["status"]["phase"] == "Failed"
    seen = [
        job_observation(finished, pod, log, None, container=f"tool-{i}")
        for i, log in enumerate((first, oom, third))
    ]
    assert [s.phase for s in seen] == [JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.SUCCEEDED]
    assert seen[1].reason == "OOMKilled" and "exit code 137" in seen[1].message
    assert "allocated" not in oom
    for log in (first, third):
        # Each container under the tool's own security context, with a /tmp of its own.
        assert f"uid={TOOL_UID} gid={TOOL_UID}" in log
        assert "Read-only file system" in log and "tmp writable" in log
        assert "mine <- tmp" in log  # only its own file: no /tmp is shared
        fields = dict(line.split(":\t", 1) for line in log.splitlines() if ":\t" in line)
        assert (fields["CapEff"], fields["NoNewPrivs"], fields["Seccomp"]) == (
            "0000000000000000",
            "1",
            "2",
        )
        # No shared process namespace: only its own shell and its children are visible.
        pids = int(next(line for line in log.splitlines() if line.startswith("pids: "))[6:])
        assert pids < 6, log
