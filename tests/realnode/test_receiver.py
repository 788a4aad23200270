"""The chart's agentrun-receiver on the real node: `helm install` runs it as a container from
the built image under its own ServiceAccount; a client pod posts a kube-prometheus-shaped
KubePodCrashLooping notification through the receiver's Service with the generated token,
as Alertmanager in the cluster would, and the AgentRun for the default Agent appears; a
repeat is folded into it, an alert naming a namespace outside the receiver's is refused, no
token is 401. The attacker's test: code run inside the receiver's container with its
ServiceAccount token cannot create an AgentRun outside its namespaces, read any Secret
(its own token's included), create a Job or write a run's status. `helm upgrade` keeps the
token Alertmanager holds. Tier: real node (the stand-in mounts no ConfigMap or Secret and
routes no Service)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from tests.chart.helm import CHART, helm
from tests.cluster import LocalCluster
from tests.cluster.realnode import RealNode
from tests.demo.scenario import alert_payload

# Run in a pod: POST each request of $REQUESTS to $URL, print [[status, body], ...].
CLIENT = """
import json, os, urllib.error, urllib.request
out = []
for req in json.loads(os.environ["REQUESTS"]):
    headers = {"Content-Type": "application/json"}
    if req["auth"]:
        headers["Authorization"] = "Bearer " + os.environ["TOKEN"].strip()
    r = urllib.request.Request(os.environ["URL"], json.dumps(req["body"]).encode(), headers)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            out.append([resp.status, json.loads(resp.read())])
    except urllib.error.HTTPError as err:
        out.append([err.code, json.loads(err.read() or b"{}")])
