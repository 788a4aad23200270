"""Render tests of the approval webhook, high availability (peering) and monitoring parts of
charts/agentrun (docs/approvals.md "In a cluster", the chart README)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, by_kind, helm, one, render

HOOKS = ("mutate-agentrun", "validate-agentrun")
CONFIG_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
DASHBOARD = CHART / "dashboards" / "agentrun.json"


def _container(docs: list[dict[str, Any]], name: str = "agentrun") -> dict[str, Any]:
    (c,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    return dict(c)


def _cluster_rules(docs: list[dict[str, Any]], name: str) -> dict[str, list[str]]:
    return {
        res: rule["verbs"]
        for rule in one(docs, "ClusterRole", name)["rules"]
        for res in rule["resources"]
    }


def _openssl(*args: str, stdin: bytes = b"") -> str:
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True)
    return proc.stdout.decode() + proc.stderr.decode()


def _cert_text(pem: bytes) -> str:
    return _openssl("x509", "-noout", "-text", stdin=pem)


# ---------------------------------------------------------------- the approval webhook


def test_webhook_is_on_by_default_as_docs_approvals_says(tmp_path: Path) -> None:
    docs = render()
    c = _container(docs)
    args = c["args"]
    i = args.index("--webhook")
    assert args[i : i + 10] == [
        "--webhook", "incluster",
        "--webhook-port", "9443",
        "--webhook-cert", "/etc/agentrun/webhook/tls.crt",
        "--webhook-key", "/etc/agentrun/webhook/tls.key",
        "--approver-role", "agentrun-approver",
    ]  # fmt: skip
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in c["ports"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount == {"name": "webhook-tls", "mountPath": "/etc/agentrun/webhook", "readOnly": True}
    pod = one(docs, "Deployment", "agentrun")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == "agentrun-webhook-tls"

    svc = one(docs, "Service", "agentrun-webhook")
    assert svc["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "agentrun",
        "app.kubernetes.io/instance": "agentrun",
        "app.kubernetes.io/component": "operator",
    }

    secret = one(docs, "Secret", "agentrun-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    for kind, hook in zip(CONFIG_KINDS, HOOKS, strict=True):
        config = one(docs, kind, "agentrun")
        (webhook,) = config["webhooks"]
        want = {
            "name": f"{hook}.agentrun.dev",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "clientConfig": {
                "service": {
                    "name": "agentrun-webhook",
                    "namespace": "agentrun-system",
                    "path": f"/{hook}",
                    "port": 443,
                },
                "caBundle": secret["data"]["ca.crt"],
            },
            "rules": [
                {
                    "apiGroups": ["agentrun.dev"],
                    "apiVersions": ["v1alpha1"],
                    "resources": ["agentruns"],
                    "operations": ["CREATE", "UPDATE"],
                    "scope": "Namespaced",
                }
            ],
        }
        if kind.startswith("Mutating"):
            want["reinvocationPolicy"] = "IfNeeded"
        assert webhook == want
        assert "annotations" not in config["metadata"]
    # The serving certificate: for the Service's DNS names, signed by the caBundle's CA.
    text = _cert_text(data["tls.crt"])
    assert "DNS:agentrun-webhook.agentrun-system.svc," in text
    assert "DNS:agentrun-webhook.agentrun-system.svc.cluster.local" in text
    assert "IP Address" not in text
    (tmp_path / "ca.pem").write_bytes(data["ca.crt"])
    (tmp_path / "tls.pem").write_bytes(data["tls.crt"])
    verified = _openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "tls.pem"))
    assert "OK" in verified
    # The key belongs to the certificate.
    pub = _openssl("x509", "-noout", "-pubkey", stdin=data["tls.crt"])
    assert pub == _openssl("pkey", "-pubout", stdin=data["tls.key"])

    # The operator may ask the apiserver who may approve.
    assert _cluster_rules(docs, "agentrun-operator-cluster")["subjectaccessreviews"] == ["create"]


def test_approve_is_only_in_the_approver_role() -> None:
    docs = render()
    approver = one(docs, "ClusterRole", "agentrun-approver")
    assert not [k for k in approver["metadata"]["labels"] if k.startswith("rbac.authorization")]
    assert "approve" in _cluster_rules(docs, "agentrun-approver")["agentruns"]
    for role in by_kind(docs, "ClusterRole"):
        if role["metadata"]["name"] != "agentrun-approver":
            verbs = {v for rule in role["rules"] for v in rule["verbs"]}
            assert "approve" not in verbs and "*" not in verbs, role["metadata"]["name"]
    editor = one(docs, "ClusterRole", "agentrun-editor")
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"


@pytest.mark.parametrize(
    ("url", "san"),
    [
        ("https://127.0.0.1:9555", "IP Address:127.0.0.1"),
        ("https://hooks.example.com/agentrun/", "DNS:hooks.example.com"),
    ],
)
def test_webhook_url_registers_a_url_and_the_cert_covers_its_host(url: str, san: str) -> None:
    docs = render(sets=[f"webhook.url={url}"])
    secret = one(docs, "Secret", "agentrun-webhook-tls")
    for kind, hook in zip(CONFIG_KINDS, HOOKS, strict=True):
        (webhook,) = one(docs, kind, "agentrun")["webhooks"]
        assert webhook["clientConfig"] == {
            "url": f"{url.rstrip('/')}/{hook}",
            "caBundle": secret["data"]["ca.crt"],
        }
    text = _cert_text(base64.b64decode(secret["data"]["tls.crt"]))
    assert san in text and "DNS:agentrun-webhook.agentrun-system.svc" in text


def test_webhook_can_be_turned_off() -> None:
    docs = render(sets=["webhook.enabled=false"])
    for kind in (*CONFIG_KINDS, "Secret"):
        assert not by_kind(docs, kind), kind
    assert "agentrun-webhook" not in {d["metadata"]["name"] for d in by_kind(docs, "Service")}
    c = _container(docs)
    assert "--webhook" not in c["args"] and "--approver-role" not in c["args"]
    assert "webhook" not in [p["name"] for p in c["ports"]]
    assert "webhook-tls" not in [m["name"] for m in c["volumeMounts"]]
    # Still asked without the webhook: whether a tool's ServiceAccount can write.
    assert _cluster_rules(docs, "agentrun-operator-cluster")["subjectaccessreviews"] == ["create"]


def test_webhook_certificate_from_cert_manager() -> None:
    docs = render(sets=["webhook.certManager.enabled=true"])
    assert not by_kind(docs, "Secret")
    issuer = one(docs, "Issuer", "agentrun-webhook")
    assert issuer["spec"] == {"selfSigned": {}}
    cert = one(docs, "Certificate", "agentrun-webhook")
    assert cert["spec"]["secretName"] == "agentrun-webhook-tls"
    assert cert["spec"]["dnsNames"] == [
        "agentrun-webhook.agentrun-system.svc",
        "agentrun-webhook.agentrun-system.svc.cluster.local",
    ]
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": "agentrun-webhook"}
    for kind in CONFIG_KINDS:
        config = one(docs, kind, "agentrun")
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "agentrun-system/agentrun-webhook"
        }
        assert "caBundle" not in config["webhooks"][0]["clientConfig"]
    # An Issuer of your own: the chart makes none.
    docs = render(sets=["webhook.certManager.enabled=true", "webhook.certManager.issuer=my-ca"])
    assert not by_kind(docs, "Issuer")
    assert one(docs, "Certificate", "agentrun-webhook")["spec"]["issuerRef"]["name"] == "my-ca"


def test_webhook_namespace_selector_and_release_names() -> None:
    selector = {"matchLabels": {"agentrun.dev/approvals": "checked"}}
    docs = render(
        release="team-a",
        namespace="team-a-system",
        set_json=[f"webhook.namespaceSelector={json.dumps(selector)}"],
    )
    for kind in CONFIG_KINDS:
        (webhook,) = one(docs, kind, "team-a-agentrun")["webhooks"]
        assert webhook["namespaceSelector"] == selector
        assert webhook["clientConfig"]["service"]["name"] == "team-a-agentrun-webhook"
        assert webhook["clientConfig"]["service"]["namespace"] == "team-a-system"
    args = _container(docs, "team-a-agentrun")["args"]
    assert args[args.index("--approver-role") + 1] == "team-a-agentrun-approver"


# ---------------------------------------------------------------- high availability


def test_one_replica_runs_standalone() -> None:
    docs = render()
    spec = one(docs, "Deployment", "agentrun")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert "--peering" not in _container(docs)["args"]
    assert not by_kind(docs, "KopfPeering") and not by_kind(docs, "ClusterKopfPeering")
    rules = _cluster_rules(docs, "agentrun-operator") | _cluster_rules(
        docs, "agentrun-operator-cluster"
    )
    assert not {"kopfpeerings", "clusterkopfpeerings"} & set(rules)


def test_replicas_run_with_peering_cluster_wide() -> None:
    docs = render(sets=["replicaCount=3"])
    spec = one(docs, "Deployment", "agentrun")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    args = _container(docs)["args"]
    assert args[args.index("--peering") + 1] == "agentrun"
    peering = one(docs, "ClusterKopfPeering", "agentrun")
    assert peering["apiVersion"] == "kopf.dev/v1"
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert not by_kind(docs, "KopfPeering")
    rules = _cluster_rules(docs, "agentrun-operator-cluster")
    assert rules["clusterkopfpeerings"] == ["get", "list", "watch", "patch"]
    assert "kopfpeerings" not in _cluster_rules(docs, "agentrun-operator")
    # The chart installs kopf's peering CRDs with its own.
    crds = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds


def test_replicas_in_watched_namespaces_get_a_kopfpeering_each() -> None:
    docs = render(sets=["replicaCount=2"], set_json=['operator.watchNamespaces=["prod","dev"]'])
    peerings = by_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("dev", "agentrun"),
        ("prod", "agentrun"),
    ]
    assert not by_kind(docs, "ClusterKopfPeering")
    # Namespaced: bound by the RoleBindings in those namespaces only.
    assert _cluster_rules(docs, "agentrun-operator")["kopfpeerings"] == [
        "get",
        "list",
        "watch",
        "patch",
    ]
    assert "clusterkopfpeerings" not in _cluster_rules(docs, "agentrun-operator-cluster")


# ---------------------------------------------------------------- monitoring


def _exported_metrics() -> set[str]:
    """Every sample name the operator's /metrics can carry (agentrun.operator.metrics)."""
    from agentrun.operator import metrics

    families = list(metrics.REGISTRY.collect())
    families += metrics.RunsCollector(lambda: [], lambda: datetime.now(UTC)).collect()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = {f.name + s for f in families for s in suffixes[f.type]}
    assert "agentrun_runs_awaiting_approval" in names and "agentrun_steps_total" in names
    return names


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


