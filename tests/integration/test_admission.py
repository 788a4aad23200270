"""Approver authorization by the operator's admission webhook, with the real apiserver calling it.

An operator runs with `--webhook local`: it serves the webhooks on loopback with a self-signed
certificate and registers its own Validating/MutatingWebhookConfiguration (failurePolicy
Fail). Users are ServiceAccounts impersonated with `kubectl --as` (the admin kubeconfig is
system:masters, which may impersonate): one may `approve` agentruns, one may only `patch`.

The configurations are cluster-wide while this test runs (other namespaces' runs are
validated too, and allowed for their admin user); they are deleted at the end.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.spine import READ, Spine, done
from tests.support import stack
from tests.support.stack import OperatorProcess

Starter = Callable[..., OperatorProcess]


def _rbac(ns: str) -> list[dict[str, Any]]:
    rules = {
        "approver": ["get", "list", "watch", "patch", "approve"],
        "patcher": ["get", "list", "watch", "patch"],
    }
    docs: list[dict[str, Any]] = []
    for user, role in (("alice", "approver"), ("bob", "patcher")):
        docs += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": user}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": role},
                "rules": [
                    {
                        "apiGroups": ["agentrun.dev"],
                        "resources": ["agentruns"],
                        "verbs": rules[role],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{user}-{role}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": ns}],
            },
        ]
    return [{**d, "metadata": {**d["metadata"], "namespace": ns}} for d in docs]


def _registered(spine: Spine, name: str) -> bool:
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        proc = spine.cluster.kubectl("get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        hooks = json.loads(proc.stdout).get("webhooks") or []
        if not hooks or not all(h.get("clientConfig", {}).get("url") for h in hooks):
            return False
    return True


def test_only_approvers_decide_and_the_approver_is_on_record(
    own_operator: tuple[Spine, Starter],
) -> None:
    spine, start = own_operator
    ns = spine.namespace
    config = f"{ns}.agentrun.dev"  # this test's own webhook configurations
    spine.setup([READ, spine.write(), done("web restarted.")])
    stack.apply(spine.cluster, _rbac(ns))
    alice, bob = (f"system:serviceaccount:{ns}:{u}" for u in ("alice", "bob"))
    port = stack.free_port()
    op = start(
        "--webhook", "local", "--webhook-port", str(port), "--webhook-config-name", config,
        "--log-format", "json",
    )  # fmt: skip

    def kubectl(*args: str, user: str | None = None) -> Any:
        return spine.cluster.kubectl(
            *args, "-n", ns, *([f"--as={user}"] if user else []), check=False
        )

    try:
        spine.wait(lambda: _registered(spine, config), "the webhook configurations", 60)
        hooks = json.loads(
            spine.cluster.kubectl(
                "get", "validatingwebhookconfiguration", config, "-o", "json"
            ).stdout
        )["webhooks"]
        assert {h["failurePolicy"] for h in hooks} == {"Fail"}
        assert hooks[0]["rules"][0]["operations"] == ["CREATE", "UPDATE"]

        spine.start()
        pending = spine.wait_phase("AwaitingApproval")["pendingAction"]
        approve = f"agentrun.dev/approve={pending['actionHash']}"

        # ---- a user who may only patch is refused, with the missing permission named
        refused = kubectl("annotate", "agentrun", "run", approve, user=bob)
        assert refused.returncode != 0
        assert (
            f'user "{bob}" may not approve agentruns in namespace "{ns}": needs verb "approve" '
            "on agentruns.agentrun.dev (see the agentrun-approver ClusterRole)"
        ) in refused.stderr, refused.stderr
        for verb in ("reject", "answer"):
            other = kubectl("annotate", "agentrun", "run", f"agentrun.dev/{verb}=x", user=bob)
            assert other.returncode != 0 and "may not approve" in other.stderr, other.stderr
        # ... nor can they write someone else's name into the audit (the stamp is put back).
        kubectl("annotate", "agentrun", "run", f"agentrun.dev/decided-by={alice}", user=bob)
        time.sleep(2)
        annotations = spine.get()["metadata"].get("annotations", {})
        assert not {"agentrun.dev/approve", "agentrun.dev/decided-by"} & set(annotations)
        assert spine.status()["phase"] == "AwaitingApproval"
        assert [j["metadata"]["labels"]["agentrun.dev/tool"] for j in spine.jobs()] == ["k8s-get"]

        # ---- an approver approves; the run finishes and the approver is on record
        approved = kubectl("annotate", "agentrun", "run", approve, user=alice)
        assert approved.returncode == 0, approved.stderr
        status = spine.wait_phase("Succeeded", "Failed")
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        assert [(a["decision"], a["approver"]) for a in status["approvals"]] == [
            ("Approved", alice)
        ]
        # The operator's own removal of the used decision went through the webhook.
        annotations = spine.get()["metadata"].get("annotations", {})
        assert not {"agentrun.dev/approve", "agentrun.dev/decided-by"} & set(annotations)
        # Both decisions are in the operator's structured log, with the run and the user.
        lines = [json.loads(x) for x in op.log_path.read_text().splitlines() if x.startswith("{")]
        assert len(lines) >= 5 and all(
            {"time", "level", "logger", "message"} <= set(x) for x in lines
        )
        decided = [
            (x["message"].split()[0], x["user"])
            for x in lines
            if x["logger"] == "agentrun.operator.admission" and x.get("run") == "run"
        ]
        assert ("Refused", bob) in decided and ("Allowed", alice) in decided
        assert all(x["run_namespace"] == ns for x in lines if x.get("run") == "run")

        # ---- a started run's meaning cannot change; its limits can, with a warning
        changed = kubectl(
            "patch", "agentrun", "run", "--type", "merge", "-p",
            '{"spec":{"input":{"task":"Delete everything."}}}',
        )  # fmt: skip
        assert changed.returncode != 0
        assert "spec.input cannot change after the run started" in changed.stderr, changed.stderr
        limits = kubectl(
            "patch", "agentrun", "run", "--type", "merge", "-p",
            '{"spec":{"limits":{"maxSteps":9}}}',
        )  # fmt: skip
        assert limits.returncode == 0, limits.stderr
        assert "the new limits apply from its next step" in limits.stderr

        # ---- two more runs wait for approval: one is cancelled by the patch-only user ...
        spine.start("run2")
        spine.start("run3")
        spine.wait_phase("AwaitingApproval", name="run2")
        pending3 = spine.wait_phase("AwaitingApproval", name="run3")["pendingAction"]
        cancel = kubectl(
            "patch", "agentrun", "run2", "--type", "merge", "-p", '{"spec":{"cancel":true}}',
            user=bob,
        )  # fmt: skip
        assert cancel.returncode == 0, cancel.stderr
        spine.wait_phase("Cancelled", name="run2")

        # ---- ... the other cannot be approved while the webhook is down: nothing runs
        op.stop()  # a graceful stop keeps the (persistent) configurations
        assert _registered(spine, config)
        down = kubectl(
            "annotate", "agentrun", "run3", f"agentrun.dev/approve={pending3['actionHash']}"
        )
        assert down.returncode != 0
        assert "failed calling webhook" in down.stderr, down.stderr
        body = spine.get("run3")
        assert "agentrun.dev/approve" not in body["metadata"].get("annotations", {})
        assert [j["metadata"]["labels"]["agentrun.dev/tool"] for j in spine.jobs("run3")] == [
            "k8s-get"
        ]
    except AssertionError:
        print(op.log_tail(80))
        raise
    finally:
        op.stop()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            spine.cluster.kubectl("delete", kind, config, "--ignore-not-found", check=False)


# ---------------------------------------------------------------- in-cluster mode, as the chart


def webhook_configurations(name: str, client_config: dict[str, Any]) -> list[dict[str, Any]]:
    """What the chart registers for `--webhook incluster` (with a Service in clientConfig)."""
    docs = []
    for kind, hook in (
        ("MutatingWebhookConfiguration", "mutate-agentrun"),
        ("ValidatingWebhookConfiguration", "validate-agentrun"),
    ):
        config = copy.deepcopy(client_config)
        if "url" in config:
            config["url"] += f"/{hook}"
        else:
            config["service"]["path"] = f"/{hook}"
        webhook = {
            "name": f"{hook}.agentrun.dev",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "clientConfig": config,
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
            webhook["reinvocationPolicy"] = "IfNeeded"
        docs.append(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": name},
                "webhooks": [webhook],
            }
        )
    return docs


def test_incluster_mode_serves_the_chart_registered_webhooks(
    own_operator: tuple[Spine, Starter], tmp_path: Path
) -> None:
    spine, start = own_operator
    ns = spine.namespace
    name = f"{ns}-incluster"
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=agentrun-webhook", "-keyout", str(key),
            "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    spine.setup([READ, spine.write(), done("web restarted.")])
    stack.apply(spine.cluster, _rbac(ns))
    alice, bob = (f"system:serviceaccount:{ns}:{u}" for u in ("alice", "bob"))
    port = stack.free_port()
    op = start(
        "--webhook", "incluster", "--webhook-addr", "127.0.0.1", "--webhook-port", str(port),
        "--webhook-cert", str(cert), "--webhook-key", str(key),
        "--approver-role", "agentrun-approver-custom",
    )  # fmt: skip
    ca = base64.b64encode(cert.read_bytes()).decode()
    client = {"url": f"https://127.0.0.1:{port}", "caBundle": ca}
    try:
        # The operator registers nothing in this mode.
        gone = spine.cluster.kubectl(
            "get", "validatingwebhookconfiguration", "agentrun.dev", check=False
        )
        assert gone.returncode != 0
        stack.apply(spine.cluster, webhook_configurations(name, client))
        spine.start()
        pending = spine.wait_phase("AwaitingApproval")["pendingAction"]
        approve = f"agentrun.dev/approve={pending['actionHash']}"
        annotate = ("annotate", "agentrun", "run", "-n", ns, approve)

        refused = spine.cluster.kubectl(*annotate, f"--as={bob}", check=False)
        assert "see the agentrun-approver-custom ClusterRole" in refused.stderr, refused.stderr
        spine.cluster.kubectl(*annotate, f"--as={alice}")
        status = spine.wait_phase("Succeeded", "Failed")
        assert [(a["decision"], a["approver"]) for a in status["approvals"]] == [
            ("Approved", alice)
        ]

        # A webhook registered at a path the operator does not serve fails closed.
        wrong = webhook_configurations(name, {**client, "url": f"https://127.0.0.1:{port}/x"})
        stack.apply(spine.cluster, wrong[1:])
        blocked = spine.cluster.kubectl(*annotate[:4], ns, "team=sre", check=False)
        assert blocked.returncode != 0 and "no handler at path" in blocked.stderr, blocked.stderr
    except AssertionError:
        print(op.log_tail(80))
        raise
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            spine.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
