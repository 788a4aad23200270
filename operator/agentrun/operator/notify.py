"""Results back out: a webhook when a run needs a human or ends (Agent.spec.notify).

Payload building is pure (``build_payload``); ``send`` POSTs with bounded retries;
``start`` carries out the core's Notify action once the runner persisted the status. A
notification is best effort and at most once: a failure is logged and never touches the
run, and an operator killed between the status write and the POST does not resend.

Never in a payload: Secrets, the webhook URL itself (a Slack webhook URL is a credential),
the model's API key reference, or the run's full thread.

Where a notification may go is the admin's call (Policy.notify_urls): a URL outside it, or
a webhookSecretRef to a Secret that did not opt in, is not used; the run gets a Warning
Event saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes import client as k8s

from agentrun.api import (
    ANNOTATION_APPROVE,
    ANNOTATION_REJECT,
    AgentRun,
    AgentSpec,
    NotifyEvent,
    NotifySpec,
    PendingAction,
    Phase,
)
from agentrun.engine import actionview
from agentrun.engine.core import notify_event
from agentrun.engine.policy import ENV_NOTIFY_URLS, Policy
from agentrun.kube import client as kube
from agentrun.operator import slackapp
from agentrun.text import clip
from agentrun.tool import redaction

log = logging.getLogger("agentrun.operator.notify")

PAYLOAD_KIND = "AgentRunNotification"
MAX_TEXT = 2000  # any one free-text field
SLACK_SECTION_MAX = 2900  # Slack refuses section texts over 3000 characters
DEFAULT_ATTEMPTS = 3
DEFAULT_TIMEOUT = 10.0

_TITLES = {
    NotifyEvent.AWAITING_APPROVAL: "needs approval",
    NotifyEvent.AWAITING_INPUT: "has a question",
    NotifyEvent.SUCCEEDED: "succeeded",
    NotifyEvent.FAILED: "failed",
}
_EMOJI = {
    NotifyEvent.AWAITING_APPROVAL: ":raised_hand:",
    NotifyEvent.AWAITING_INPUT: ":question:",
    NotifyEvent.SUCCEEDED: ":white_check_mark:",
    NotifyEvent.FAILED: ":x:",
}


def event_for(phase: Phase | str) -> NotifyEvent | None:
    try:
        return NotifyEvent(str(phase))
    except ValueError:
        return None


def should_notify(
    agent: AgentSpec, before: Phase | str | None, after: Phase | str
) -> NotifyEvent | None:
    """The event to send for a phase change, when the Agent asks for it (the core's rule)."""
    return notify_event(agent, before, after)


def _commands(run: AgentRun) -> dict[str, str]:
    name, ns = run.metadata.get("name", ""), run.metadata.get("namespace", "")
    target = f"agentrun {name} -n {ns}"
    commands = {
        "get": f"kubectl get {target} -o yaml",
        "cancel": f'kubectl patch {target} --type merge -p \'{{"spec":{{"cancel":true}}}}\'',
    }
    pending = run.status.pendingAction
    if pending is not None:
        commands["approve"] = pending.approveCommand
        commands["reject"] = f'kubectl annotate {target} {ANNOTATION_REJECT}="<reason>"'
    if run.status.pendingInput is not None:
        commands["answer"] = run.status.pendingInput.answerCommand
    return commands


def _failure(run: AgentRun) -> dict[str, str] | None:
    for cond in run.status.conditions:
        if cond.type == "Succeeded" and cond.status == "False":
            return {"reason": cond.reason, "message": clip(cond.message, MAX_TEXT)}
    return None


def _task(run: AgentRun) -> str:
    # Masked as in the model's request: a credential pasted into the task stays in the spec.
    return redaction.redact(run.spec.input.task)


def _alert_labels(run: AgentRun) -> dict[str, str]:
    alert = run.spec.input.context.get("alert")
    labels = alert.get("labels") if isinstance(alert, dict) else None
    if not isinstance(labels, dict):
        return {}
    shown = redaction.redact_value({str(k): str(v) for k, v in list(labels.items())[:20]})
    return {k: clip(v, 200) for k, v in shown.items()}


def summary(run: AgentRun, event: NotifyEvent) -> str:
    """One line saying what happened and what is asked of the reader."""
    ref = f"AgentRun {run.metadata.get('namespace')}/{run.metadata.get('name')}"
    if event is NotifyEvent.AWAITING_APPROVAL and run.status.pendingAction is not None:
        p = run.status.pendingAction
        args = clip(json.dumps(p.arguments, sort_keys=True), 300)
        runs = ""
        if p.snapshot is not None:
            s = p.snapshot
            runs = f" (image {s.image}, ServiceAccount {s.serviceAccountName})"
        return f"{ref} asks to run {p.tool} {args}{runs}; approve with: {p.approveCommand}"
    if event is NotifyEvent.AWAITING_INPUT and run.status.pendingInput is not None:
        return f"{ref} asks: {clip(run.status.pendingInput.question, 500)}"
    if event is NotifyEvent.SUCCEEDED:
        answer = run.status.result.answer if run.status.result else ""
        return f"{ref} succeeded: {clip(answer, 500)}" if answer else f"{ref} succeeded"
    if event is NotifyEvent.FAILED:
        failure = _failure(run)
        return (
            f"{ref} failed: {failure['message'] or failure['reason']}"
            if failure
            else (f"{ref} failed")
        )
    return f"{ref} {_TITLES[event]}"


def generic_payload(run: AgentRun, agent: AgentSpec, event: NotifyEvent) -> dict[str, Any]:
    status = run.status
    body: dict[str, Any] = {
        "kind": PAYLOAD_KIND,
        "version": "v1",
        "event": event.value,
        "summary": summary(run, event),
        "run": {
            "name": run.metadata.get("name"),
            "namespace": run.metadata.get("namespace"),
            "uid": run.metadata.get("uid"),
            "agent": run.spec.agentRef,
            "phase": status.phase.value,
            "step": status.step,
            "startTime": status.startTime,
            "completionTime": status.completionTime,
        },
        "task": clip(_task(run), MAX_TEXT),
        "usage": status.usage.model_dump(mode="json"),
        "commands": _commands(run),
    }
    labels = _alert_labels(run)
    if labels:
        body["alert"] = {"labels": labels}
    if status.pendingAction is not None:
        p = status.pendingAction
        body["pendingAction"] = {
            "step": p.step,
            "tool": p.tool,
            "arguments": p.arguments,
            "actionHash": p.actionHash,
            "requestedTime": p.requestedTime,
            "expiresTime": p.expiresTime,
            "preconditions": p.preconditions,
            # What will run, frozen when proposed (None: the operator did not freeze it).
            "snapshot": p.snapshot.model_dump(mode="json") if p.snapshot is not None else None,
            "approveCommand": p.approveCommand,
            "approveAnnotation": f"{ANNOTATION_APPROVE}={p.actionHash}",
        }
    if status.pendingInput is not None:
        q = status.pendingInput
        body["pendingInput"] = {
            "question": clip(q.question, MAX_TEXT),
            "urgency": q.urgency.value,
            "answerCommand": q.answerCommand,
        }
    if status.result is not None and event is NotifyEvent.SUCCEEDED:
        body["result"] = {"answer": clip(status.result.answer, 8000)}
    failure = _failure(run)
    if failure is not None and event is NotifyEvent.FAILED:
        body["error"] = failure
    return body


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SLACK_SECTION_MAX)}}


