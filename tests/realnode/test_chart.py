"""charts/agentrun installed with the image `make image` built, on the real node: the
operator runs as a container under its ServiceAccount, the apiserver reaches its approval
webhook through the chart's Service (no `webhook.url`), and an AgentRun runs end to end:
a read tool Job and an approved write Job run `agentrun-tool` inside the image under the
Job's full securityContext. Tier: real node (tests/integration/test_chart.py is the same
install on the stand-in, with `webhook.url` and the operator as a local process)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun.operator.jobs import TOOL_UID
from tests.chart.helm import CHART, helm
from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode
from tests.integration.spine import READ, done
from tests.modelserver import ScriptedModelServer
from tests.support import stack


@pytest.fixture
def model(realnode: RealNode) -> Iterator[tuple[ScriptedModelServer, str]]:
    """The scripted model on the host's loopback, and its URL as pods reach it."""
    server = ScriptedModelServer().start()
    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    try:
        yield server, f"http://{realnode.expose(port)}/v1"
    finally:
        server.stop()


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return out


def test_chart_operator_runs_an_agentrun_in_containers(
    realnode: RealNode, real_cluster: LocalCluster, model: tuple[ScriptedModelServer, str]
) -> None:
    cluster = real_cluster
    server, model_url = model
    suffix = uuid.uuid4().hex[:6]
    rel, system_ns, ns = f"ar-{suffix}", f"ar-sys-{suffix}", f"ar-runs-{suffix}"
    fullname = f"{rel}-agentrun"
    repository, tag = realnode.image.rsplit(":", 1)
    for name in (system_ns, ns):
        cluster.kubectl("create", "namespace", name)
        cluster.wait_for_serviceaccount(name)
    try:
        helm(
            "install", rel, str(CHART), "--namespace", system_ns, "--take-ownership",
            "--wait", "--timeout", "180s",
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never",  # imported into containerd; nothing is pulled
            "--set-json", f'operator.watchNamespaces=["{ns}"]',
            "--set-json", f'toolNamespaces=["{ns}"]',
            "--set-json", f'model.allowedURLs=["http://{realnode.node_ip}:*"]',
            kubeconfig=cluster.kubeconfig,
        )  # fmt: skip
        hook = _get(cluster, "validatingwebhookconfiguration", fullname)["webhooks"][0]
        assert "url" not in hook["clientConfig"]
        assert hook["clientConfig"]["service"]["name"] == f"{fullname}-webhook"
        (pod,) = _get(cluster, "pods", "-n", system_ns, "-l", f"app.kubernetes.io/instance={rel}")[
            "items"
        ]
        assert pod["spec"]["nodeName"] == realnode.name
        assert pod["spec"]["containers"][0]["image"] == realnode.image
        assert pod["spec"]["serviceAccountName"] == fullname

        workload = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "web", "image": realnode.image, "command": ["sleep", "600"]}
                        ]
                    },
                },
            },
        }
        name = f"scripted-{ns}"
        write = {"tool": "rollout-restart", "arguments": {"name": "web", "namespace": ns}}
        server.set_scripts({name: [READ, write, done("web restarted in containers.")]})
        stack.apply(
            cluster,
            [
                workload,
                stack.agent_manifest("agent", ns, name, model_url, ["k8s-get", "rollout-restart"]),
                stack.run_manifest("run", ns, "agent", "Investigate web."),
            ],
        )

        def phase(*phases: str) -> dict[str, Any]:
            def check() -> dict[str, Any] | None:
                status: dict[str, Any] = _get(cluster, "agentrun", "run", "-n", ns).get(
                    "status", {}
                )
                return status if status.get("phase") in phases else None

            try:
                return stack.wait_for(check, 120, f"phase {phases}")
            except TimeoutError as err:
                log = cluster.kubectl("logs", "-n", system_ns, pod["metadata"]["name"])
                run = cluster.kubectl("get", "agentrun", "run", "-n", ns, "-o", "yaml")
                raise AssertionError(f"{err}\n{run.stdout}\n{log.stdout[-4000:]}") from None

        pending = phase("AwaitingApproval")["pendingAction"]
        annotate = ("annotate", "agentrun", "run", "-n", ns)
        approve = f"agentrun.dev/approve={pending['actionHash']}"
        cluster.kubectl("create", "rolebinding", "erin", "-n", ns, "--clusterrole=edit",
                        "--user=erin")  # fmt: skip
        cluster.kubectl("create", "rolebinding", "alice", "-n", ns,
                        f"--clusterrole={fullname}-approver", "--user=alice")  # fmt: skip
        stack.wait_for(
            lambda: (
                cluster.kubectl(
                    "auth", "can-i", "patch", "agentruns", "-n", ns, "--as=erin", check=False
                ).stdout.strip()
                == "yes"
            ),
            30,
            "erin may patch AgentRuns",
        )
        # the webhook, reached through its Service, refuses an editor's approval
        refused = cluster.kubectl(*annotate, approve, "--as=erin", check=False)
        assert refused.returncode != 0
        assert 'user "erin" may not approve agentruns' in refused.stderr, refused.stderr
        cluster.kubectl(*annotate, approve, "--as=alice")

        status = phase("Succeeded", "Failed")
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        assert status["approvals"][0]["approver"] == "alice"  # stamped by the webhook
        jobs = _get(cluster, "jobs", "-n", ns, "-l", "agentrun.dev/run=run")["items"]
        assert len(jobs) == 2
        for job in jobs:
            pods = _get(cluster, "pods", "-n", ns, "-l", f"job-name={job['metadata']['name']}")
            (tool_pod,) = pods["items"]
            assert tool_pod["spec"]["nodeName"] == realnode.name
            assert tool_pod["spec"]["containers"][0]["image"] == realnode.image
            assert tool_pod["spec"]["securityContext"]["runAsUser"] == TOOL_UID
            assert tool_pod["status"]["phase"] == "Succeeded"
        web = _get(cluster, "deployment", "web", "-n", ns)
        assert (
            "kubectl.kubernetes.io/restartedAt"
            in web["spec"]["template"]["metadata"]["annotations"]
        )
    finally:
        helm("uninstall", rel, "-n", system_ns, kubeconfig=cluster.kubeconfig, check=False)
        for name in (system_ns, ns):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
