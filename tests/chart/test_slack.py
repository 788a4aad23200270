"""The chart's wiring of Slack approvals in the receiver (receiver.slack, docs/slack.md): the
config's slack section loaded by the receiver's own parser, pointing at files of the mounted
Secret (never values in the ConfigMap); exactly the RBAC KubeSlackStore needs and only when
enabled; the operator trusting the receiver's ServiceAccount as --approval-proxy; egress to
Slack on 443. Off by default: none of it. On the local cluster the receiver's ServiceAccount
is checked with `kubectl auth can-i` in tests/integration/test_chart.py."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.receiver import routing
from tests.chart.helm import CHART, by_kind, helm, one, render
from tests.chart.test_receiver import _config

PROD = ['toolNamespaces=["prod","staging"]', 'receiver.namespaces=["prod"]']
SLACK = ["receiver.slack.enabled=true"]
RECEIVER_SA = {
    "kind": "ServiceAccount",
    "name": "agentrun-receiver",
    "namespace": "agentrun-system",
}
RECEIVER_USER = "system:serviceaccount:agentrun-system:agentrun-receiver"

Grant = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]


def _grants(docs: list[dict[str, Any]]) -> set[Grant]:
    """Everything bound to the receiver's ServiceAccount: (where, apiGroup, resource, verbs,
    resourceNames), where is a namespace or "*" for a ClusterRoleBinding."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
    out: set[Grant] = set()
    for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        if RECEIVER_SA not in binding.get("subjects", []):
            continue
        where = binding["metadata"].get("namespace", "*")
        ref = binding["roleRef"]
        scope = None if ref["kind"] == "ClusterRole" else where
        for rule in roles[(ref["kind"], scope, ref["name"])]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.add(
                        (
                            where,
                            group,
                            resource,
                            tuple(sorted(rule["verbs"])),
                            tuple(rule.get("resourceNames", ())),
                        )
                    )
    return out


ALERTS = {
    ("prod", "agentrun.dev", "agentruns", ("create", "list", "patch"), ()),
    ("prod", "agentrun.dev", "agents", ("get",), ()),
}


def _operator_args(docs: list[dict[str, Any]]) -> list[str]:
    args: list[str] = one(docs, "Deployment", "agentrun")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    return args