def test_service_monitor_and_dashboard() -> None:
    docs = render(
        sets=["metrics.serviceMonitor.enabled=true", "metrics.grafanaDashboard.enabled=true"],
    )
    monitor = one(docs, "ServiceMonitor", "agentrun")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    svc = one(docs, "Service", "agentrun")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["agentrun-system"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s"}
    # The webhook Service carries other labels: it is not scraped.
    hook_svc = one(docs, "Service", "agentrun-webhook")
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= hook_svc["metadata"]["labels"].items()
    )

    cm = one(docs, "ConfigMap", "agentrun-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "agentrun-system"
    assert cm["data"]["agentrun.json"].strip() == DASHBOARD.read_text().strip()
    dashboard = json.loads(cm["data"]["agentrun.json"])
    assert dashboard["title"] == "agentrun" and dashboard["uid"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported_metrics()
    exprs = _exprs(dashboard)
    assert len(exprs) >= 10
    used: set[str] = set()
    for title, expr in exprs:
        names = set(re.findall(r"\bagentrun_[a-z_]+\b", expr))
        assert names, f"{title}: {expr} names no agentrun metric"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported"
        used |= names
    # Every panel the chart README promises, by the metric it shows.
    for metric in (
        "agentrun_runs",
        "agentrun_runs_awaiting_approval",
        "agentrun_approval_wait_seconds_max",
        "agentrun_steps_total",
        "agentrun_model_request_duration_seconds_bucket",
        "agentrun_model_errors_total",
        "agentrun_tokens_total",
        "agentrun_tool_job_duration_seconds_bucket",
    ):
        assert metric in used, f"no panel shows {metric}"
    text = json.dumps(dashboard)
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.9," in text
    assert "by (agent, model" in text


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) missing")
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's range variables filled in, parses (`promtool check rules`)."""
    rules = [
        {
            "record": f"agentrun:dashboard_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h"),
        }
        for i, (_, expr) in enumerate(_exprs(json.loads(DASHBOARD.read_text())))
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_monitoring_is_off_by_default_and_needs_the_metrics_port() -> None:
    docs = render()
    assert not by_kind(docs, "ServiceMonitor")
    assert "agentrun-dashboard" not in {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    proc = helm(
        "template", "agentrun", str(CHART),
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "operator.metricsPort=0",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "metrics.serviceMonitor.enabled needs operator.metricsPort > 0" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=0"], "at '/replicaCount'"),
        (["--set", "webhook.url=http://127.0.0.1:9443"], "at '/webhook/url'"),
        (["--set", "webhook.certManger.enabled=true"], "'certManger' not allowed"),
        (
            ["--set", "metrics.serviceMonitor.interval=often"],
            "at '/metrics/serviceMonitor/interval'",
        ),
    ],
)
def test_schema_rejects_bad_feature_values(args: list[str], message: str) -> None:
    proc = helm("template", "agentrun", str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_otel_is_off_by_default_and_on_sets_the_standard_variables_and_egress() -> None:
    docs = render()
    env = {e["name"] for e in _container(docs).get("env") or []}
    assert not {n for n in env if n.startswith("OTEL_EXPORTER")}  # off: no exporter at all

    on = render(
        sets=[
            "toolNamespaces={prod}",
            "otel.enabled=true",
            "otel.endpoint=http://otel-collector.observability:4318",
            "otel.captureContent=true",
            "otel.env.OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod",
        ]
    )
    for container in (_container(on), _container(on, "agentrun-receiver")):
        values = {e["name"]: e.get("value") for e in container["env"]}
        assert values["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert values["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert values["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] == "true"
        assert values["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment=prod"
    policies = {p["metadata"]["name"]: p for p in by_kind(on, "NetworkPolicy")}
    # The tool pods too: a tool's own span goes to the collector (the tool Job gets the
    # operator's exporter settings).
    for name in ("agentrun", "agentrun-receiver", "agentrun-tools"):
        ports = [
            p["port"] for rule in policies[name]["spec"]["egress"] for p in rule.get("ports") or []
        ]
        assert 4318 in ports, name
    off = {
        x["metadata"]["name"]: x
        for x in by_kind(render(sets=["toolNamespaces={prod}"]), "NetworkPolicy")
    }
    for name in ("agentrun", "agentrun-tools"):
        assert 4318 not in [
            p["port"] for rule in off[name]["spec"]["egress"] for p in rule.get("ports") or []
        ], name


def test_otel_enabled_without_an_endpoint_fails_the_install() -> None:
    proc = helm("template", "agentrun", str(CHART), "--set", "otel.enabled=true", check=False)
    assert proc.returncode != 0 and "otel.endpoint is required" in proc.stderr
