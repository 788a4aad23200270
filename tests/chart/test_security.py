"""Render tests of what charts/agentrun gives each actor (issue 13): the human roles (editors
do not define tools; tool-admin is not aggregated), the operator's least privilege (no
Secrets outside the release namespace), the admin policy reaching the operator's env, tool
settings, and the NetworkPolicies. Real RBAC on a real apiserver: tests/integration/test_roles.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.operator import jobs
from tests.chart.helm import CHART, by_kind, helm, one, render

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _env(docs: list[dict[str, Any]], name: str = "agentrun") -> dict[str, str]:
    (c,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in c["env"]}


# ---------------------------------------------------------------- roles


def test_editors_start_runs_but_only_tool_admins_define_tools() -> None:
    docs = render()
    editor = _grants(one(docs, "ClusterRole", "agentrun-editor"))
    for resource in ("agentruns", "agents"):
        assert {"create", "update", "patch", "delete"} <= editor[("agentrun.dev", resource)]
    assert editor[("agentrun.dev", "agenttools")] == {"get", "list", "watch"}
    # An MCPServer decides what runs (image, command, URL, which tools are reads) like an
    # AgentTool: editors read it, tool admins write it.
    assert editor[("agentrun.dev", "mcpservers")] == {"get", "list", "watch"}

    tool_admin = one(docs, "ClusterRole", "agentrun-tool-admin")
    grants = _grants(tool_admin)
    assert set(grants) == {("agentrun.dev", "agenttools"), ("agentrun.dev", "mcpservers")}
    for resource in ("agenttools", "mcpservers"):
        assert {"create", "update", "patch", "delete"} <= grants[("agentrun.dev", resource)]
    # Bound explicitly, never through edit or admin (nor view).
    assert not [k for k in tool_admin["metadata"]["labels"] if k.startswith("rbac.authorization")]

    # No other human role (aggregated or not) writes AgentTools.
    for role in by_kind(docs, "ClusterRole"):
        name = role["metadata"]["name"]
        if name in ("agentrun-tool-admin", "agentrun-operator"):
            continue
        for resource in ("agenttools", "mcpservers"):
            verbs = _grants(role).get(("agentrun.dev", resource), set())
            assert not verbs & WRITE_VERBS, (name, resource)


def test_tool_admin_name_follows_the_release() -> None:
    docs = render(release="platform", namespace="ops")
    one(docs, "ClusterRole", "platform-agentrun-tool-admin")


# ---------------------------------------------------------------- operator least privilege


@pytest.mark.parametrize("variant", ["default", "full"])
def test_the_operator_reads_secrets_only_in_the_release_namespace(variant: str) -> None:
    docs = render(full=variant == "full")
    fullname = "agentrun" if variant == "default" else "agentrun-full"
    sa = one(docs, "Deployment", fullname)["spec"]["template"]["spec"]["serviceAccountName"]
    # No ClusterRole the operator is bound to (cluster-wide or per namespace) names Secrets.
    bound = {
        b["roleRef"]["name"]
        for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")
        if any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"])
        and b["roleRef"]["kind"] == "ClusterRole"
    }
    assert {f"{fullname}-operator", f"{fullname}-operator-cluster"} <= bound
    for role in by_kind(docs, "ClusterRole"):
        grants = _grants(role)
        if role["metadata"]["name"] in bound:
            assert ("", "secrets") not in grants, role["metadata"]["name"]
            assert not any("*" in verbs for verbs in grants.values())
    # Only get, only in the release namespace, through one Role.
    role = one(docs, "Role", f"{fullname}-operator-credentials")
    assert role["metadata"]["namespace"] == "agentrun-system"
    assert _grants(role) == {("", "secrets"): {"get"}}
    binding = one(docs, "RoleBinding", f"{fullname}-operator-credentials")
    assert binding["metadata"]["namespace"] == "agentrun-system"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa, "namespace": "agentrun-system"}
    ]
    assert _env(docs, fullname)["AGENTRUN_CREDENTIALS_NAMESPACE"] == "agentrun-system"


@pytest.mark.parametrize("sets", [[], ["webhook.enabled=false"]])
def test_the_operator_can_resolve_write_targets_and_ask_about_service_accounts(
    sets: list[str],
) -> None:
    docs = render(sets=sets)
    namespaced = _grants(one(docs, "ClusterRole", "agentrun-operator"))
    assert {"get"} <= namespaced[("", "pods")]
    assert namespaced[("apps", "deployments")] == {"get"}
    assert namespaced[("apps", "statefulsets")] == {"get"}
    assert namespaced[("apps", "replicasets")] == {"list"}
    # Reads only: the change itself is the approved tool Job's, under its own ServiceAccount.
    for (group, resource), verbs in namespaced.items():
        if group == "apps":
            assert not verbs & WRITE_VERBS, resource
    cluster = _grants(one(docs, "ClusterRole", "agentrun-operator-cluster"))
    assert cluster[("authorization.k8s.io", "subjectaccessreviews")] == {"create"}


# ---------------------------------------------------------------- admin policy


def test_policy_defaults_allow_what_the_chart_names() -> None:
    env = _env(render())
    assert env["AGENTRUN_ALLOWED_TOOL_IMAGES"] == ""  # the tool image only
    assert env["AGENTRUN_READ_SERVICE_ACCOUNTS"] == "agentrun-tool-read"
    assert env["AGENTRUN_WRITE_SERVICE_ACCOUNTS"] == "agentrun-tool-write"
    assert env["AGENTRUN_ALLOWED_MODEL_URLS"] == "https://api.openai.com/v1"
    assert env["AGENTRUN_ALLOWED_NOTIFY_URLS"] == "https://hooks.slack.com/"
    assert env["AGENTRUN_ALLOWED_RUNBOOK_URLS"] == ""  # no runbook_url is fetched
    # The default Agent's own model is allowed, whatever allowedURLs says.
    env = _env(
        render(
            sets=["model.baseURL=http://vllm.models:8000/v1"],
            set_json=['model.allowedURLs=["https://llm.example.com/v1"]'],
        )
    )
    assert env["AGENTRUN_ALLOWED_MODEL_URLS"] == (
        "https://llm.example.com/v1,http://vllm.models:8000/v1"
    )


def test_full_policy_values_reach_the_operator() -> None:
    docs = render(full=True)
    env = _env(docs, "agentrun-full")
    assert env["AGENTRUN_ALLOWED_TOOL_IMAGES"] == "registry.example.com/sre-tools/*"
    assert env["AGENTRUN_READ_SERVICE_ACCOUNTS"] == "agentrun-tool-read,sre-tool-read"
    assert env["AGENTRUN_WRITE_SERVICE_ACCOUNTS"] == "agentrun-tool-write"
    assert env["AGENTRUN_ALLOWED_MODEL_URLS"] == (
        "https://api.openai.com/v1,https://llm.example.com/v1,http://vllm.models.svc:8000/v1"
    )
    assert env["AGENTRUN_ALLOWED_NOTIFY_URLS"] == "https://hooks.slack.com/services/T000"
    assert env["AGENTRUN_ALLOWED_RUNBOOK_URLS"] == "https://wiki.example.com/sre/runbooks/"
    # Tool settings come from values (an admin's), appended to the catalog's env.
    for ns in ("prod", "staging"):
        tools = {
            t["metadata"]["name"]: t
            for t in by_kind(docs, "AgentTool")
            if t["metadata"]["namespace"] == ns
        }
        assert tools["prometheus-query"]["spec"]["env"] == [
            {
                "name": "AGENTRUN_PROMETHEUS_URL",
                "value": "http://prometheus-operated.monitoring.svc:9090",
            }
        ]
        assert tools["runbook"]["spec"]["env"] == [
            {"name": "AGENTRUN_RUNBOOKS_CONFIGMAP", "value": "runbooks"}
        ]
        assert "url" not in tools["prometheus-query"]["spec"]["parameters"]["properties"]
        assert "configMap" not in tools["runbook"]["spec"]["parameters"]["properties"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set-json", 'model.allowedURLs=["ftp://x"]'], "at '/model/allowedURLs/0'"),
        (["--set-json", "tools.readServiceAccounts=[]"], "at '/tools/readServiceAccounts'"),
        (
            ["--set-json", 'networkPolicy.toolEgress=[{"cidr":"10.0.0.0/8"}]'],
            "at '/networkPolicy/toolEgress/0'",
        ),
        (
            ["--set-json", 'networkPolicy.toolEgress=[{"ports":[9090]}]'],
            "at '/networkPolicy/toolEgress/0'",
        ),
    ],
)
def test_schema_rejects_bad_policy_values(args: list[str], message: str) -> None:
    proc = helm("template", "agentrun", str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# ---------------------------------------------------------------- NetworkPolicy


def _rules_to(egress: list[dict[str, Any]]) -> list[tuple[list[Any], list[tuple[str, int]]]]:
    return [
        (rule.get("to", []), [(p["protocol"], p["port"]) for p in rule.get("ports", [])])
        for rule in egress
    ]


def test_tool_pods_get_no_ingress_and_egress_only_to_dns_and_the_apiserver() -> None:
    docs = render(set_json=['toolNamespaces=["prod"]'])
    policy = one(docs, "NetworkPolicy", "agentrun-tools")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == "prod"
    # The label every tool Job's pod carries (operator/agentrun/jobs.py).
    assert spec["podSelector"] == {"matchLabels": {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY}}
    assert jobs.step_labels("r", 1, "t")[jobs.LABEL_MANAGED_BY] == jobs.MANAGED_BY
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    # helm template cannot look the apiserver up: any address, but only on its ports.
    assert _rules_to(spec["egress"]) == [
        ([], [("UDP", 53), ("TCP", 53)]),
        ([], [("TCP", 443), ("TCP", 6443)]),
    ]


def test_full_network_policies() -> None:
    docs = render(full=True)
    policies = by_kind(docs, "NetworkPolicy")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies) == [
        ("agentrun-system", "agentrun-full"),
        ("agentrun-system", "agentrun-full-receiver"),
        ("prod", "agentrun-full-tools"),
        ("staging", "agentrun-full-tools"),
    ]
    dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    apiserver = [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}]
    tools = one(
        [p for p in policies if p["metadata"]["namespace"] == "prod"],
        "NetworkPolicy",
        "agentrun-full-tools",
    )
    assert _rules_to(tools["spec"]["egress"]) == [
        ([dns], [("UDP", 53), ("TCP", 53)]),
        (apiserver, [("TCP", 6443)]),
        (
            [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
            [("TCP", 9090)],
        ),
        (
            [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                }
            ],
            [("TCP", 4318)],
        ),  # otel.egress: a tool's own span goes to the trace collector
    ]
    operator = one(policies, "NetworkPolicy", "agentrun-full")["spec"]
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert operator["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": p} for p in (9091, 9092, 9444)]}
    ]
    assert _rules_to(operator["egress"]) == [
        ([dns], [("UDP", 53), ("TCP", 53)]),
        (apiserver, [("TCP", 6443)]),
        ([{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], [("TCP", 443)]),
        (
            [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "models"}}}],
            [("TCP", 8000)],
        ),
        (
            [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                }
            ],
            [("TCP", 4318)],
        ),  # otel.egress: the trace collector
    ]
    # The receiver: its port, from Alertmanager only; egress DNS, the apiserver, (Slack
    # approvals on in the full values) receiver.slack.egress and the trace collector, nothing else.
    receiver = one(policies, "NetworkPolicy", "agentrun-full-receiver")["spec"]
    assert receiver["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "receiver"
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    alertmanager = {"app.kubernetes.io/name": "alertmanager"}
    assert receiver["ingress"] == [
        {
            "ports": [{"protocol": "TCP", "port": 9081}],
            "from": [
                {
                    "namespaceSelector": {"matchLabels": monitoring},
                    "podSelector": {"matchLabels": alertmanager},
                }
            ],
        }
    ]
    assert _rules_to(receiver["egress"]) == [
        ([dns], [("UDP", 53), ("TCP", 53)]),
        (apiserver, [("TCP", 6443)]),
        ([{"ipBlock": {"cidr": "203.0.113.0/24"}}], [("TCP", 443), ("TCP", 8443)]),
        (
            [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                }
            ],
            [("TCP", 4318)],
        ),  # otel.egress: the trace collector
    ]


def test_default_operator_policy_and_turning_it_off() -> None:
    operator = one(render(), "NetworkPolicy", "agentrun")["spec"]
    assert operator["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": p} for p in (8080, 9090, 9443)]}
    ]
    # Model and notification endpoints are outside the cluster: HTTPS anywhere, documented.
    assert _rules_to(operator["egress"])[2] == (
        [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        [("TCP", 443)],
    )
    docs = render(sets=["networkPolicy.enabled=false"], set_json=['toolNamespaces=["prod"]'])
    assert not by_kind(docs, "NetworkPolicy")