def _proxies(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--approval-proxy"]


def _egress(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(docs, "NetworkPolicy", "agentrun-receiver")["spec"]["egress"]
    return rules


def test_off_by_default_no_approve_no_slack_egress_no_approval_proxy() -> None:
    docs = render(set_json=PROD)
    assert _config(docs).slack is None  # no /slack/interactions
    assert _grants(docs) == ALERTS  # no approve, no SubjectAccessReview, no ConfigMap
    assert _proxies(_operator_args(docs)) == []
    # DNS and the apiserver only: nothing on 443 but the apiserver's (port-only rule here:
    # `helm template` has no cluster to look its address up in).
    egress = _egress(docs)
    assert len(egress) == 2
    assert not any("to" in r and any("ipBlock" in p for p in r["to"]) for r in egress)
    pod = one(docs, "Deployment", "agentrun-receiver")["spec"]["template"]["spec"]
    assert "slack" not in {v["name"] for v in pod["volumes"]}


def test_on_the_config_reads_the_signing_secret_from_the_mounted_secret() -> None:
    docs = render(sets=[*SLACK, "receiver.slack.botTokenKey=bot-token"], set_json=PROD)
    config = _config(docs)
    assert config.slack is not None
    pod = one(docs, "Deployment", "agentrun-receiver")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == "slack")["secret"]
    assert volume["secretName"] == "agentrun-slack"
    assert volume["items"] == [
        {"key": "signing-secret", "path": "signing-secret"},
        {"key": "bot-token", "path": "bot-token"},
    ]
    assert mounts["slack"]["readOnly"] is True
    base = mounts["slack"]["mountPath"]
    assert config.slack.signingSecretFile == f"{base}/signing-secret"
    assert config.slack.botTokenFile == f"{base}/bot-token"
    assert config.slack.userMapping == routing.ConfigMapKey(
        namespace="agentrun-system", name="agentrun-slack-users", key="users.yaml"
    )
    assert config.slack.apiURL == "https://slack.com/api"
    assert config.slack.allowedURLs == ["https://hooks.slack.com/", "https://slack.com/api/"]
    # The chart creates no Secret for Slack: the signing secret is never a chart value.
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret") if "slack" in str(s)] == []
    # No bot token key: nothing mounted for it, and the config names no file.
    plain = render(sets=SLACK, set_json=PROD)
    assert _config(plain).slack.botTokenFile is None  # type: ignore[union-attr]
    slack = next(
        v
        for v in one(plain, "Deployment", "agentrun-receiver")["spec"]["template"]["spec"][
            "volumes"
        ]
        if v["name"] == "slack"
    )
    assert slack["secret"]["items"] == [{"key": "signing-secret", "path": "signing-secret"}]


def test_on_the_rbac_is_exactly_what_a_click_needs() -> None:
    """KubeSlackStore (operator/agentrun/receiver/interact.py): get and patch the run, with
    `approve` (the webhook checks the receiver's too); a SubjectAccessReview; the one mapping
    ConfigMap by name. Only in the receiver's namespaces (prod, not staging): no Secret, no
    other ConfigMap, no impersonation."""
    docs = render(sets=SLACK, set_json=PROD)
    assert _grants(docs) == ALERTS | {
        ("prod", "agentrun.dev", "agentruns", ("approve", "get", "patch"), ()),
        ("*", "authorization.k8s.io", "subjectaccessreviews", ("create",), ()),
        ("agentrun-system", "", "configmaps", ("get",), ("agentrun-slack-users",)),
    }
    renamed = render(sets=[*SLACK, "receiver.slack.userMapping.name=oncall"], set_json=PROD)
    assert ("agentrun-system", "", "configmaps", ("get",), ("oncall",)) in _grants(renamed)
    assert _config(renamed).slack.userMapping.name == "oncall"  # type: ignore[union-attr]
    # rbac.create=false: the receiver's RBAC is the admin's, Slack's too.
    assert _grants(render(sets=[*SLACK, "rbac.create=false"], set_json=PROD)) == set()


def test_on_the_operator_trusts_the_receiver_as_approval_proxy_once() -> None:
    docs = render(sets=SLACK, set_json=PROD)
    assert _proxies(_operator_args(docs)) == [RECEIVER_USER]
    both = render(
        sets=SLACK,
        set_json=[
            *PROD,
            f'webhook.approvalProxies=["system:serviceaccount:chatops:bot","{RECEIVER_USER}"]',
        ],
    )
    assert _proxies(_operator_args(both)) == ["system:serviceaccount:chatops:bot", RECEIVER_USER]
    # Another proxy alone does not make the receiver one.
    other = render(set_json=[*PROD, 'webhook.approvalProxies=["system:serviceaccount:c:b"]'])
    assert _proxies(_operator_args(other)) == ["system:serviceaccount:c:b"]
    # Without a rendered receiver there is nothing to trust.
    gone = render(sets=[*SLACK, "receiver.enabled=false"], set_json=PROD)
    assert _proxies(_operator_args(gone)) == []


def test_on_the_receiver_may_reach_slack_on_443() -> None:
    docs = render(sets=SLACK, set_json=PROD)
    off = _egress(render(set_json=PROD))
    assert _egress(docs) == [
        *off,
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]},
    ]
    proxy = render(
        sets=SLACK,
        set_json=[*PROD, 'receiver.slack.egress=[{"cidr":"203.0.113.7/32","ports":[3128]}]'],
    )
    assert _egress(proxy)[-1] == {
        "to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}],
        "ports": [{"protocol": "TCP", "port": 3128}],
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "webhook.enabled=false"],
            "receiver.slack.enabled needs webhook.enabled: the admission webhook is what turns",
        ),
        (
            ["--set", "receiver.slack.signingSecret=x"],
            "at '/receiver/slack': additional properties 'signingSecret' not allowed",
        ),
    ],
)
def test_bad_slack_values_fail_the_install(args: list[str], message: str) -> None:
    proc = helm(
        "template", "agentrun", str(CHART), "--set-json", PROD[0], *["--set", SLACK[0]], *args,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
