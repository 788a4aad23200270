"""charts/agentrun on the local v1.20 control plane: the rendered manifests pass a server-side
dry run, and `helm install` starts the operator as a pod under its own ServiceAccount (the
local node runs the container's command; RBAC is enforced), which then runs an AgentRun end
to end: a read tool Job, a read of an MCP server the chart installed (mcp.servers, its URL
under mcp.allowedURLs), a write approved by a user bound to the approver role, done. The
chart's approval webhook is registered with `webhook.url` (the local cluster cannot route a
Service to a pod) and served by the operator with the chart-generated certificate: a viewer
is Forbidden, an editor (`agentrun-editor`, or `edit`) is refused by the webhook with the
missing permission named, and the approver is on record in status.approvals. The operator's
ServiceAccount reads Secrets only in its own namespace, and the NetworkPolicies are installed
(not enforced: no network plugin). Then `helm test`, and `helm uninstall` keeps the CRDs and
the runs. With receiver.slack.enabled, the receiver's ServiceAccount may approve runs only in
receiver.namespaces and read only the mapping ConfigMap (`kubectl auth can-i`).

Namespaces are `ar-*`: never `s-*` (the session's shared operator) nor `k-*`, and the chart's
operator watches only its own run namespace, so two operators never handle one run.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, CR_KINDS, EXTERNAL_KINDS, PEERING_KINDS, ROOT, helm, render
from tests.cluster import LocalCluster
from tests.integration.spine import READ, WORKLOAD, done, thread_types
from tests.modelserver import ScriptedModelServer
from tests.support import stack


def _namespaces(cluster: LocalCluster, *names: str) -> None:
    for ns in names:
        cluster.kubectl("create", "namespace", ns)
    for ns in names:
        cluster.wait_for_serviceaccount(ns)


def _delete_namespaces(cluster: LocalCluster, *names: str) -> None:
    for ns in names:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("variant", ["default", "full"])
def test_manifests_pass_a_server_side_dry_run_on_1_20(
    stack_installed: LocalCluster, variant: str
) -> None:
    """kubectl validates against the 1.20 server's OpenAPI, the server runs admission and,
    for the custom resources, the CRDs' schemas (the CRDs are installed by stack_installed)."""
    cluster = stack_installed
    suffix = uuid.uuid4().hex[:6]
    release_ns, runs_ns = f"ar-dry-{suffix}", f"ar-dryrun-{suffix}"
    _namespaces(cluster, release_ns, runs_ns)
    try:
        docs = render(
            full=variant == "full",
            namespace=release_ns,
            set_json=[
                f'operator.watchNamespaces=["{runs_ns}"]',
                f'toolNamespaces=["{runs_ns}"]',
                # system-cluster-critical is reserved for kube-system by the Priority admission.
                'priorityClassName=""',
                'metrics.grafanaDashboard.namespace=""',  # the release's, not `monitoring`
                # The receiver's namespaces (prod, staging in the full values) are the run one.
                f'receiver.namespaces=["{runs_ns}"]',
                'receiver.defaultNamespace=""',
                "receiver.routes=[]",
                "receiver.api.allowedNamespaces=[]",
            ],
        )
        # ServiceMonitor (Prometheus Operator) and cert-manager kinds have no CRDs here.
        docs = [d for d in docs if d["kind"] not in EXTERNAL_KINDS]
        crs = [d for d in docs if d["kind"] in CR_KINDS + PEERING_KINDS]
        builtin = [d for d in docs if d not in crs]
        assert crs or variant == "default"
        for batch in (builtin, crs):
            if not batch:
                continue
            proc = cluster.kubectl(
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                input=yaml.safe_dump_all(batch),
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.count("(server dry run)") == len(batch), proc.stdout
    finally:
        _delete_namespaces(cluster, release_ns, runs_ns)


@pytest.fixture
def release(cluster: LocalCluster) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    names = {
        "release": f"ar-{suffix}",
        "fullname": f"ar-{suffix}-agentrun",
        "system": f"ar-sys-{suffix}",
        "runs": f"ar-runs-{suffix}",
    }
    _namespaces(cluster, names["system"], names["runs"])
    yield names
    helm(
        "uninstall",
        names["release"],
        "-n",
        names["system"],
        kubeconfig=cluster.kubeconfig,
        check=False,
    )
    _delete_namespaces(cluster, names["system"], names["runs"])


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return out


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def mcp_url() -> Iterator[str]:
    """The tests' Streamable HTTP MCP server (tests/mcpserver: echo, add, wipe) on loopback."""
    port = stack.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mcpserver", "http", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def test_helm_install_runs_an_agentrun_as_its_own_serviceaccount(
    cluster: LocalCluster,
    model_server: ScriptedModelServer,
    release: dict[str, str],
    mcp_url: str,
    tmp_path: Path,
) -> None:
    rel, fullname, system_ns, ns = (
        release["release"],
        release["fullname"],
        release["system"],
        release["runs"],
    )
    kubeconfig = cluster.kubeconfig
    health_port, metrics_port, webhook_port = (stack.free_port() for _ in range(3))
    cert_dir = tmp_path / "webhook-tls"
    # The chart's webhooks check only this test's run namespace (other tests' runs elsewhere).
    cluster.kubectl("label", "namespace", ns, f"agentrun.dev/chart-test={rel}")

    # The local apiserver runs without its endpoint reconciler: write the `kubernetes`
    # Endpoints a real cluster has, for the chart's NetworkPolicy lookup (if none is there;
    # a documentation address: nothing here routes by it).
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "subsets": [
            {"addresses": [{"ip": "192.0.2.10"}], "ports": [{"name": "https", "port": 6443}]}
        ],
    }
    if stack.get(cluster, "endpoints", "kubernetes", "default") is None:
        stack.apply(cluster, [endpoints])

    # ---- install -----------------------------------------------------------------------------
    helm(
        "install", rel, str(CHART), "--namespace", system_ns,
        # CRDs may already be there (kubectl-applied by the other integration tests, or kept
        # by an earlier release): adopt them, as a user migrating to the chart would.
        "--take-ownership",
        # No --wait: the operator cannot serve the webhook until its certificate files are
        # written below (it exits, and the node restarts it).
        "--timeout", "180s",
        "--set-json", f'operator.watchNamespaces=["{ns}"]',
        "--set-json", f'toolNamespaces=["{ns}"]',
        # Loopback ports: every pod of the local node shares the host's network.
        "--set", f"operator.healthPort={health_port}",
        "--set", f"operator.metricsPort={metrics_port}",
        # The local node mounts no volumes: point the prompts dir at the repository's
        # prompts/, which the chart's ConfigMap equals (asserted below).
        "--set", f"operator.promptsDir={ROOT / 'prompts'}",
        # No Service routing on the local node: the test pod checks the pod's port directly.
        "--set", f"tests.healthURL=http://127.0.0.1:{health_port}/healthz",
        # The approval webhook, registered with a URL on loopback (the apiserver's view of the
        # local node's pods) instead of the Service; the generated certificate covers it.
        "--set", f"webhook.url=https://127.0.0.1:{webhook_port}",
        "--set", f"webhook.port={webhook_port}",
        # The local node mounts no Secret: the test writes it where the operator reads it.
        "--set", f"webhook.certDir={cert_dir}",
        "--set-json",
        f'webhook.namespaceSelector={{"matchLabels":{{"agentrun.dev/chart-test":"{rel}"}}}}',
        # The scripted model server listens on loopback: the admin allows it.
        "--set-json", 'model.allowedURLs=["http://127.0.0.1:*"]',
        # The stand-in mounts no ConfigMap or Secret, so the receiver would find no config:
        # the chart's receiver runs on the real node (tests/realnode/test_receiver.py).
        "--set", "receiver.enabled=false",
        # MCP servers declared in values, installed into the run namespace: `web` under the
        # allowed MCP URLs, `elsewhere` (another port) outside them.
        "--set-json", f'mcp.allowedURLs=["{mcp_url.rsplit("/", 1)[0]}/"]',
        "--set-json", "mcp.servers=" + json.dumps({
            "web": {"streamableHttp": {"url": mcp_url}, "readTools": ["add"],
                    "timeoutSeconds": 20},
            "elsewhere": {"streamableHttp": {"url": "http://127.0.0.1:1/mcp"}},
        }),
        kubeconfig=kubeconfig,
    )  # fmt: skip

    # The Secret the chart generated (genCA/genSignedCert): the pod's volume, by hand.
    secret = _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", system_ns)
    assert secret["type"] == "kubernetes.io/tls"
    cert_dir.mkdir()
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (cert_dir / key).write_bytes(base64.b64decode(secret["data"][key]))
    hooks = {
        kind: _get(cluster, kind, fullname)["webhooks"][0]
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
    }
    for kind, hook in hooks.items():
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
        path = "validate" if kind.startswith("validating") else "mutate"
        assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{webhook_port}/{path}-agentrun"

    pods = stack.wait_for(
        lambda: _get(cluster, "pods", "-n", system_ns, "-l", f"app.kubernetes.io/instance={rel}")[
            "items"
        ],
        60,
        "the operator pod",
    )
    (pod,) = pods
    assert pod["spec"]["serviceAccountName"] == fullname
    assert pod["spec"]["containers"][0]["command"] == ["agentrun-operator"]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--webhook") : args.index("--webhook") + 2] == ["--webhook", "incluster"]
    cluster.kubectl(
        "wait", "--for=condition=Ready", f"pod/{pod['metadata']['name']}", "-n", system_ns,
        "--timeout=150s",
    )  # fmt: skip
    stack.wait_for(lambda: _healthy(health_port), 60, "the chart operator's /healthz")
    # The pod's process runs with the pod's ServiceAccount token, nothing else: no Secret
    # where runs live, only `get` in its own namespace (opted-in credentials).
    operator_sa = f"--as=system:serviceaccount:{system_ns}:{fullname}"
    for verb, where, allowed in (
        ("list", ns, "no"),
        ("get", ns, "no"),
        ("get", "default", "no"),
        ("list", system_ns, "no"),
        ("get", system_ns, "yes"),
    ):
        can = cluster.kubectl(
            "auth", "can-i", verb, "secrets", "-n", where, operator_sa, check=False
        )
        assert can.stdout.strip() == allowed, (verb, where, can.stdout)
    # The NetworkPolicies exist; the apiserver's address was looked up at install (from the
    # Endpoints written above). Nothing enforces them here: the local node has no network plugin.
    tools_policy = _get(cluster, "networkpolicy", f"{fullname}-tools", "-n", ns)["spec"]
    assert tools_policy["policyTypes"] == ["Ingress", "Egress"]
    assert not tools_policy.get("ingress")  # no ingress at all
    assert tools_policy["egress"][1] == {
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
        "to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}],
    }
    _get(cluster, "networkpolicy", fullname, "-n", system_ns)

    cm = _get(cluster, "configmap", f"{fullname}-prompts", "-n", system_ns)
    prompts = {p.name: p.read_text() for p in (ROOT / "prompts").iterdir() if p.is_file()}
    assert cm["data"] == prompts
    tools = _get(cluster, "agenttools", "-n", ns)
    assert {"k8s-get", "rollout-restart"} <= {t["metadata"]["name"] for t in tools["items"]}
    # The default Agent, accepted by the 1.20 apiserver: the chart's agents/sre-agent.yaml.
    default_agent = _get(cluster, "agent", "sre-agent", "-n", ns)["spec"]
    shipped = yaml.safe_load((CHART / "agents" / "sre-agent.yaml").read_text())["spec"]
    assert default_agent["prefetch"] == shipped["prefetch"]
    assert set(default_agent["tools"]) == {t["metadata"]["name"] for t in tools["items"]}
    stack.wait_for(lambda: stack._has_token(cluster, ns), 30, f"tool ServiceAccount tokens in {ns}")

    # The chart's MCPServers, listed by the chart's operator (a tools/list Job) into status;
    # the one outside mcp.allowedURLs is refused without a Job.
    def mcp_ready(name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        st: dict[str, Any] = _get(cluster, "mcpserver", name, "-n", ns).get("status") or {}
        conds = [c for c in st.get("conditions") or [] if c["type"] == "Ready"]
        return (st, conds[0]) if conds and conds[0]["status"] != "Unknown" else None

    mcp, listed = stack.wait_for(lambda: mcp_ready("web"), 60, "the chart's MCPServer web")
    assert listed["status"] == "True" and listed["reason"] == "Listed", listed
    assert [t["name"] for t in mcp["tools"]] == ["echo", "add", "wipe"]
    assert len(mcp["digest"]) == 64
    _, outside = stack.wait_for(lambda: mcp_ready("elsewhere"), 30, "MCPServer elsewhere")
    assert outside["status"] == "False" and outside["reason"] == "NotAllowed", outside

    # ---- an AgentRun, served by the chart's operator -----------------------------------------
    model = f"scripted-{ns}"
    write = {"tool": "rollout-restart", "arguments": {"name": "web", "namespace": ns}}
    add = {"tool": "mcp__web__add", "arguments": {"a": 40, "b": 2}}
    model_server.set_scripts(
        {model: [READ, add, write, done("web restarted by the chart operator.")]}
    )
    stack.apply(
        cluster,
        [
            {**WORKLOAD, "metadata": {**WORKLOAD["metadata"], "namespace": ns}},
            stack.agent_manifest(
                "agent",
                ns,
                model,
                model_server.base_url,
                ["k8s-get", "mcp:web/add", "rollout-restart"],
            ),
            stack.run_manifest("run", ns, "agent", "Investigate web."),
        ],
    )

    def phase(*phases: str) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            nonlocal last
            last = _get(cluster, "agentrun", "run", "-n", ns).get("status", {})
            return last if last.get("phase") in phases else None

        try:
            return stack.wait_for(check, 90, f"phase {phases}")
        except TimeoutError as err:
            log = cluster.kubectl("logs", "-n", system_ns, pod["metadata"]["name"], check=False)
            raise AssertionError(
                f"{err}; status:\n{json.dumps(last, indent=1)}\noperator log:\n"
                + "\n".join(log.stdout.splitlines()[-40:])
            ) from None

    status = phase("AwaitingApproval")
    pending = status["pendingAction"]
    assert pending["tool"] == "rollout-restart"
    assert thread_types(status)[:4] == [
        (1, "ToolCall"),
        (1, "ToolResult"),
        (2, "ToolCall"),
        (2, "ToolResult"),
    ]
    assert "error" not in json.dumps(status["thread"][1]).lower()
    # The MCP read (readTools in the values) ran at once, in a Job: 40 + 2 from the server.
    assert status["thread"][2]["tool"] == "mcp__web__add"
    assert "42" in status["thread"][3]["content"], status["thread"][3]

    # ---- who can approve -------------------------------------------------------------------
    bindings = {
        "alice": f"{fullname}-approver",
        "bob": f"{fullname}-viewer",
        "carol": "view",
        "dave": f"{fullname}-editor",
        "erin": "edit",
    }
    for user, role in bindings.items():
        cluster.kubectl(
            "create", "rolebinding", f"{user}-{role}", "-n", ns, f"--clusterrole={role}",
            f"--user={user}",
        )  # fmt: skip
    annotate = (
        "annotate",
        "agentrun",
        "run",
        "-n",
        ns,
        f"agentrun.dev/approve={pending['actionHash']}",
    )

    # A viewer reads the run (and so does `view`, into which agentrun-viewer aggregates) ...
    for user in ("bob", "carol"):

        def can_read(u: str = user) -> bool:
            return (
                cluster.kubectl(
                    "get", "agentrun", "run", "-n", ns, f"--as={u}", check=False
                ).returncode
                == 0
            )

        seen = stack.wait_for(can_read, 30, f"{user} can read AgentRuns")
        assert seen
    # ... but cannot approve.
    denied = cluster.kubectl(*annotate, "--as=bob", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower() and "agentruns" in denied.stderr, denied.stderr
    # An editor (agentrun-editor, or `edit` into which it aggregates) may patch runs, but the
    # chart's webhook refuses their approval and names the missing permission.
    for user in ("dave", "erin"):

        def may_patch(u: str = user) -> bool:
            return (
                cluster.kubectl(
                    "auth", "can-i", "patch", "agentruns", "-n", ns, f"--as={u}", check=False
                ).stdout.strip()
                == "yes"
            )

        stack.wait_for(may_patch, 30, f"{user} may patch AgentRuns")
        refused = cluster.kubectl(*annotate, f"--as={user}", check=False)
        assert refused.returncode != 0
        assert (
            f'user "{user}" may not approve agentruns in namespace "{ns}": needs verb "approve" '
            f"on agentruns.agentrun.dev (see the {fullname}-approver ClusterRole)"
        ) in refused.stderr, refused.stderr
        assert "validate-agentrun.agentrun.dev" in refused.stderr
        no = cluster.kubectl(
            "auth", "can-i", "approve", "agentruns", "-n", ns, f"--as={user}", check=False
        )
        assert no.stdout.strip() == "no"
    assert phase("AwaitingApproval")["pendingAction"]["actionHash"] == pending["actionHash"]
    annotations = _get(cluster, "agentrun", "run", "-n", ns)["metadata"].get("annotations", {})
    assert "agentrun.dev/approve" not in annotations
    # The approver can, with plain kubectl annotate.
    cluster.kubectl(*annotate, "--as=alice")
    can_i = cluster.kubectl("auth", "can-i", "approve", "agentruns", "-n", ns, "--as=alice")
    assert can_i.stdout.strip() == "yes"

    status = phase("Succeeded", "Failed")
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["result"]["answer"] == "web restarted by the chart operator."
    assert [(a["decision"], a["actionHash"]) for a in status["approvals"]] == [
        ("Approved", pending["actionHash"])
    ]
    assert status["approvals"][0]["approver"] == "alice"  # stamped by the chart's webhook
    jobs = _get(cluster, "jobs", "-n", ns, "-l", "agentrun.dev/run=run")["items"]
    accounts = sorted(j["spec"]["template"]["spec"]["serviceAccountName"] for j in jobs)
    assert accounts == ["agentrun-tool-read", "agentrun-tool-read", "agentrun-tool-write"]
    web = _get(cluster, "deployment", "web", "-n", ns)
    assert "kubectl.kubernetes.io/restartedAt" in web["spec"]["template"]["metadata"]["annotations"]

    # ---- helm test -------------------------------------------------------------------------
    tested = helm("test", rel, "-n", system_ns, "--logs", "--timeout", "60s", kubeconfig=kubeconfig)
    assert "Succeeded" in tested.stdout and "HTTP 200" in tested.stdout, tested.stdout

    # ---- uninstall keeps the CRDs and the runs ---------------------------------------------
    helm("uninstall", rel, "-n", system_ns, "--wait", "--timeout", "60s", kubeconfig=kubeconfig)
    for crd in ("agentruns", "agents", "agenttools"):
        cluster.kubectl("get", "crd", f"{crd}.agentrun.dev")
    assert _get(cluster, "agentrun", "run", "-n", ns)["status"]["phase"] == "Succeeded"
    gone = cluster.kubectl("get", "deployment", fullname, "-n", system_ns, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    gone = cluster.kubectl("get", "clusterrole", f"{fullname}-operator", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        gone = cluster.kubectl("get", kind, fullname, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr


RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def test_slack_receiver_may_approve_only_in_its_namespaces_and_read_one_configmap(
    stack_installed: LocalCluster,
) -> None:
    """The attacker's test of receiver.slack's RBAC on the real apiserver: the receiver's
    ServiceAccount and everything the chart binds to it (`helm template`, applied with
    kubectl), asked with `kubectl auth can-i --as` its ServiceAccount. Off: it may not approve.
    On: it approves runs in receiver.namespaces and nowhere else (not in another of the
    toolNamespaces, not in its own), creates SubjectAccessReviews, reads the one mapping
    ConfigMap and no other ConfigMap or Secret, impersonates nobody."""
    cluster = stack_installed
    suffix = uuid.uuid4().hex[:6]
    rel, system_ns, runs_ns, other_ns = (
        f"ar-sl-{suffix}",
        f"ar-slsys-{suffix}",
        f"ar-slruns-{suffix}",
        f"ar-slother-{suffix}",
    )
    receiver = f"{rel}-agentrun-receiver"
    sa = f"--as=system:serviceaccount:{system_ns}:{receiver}"
    _namespaces(cluster, system_ns, runs_ns, other_ns)
    for name in ("agentrun-slack-users", "other"):
        cluster.kubectl("create", "configmap", name, "-n", system_ns, "--from-literal=k=v")
    cluster.kubectl(
        "create", "secret", "generic", "agentrun-slack", "-n", system_ns,
        "--from-literal=signing-secret=s3cret",
    )  # fmt: skip

    def receiver_rbac(*sets: str) -> list[dict[str, Any]]:
        docs = render(
            release=rel,
            namespace=system_ns,
            sets=sets,
            set_json=[
                f'toolNamespaces=["{runs_ns}","{other_ns}"]',
                f'receiver.namespaces=["{runs_ns}"]',
            ],
        )
        return [
            d
            for d in docs
            if d["kind"] in RBAC_KINDS
            and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "receiver"
        ]

    def can(verb: str, resource: str, namespace: str = "", *extra: str) -> str:
        """`kubectl auth can-i` as the receiver; namespace "": cluster-scoped."""
        where = ["-n", namespace] if namespace else []
        proc = cluster.kubectl("auth", "can-i", verb, resource, *where, *extra, sa, check=False)
        return proc.stdout.strip()

    off, on = receiver_rbac(), receiver_rbac("receiver.slack.enabled=true")
    try:
        stack.apply(cluster, off)
        stack.wait_for(lambda: can("create", "agentruns", runs_ns) == "yes", 30, "alert RBAC")
        assert can("approve", "agentruns", runs_ns) == "no"
        assert can("create", "subjectaccessreviews.authorization.k8s.io") == "no"
        assert can("get", "configmaps/agentrun-slack-users", system_ns) == "no"

        stack.apply(cluster, on)
        stack.wait_for(lambda: can("approve", "agentruns", runs_ns) == "yes", 30, "Slack RBAC")
        expected: dict[tuple[str, ...], str] = {
            ("approve", "agentruns", runs_ns): "yes",
            ("get", "agentruns", runs_ns): "yes",
            ("patch", "agentruns", runs_ns): "yes",
            ("create", "subjectaccessreviews.authorization.k8s.io", ""): "yes",
            ("get", "configmaps/agentrun-slack-users", system_ns): "yes",
            # Nowhere else: another tool namespace, its own namespace, the cluster.
            ("approve", "agentruns", other_ns): "no",
            ("patch", "agentruns", other_ns): "no",
            ("approve", "agentruns", system_ns): "no",
            ("approve", "agentruns", "default"): "no",
            ("patch", "agentruns", runs_ns, "--subresource=status"): "no",
            ("delete", "agentruns", runs_ns): "no",
            # Only the one ConfigMap, by name.
            ("get", "configmaps/other", system_ns): "no",
            ("list", "configmaps", system_ns): "no",
            ("watch", "configmaps", system_ns): "no",
            ("update", "configmaps/agentrun-slack-users", system_ns): "no",
            ("get", "configmaps", runs_ns): "no",
            # No Secret, its own signing secret included (a mounted volume, not an API read).
            ("get", "secrets/agentrun-slack", system_ns): "no",
            ("list", "secrets", system_ns): "no",
            ("get", "secrets", runs_ns): "no",
            # No impersonation: it decides as itself, naming the user for the webhook.
            ("impersonate", "users", ""): "no",
            ("impersonate", "groups", ""): "no",
            ("create", "tokenreviews.authentication.k8s.io", ""): "no",
        }
        got = {key: can(*key) for key in expected}
        assert got == expected
    finally:
        for doc in on:
            if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)
        _delete_namespaces(cluster, system_ns, runs_ns, other_ns)
