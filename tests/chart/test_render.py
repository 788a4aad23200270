"""helm lint / template of charts/agentrun with default and full values, validated against
the Kubernetes schemas of a current version (kubernetes-validate); 1.20 is checked by a
server-side dry run in tests/integration/test_chart.py."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.helm import (
    CHART,
    CR_KINDS,
    EXTERNAL_KINDS,
    FULL_VALUES,
    PEERING_KINDS,
    by_kind,
    helm,
    one,
    render,
    value_args,
)

CURRENT = ("1.31", "1.37")  # the oldest and newest current versions kubernetes-validate carries
VARIANTS = {"default": False, "full": True}


@pytest.fixture(scope="module", params=list(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(full=VARIANTS[request.param])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lint_strict_is_clean(variant: str) -> None:
    proc = helm("lint", "--strict", str(CHART), *value_args(full=VARIANTS[variant]))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_full_values_sets_every_value() -> None:
    """values-full.yaml sets every key of values.yaml (so `full` really exercises them all)."""

    def keys(value: Any, prefix: str = "") -> set[str]:
        if isinstance(value, dict) and value:
            return {k for key, v in value.items() for k in keys(v, f"{prefix}{key}.")}
        return {prefix.rstrip(".")}

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    full = yaml.safe_load(FULL_VALUES.read_text())
    missing = {k for k in keys(defaults) if not any(f.startswith(k) for f in keys(full))}
    assert not missing, f"values-full.yaml does not set: {sorted(missing)}"


@pytest.mark.parametrize("version", CURRENT)
def test_manifests_validate_against_current_kubernetes(
    rendered: list[dict[str, Any]], version: str
) -> None:
    builtin = [d for d in rendered if d["kind"] not in CR_KINDS + PEERING_KINDS + EXTERNAL_KINDS]
    assert builtin
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            pytest.fail(f"{name} is invalid for Kubernetes {version}: {e.message} at {e.path}")


def test_custom_resources_validate_against_the_crds() -> None:
    docs = render(full=True)
    schemas = {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in by_kind(docs, "CustomResourceDefinition")
    }
    crs = [d for d in docs if d["kind"] in CR_KINDS + PEERING_KINDS]
    assert {d["kind"] for d in crs} == {"Agent", "AgentTool", "MCPServer", "KopfPeering"}
    for doc in crs:
        jsonschema.validate(doc, schemas[doc["kind"]])


def test_default_install() -> None:
    docs = render()
    deploy = one(docs, "Deployment", "agentrun")
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"ghcr.io/agentrun/agentrun:{chart['appVersion']}"
    assert container["command"] == ["agentrun-operator"]
    assert container["args"][:2] == ["--liveness", "http://0.0.0.0:8080/healthz"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AGENTRUN_NAMESPACES"] == ""  # all namespaces
    assert env["AGENTRUN_TOOL_IMAGE"] == container["image"]
    assert env["AGENTRUN_PROMPTS_DIR"] == "/etc/agentrun/prompts"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "prompts")
    assert mount["mountPath"] == env["AGENTRUN_PROMPTS_DIR"]
    volume = next(v for v in pod["volumes"] if v["name"] == "prompts")
    assert volume["configMap"]["name"] == "agentrun-prompts"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["serviceAccountName"] == "agentrun"
    one(docs, "ServiceAccount", "agentrun")
    svc = one(docs, "Service", "agentrun")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"health": 8080, "metrics": 9090}
    # Cluster-wide: one ClusterRoleBinding, no namespace list needed.
    binding = one(docs, "ClusterRoleBinding", "agentrun-operator")
    assert binding["roleRef"]["name"] == "agentrun-operator"
    # The only namespaced grant: reading credentials in the release namespace.
    (credentials,) = [
        r for r in by_kind(docs, "RoleBinding") if "operator" in r["metadata"]["name"]
    ]
    assert credentials["metadata"]["namespace"] == "agentrun-system"
    assert credentials["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "agentrun-operator-credentials",
    }
    cluster_rules = one(docs, "ClusterRole", "agentrun-operator-cluster")["rules"]
    assert {r for rule in cluster_rules for r in rule["resources"]} == {
        "customresourcedefinitions",
        "subjectaccessreviews",  # tool ServiceAccounts' write rights; the approval webhook
    }
    # No tools anywhere until toolNamespaces is set; the ClusterRoles are there.
    assert not by_kind(docs, "AgentTool") and not by_kind(docs, "Agent")
    one(docs, "ClusterRole", "agentrun-tool-read")
    one(docs, "ClusterRole", "agentrun-tool-write")
    crds = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert {"agentruns.agentrun.dev", "agents.agentrun.dev", "agenttools.agentrun.dev"} <= crds


def test_restricted_security_context(rendered: list[dict[str, Any]]) -> None:
    """The operator, the receiver (when it has a namespace) and the Helm test pod meet the
    restricted Pod Security Standard."""
    deployments = by_kind(rendered, "Deployment")
    pods = [d["spec"]["template"]["spec"] for d in deployments]
    pods += [d["spec"] for d in by_kind(rendered, "Pod")]
    receivers = [d for d in deployments if d["metadata"]["name"].endswith("-receiver")]
    assert len(pods) == 2 + len(receivers)
    for pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_pods_get_no_service_links() -> None:
    """With the README's release name the webhook Service is `agentrun-webhook`: a kubelet's
    service links would set AGENTRUN_WEBHOOK_PORT=tcp://IP:443 in the operator's pod, which
    reads it as its --webhook-port, and it crash-looped at start (found by `make demo` on the
    real node). Every Deployment of the chart turns service links off."""
    docs = render(release="agentrun")
    assert "agentrun-webhook" in {d["metadata"]["name"] for d in by_kind(docs, "Service")}
    deployments = by_kind(docs, "Deployment")
    assert deployments
    for deployment in deployments:
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_full_values_reach_the_manifests() -> None:
    docs = render(full=True)
    deploy = one(docs, "Deployment", "agentrun-full")
    spec = deploy["spec"]
    # Two replicas with peering: a new one joins before an old one leaves.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.com/platform/agentrun:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == [
        "--liveness",
        "http://0.0.0.0:9091/healthz",
        "--metrics",
        "0.0.0.0:9092",
        "--peering",
        "agentrun",
        "--webhook",
        "incluster",
        "--webhook-port",
        "9444",
        "--webhook-cert",
        "/var/run/agentrun/webhook/tls.crt",
        "--webhook-key",
        "/var/run/agentrun/webhook/tls.key",
        "--approver-role",
        "agentrun-full-approver",
        "--approval-proxy",
        "system:serviceaccount:chatops:approver",
        # Added by receiver.slack.enabled.
        "--approval-proxy",
        "system:serviceaccount:agentrun-system:agentrun-full-receiver",
        "--verbose",
    ]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["AGENTRUN_NAMESPACES"] == "prod,staging"
    assert env["AGENTRUN_TOOL_IMAGE"] == "registry.example.com/platform/agentrun-tools:0.1.0"
    assert env["AGENTRUN_PROMPTS_DIR"] == "/var/lib/agentrun/prompts"
    assert env["AGENTRUN_IO_THREADS"] == "16"
    assert env["AGENTRUN_COALESCE_SECONDS"] == "0"
    assert env["AGENTRUN_TOOL_START_SECONDS"] == "600"
    assert env["AGENTRUN_MAX_ACTIVE_RUNS"] == "50"
    assert c["livenessProbe"]["failureThreshold"] == 4
    assert c["readinessProbe"]["periodSeconds"] == 5
    assert c["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "agentrun-operator"
    meta = spec["template"]["metadata"]
    assert meta["labels"]["team"] == "platform"
    assert meta["annotations"]["example.com/scrape"] == "false"
    assert "checksum/prompts" in meta["annotations"]
    sa = one(docs, "ServiceAccount", "agentrun-operator")
    assert sa["metadata"]["annotations"] == {"example.com/role": "agentrun"}
    # Watched namespaces: the operator's namespaced rules are bound only there.
    bindings = [
        b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == "agentrun-full-operator"
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["prod", "staging"]
    assert all(b["subjects"][0]["namespace"] == "agentrun-system" for b in bindings)
    assert not [
        b
        for b in by_kind(docs, "ClusterRoleBinding")
        if b["roleRef"]["name"] == "agentrun-full-operator"
    ]
    cluster_rules = one(docs, "ClusterRole", "agentrun-full-operator-cluster")["rules"]
    assert {r for rule in cluster_rules for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
        "subjectaccessreviews",
    }
    # Tools and example Agents in each tool namespace.
    for ns in ("prod", "staging"):
        for effect in ("read", "write"):
            tool_sa = [
                d
                for d in by_kind(docs, "ServiceAccount")
                if (d["metadata"]["name"], d["metadata"].get("namespace"))
                == (f"agentrun-tool-{effect}", ns)
            ]
            assert len(tool_sa) == 1
            rb = [
                d
                for d in by_kind(docs, "RoleBinding")
                if d["metadata"]["namespace"] == ns
                and d["metadata"]["name"] == f"agentrun-tool-{effect}"
            ]
            assert rb[0]["roleRef"]["name"] == f"agentrun-full-tool-{effect}"
        agent = [a for a in by_kind(docs, "Agent") if a["metadata"]["namespace"] == ns]
        assert agent[0]["spec"]["model"] == {
            "name": "my-model",
            "baseURL": "http://vllm.models.svc:8000/v1",
            "apiKeySecretRef": {"name": "model-api-key", "key": "token"},
        }
    test_pod = one(docs, "Pod", "agentrun-full-test-health")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["containers"][0]["command"][-1] == (
        "http://agentrun-full.agentrun-system.svc:8081/healthz"
    )


def test_custom_resources_are_hooks_after_the_crds() -> None:
    """Helm maps every kind before creating anything: CRs of the chart's own CRDs are hooks."""
    docs = render(full=True)
    for doc in [d for d in docs if d["kind"] in CR_KINDS + PEERING_KINDS]:
        annotations = doc["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_crds_can_be_left_out_and_are_kept_on_uninstall() -> None:
    docs = render()
    for crd in by_kind(docs, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(render(sets=["crds.install=false"]), "CustomResourceDefinition")


def test_toggles_leave_parts_out() -> None:
    docs = render(
        sets=["rbac.create=false", "serviceAccount.create=false", "tools.clusterRoles=false"]
    )
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert not by_kind(docs, "ServiceAccount")
    assert (
        one(docs, "Deployment", "agentrun")["spec"]["template"]["spec"]["serviceAccountName"]
        == "default"
    )
    docs = render(sets=["operator.metricsPort=0"])
    (c,) = one(docs, "Deployment", "agentrun")["spec"]["template"]["spec"]["containers"]
    assert c["args"][2:4] == ["--metrics", ""]
    assert [p["name"] for p in c["ports"]] == ["health", "webhook"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--set", "operator.watchNamespace=prod"],
            "at '/operator': additional properties 'watchNamespace' not allowed",
        ),
        (["--set", "imge.tag=1"], "additional properties 'imge' not allowed"),
        (
            ["--set", "operator.strategy=BlueGreen"],
            "at '/operator/strategy': value must be one of 'Recreate', 'RollingUpdate'",
        ),
        (
            ["--set-json", 'toolNamespaces=["Prod_NS"]'],
            "at '/toolNamespaces/0': 'Prod_NS' does not match pattern",
        ),
        (["--set", "resources.request.cpu=1"], "additional properties 'request' not allowed"),
    ],
)
def test_schema_rejects_typos_readably(args: list[str], message: str) -> None:
    proc = helm("template", "agentrun", str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_is_strict_at_every_level() -> None:
    """Every object in values.schema.json forbids unknown keys (or types its map values),
    except the pass-through Kubernetes types under affinity and Helm's `global`."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    passthrough = {
        "/global",
        # An MCPServer's spec, validated by the apiserver against the CRD's schema.
        "/mcp/servers/*",
        "/affinity/nodeAffinity",
        "/affinity/podAffinity",
        "/affinity/podAntiAffinity",
    }
    loose: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        extra = node.get("additionalProperties")
        strict = extra is False or isinstance(extra, dict)
        if node.get("type") == "object" and path not in passthrough and not strict:
            loose.append(path or "/")
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}/{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}/*")

    walk(schema, "")
    assert not loose, f"objects accepting unknown keys: {loose}"
    # And every key in values.yaml is described by the schema.
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def check(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for k, v in value.items():
                assert k in node["properties"], f"{path}/{k} is not in values.schema.json"
                check(v, node["properties"][k], f"{path}/{k}")

    check(values, schema, "")
