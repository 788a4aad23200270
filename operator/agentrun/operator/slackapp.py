"""Interactive Slack cards through a Slack app (Agent.spec.notify.slackApp).

When a run needs approval or input, ``chat.postMessage`` posts a card (slackcard) with
Approve/Reject buttons or an answer field, and the run is annotated with where it is
(``agentrun.dev/slack-card: <channel>/<ts>/<action hash>``). When the run leaves that phase, whoever
decided and however (a button through the receiver, or kubectl), ``chat.update`` replaces the
card with the decision and the run's phase: no stale buttons stay in the channel. Results and
failures are posted as replies in the card's thread.

The bot token comes from a Secret in the credentials namespace that opted in; the API URL
must be under the admin's allowed notification URLs (Policy.notify_urls). Best effort like
every notification: a failure is logged and a Warning Event says so; the run never waits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from kubernetes import client as k8s

from agentrun.api import ANNOTATION_SLACK_CARD, AgentRun, NotifyEvent, Phase, SlackAppNotify
from agentrun.engine.policy import ENV_NOTIFY_URLS, Policy
from agentrun.kube import client as kube
from agentrun.operator import slackcard

log = logging.getLogger("agentrun.operator.slack")

TIMEOUT = 10.0


class SlackError(Exception):
    """A Slack call that did not post; the message never holds the token."""


async def call(api_url: str, token: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    """One Web API call (JSON body); the answer when Slack says ok, else SlackError."""
    problems = slackcard.check_limits(body) if "blocks" in body else []
    if problems:
        raise SlackError(f"{method}: the card breaks Slack's limits: {'; '.join(problems[:3])}")
    url = f"{api_url.rstrip('/')}/{method}"
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "agentrun-notify/1"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
            session.post(url, json=body, headers=headers, allow_redirects=False) as resp,
        ):
            if resp.status >= 300:
                raise SlackError(f"{method}: HTTP {resp.status}")
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise SlackError(f"{method}: {type(err).__name__}") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else "not JSON"
        raise SlackError(f"{method}: Slack answered {error}")
    return answer


def _api_url(spec: SlackAppNotify, policy: Policy) -> str:
    url = spec.apiURL.rstrip("/") + "/"
    if not policy.notify_url_allowed(url):
        raise SlackError(
            f"slackApp.apiURL {spec.apiURL} is not in the operator's allowed notification URLs "
            f"({ENV_NOTIFY_URLS}: {', '.join(policy.notify_urls)}); not sent"
        )
    return spec.apiURL


async def _token(api: k8s.ApiClient, spec: SlackAppNotify, policy: Policy) -> str:
    ref, namespace = spec.tokenSecretRef, policy.credentials_namespace
    try:
        return await asyncio.to_thread(kube.read_credential, api, namespace, ref.name, ref.key)
    except kube.CredentialError as err:
        raise SlackError(f"slackApp.tokenSecretRef not used: {err}") from None


def _card_of(run: AgentRun) -> tuple[str, str, str] | None:
    """(channel, ts, the action hash it asks about) of the run's open card."""
    value = (run.metadata.get("annotations") or {}).get(ANNOTATION_SLACK_CARD, "")
    channel, ts, action_hash = ([*value.split("/"), "", ""])[:3]
    return (channel, ts, action_hash) if channel and ts else None


async def deliver(
    api: k8s.ApiClient,
    run: AgentRun,
    spec: SlackAppNotify,
    event: NotifyEvent | None,
    settle: str,
    policy: Policy,
    result: dict[str, Any] | None = None,
) -> bool:
    """Settles the open card (when the run left its phase), then posts what `event` says
    (`result`: the message for Succeeded/Failed). Raises SlackError for the caller to log."""
    api_url = _api_url(spec, policy)
    token = await _token(api, spec, policy)
    body = run.model_dump(mode="json", exclude_none=True)
    card = _card_of(run)
    if settle and card is not None:
        kind = "input" if settle == Phase.AWAITING_INPUT.value else "approval"
        message = slackcard.settled_card(body, kind, card[2])
        await call(api_url, token, "chat.update", {"channel": card[0], "ts": card[1], **message})
        log.info("Updated the Slack card of %s in place (%s)", _ref(run), settle)
    if event is None:
        return True
    if event in (NotifyEvent.AWAITING_APPROVAL, NotifyEvent.AWAITING_INPUT):
        build = (
            slackcard.approval_card
            if event is NotifyEvent.AWAITING_APPROVAL
            else slackcard.input_card
        )
        posted = await call(
            api_url, token, "chat.postMessage", {"channel": spec.channel, **build(body)}
        )
        pending = run.status.pendingAction
        asked = (
            pending.actionHash if pending is not None and build is slackcard.approval_card else ""
        )
        where = f"{posted.get('channel') or spec.channel}/{posted.get('ts')}/{asked}"
        meta = run.metadata
        await asyncio.to_thread(
            kube.annotate_run,
            api,
            meta["namespace"],
            meta["name"],
            {ANNOTATION_SLACK_CARD: where},
        )
        log.info("Posted a Slack card for %s (%s)", _ref(run), event.value)
        return True
    if result is None:
        return True
    reply = {"thread_ts": card[1]} if card is not None and card[0] == spec.channel else {}
    await call(api_url, token, "chat.postMessage", {"channel": spec.channel, **result, **reply})
    log.info("Posted the %s of %s to Slack", event.value, _ref(run))
    return True


def _ref(run: AgentRun) -> str:
    return f"{run.metadata.get('namespace')}/{run.metadata.get('name')}"