def _what_runs(p: PendingAction) -> str:
    """The approval's scope as Slack lines: snapshot, preconditions, expiry (the arguments
    and hash have their own blocks)."""
    rows = actionview.action_rows(p.model_dump(mode="json"))
    shown = [(k, v) for k, v in rows if k not in ("Tool", "Arguments")]
    # A backtick in a value would end the code span and let the rest read as markup.
    lines = []
    for label, text in shown:
        code = _mrkdwn(clip(text.replace("`", "'"), 400))
        lines.append(f"*{label}:* `{code}`")
    return "\n".join(lines)


def slack_payload(run: AgentRun, agent: AgentSpec, event: NotifyEvent) -> dict[str, Any]:
    """Slack's incoming-webhook format: `text` (the fallback) plus Block Kit `blocks`."""
    name, ns = run.metadata.get("name", ""), run.metadata.get("namespace", "")
    status = run.status
    title = f"{_EMOJI[event]} AgentRun {ns}/{name} {_TITLES[event]}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, 150)}},
        _section(f"*Task:* {_mrkdwn(clip(_task(run), 1000))}"),
    ]
    labels = _alert_labels(run)
    if labels:
        shown = ", ".join(f"{k}={v}" for k, v in labels.items())
        blocks.append(_section(f"*Alert:* `{_mrkdwn(clip(shown, 1000))}`"))
    if event is NotifyEvent.AWAITING_APPROVAL and status.pendingAction is not None:
        p = status.pendingAction
        args = _mrkdwn(clip(json.dumps(p.arguments, indent=1, sort_keys=True), 1500))
        blocks.append(_section(f"*Proposed action:* `{p.tool}`\n```{args}```"))
        blocks.append(_section(_what_runs(p)))
        blocks.append(_section(f"*Approve:*\n```{_mrkdwn(p.approveCommand)}```"))
        reject = _commands(run)["reject"]
        blocks.append(_section(f"*Reject:*\n```{_mrkdwn(reject)}```"))
    elif event is NotifyEvent.AWAITING_INPUT and status.pendingInput is not None:
        q = status.pendingInput
        blocks.append(_section(f"*Question:* {_mrkdwn(clip(q.question, 1500))}"))
        blocks.append(_section(f"*Answer:*\n```{_mrkdwn(q.answerCommand)}```"))
    elif event is NotifyEvent.SUCCEEDED:
        answer = status.result.answer if status.result else ""
        blocks.append(_section(f"*Result:*\n{_mrkdwn(clip(answer or '(no answer)', 2500))}"))
    elif event is NotifyEvent.FAILED:
        failure = _failure(run) or {"reason": "Failed", "message": ""}
        text = f"*{failure['reason']}*: {failure['message']}"
        blocks.append(_section(_mrkdwn(text)))
    usage = status.usage
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _mrkdwn(
                        f"agent {run.spec.agentRef} · step {status.step} · "
                        f"{usage.totalTokens} tokens · kubectl get agentrun {name} -n {ns}"
                    ),
                }
            ],
        }
    )
    return {"text": clip(summary(run, event), 3000), "blocks": blocks}


