"""charts/agentrun installed with the image `make image` built, on the real node: the
operator runs as a container under its ServiceAccount, the apiserver reaches its approval
webhook through the chart's Service (no `webhook.url`), and an AgentRun runs end to end:
a read tool Job, a read of the MCP server the chart declares (mcp.servers, a Streamable
HTTP server on the host under mcp.allowedURLs: the image's MCP client in the Job) and an
approved write Job run `agentrun-tool` inside the image under the Job's full
securityContext. A tool writing to its read-only root filesystem fails clearly, one over its
memory limit is OOM-killed and the run says so, and the operator pod deleted while the run
waits for approval is replaced by its Deployment and the run finishes.
Tier: real node (tests/integration/test_chart.py is the same install on the stand-in, with
`webhook.url` and the operator as a local process)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun.operator.jobs import TOOL_UID
from tests.chart.helm import CHART, ROOT, helm
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


@pytest.fixture
def mcp_url(realnode: RealNode) -> Iterator[str]:
    """The tests' Streamable HTTP MCP server (echo, add, wipe) on the host's loopback, and its
    URL as pods reach it."""
    port = stack.free_port()
    address = f"{realnode.node_ip}:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mcpserver", "http", "--port", str(port),
         "--allow-host", address],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert realnode.expose(port) == address
        yield f"http://{address}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def _fault_tool(name: str, command: list[str], memory: str = "256Mi") -> dict[str, Any]:
    """A read AgentTool running `command` in the operator's tool image (no `builtin`)."""
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentTool",
        "metadata": {"name": name},
        "spec": {
            "description": f"fault tool {name}",
            "effect": "read",
            "command": command,
            "timeoutSeconds": 60,
            "resources": {
                "requests": {"cpu": "50m", "memory": "32Mi"},
                "limits": {"cpu": "500m", "memory": memory},
            },
        },
    }


ROFS = _fault_tool("write-root", ["sh", "-c", "echo x > /state && echo wrote"])
HOG = _fault_tool(
    "memory-hog", ["python3", "-c", "x = bytearray(256 * 1024 * 1024)"], memory="64Mi"
)


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return out


def test_chart_operator_runs_an_agentrun_in_containers(
    realnode: RealNode,
    real_cluster: LocalCluster,
    model: tuple[ScriptedModelServer, str],
    mcp_url: str,
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
            "--set-json", f'mcp.allowedURLs=["{mcp_url.rsplit("/", 1)[0]}/"]',
            "--set-json", "mcp.servers=" + json.dumps(
                {"web": {"streamableHttp": {"url": mcp_url}, "readTools": ["add"]}}
            ),
            kubeconfig=cluster.kubeconfig,
        )  # fmt: skip
        hook = _get(cluster, "validatingwebhookconfiguration", fullname)["webhooks"][0]
        assert "url" not in hook["clientConfig"]
        assert hook["clientConfig"]["service"]["name"] == f"{fullname}-webhook"
        selector = f"app.kubernetes.io/instance={rel},app.kubernetes.io/component=operator"
        (pod,) = _get(cluster, "pods", "-n", system_ns, "-l", selector)["items"]
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
        faults = [
            {"tool": "write-root", "arguments": {}},
            {"tool": "memory-hog", "arguments": {}},
        ]
        add = {"tool": "mcp__web__add", "arguments": {"a": 40, "b": 2}}
        server.set_scripts(
            {name: [READ, *faults, add, write, done("web restarted in containers.")]}
        )
        tools = ["k8s-get", "write-root", "memory-hog", "mcp:web/add", "rollout-restart"]
        stack.apply(
            cluster,
            [
                workload,
                {**ROFS, "metadata": {"name": "write-root", "namespace": ns}},
                {**HOG, "metadata": {"name": "memory-hog", "namespace": ns}},
                stack.agent_manifest("agent", ns, name, model_url, tools),
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

        waiting = phase("AwaitingApproval")
        pending = waiting["pendingAction"]
        results = {
            e["step"]: json.dumps(e)
            for e in waiting["thread"]
            if e["type"] in ("ToolResult", "Error") and e["step"] in (2, 3, 4)
        }
        assert "Read-only file system" in results[2], results
        assert "OOMKilled" in results[3] and "137" in results[3], results
        assert "42" in results[4] and '"Error"' not in results[4], results  # 40 + 2, from MCP

        # the operator pod dies while the run waits: its Deployment replaces it
        old = pod["metadata"]["name"]
        cluster.kubectl("delete", "pod", old, "-n", system_ns, "--grace-period=1")

        def replaced() -> str | None:
            for p in _get(cluster, "pods", "-n", system_ns, "-l", selector)["items"]:
                ready = [c for c in p["status"].get("conditions", []) if c["type"] == "Ready"]
                if p["metadata"]["name"] != old and ready and ready[0]["status"] == "True":
                    return str(p["metadata"]["name"])
            return None

        pod["metadata"]["name"] = stack.wait_for(replaced, 120, "a new operator pod Ready")
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
        assert len(jobs) == 5
        phases = {}
        for job in jobs:
            pods = _get(cluster, "pods", "-n", ns, "-l", f"job-name={job['metadata']['name']}")
            (tool_pod,) = pods["items"]
            assert tool_pod["spec"]["nodeName"] == realnode.name
            assert tool_pod["spec"]["containers"][0]["image"] == realnode.image
            assert tool_pod["spec"]["securityContext"]["runAsUser"] == TOOL_UID
            phases[job["metadata"]["labels"]["agentrun.dev/tool"]] = tool_pod["status"]["phase"]
        assert phases == {
            "k8s-get": "Succeeded",
            "write-root": "Failed",
            "memory-hog": "Failed",
            "mcp__web__add": "Succeeded",
            "rollout-restart": "Succeeded",
        }
        web = _get(cluster, "deployment", "web", "-n", ns)
        assert (
            "kubectl.kubernetes.io/restartedAt"
            in web["spec"]["template"]["metadata"]["annotations"]
        )
    finally:
        helm("uninstall", rel, "-n", system_ns, kubeconfig=cluster.kubeconfig, check=False)
        for name in (system_ns, ns):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
