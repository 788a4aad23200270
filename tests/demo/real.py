"""The demo on the real node: kubelet v1.20.2 with containerd and runc (tests/cluster/realnode.py)
runs every pod as a container from the image `make image` built. The operator is installed
by the Helm chart, as a user installs it: a container under its ServiceAccount, its approval
webhook reached through its Service; the chart installs the tool ServiceAccounts, the
AgentTool catalog and the default Agent in `demo`, and every tool Job runs `agentrun-tool`
in the image under the Job's securityContext. The alert goes to the chart's receiver (its
own pod and ServiceAccount, the demo's route from values, the token the chart generated),
posted from the host to the pod's address over the node's veth (in a cluster, Alertmanager
posts to its Service). The runbooks are a ConfigMap (chart value tools.env.runbook), the way
a team without a runbook tree in the image keeps them.

Pods reach nothing outside the node but the apiserver and what the demo exposes (the
scripted model on the host's loopback), so a live model runs only on the stand-in.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from tests.chart.helm import CHART, helm
from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode
from tests.modelserver import ScriptedModelServer
from tests.support import stack
from tests.support.stack import ROOT

from .scenario import (
    NS,
    ROUTE,
    RUNBOOKS,
    SCRIPT,
    SCRIPTED_MODEL,
    alert_to_run,
    crashing_workload,
    post_alert,
    say,
)

SYSTEM_NS = "agentrun-system"
RELEASE = "agentrun"
RECEIVER = f"{RELEASE}-receiver"  # the chart's <fullname>-receiver
# The collection's kubernetes/ runbooks as one ConfigMap (keys are file names).
RUNBOOK_DIR = RUNBOOKS / "content" / "runbooks" / "kubernetes"


def run(workdir: Path) -> int:
    started = time.monotonic()
    with LocalCluster(workdir=workdir / "cluster", local_node=False) as cluster:
        node = RealNode(workdir / "node", cluster)
        try:
            node.start()
            ready = time.monotonic()
            say(
                f"Local control plane and real node {node.name} ({node.node_ip}, containerd) "
                f"Ready in {ready - started:.1f}s (kubeconfig {cluster.kubeconfig})"
            )
            server = ScriptedModelServer(scripts={SCRIPTED_MODEL: SCRIPT}).start()
            try:
                port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
                model_url = f"http://{node.expose(port)}/v1"
                code = _run(cluster, node, model_url)
            finally:
                server.stop()
            say(f"\n(the workflow took {time.monotonic() - ready:.1f}s after the node was Ready)")
            return code
        finally:
            node.stop()


def _run(cluster: LocalCluster, node: RealNode, model_url: str) -> int:
    for name in (SYSTEM_NS, NS):
        cluster.kubectl("create", "namespace", name)
    for name in (SYSTEM_NS, NS):
        cluster.wait_for_serviceaccount(name)
    say("\nThe runbooks, as a team keeps them in a ConfigMap:")
    say(f"$ kubectl create configmap runbooks -n demo --from-file={RUNBOOK_DIR.relative_to(ROOT)}")
    cluster.kubectl("create", "configmap", "runbooks", "-n", NS, f"--from-file={RUNBOOK_DIR}")

    repository, tag = node.image.rsplit(":", 1)
    runbook_env = {"runbook": [{"name": "AGENTRUN_RUNBOOKS_CONFIGMAP", "value": "runbooks"}]}
    args = [
        "install", RELEASE, "charts/agentrun", "-n", SYSTEM_NS, "--wait",
        "--timeout", "180s",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never",
        "--set", "toolNamespaces={demo}", "--set", "operator.watchNamespaces={demo}",
        "--set", f"model.name={SCRIPTED_MODEL}", "--set", f"model.baseURL={model_url}",
        "--set-json", f"tools.env={json.dumps(runbook_env, separators=(',', ':'))}",
        "--set-json", f"receiver.routes=[{json.dumps(ROUTE, separators=(',', ':'))}]",
    ]  # fmt: skip
    say("\nThe chart, with the image `make image` built (imported into containerd, never pulled):")
    shown = ["receiver.routes=[...the crashloop route...]" if "routes" in a else a for a in args]
    say("$ helm " + " ".join(a if " " not in a and "{" not in a else f"'{a}'" for a in shown))
    t0 = time.monotonic()
    installed = helm(
        *[str(CHART) if a == "charts/agentrun" else a for a in args],
        kubeconfig=cluster.kubeconfig,
        check=False,
    )
    if installed.returncode != 0:
        say(f"helm install failed:\n{installed.stderr.strip()}")
        say(cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout)
        say("Operator log (tail):\n" + _operator_log(cluster))
        return 1
    say(f"  installed and the operator Ready in {time.monotonic() - t0:.1f}s")
    say("$ kubectl get pods -n agentrun-system -o wide")
    say(cluster.kubectl("get", "pods", "-n", SYSTEM_NS, "-o", "wide").stdout.rstrip())
    stack.wait_for(lambda: stack._has_token(cluster, NS), 30, f"ServiceAccount tokens in {NS}")
    stack.apply(cluster, [crashing_workload(node.image)])
    receiver = ChartReceiver(cluster)
    say(f"The chart's agentrun-receiver: pod {receiver.pod} at {receiver.url}, token from the")
    say(f"Secret {RECEIVER}-token, routes from values (the crashloop route, then the default)")
    code = alert_to_run(cluster, receiver, lambda: _operator_log(cluster))
    say("\nEvery pod ran as a container on the real node, from the image:")
    columns = (
        "POD:.metadata.name,IMAGE:.spec.containers[0].image,NODE:.spec.nodeName,PHASE:.status.phase"
    )
    say(f"$ kubectl get pods -n demo -o custom-columns={columns}")
    say(cluster.kubectl("get", "pods", "-n", NS, "-o", f"custom-columns={columns}").stdout.rstrip())
    return code


def _operator_log(cluster: LocalCluster) -> str:
    argv = ("logs", "-n", SYSTEM_NS, f"deployment/{RELEASE}", "--tail=60")
    proc = cluster.kubectl(*argv, check=False)
    return proc.stdout + proc.stderr


class ChartReceiver:
    """The chart's receiver pod, reached from the host at its pod IP (the node's pod subnet is
    routed over the veth), with the token the chart generated."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=receiver"
        pods = json.loads(
            cluster.kubectl("get", "pods", "-n", SYSTEM_NS, "-l", selector, "-o", "json").stdout
        )["items"]
        self.pod = pods[0]["metadata"]["name"]
        port = pods[0]["spec"]["containers"][0]["ports"][0]["containerPort"]
        self.url = f"http://{pods[0]['status']['podIP']}:{port}"
        secret = json.loads(
            cluster.kubectl(
                "get", "secret", f"{RECEIVER}-token", "-n", SYSTEM_NS, "-o", "json"
            ).stdout
        )
        self.token = base64.b64decode(secret["data"]["token"]).decode().strip()

    def post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return post_alert(self.url, self.token, payload)

    def log_tail(self) -> str:
        proc = self.cluster.kubectl("logs", "-n", SYSTEM_NS, self.pod, "--tail=40", check=False)
        return proc.stdout + proc.stderr