def build_payload(run: AgentRun, agent: AgentSpec, event: NotifyEvent) -> dict[str, Any]:
    """The body to POST, in the Agent's notify format (generic when unset)."""
    fmt = agent.notify.format if agent.notify is not None else "generic"
    if fmt == "slack":
        return slack_payload(run, agent, event)
    return generic_payload(run, agent, event)


def redact(url: str) -> str:
    """Scheme and host only: the path of a Slack webhook URL is its credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}"


async def send(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    timeout: float = DEFAULT_TIMEOUT,
    backoff: float = 1.0,
) -> bool:
    """POSTs JSON; retries connection errors, timeouts, 429 and 5xx (attempts in all, with
    exponential backoff); other 4xx are final. True on a 2xx. Never raises."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "agentrun-notify/1"}
    where = redact(url)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    for attempt in range(1, attempts + 1):
        problem = ""
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.post(url, data=body, headers=headers, allow_redirects=False) as resp,
            ):
                if 200 <= resp.status < 300:
                    return True
                problem = f"HTTP {resp.status}"
                if resp.status != 429 and resp.status < 500:
                    log.warning("Notification to %s refused (%s); not retried", where, problem)
                    return False
        except (aiohttp.ClientError, TimeoutError) as err:
            problem = type(err).__name__
        except Exception as err:  # e.g. an invalid URL: never let it reach the run
            log.warning("Notification to %s failed: %s", where, type(err).__name__)
            return False
        if attempt < attempts:
            log.info("Notification to %s failed (%s); retry %d", where, problem, attempt)
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
        else:
            log.warning(
                "Notification to %s failed after %d attempts (%s)", where, attempts, problem
            )
    return False


class NotSent(Exception):
    """A notification the policy does not allow; the message says why (no URL path in it)."""


async def webhook_url(api: k8s.ApiClient, spec: NotifySpec, policy: Policy) -> str:
    """The URL, from the Secret when webhookSecretRef is set (read from the credentials
    namespace, only if it opted in), else webhookURL; under the admin's allowed URLs."""
    if spec.webhookSecretRef is not None:
        ref = spec.webhookSecretRef
        namespace = policy.credentials_namespace
        try:
            url = await asyncio.to_thread(kube.read_credential, api, namespace, ref.name, ref.key)
        except kube.CredentialError as e:
            raise NotSent(f"webhookSecretRef not used: {e}") from None
        where = f"the URL in Secret {namespace}/{ref.name} (key {ref.key})"
    else:
        url, where = spec.webhookURL or "", "webhookURL"
    if not policy.notify_url_allowed(url):
        shown = redact(url) if url.startswith(("http://", "https://")) else "not an http(s) URL"
        raise NotSent(
            f"{where} ({shown}) is not in the operator's allowed notification URLs "
            f"({ENV_NOTIFY_URLS}: {', '.join(policy.notify_urls)}); not sent"
        )
    return url


