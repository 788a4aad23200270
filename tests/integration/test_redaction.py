"""No credential a tool prints reaches status, ConfigMaps, Events, notifications, the
operator's log or the model.

A custom tool (its stdout is masked by the operator only) prints one line per kind of
credential, once succeeding and once failing; the built-in k8s-get (masked by the tool
runner inside the Job, then again by the operator) reads a Pod whose env, args and
annotations hold literal credentials. Then everything the run produced is searched.
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.spine import Spine, done, shell_tool
from tests.support import stack
from tests.support.secrets_corpus import CORPUS
from tests.support.stack import OperatorProcess
from tests.support.webhook import WebhookSink

CAT_CORPUS = "cat <<'CORPUS'\n" + "\n".join(line for _, line, _ in CORPUS) + "\nCORPUS\n"

# The Pod k8s-get reads: every literal here is a credential by meaning or by shape.
POD_SECRETS = {
    "DB_PASSWORD": "podEnvPassw0rd1",
    "API_KEY": "podEnvApiKey2",
    "AWS_SECRET_ACCESS_KEY": "podEnvAwsSecret3",
    "arg": "podArgToken4",
    "url": "podUrlPassw0rd5",
    "annotation": "podAnnotationBearer6",
}


def leaky_pod(namespace: str) -> dict[str, Any]:
    s = POD_SECRETS
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "leaky",
            "namespace": namespace,
            "annotations": {"example.com/probe": f"Authorization: Bearer {s['annotation']}"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "command": ["sleep", "600"],
                    "args": ["--token", s["arg"]],
                    "env": [
                        {"name": "DB_PASSWORD", "value": s["DB_PASSWORD"]},
                        {"name": "API_KEY", "value": s["API_KEY"]},
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": s["AWS_SECRET_ACCESS_KEY"]},
                        {"name": "DATABASE_URL", "value": f"postgres://app:{s['url']}@db/x"},
                        {"name": "LOG_LEVEL", "value": "debug"},
                        {
                            "name": "DB_USER",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "username"}},
                        },
                    ],
                }
            ]
        },
    }


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool": tool, "arguments": arguments}


def test_a_corpus_of_credentials_leaves_no_trace(
    spine: Spine, shared_operator: OperatorProcess
) -> None:
    secrets = [secret for _, _, secret in CORPUS] + list(POD_SECRETS.values())
    script = [
        call("leaky"),
        call("k8s-get", kind="Pod", name="leaky"),
        call("leaky-fail"),
        done("Looked at the leaky tool."),
    ]
    with WebhookSink() as sink:
        spine.setup(script)
        tools = [
            shell_tool("leaky", CAT_CORPUS, description="Prints credentials."),
            shell_tool("leaky-fail", CAT_CORPUS + "exit 1\n", description="Prints, fails."),
        ]
        agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
        assert agent is not None
        agent["spec"]["tools"] += ["leaky", "leaky-fail"]
        agent["spec"]["notify"] = {
            "webhookURL": sink.url,
            "on": ["AwaitingApproval", "AwaitingInput", "Succeeded", "Failed"],
        }
        docs = [{**t, "metadata": {**t["metadata"], "namespace": spine.namespace}} for t in tools]
        stack.apply(spine.cluster, [*docs, agent, leaky_pod(spine.namespace)])
        spine.start()
        status = spine.wait_phase("Succeeded", timeout=120)
        sink.wait_for(lambda p: p.get("event") == "Succeeded")
        notifications = json.dumps(sink.received)

    kubectl = spine.cluster.kubectl
    ns = spine.namespace
    places = {
        "status": kubectl("get", "agentrun", "run", "-n", ns, "-o", "json").stdout,
        "configmaps": kubectl("get", "configmaps", "-n", ns, "-o", "json").stdout,
        "events": kubectl("get", "events", "-n", ns, "-o", "json").stdout,
        "model requests": json.dumps(spine.model_requests()),
        "notifications": notifications,
        "operator log": shared_operator.log_path.read_text(errors="replace"),
    }
    # The built-in masks inside its Job: not even the tool pod's log holds a credential.
    jobs = {
        j["metadata"]["labels"]["agentrun.dev/step"]: j["metadata"]["name"] for j in spine.jobs()
    }
    places["k8s-get pod log"] = kubectl("logs", f"job/{jobs['2']}", "-n", ns).stdout

    leaks = [(where, s) for where, text in places.items() for s in secrets if s in text]
    assert leaks == []

    # Not vacuous: the output did arrive, masked, with its evidence kept.
    assert [e["type"] for e in status["thread"] if e["step"] in (1, 2, 3)] == [
        "ToolCall",
        "ToolResult",
        "ToolCall",
        "ToolResult",
        "ToolCall",
        "Error",
    ]
    seen = places["model requests"]
    assert "DB_PASSWORD=****" in seen and "AKIA****" in seen and "hooks.slack.com/****" in seen
    pod_result = json.dumps(spine.model_requests(step=3))
    assert "DB_PASSWORD" in pod_result and "LOG_LEVEL" in pod_result and "debug" in pod_result
    assert "secretKeyRef" in pod_result  # where a credential comes from is evidence
    outputs = json.loads(places["configmaps"])["items"]
    raw = json.dumps([cm["data"] for cm in outputs if cm["metadata"]["name"].endswith("-out")])
    kept = raw + places["status"]  # a raw output the thread keeps whole has no ConfigMap
    assert "Authorization: token ****" in kept and "BEGIN OPENSSH PRIVATE KEY" in kept
    assert any(p.get("event") == "Succeeded" for p in json.loads(notifications))
