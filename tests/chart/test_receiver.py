"""The chart's agentrun-receiver (templates/receiver.yaml, rbac-receiver.yaml): a Deployment,
Service and ServiceAccount of its own, routes from values loaded by the receiver's own
parser, RBAC bound only in its namespaces and the config bounded by them, the operator's
securityContext, and an off-switch. The install on a cluster, an alert through the Service
and the attacker's tests are in tests/realnode/test_receiver.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from agentrun.receiver import routing
from tests.chart.helm import CHART, by_kind, helm, one, render

PROD = ['toolNamespaces=["prod","staging"]']
CRASHLOOP = {
    "name": "crashloop",
    "matchers": ["alertname=KubePodCrashLooping", 'severity=~"warning|critical"'],
    "agent": "sre-agent",
    "allowedNamespaces": ["staging"],
}


def _receiver_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "receiver" in d["metadata"]["name"]]


def _config(docs: list[dict[str, Any]], name: str = "agentrun-receiver") -> routing.ReceiverConfig:
    """The rendered config, loaded as the receiver loads it (routing.load_config)."""
    text = one(docs, "ConfigMap", name)["data"]["receiver.yaml"]
    return routing.load_config(yaml.safe_load(text))


def test_receiver_runs_as_its_own_deployment_with_the_operators_security_context() -> None:
    docs = render(set_json=PROD)
    deploy = one(docs, "Deployment", "agentrun-receiver")
    operator = one(docs, "Deployment", "agentrun")["spec"]["template"]["spec"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["agentrun-receiver"]
    assert container["image"] == operator["containers"][0]["image"]
    assert pod["serviceAccountName"] == "agentrun-receiver"
    assert pod["securityContext"] == operator["securityContext"]
    assert container["securityContext"] == operator["containers"][0]["securityContext"]
    assert pod["enableServiceLinks"] is False
    labels = deploy["spec"]["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "receiver"
    # The operator's Service, probes and NetworkPolicy never select the receiver's pods.
    assert one(docs, "Service", "agentrun")["spec"]["selector"]["app.kubernetes.io/component"] == (
        "operator"
    )
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_path = container["args"][container["args"].index("--config") + 1]
    assert config_path == f"{mounts['config']}/receiver.yaml"
    assert volumes["config"]["configMap"]["name"] == "agentrun-receiver"
    config = _config(docs)
    assert config.auth.tokenFile == f"{mounts['token']}/token"
    assert volumes["token"]["secret"]["secretName"] == "agentrun-receiver-token"
    assert volumes["token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    secret = one(docs, "Secret", "agentrun-receiver-token")
    assert len(secret["data"]["token"]) > 40  # base64 of 40 random characters
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = one(docs, "Service", "agentrun-receiver")["spec"]
    assert service["selector"]["app.kubernetes.io/component"] == "receiver"
    assert service["ports"] == [
        {"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"}
    ]
    assert config.listen == "0.0.0.0:8081"
    assert {"name": "http", "containerPort": 8081, "protocol": "TCP"} in container["ports"]


def test_default_config_routes_every_alert_to_the_default_agent_in_its_namespaces() -> None:
    config = _config(render(set_json=PROD))
    assert config.allowedNamespaces == ["prod", "staging"]  # the bound: where its RBAC is
    assert config.defaultNamespace == "prod"
    assert config.routes == []
    assert config.default is not None and config.default.agent == "sre-agent"
    route = config.default.as_route()
    # The alert's namespace label picks among the receiver's namespaces, nothing else.
    for label, expected in (("staging", "staging"), ("", "prod")):
        assert routing.choose_namespace("default", "prod", route.allowedNamespaces, label) == (
            expected
        )
    with pytest.raises(routing.NamespaceNotAllowed):
        routing.choose_namespace("default", "prod", route.allowedNamespaces, "kube-system")
    assert not config.api.enabled and config.api.agents == []
    # The default Agent's name follows agent.name.
    renamed = _config(render(sets=["agent.name=oncall"], set_json=PROD))
    assert renamed.default is not None and renamed.default.agent == "oncall"


def test_routes_from_values_are_what_the_receiver_loads() -> None:
    docs = render(
        sets=["receiver.defaultRoute.enabled=false", "receiver.api.enabled=true"],
        set_json=[
            *PROD,
            f"receiver.routes=[{json.dumps(CRASHLOOP)}]",
            'receiver.api.agents=["sre-agent"]',
            'receiver.api.limits={"maxSteps":10}',
        ],
    )
    config = _config(docs)
    (route,) = config.routes
    assert route.model_dump(include={"name", "matchers", "agent", "allowedNamespaces"}) == CRASHLOOP
    labels = {"alertname": "KubePodCrashLooping", "severity": "critical", "pod": "web-1"}
    assert route.matches(labels) and not route.matches({**labels, "severity": "info"})
    assert config.default is None  # unmatched alerts are refused (422)
    assert config.api.enabled and config.api.agents == ["sre-agent"]
    assert config.api.limits is not None and config.api.limits.maxSteps == 10


def test_rbac_only_lists_creates_and_patches_runs_in_its_namespaces() -> None:
    """What KubeStore calls (operator/agentrun/receiver/server.py), nothing more: no Secrets,
    no Jobs, no run status, and no namespace but the receiver's."""
    docs = render(set_json=[*PROD, 'receiver.namespaces=["prod"]'])
    role = one(docs, "ClusterRole", "agentrun-receiver")
    grants = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert grants == {
        ("agentrun.dev", "agentruns"): ["create", "list", "patch"],
        ("agentrun.dev", "agents"): ["get"],
    }
    bindings = [
        b
        for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
        if b["roleRef"]["name"] == "agentrun-receiver"
    ]
    assert [(b["kind"], b["metadata"].get("namespace")) for b in bindings] == [
        ("RoleBinding", "prod")
    ]
    subjects = [s for b in by_kind(docs, "RoleBinding") for s in b["subjects"]]
    receiver_sa = {
        "kind": "ServiceAccount",
        "name": "agentrun-receiver",
        "namespace": "agentrun-system",
    }
    assert [
        b["roleRef"]["name"] for b in by_kind(docs, "RoleBinding") if receiver_sa in b["subjects"]
    ] == ["agentrun-receiver"]
    assert receiver_sa in subjects
    assert not any(
        receiver_sa in b.get("subjects", []) for b in by_kind(docs, "ClusterRoleBinding")
    )
    assert _config(docs).allowedNamespaces == ["prod"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ['receiver.routes=[{"name":"sys","agent":"sre-agent","namespace":"kube-system"}]'],
            'receiver.routes "sys": namespace "kube-system" is not one of the receiver\'s '
            "namespaces prod, staging",
        ),
        (
            ['receiver.routes=[{"name":"x","agent":"a","allowedNamespaces":["default"]}]'],
            'receiver.routes "x": namespace "default" is not one of',
        ),
        (
            ['receiver.api.allowedNamespaces=["kube-system"]'],
            'receiver.api.allowedNamespaces: "kube-system" is not one of',
        ),
        (['receiver.defaultNamespace="default"'], 'receiver.defaultNamespace "default" is not'),
    ],
)
def test_a_route_outside_its_namespaces_fails_the_install(args: list[str], message: str) -> None:
    """Its ServiceAccount could not create runs there: said at install, not at the first alert."""
    set_json = [a for arg in [*PROD, *args] for a in ("--set-json", arg)]
    proc = helm("template", "agentrun", str(CHART), *set_json, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_schema_rejects_a_typo_in_a_route() -> None:
    route = '[{"name":"x","agent":"a","matcher":["alertname=X"]}]'
    proc = helm(
        "template", "agentrun", str(CHART), "--set-json", f"receiver.routes={route}", check=False
    )
    assert proc.returncode != 0
    assert "at '/receiver/routes/0': additional properties 'matcher' not allowed" in proc.stderr


def test_an_existing_secret_replaces_the_generated_token() -> None:
    docs = render(sets=["receiver.existingSecret=alertmanager-token"], set_json=PROD)
    assert not [d for d in by_kind(docs, "Secret") if "receiver" in d["metadata"]["name"]]
    pod = one(docs, "Deployment", "agentrun-receiver")["spec"]["template"]["spec"]
    token = next(v for v in pod["volumes"] if v["name"] == "token")
    assert token["secret"]["secretName"] == "alertmanager-token"


def test_off_switch_and_no_namespace_render_no_receiver() -> None:
    assert not _receiver_docs(render(sets=["receiver.enabled=false"], set_json=PROD))
    # Without a namespace for its runs there is nothing it could do: not rendered.
    assert not _receiver_docs(render())
    # The operator is unaffected either way.
    one(render(sets=["receiver.enabled=false"], set_json=PROD), "Deployment", "agentrun")
