"""Notifications out: which phase changes notify, the payloads, and delivery with retries."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentrun.api import AgentRun, AgentSpec, NotifyEvent, Phase
from agentrun.engine.policy import Policy
from agentrun.operator import notify

HASH = "a" * 64
APPROVE = f"kubectl annotate agentrun crash-1 -n shop agentrun.dev/approve={HASH}"
SECRET_URL = "https://hooks.slack.example/services/T000/B000/XXXXSECRET"


def agent(**notify_spec: Any) -> AgentSpec:
    spec: dict[str, Any] = {
        "model": {"name": "m", "apiKeySecretRef": {"name": "openai", "key": "api-key"}}
    }
    if notify_spec is not None:
        spec["notify"] = {"webhookURL": SECRET_URL, **notify_spec}
    return AgentSpec.model_validate(spec)


def run(phase: str = "AwaitingApproval", **status: Any) -> AgentRun:
    body: dict[str, Any] = {
        "metadata": {"name": "crash-1", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "agentRef": "sre-agent",
            "input": {
                "task": "Pod checkout crash loops <here> & there",
                "context": {"alert": {"labels": {"alertname": "KubePodCrashLooping"}}},
            },
        },
        "status": {"phase": phase, "step": 2, "usage": {"totalTokens": 1234}, **status},
    }
    return AgentRun.model_validate(body)


PENDING: dict[str, Any] = {
    "pendingAction": {
        "step": 2,
        "tool": "rollout-restart",
        "arguments": {"name": "checkout", "namespace": "shop"},
        "actionHash": HASH,
        "requestedTime": "2024-05-01T10:00:00Z",
        "approveCommand": APPROVE,
    }
}


SNAPSHOT = {
    "builtin": "rollout-restart",
    "effect": "write",
    "image": "ghcr.io/agentrun/agentrun:0.1.0",
    "command": ["agentrun-tool"],
    "serviceAccountName": "agentrun-tool-write",
    "env": [],
    "timeoutSeconds": 120,
    "outputLimitBytes": 65536,
    "specDigest": "d1" * 32,
}
FROZEN: dict[str, Any] = {
    "pendingAction": {
        **PENDING["pendingAction"],
        "snapshot": SNAPSHOT,
        "preconditions": {"fromRevision": 4, "deploymentUID": "u-77"},
        "expiresTime": "2024-05-02T10:00:00Z",
    }
}


def test_should_notify_only_on_a_change_to_a_listened_phase() -> None:
    a = agent()
    assert notify.should_notify(a, Phase.RUNNING, Phase.AWAITING_APPROVAL) is (
        NotifyEvent.AWAITING_APPROVAL
    )
    assert notify.should_notify(a, Phase.AWAITING_APPROVAL, Phase.AWAITING_APPROVAL) is None
    assert notify.should_notify(a, Phase.PENDING, Phase.RUNNING) is None
    assert notify.should_notify(a, Phase.RUNNING, Phase.CANCELLED) is None
    assert notify.should_notify(a, Phase.RUNNING, Phase.FAILED) is NotifyEvent.FAILED
    only_done = agent(on=["Succeeded"])
    assert notify.should_notify(only_done, Phase.RUNNING, Phase.FAILED) is None
    assert notify.should_notify(only_done, Phase.RUNNING, Phase.SUCCEEDED) is not None
    silent = AgentSpec.model_validate({"model": {"name": "m"}})
    assert notify.should_notify(silent, Phase.RUNNING, Phase.SUCCEEDED) is None


def _no_secrets(payload: dict[str, Any]) -> None:
    text = json.dumps(payload)
    for secret in ("XXXXSECRET", "hooks.slack", "openai", "api-key", "apiKeySecretRef"):
        assert secret not in text


def test_generic_payload_for_an_approval() -> None:
    p = notify.build_payload(run(**PENDING), agent(), NotifyEvent.AWAITING_APPROVAL)
    assert p["kind"] == "AgentRunNotification" and p["event"] == "AwaitingApproval"
    assert p["run"] == {
        "name": "crash-1",
        "namespace": "shop",
        "uid": "u-1",
        "agent": "sre-agent",
        "phase": "AwaitingApproval",
        "step": 2,
        "startTime": None,
        "completionTime": None,
    }
    assert p["pendingAction"]["approveCommand"] == APPROVE
    assert p["pendingAction"]["arguments"] == {"name": "checkout", "namespace": "shop"}
    assert p["commands"]["approve"] == APPROVE
    assert "agentrun.dev/reject=" in p["commands"]["reject"]
    assert APPROVE in p["summary"] and "rollout-restart" in p["summary"]
    assert p["alert"] == {"labels": {"alertname": "KubePodCrashLooping"}}
    assert "result" not in p and "error" not in p
    _no_secrets(p)


def test_approval_notifications_show_what_will_run() -> None:
    # The approver decides from the message: image, command, ServiceAccount, effect,
    # timeout, the target state and the deadline are all in it, generic and Slack.
    r = run(**FROZEN)
    p = notify.build_payload(r, agent(), NotifyEvent.AWAITING_APPROVAL)
    pending = p["pendingAction"]
    assert pending["snapshot"]["image"] == "ghcr.io/agentrun/agentrun:0.1.0"
    assert pending["snapshot"]["command"] == ["agentrun-tool"]
    assert pending["snapshot"]["serviceAccountName"] == "agentrun-tool-write"
    assert pending["snapshot"]["effect"] == "write"
    assert pending["snapshot"]["specDigest"] == "d1" * 32
    assert pending["preconditions"] == {"fromRevision": 4, "deploymentUID": "u-77"}
    assert pending["expiresTime"] == "2024-05-02T10:00:00Z"
    assert "image ghcr.io/agentrun/agentrun:0.1.0" in p["summary"]
    assert "ServiceAccount agentrun-tool-write" in p["summary"]
    _no_secrets(p)
    slack = notify.build_payload(r, agent(format="slack"), NotifyEvent.AWAITING_APPROVAL)
    text = "\n".join(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section")
    for line in (
        "*Effect:* `write`",
        "*Image:* `ghcr.io/agentrun/agentrun:0.1.0`",
        "*Command:* `agentrun-tool`",
        "*ServiceAccount:* `agentrun-tool-write`",
        "*Timeout:* `120s, output up to 65536 bytes`",
        "*Preconditions:* `fromRevision=4, deploymentUID=u-77`",
        "*Expires:* `2024-05-02T10:00:00Z`",
        f"*Hash:* `{HASH}`",
    ):
        assert line in text
    assert "image ghcr.io/agentrun/agentrun:0.1.0" in slack["text"]


def test_an_approval_without_a_snapshot_says_so() -> None:
    slack = notify.build_payload(
        run(**PENDING), agent(format="slack"), NotifyEvent.AWAITING_APPROVAL
    )
    text = "\n".join(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section")
    assert "*What runs:* `not recorded" in text
    generic = notify.build_payload(run(**PENDING), agent(), NotifyEvent.AWAITING_APPROVAL)
    assert generic["pendingAction"]["snapshot"] is None


def test_generic_payload_for_success_and_failure() -> None:
    ok = notify.build_payload(
        run("Succeeded", result={"answer": "Restarted checkout; OOM."}),
        agent(),
        NotifyEvent.SUCCEEDED,
    )
    assert ok["result"] == {"answer": "Restarted checkout; OOM."}
    assert ok["summary"] == "AgentRun shop/crash-1 succeeded: Restarted checkout; OOM."
    cond = {
        "type": "Succeeded",
        "status": "False",
        "reason": "TooManyErrors",
        "message": "3 errors in a row",
        "lastTransitionTime": "2024-05-01T10:00:00Z",
    }
    bad = notify.build_payload(run("Failed", conditions=[cond]), agent(), NotifyEvent.FAILED)
    assert bad["error"] == {"reason": "TooManyErrors", "message": "3 errors in a row"}
    assert bad["summary"].endswith("failed: 3 errors in a row")
    _no_secrets(ok)
    _no_secrets(bad)


def test_generic_payload_for_a_question() -> None:
    q = {
        "step": 3,
        "question": "Which deployment?",
        "urgency": "high",
        "requestedTime": "t",
        "answerCommand": "kubectl annotate agentrun crash-1 -n shop agentrun.dev/answer=...",
    }
    p = notify.build_payload(
        run("AwaitingInput", pendingInput=q), agent(), NotifyEvent.AWAITING_INPUT
    )
    assert p["pendingInput"]["question"] == "Which deployment?"
    assert p["commands"]["answer"] == q["answerCommand"]
    assert p["summary"] == "AgentRun shop/crash-1 asks: Which deployment?"


def test_slack_payload() -> None:
    p = notify.build_payload(run(**PENDING), agent(format="slack"), NotifyEvent.AWAITING_APPROVAL)
    assert set(p) == {"text", "blocks"}
    assert APPROVE in p["text"]
    assert p["blocks"][0]["type"] == "header"
    assert "needs approval" in p["blocks"][0]["text"]["text"]
    texts = [b["text"]["text"] for b in p["blocks"] if b["type"] == "section"]
    assert any(f"```{APPROVE}```" in t for t in texts)
    assert any("&lt;here&gt; &amp; there" in t for t in texts)  # mrkdwn-escaped
    assert all(len(t) <= 3000 for t in texts)
    assert p["blocks"][-1]["type"] == "context"
    _no_secrets(p)
    long = run("Succeeded", result={"answer": "x" * 10000})
    s = notify.build_payload(long, agent(format="slack"), NotifyEvent.SUCCEEDED)
    assert all(len(b["text"]["text"]) <= 3000 for b in s["blocks"] if b["type"] == "section")


@pytest.mark.parametrize("format_", ["generic", "slack"])
def test_credentials_in_the_run_input_never_reach_a_notification(format_: str) -> None:
    # An alert with a token label, a task with a pasted key: the channel gets neither.
    leaky = run(**PENDING)
    leaky.spec.input.task = "Pod checkout crash loops; key AKIAABCDEFGHIJKLMNOP leaked"
    leaky.spec.input.context["alert"]["labels"]["api_token"] = "tok-9f8e7d6c"
    p = notify.build_payload(leaky, agent(format=format_), NotifyEvent.AWAITING_APPROVAL)
    text = json.dumps(p)
    assert "ABCDEFGHIJKLMNOP" not in text and "tok-9f8e7d6c" not in text
    assert "Pod checkout crash loops" in text and "KubePodCrashLooping" in text


def test_redact_keeps_only_scheme_and_host() -> None:
    assert notify.redact(SECRET_URL) == "https://hooks.slack.example"
    assert notify.redact("http://127.0.0.1:8080/x?token=1") == "http://127.0.0.1:8080"


# ---------------------------------------------------------------- delivery


def _serve(statuses: list[int]) -> tuple[web.Application, list[Any]]:
    got: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=statuses[min(len(got), len(statuses)) - 1])

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app, got


@pytest.mark.parametrize(
    ("statuses", "ok", "calls"),
    [([200], True, 1), ([503, 429, 204], True, 3), ([500, 500, 500], False, 3), ([400], False, 1)],
)
def test_send_retries_transient_failures_only(statuses: list[int], ok: bool, calls: int) -> None:
    async def main() -> None:
        app, got = _serve(statuses)
        async with TestServer(app) as server:
            url = str(server.make_url("/hook"))
            assert await notify.send(url, {"a": 1}, attempts=3, backoff=0.01) is ok
        assert got == [{"a": 1}] * calls

    asyncio.run(main())


def test_send_to_nowhere_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> bool:
        return await notify.send(
            "http://127.0.0.1:9/hook/SECRETPATH", {}, attempts=2, backoff=0.01, timeout=2
        )

    assert asyncio.run(main()) is False
    assert "SECRETPATH" not in caplog.text


def test_on_phase_change_sends_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_ALLOWED_NOTIFY_URLS", "http://127.0.0.1:*")

    async def main() -> None:
        app, got = _serve([200])
        async with TestServer(app) as server:
            a = agent()
            assert a.notify is not None
            a.notify.webhookURL = str(server.make_url("/hook"))
            tasks: set[asyncio.Task[Any]] = set()
            r = run(**PENDING)
            assert notify.on_phase_change(None, r, a, "AwaitingApproval", tasks) is None  # type: ignore[arg-type]
            task = notify.on_phase_change(None, r, a, "Running", tasks)  # type: ignore[arg-type]
            assert task is not None and task in tasks
            assert await task is True
            await asyncio.sleep(0)
            assert tasks == set()
        assert got[0]["pendingAction"]["approveCommand"] == APPROVE

    asyncio.run(main())


def test_a_webhook_outside_the_allowed_urls_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    # An Agent author points notify at their own server (a run's task, alert labels and
    # arguments would go there): nothing is sent, and the log says why and where.
    async def main() -> tuple[bool, list[Any]]:
        app, got = _serve([200])
        async with TestServer(app) as server:
            a = agent()
            assert a.notify is not None
            a.notify.webhookURL = str(server.make_url("/hook/SECRETPATH"))
            policy = Policy(notify_urls=("https://hooks.slack.com/",))
            sent = await notify.deliver(
                None,  # type: ignore[arg-type]
                run(**PENDING),
                a,
                NotifyEvent.AWAITING_APPROVAL,
                policy=policy,
            )
            return sent, got

    sent, got = asyncio.run(main())
    assert sent is False and got == []
    assert "webhookURL (http://127.0.0.1:" in caplog.text
    assert "not in the operator's allowed notification URLs" in caplog.text
    assert "AGENTRUN_ALLOWED_NOTIFY_URLS" in caplog.text
    assert "SECRETPATH" not in caplog.text  # a webhook URL's path is its credential


def test_an_allowed_webhook_is_sent() -> None:
    async def main() -> tuple[bool, list[Any]]:
        app, got = _serve([200])
        async with TestServer(app) as server:
            a = agent()
            assert a.notify is not None
            a.notify.webhookURL = str(server.make_url("/hook"))
            base = str(server.make_url("/"))
            sent = await notify.deliver(
                None,  # type: ignore[arg-type]
                run(**PENDING),
                a,
                NotifyEvent.AWAITING_APPROVAL,
                policy=Policy(notify_urls=(base,)),
            )
            return sent, got

    sent, got = asyncio.run(main())
    assert sent is True and len(got) == 1
