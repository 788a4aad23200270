"""Slack approvals for real: a test plays Slack against the receiver on the local cluster.

The operator serves its admission webhook (`--webhook local`) and trusts the receiver's
ServiceAccount as the approval proxy (`--approval-proxy`). The receiver runs as that
ServiceAccount (the apiserver authorizes it as such: RBAC for agentruns get/patch/approve,
SubjectAccessReviews, the one mapping ConfigMap). Slack is a local fake: it signs
interactions as Slack does, serves the response URLs and the Web API (users.info for the
e-mail rows of the mapping), and refuses blocks over Block Kit's limits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentrun.operator import slacklimits
from agentrun.receiver import slack
from tests.integration.spine import READ, Spine, done
from tests.integration.test_admission import _registered
from tests.support import stack
from tests.support.alerting import ReceiverThread
from tests.support.fakeslack import FakeSlack
from tests.support.stack import OperatorProcess

Starter = Callable[..., OperatorProcess]
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MAPPING = """
users:
  - email: alice@example.com      # found through users.info (scope users:read.email)
    user: alice@example.com
    groups: [sre-oncall]
  - slackUserID: U0BOB
    user: bob@example.com
    groups: [developers]
"""


def _rbac(ns: str) -> list[dict[str, Any]]:
    def role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": name, "namespace": ns}, "rules": rules}  # fmt: skip

    def bind(name: str, role: str, subject: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [subject],
        }

    runs = {"apiGroups": ["agentrun.dev"], "resources": ["agentruns"]}
    group = {"kind": "Group", "name": "sre-oncall", "apiGroup": "rbac.authorization.k8s.io"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "agentrun-receiver", "namespace": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "eve", "namespace": ns}},
        role("receiver", [
            {**runs, "verbs": ["get", "patch", "approve"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
             "resourceNames": ["agentrun-slack-users"]},
        ]),
        role("approver", [{**runs, "verbs": ["get", "list", "patch", "approve"]}]),
        bind("receiver", "receiver",
             {"kind": "ServiceAccount", "name": "agentrun-receiver", "namespace": ns}),
        bind("oncall-approver", "approver", group),
        bind("eve-approver", "approver",
             {"kind": "ServiceAccount", "name": "eve", "namespace": ns}),
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "agentrun-slack-users", "namespace": ns},
         "data": {"users.yaml": MAPPING}},
    ]  # fmt: skip


def _sar_rbac(ns: str) -> list[dict[str, Any]]:
    name = f"{ns}-slack-receiver"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["subjectaccessreviews"],
                    "verbs": ["create"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "agentrun-receiver", "namespace": ns}],
        },
    ]


def test_slack_buttons_decide_as_the_mapped_kubernetes_user(
    own_operator: tuple[Spine, Starter], tmp_path: Path
) -> None:
    spine, start = own_operator
    ns = spine.namespace
    config = f"{ns}.agentrun.dev"
    receiver_sa = f"system:serviceaccount:{ns}:agentrun-receiver"
    spine.setup([READ, spine.write(), done("web restarted.")])
    stack.apply(spine.cluster, _rbac(ns) + _sar_rbac(ns))
    fake = FakeSlack(SECRET)
    fake.emails = {"U0ALICE": "alice@example.com", "U0NOBODY": "nobody@example.com"}
    fake.start()
    # The Agent posts interactive cards through the Slack app (the fake's Web API), allowed by
    # the admin's notification URLs, with the bot token from a Secret that opted in.
    stack.credential_secret(spine.cluster, "slack-app", {"token": fake.bot_token}, namespace=ns)
    slack_app = {"channel": "C0APPROVALS", "apiURL": fake.api_url,
                 "tokenSecretRef": {"name": "slack-app", "key": "token"}}  # fmt: skip
    spine.cluster.kubectl(
        "patch", "agent", "agent", "-n", ns, "--type", "merge",
        "-p", json.dumps({"spec": {"notify": {"format": "slack", "slackApp": slack_app}}}),
    )  # fmt: skip
    op = start(
        "--webhook", "local", "--webhook-port", str(stack.free_port()),
        "--webhook-config-name", config, "--approval-proxy", receiver_sa,
        AGENTRUN_ALLOWED_NOTIFY_URLS=f"{fake.url}/", AGENTRUN_CREDENTIALS_NAMESPACE=ns,
    )  # fmt: skip
    (tmp_path / "signing-secret").write_text(SECRET + "\n")
    (tmp_path / "bot-token").write_text(fake.bot_token + "\n")
    receiver = ReceiverThread(
        {
            "auth": {"allowUnauthenticated": True},
            "api": {"agents": []},
            "slack": {
                "signingSecretFile": str(tmp_path / "signing-secret"),
                "botTokenFile": str(tmp_path / "bot-token"),
                "userMapping": {"namespace": ns},
                "apiURL": fake.api_url,
                "allowedURLs": [f"{fake.url}/"],
            },
        },
        spine.cluster.kubeconfig,
        as_user=receiver_sa,
    )

    def annotations() -> dict[str, str]:
        return dict(spine.get()["metadata"].get("annotations") or {})

    def tools() -> list[str]:
        return sorted(j["metadata"]["labels"]["agentrun.dev/tool"] for j in spine.jobs())

    def nothing_decided() -> None:
        assert not {k for k in annotations() if k.startswith("agentrun.dev/")} - {
            "agentrun.dev/slack-card"
        }, annotations()
        assert spine.status()["phase"] == "AwaitingApproval"
        assert spine.status().get("approvals", []) == []
        assert tools() == ["k8s-get"]

    try:
        receiver.start()
        url = f"{receiver.url}/slack/interactions"
        spine.wait(lambda: _registered(spine, config), "the webhook configurations", 60)
        spine.start()
        pending = spine.wait_phase("AwaitingApproval")["pendingAction"]
        # ---- the card as the approver sees it, posted by the operator; its buttons carry the hash
        posted = spine.wait(lambda: fake.api_calls("chat.postMessage"), "the card", 20)[0]
        assert posted["channel"] == "C0APPROVALS" and slacklimits.check(posted) == []
        shown = json.dumps(posted)
        for part in ("rollout-restart", "agentrun-tool-write", "Evidence so far", "k8s-get"):
            assert part in shown, part
        buttons = next(b for b in posted["blocks"] if b["type"] == "actions")["elements"]
        assert [b["action_id"] for b in buttons] == [slack.ACTION_APPROVE, slack.ACTION_REJECT]
        card = buttons[0]["value"]
        assert card == slack.button_value(ns, "run", action_hash=pending["actionHash"])
        ((channel, ts),) = fake.messages
        assert annotations()["agentrun.dev/slack-card"] == f"{channel}/{ts}/{pending['actionHash']}"

        # ---- not from Slack: a 401 that says why, and Slack's response URL is never called
        payload = fake.interaction("U0ALICE", slack.ACTION_APPROVE, card)
        body, headers = fake.signed(payload, secret="a guess at the secret")
        assert fake.post(url, body, headers) == (
            401,
            {"error": "InvalidSignature", "message": "the Slack signature does not match the "
             "signing secret; nothing was done"},
        )  # fmt: skip
        body, headers = fake.signed(payload, timestamp=int(time.time()) - 301)
        status, answer = fake.post(url, body, headers)
        assert (status, answer["error"]) == (401, "StaleTimestamp"), answer
        assert "older than 300s are refused" in answer["message"]
        assert fake.responses() == []

        # ---- from Slack, but someone the platform team did not map
        status, answer = fake.click(url, "U0NOBODY", slack.ACTION_APPROVE, card)
        assert (status, answer["ok"], answer["error"]) == (200, False, "UnmappedUser"), answer
        assert f"ConfigMap {ns}/agentrun-slack-users" in answer["message"]
        # ---- a mapped user without `approve`
        status, answer = fake.click(url, "U0BOB", slack.ACTION_APPROVE, card)
        assert (status, answer["error"]) == (200, "Forbidden"), answer
        assert (
            f'user "bob@example.com" may not approve agentruns in namespace "{ns}": needs verb '
            '"approve"'
        ) in answer["message"]
        spine.wait(lambda: len(fake.responses()) == 2, "the two ephemeral answers", 10)
        notes = [r["text"] for r in fake.responses()]
        assert all(r["response_type"] == "ephemeral" for r in fake.responses())
        assert "is not mapped to a Kubernetes user" in notes[0] and "may not approve" in notes[1]
        nothing_decided()

        # ---- nobody but the receiver may name the decider: an approver tries kubectl
        eve = f"system:serviceaccount:{ns}:eve"
        forged = spine.cluster.kubectl(
            "annotate", "agentrun", "run", "-n", ns, f"--as={eve}",
            f"agentrun.dev/approve={pending['actionHash']}",
            "agentrun.dev/decided-for=alice@example.com", check=False,
        )  # fmt: skip
        assert forged.returncode != 0
        assert "agentrun.dev/decided-for is honoured only with a decision from the approval " \
            f"proxies the operator trusts ({receiver_sa}); user {eve!r} may not set it" \
            in forged.stderr, forged.stderr  # fmt: skip
        nothing_decided()

        # ---- the approver clicks: the write runs once, recorded as alice, as for kubectl
        body, headers = fake.signed(fake.interaction("U0ALICE", slack.ACTION_APPROVE, card))
        status, answer = fake.post(url, body, headers)
        assert (status, answer["ok"], answer["user"]) == (200, True, "alice@example.com"), answer
        assert [c["user"] for c in fake.api_calls("users.info")][-1] == "U0ALICE"
        final = spine.wait_phase("Succeeded", "Failed")
        assert final["phase"] == "Succeeded", json.dumps(final, indent=1)
        assert [(a["decision"], a["approver"]) for a in final["approvals"]] == [
            ("Approved", "alice@example.com")
        ]
        assert tools() == ["k8s-get", "rollout-restart"]
        assert not {"agentrun.dev/decided-for", "agentrun.dev/decided-by"} & set(annotations())
        spine.wait(lambda: len(fake.responses()) == 3, "the card replaced", 10)
        replaced = fake.responses()[-1]
        assert replaced["replace_original"] is True
        assert "Approved by alice@example.com" in replaced["blocks"][0]["text"]["text"]
        assert not [b for b in replaced["blocks"] if b["type"] == "actions"]
        # The operator updates the card in place as the run moves on; the result in its thread.
        updates = spine.wait(lambda: fake.api_calls("chat.update"), "the card updated", 20)
        assert (updates[0]["channel"], updates[0]["ts"]) == (channel, ts)
        header = updates[0]["blocks"][0]["text"]["text"]
        assert header == f":white_check_mark: {ns}/run: Approved by alice@example.com", header
        assert not [b for b in fake.messages[channel, ts]["blocks"] if b["type"] == "actions"]
        result = spine.wait(
            lambda: [m for m in fake.api_calls("chat.postMessage") if m.get("thread_ts") == ts],
            "the result in the card's thread",
            20,
        )
        assert "web restarted." in json.dumps(result)

        # ---- the same request again, and a fresh click on the now stale card
        status, answer = fake.post(url, body, headers)
        assert (status, answer["error"]) == (401, "Replayed"), answer
        status, answer = fake.click(url, "U0ALICE", slack.ACTION_APPROVE, card)
        assert (status, answer["error"]) == (200, "StaleCard"), answer
        assert "no longer pending" in answer["message"]
        assert "Last decision: Approved by alice@example.com" in answer["message"]
        time.sleep(2)
        assert tools() == ["k8s-get", "rollout-restart"]
        assert len(spine.status()["approvals"]) == 1
        # ---- decided with kubectl instead: the card is updated in place all the same
        spine.start("run2")
        pending2 = spine.wait_phase("AwaitingApproval", name="run2")["pendingAction"]
        value2 = slack.button_value(ns, "run2", action_hash=pending2["actionHash"])
        spine.wait(
            lambda: [m for m in fake.api_calls("chat.postMessage") if value2 in str(m)],
            "the second card",
            20,
        )
        approved = spine.cluster.kubectl(
            "annotate", "agentrun", "run2", "-n", ns, f"--as={eve}",
            f"agentrun.dev/approve={pending2['actionHash']}",
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        spine.wait_phase("Succeeded", name="run2")
        spine.wait(lambda: len(fake.api_calls("chat.update")) >= 2, "the second card updated", 20)
        header = fake.api_calls("chat.update")[-1]["blocks"][0]["text"]["text"]
        assert header == f":white_check_mark: {ns}/run2: Approved by {eve}", header
        assert all(slacklimits.check(body) == [] for _, body in fake.calls if "blocks" in body)
        log = op.log_path.read_text()
        assert f"Allowed agentrun.dev/approve on {ns}/run by {receiver_sa} for alice" in log
    except AssertionError:
        print(op.log_tail(60))
        raise
    finally:
        receiver.stop()
        fake.stop()
        op.stop()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            spine.cluster.kubectl("delete", kind, config, "--ignore-not-found", check=False)
        for kind in ("clusterrolebinding", "clusterrole"):
            spine.cluster.kubectl("delete", kind, f"{ns}-slack-receiver", check=False)