print(json.dumps(out))
"""

# Run inside the receiver's container, with its ServiceAccount token: what could a
# compromised receiver do? Prints {what: HTTP status}.
ATTACK = """
import json, os, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
env = os.environ
api = "https://%s:%s" % (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"])
own, other, system, secret = sys.argv[1:5]
def run(ns, name):
    return {"apiVersion": "agentrun.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"agentRef": "sre-agent", "input": {"task": "x"}}}
def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(api + path, None if body is None else json.dumps(body).encode(),
                                 {"Authorization": "Bearer " + token, "Content-Type": ctype},
                                 method=method)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
runs = "/apis/agentrun.dev/v1alpha1/namespaces/%s/agentruns"
print(json.dumps({
    "create run in own": call("POST", runs % own, run(own, "planted")),
    "create run in other": call("POST", runs % other, run(other, "planted")),
    "create run in system": call("POST", runs % system, run(system, "planted")),
    "list runs in other": call("GET", runs % other),
    "get own token secret": call("GET", "/api/v1/namespaces/%s/secrets/%s" % (system, secret)),
    "list secrets in own": call("GET", "/api/v1/namespaces/%s/secrets" % own),
    "list secrets in system": call("GET", "/api/v1/namespaces/%s/secrets" % system),
    "create job in own": call("POST", "/apis/batch/v1/namespaces/%s/jobs" % own,
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
         "spec": {"template": {"spec": {"restartPolicy": "Never",
                  "containers": [{"name": "x", "image": "x"}]}}}}),
    "patch run status in own": call("PATCH", (runs % own) + "/planted/status",
        {"status": {"phase": "Succeeded"}}, "application/merge-patch+json"),
    "delete run in own": call("DELETE", (runs % own) + "/planted"),
}))
"""


def _get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return out


def _post_through_the_service(
    cluster: LocalCluster,
    node: RealNode,
    namespace: str,
    url: str,
    secret: str,
    requests: list[dict[str, Any]],
) -> list[tuple[int, dict[str, Any]]]:
    """The requests, in order, from a pod in `namespace` (where the token Secret is)."""
    name = f"alertmanager-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "client",
                    "image": node.image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", CLIENT],
                    "env": [
                        {"name": "URL", "value": url},
                        {"name": "REQUESTS", "value": json.dumps(requests)},
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}},
                        },
                    ],
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    deadline = time.monotonic() + 120
    phase = ""
    while phase not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"client pod {name} is {phase or 'Pending'}"
        time.sleep(0.5)
        phase = _get(cluster, "pod", name, "-n", namespace).get("status", {}).get("phase", "")
    log = cluster.kubectl("logs", "-n", namespace, name).stdout
    assert phase == "Succeeded", log
    return [(int(code), body) for code, body in json.loads(log.strip().splitlines()[-1])]


def test_chart_receiver_turns_an_alert_into_a_run_and_can_do_nothing_else(
    realnode: RealNode, real_cluster: LocalCluster
) -> None:
    cluster = real_cluster
    suffix = uuid.uuid4().hex[:6]
    rel, system_ns, ns, other = (
        f"rcv-{suffix}",
        f"rcv-sys-{suffix}",
        f"rcv-prod-{suffix}",
        f"rcv-other-{suffix}",
    )
    fullname = f"{rel}-agentrun"
    receiver, secret = f"{fullname}-receiver", f"{fullname}-receiver-token"
    repository, tag = realnode.image.rsplit(":", 1)
    for name in (system_ns, ns, other):
        cluster.kubectl("create", "namespace", name)
    for name in (system_ns, ns, other):
        cluster.wait_for_serviceaccount(name)
    install = (
        str(CHART), "--namespace", system_ns, "--wait", "--timeout", "180s",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never",
        "--set-json", f'toolNamespaces=["{ns}"]',  # the receiver's namespaces by default
        "--set-json", f'operator.watchNamespaces=["{ns}"]',
    )  # fmt: skip
    try:
        # CRDs kept by another test's release (helm.sh/resource-policy: keep) are adopted.
        helm("install", rel, *install, "--take-ownership", kubeconfig=cluster.kubeconfig)
        selector = f"app.kubernetes.io/instance={rel},app.kubernetes.io/component=receiver"
        (pod,) = _get(cluster, "pods", "-n", system_ns, "-l", selector)["items"]
        assert pod["spec"]["nodeName"] == realnode.name
        assert pod["spec"]["containers"][0]["image"] == realnode.image
        assert pod["spec"]["serviceAccountName"] == receiver
        token = base64.b64decode(_get(cluster, "secret", secret, "-n", system_ns)["data"]["token"])

        # ---- Alertmanager in the cluster posts through the Service --------------------------
        service = _get(cluster, "service", receiver, "-n", system_ns)["spec"]
        url = f"http://{service['clusterIP']}:{service['ports'][0]['port']}/alertmanager"
        alert = alert_payload("checkout-77477fc97c-zx6h5")
        alert["alerts"][0]["labels"]["namespace"] = ns
        alert["groupKey"] = f'{{}}:{{alertname="KubePodCrashLooping", namespace="{ns}"}}'
        elsewhere = json.loads(json.dumps(alert))
        elsewhere["alerts"][0]["labels"]["namespace"] = other
        elsewhere["groupKey"] = f'{{}}:{{alertname="KubePodCrashLooping", namespace="{other}"}}'
        answers = _post_through_the_service(
            cluster,
            realnode,
            system_ns,
            url,
            secret,
            [
                {"auth": True, "body": alert},
                {"auth": True, "body": alert},  # Alertmanager's repeat
                {"auth": True, "body": elsewhere},
                {"auth": False, "body": alert},
            ],
        )
        (created_code, created), (repeat_code, repeat), (refused_code, refused), (anon, _) = answers
        assert created_code == 200, created
        (run,) = created["created"]
        assert run["namespace"] == ns and run["agent"] == "sre-agent" and run["route"] == "default"
        assert repeat_code == 200 and repeat["deduplicated"] == [
            {"namespace": ns, "route": "default", "name": run["name"]}
        ]
        assert refused_code == 403 and refused["error"] == "NamespaceNotAllowed", refused
        assert anon == 401
        body = _get(cluster, "agentrun", run["name"], "-n", ns)
        assert body["spec"]["agentRef"] == "sre-agent"
        assert body["metadata"]["labels"]["agentrun.dev/source"] == "alertmanager"
        assert body["metadata"]["annotations"]["agentrun.dev/notifications"] == "2"
        context = body["spec"]["input"]["context"]
        assert context["alert"]["labels"]["pod"] == "checkout-77477fc97c-zx6h5"
        assert context["alert"]["annotations"]["runbook_url"].endswith("/kubepodcrashlooping")
        assert not _get(cluster, "agentruns", "-n", other)["items"]

        # ---- the attacker's test: the receiver's own credentials, from inside it ------------
        attack = cluster.kubectl(
            "exec", "-n", system_ns, pod["metadata"]["name"], "--",
            "python3", "-c", ATTACK, ns, other, system_ns, secret,
        )  # fmt: skip
        codes = json.loads(attack.stdout.strip().splitlines()[-1])
        assert codes == {
            "create run in own": 201,  # the one thing it is for
            "create run in other": 403,
            "create run in system": 403,
            "list runs in other": 403,
            "get own token secret": 403,
            "list secrets in own": 403,
            "list secrets in system": 403,
            "create job in own": 403,
            "patch run status in own": 403,
            "delete run in own": 403,
        }, codes
        assert not _get(cluster, "agentruns", "-n", other)["items"]
        sa = f"--as=system:serviceaccount:{system_ns}:{receiver}"
        for verb, resource, where, allowed in (
            ("create", "agentruns", ns, "yes"),
            ("create", "agentruns", "default", "no"),
            ("get", "secrets", system_ns, "no"),
            ("get", "secrets", ns, "no"),
            ("create", "pods", ns, "no"),
            ("update", "agents", ns, "no"),
        ):
            can = cluster.kubectl("auth", "can-i", verb, resource, "-n", where, sa, check=False)
            assert can.stdout.strip() == allowed, (verb, resource, where, can.stdout)

        # ---- an upgrade keeps the token Alertmanager holds ----------------------------------
        helm("upgrade", rel, *install, "--reuse-values", kubeconfig=cluster.kubeconfig)
        kept = base64.b64decode(_get(cluster, "secret", secret, "-n", system_ns)["data"]["token"])
        assert kept == token
    finally:
        helm("uninstall", rel, "-n", system_ns, kubeconfig=cluster.kubeconfig, check=False)
        for name in (system_ns, ns, other):
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