async def deliver(
    api: k8s.ApiClient,
    run: AgentRun,
    agent: AgentSpec,
    event: NotifyEvent | None,
    *,
    settle: str = "",
    policy: Policy | None = None,
    **send_kw: Any,
) -> bool:
    """Resolves the URL, builds the payload and sends it. Never raises. `policy`: the
    admin's settings; from the environment when None. `settle`: the waiting phase the run
    left (a Slack app's open card is updated in place)."""
    if agent.notify is None:
        return False
    ref = f"{run.metadata.get('namespace')}/{run.metadata.get('name')}"
    if agent.notify.slackApp is not None:
        return await _deliver_app(api, run, agent, event, settle, policy or Policy.from_env())
    if event is None:
        return False
    try:
        try:
            url = await webhook_url(api, agent.notify, policy or Policy.from_env())
        except NotSent as refused:
            log.warning("Notification for %s (%s) not sent: %s", ref, event.value, refused)
            await _warn(api, run, f"{event.value} notification not sent: {refused}")
            return False
        ok = await send(url, build_payload(run, agent, event), **send_kw)
    except Exception:
        log.exception("Notification for %s (%s) failed", ref, event.value)
        return False
    if ok:
        log.info("Notified %s for %s (%s)", redact(url), ref, event.value)
    return ok


async def _deliver_app(
    api: k8s.ApiClient,
    run: AgentRun,
    agent: AgentSpec,
    event: NotifyEvent | None,
    settle: str,
    policy: Policy,
) -> bool:
    assert agent.notify is not None and agent.notify.slackApp is not None
    ref = f"{run.metadata.get('namespace')}/{run.metadata.get('name')}"
    result = (
        slack_payload(run, agent, event)
        if event in (NotifyEvent.SUCCEEDED, NotifyEvent.FAILED)
        else None
    )
    what = event.value if event is not None else f"{settle} settled"
    try:
        return await slackapp.deliver(
            api, run, agent.notify.slackApp, event, settle, policy, result
        )
    except slackapp.SlackError as err:
        log.warning("Slack notification for %s (%s) not sent: %s", ref, what, err)
        await _warn(api, run, f"{what} Slack notification not sent: {err}")
    except Exception:
        log.exception("Slack notification for %s (%s) failed", ref, what)
    return False


async def _warn(api: k8s.ApiClient, run: AgentRun, message: str) -> None:
    """A Warning Event on the run, where its owner looks; best effort like the rest."""
    try:
        await asyncio.to_thread(
            kube.record_event,
            api,
            {"metadata": run.metadata},
            "Warning",
            "NotificationNotSent",
            message,
        )
    except Exception as err:
        log.warning("Cannot record the notification Event: %s", type(err).__name__)


def on_phase_change(
    api: k8s.ApiClient,
    run: AgentRun,
    agent: AgentSpec,
    before: Phase | str | None,
    tasks: set[asyncio.Task[Any]] | None = None,
) -> asyncio.Task[bool] | None:
    """The runner's hook, called after a new status was persisted: when the phase changed to
    one the Agent listens for, sends in the background (the run never waits on a webhook).
    Keep the task in `tasks` (it removes itself when done) so it is not garbage collected."""
    event = should_notify(agent, before, run.status.phase)
    if event is None:
        return None
    return start(api, run, agent, event, tasks)


def start(
    api: k8s.ApiClient,
    run: AgentRun,
    agent: AgentSpec,
    event: NotifyEvent | None,
    tasks: set[asyncio.Task[Any]] | None = None,
    settle: str = "",
) -> asyncio.Task[bool]:
    """Sends the core's Notify action in the background, about the run as it is now (its
    status already written): the run never waits on a webhook. Keep the task in `tasks` (it
    removes itself when done) so it is not garbage collected."""
    snapshot = run.model_copy(deep=True)
    task = asyncio.get_running_loop().create_task(
        deliver(api, snapshot, agent, event, settle=settle)
    )
    if tasks is not None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return task
