"""POST /slack/interactions: a button on an agentrun Slack card, turned into a decision.

In order, each step refusing with a clear answer and deciding nothing:

1. Slack's signature (slack.verify: HMAC-SHA256, constant time, five-minute window) and no
   replay (slack.ReplayGuard). Unverified requests get a 401 and nothing else: their
   response_url is never called.
2. The Slack user mapped to a Kubernetes user and groups by the platform team's ConfigMap
   (read on every click); unmapped users are told who to ask.
3. The run read back: the card's action hash (or question) must still be what is pending,
   else the card is stale and says so.
4. A SubjectAccessReview: may the mapped identity `approve` this run? The same check the
   admission webhook makes for kubectl.
5. The decision written as that identity: the annotation kubectl would set plus
   ``agentrun.dev/decided-for``, as a merge patch on the version of the run the check saw
   (409: it moved on meanwhile). The admission webhook honours decided-for only from this
   receiver's ServiceAccount (--approval-proxy) and records the mapped user in
   status.approvals exactly as for kubectl.

Slack wants an answer within three seconds and shows the user nothing of it for a button;
so every verified outcome is also posted to the click's response_url (an ephemeral note for
a refusal, the card replaced on success), in the background, only to allowed Slack URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from agentrun.api import (
    ANNOTATION_ANSWER,
    ANNOTATION_APPROVE,
    ANNOTATION_DECIDED_FOR,
    ANNOTATION_REJECT,
)
from agentrun.engine.policy import url_allowed
from agentrun.kube import client as kube
from agentrun.operator import admission, slackcard
from agentrun.receiver import slack
from agentrun.receiver.routing import SlackConfig
from agentrun.receiver.slack import Click

log = logging.getLogger("agentrun.receiver.slack")

TIMEOUT = 2.5  # Slack allows three seconds for the whole answer


class SlackStore(Protocol):
    """What a click needs from the cluster (a fake in unit tests)."""

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def decide(
        self, namespace: str, name: str, annotations: dict[str, str | None], version: str
    ) -> None: ...

    async def review(self, review: dict[str, Any]) -> dict[str, Any]: ...

    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class KubeSlackStore:
    """On the Kubernetes API, as the receiver's ServiceAccount: agentruns get/patch/approve,
    subjectaccessreviews create, and get on the one mapping ConfigMap."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api

    async def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(kube.get_run, self.api, namespace, name)

    async def decide(
        self, namespace: str, name: str, annotations: dict[str, str | None], version: str
    ) -> None:
        await asyncio.to_thread(
            kube.annotate_run_at, self.api, namespace, name, annotations, version
        )

    async def review(self, review: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(kube.create_access_review, self.api, review)

    async def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(kube.get_config_map, self.api, namespace, name)


class Outcome(Exception):
    """A verified click that decides nothing: a code and what the user is told."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _api_message(exc: ApiException) -> str:
    reason = exc.reason or ""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        reason = json.loads(exc.body or "{}").get("message") or reason
    return str(reason)


class Interactions:
    """The /slack/interactions endpoint's logic, without the HTTP plumbing."""

    def __init__(
        self,
        config: SlackConfig,
        store: SlackStore,
        secrets: Callable[[], list[str]],
        bot_token: Callable[[], list[str]] | None = None,
        clock: Callable[[], float] = slack.now,
    ) -> None:
        self.config = config
        self.store = store
        self.secrets = secrets
        self.bot_token = bot_token
        self.clock = clock
        self.replays = slack.ReplayGuard()
        self.tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer). Raises SlackRefused for a request not from Slack."""
        presented = headers.get(slack.HEADER_SIGNATURE)
        now = self.clock()
        slack.verify(self.secrets(), headers.get(slack.HEADER_TIMESTAMP), presented, body, now)
        self.replays.check(str(presented), now)
        click = slack.parse_click(body)
        try:
            decided = await self._decide(click)
        except Outcome as out:
            log.info(
                "Refused Slack %s on %s/%s by %s: %s",
                click.action.rpartition(".")[2],
                click.namespace,
                click.run,
                click.slack_user,
                out.code,
            )
            self._respond(click, {"response_type": "ephemeral", "replace_original": False,
                                  "text": f":no_entry: {out.message}"})  # fmt: skip
            return 200, {"ok": False, "error": out.code, "message": out.message}
        self._respond(click, {"replace_original": True, **decided["card"]})
        return 200, {"ok": True, **{k: v for k, v in decided.items() if k != "card"}}

    # ------------------------------------------------------------ the decision

    async def _decide(self, click: Click) -> dict[str, Any]:
        user = await self._identity(click)
        try:
            run = await self.store.get_run(click.namespace, click.run)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise Outcome("KubernetesError", f"cannot read the run: {exc}") from None
        if run is None:
            raise Outcome(
                "StaleCard",
                f"AgentRun {click.namespace}/{click.run} no longer exists; nothing was done.",
            )
        annotations = self._annotations(click, run, user)
        review = admission.access_review(user, click.namespace, click.run)
        try:
            allowed, why = admission.review_allowed(await self.store.review(review))
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise Outcome("KubernetesError", f"cannot check your permission: {exc}") from None
        if not allowed:
            raise Outcome(
                "Forbidden",
                f"You are {user.username} in Kubernetes (Slack {click.slack_user}). "
                + admission.refusal(user, click.namespace, list(annotations), why=why)
                + ". Nothing was done.",
            )
        version = str(run["metadata"].get("resourceVersion") or "")
        try:
            await self.store.decide(
                click.namespace, click.run, {**annotations, ANNOTATION_DECIDED_FOR: user.username},
                version,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                raise Outcome(
                    "StaleCard",
                    f"AgentRun {click.namespace}/{click.run} changed while you decided; "
                    "nothing was done. The card is refreshed when the run moves on.",
                ) from None
            raise Outcome(
                "KubernetesError", f"the Kubernetes API refused ({exc.status}): {_api_message(exc)}"
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise Outcome("KubernetesError", f"cannot reach the Kubernetes API: {exc}") from None
        decision = {
            slack.ACTION_APPROVE: "Approved",
            slack.ACTION_REJECT: "Rejected",
            slack.ACTION_ANSWER: "Answered",
        }[click.action]
        log.info(
            "%s %s/%s for %s (Slack %s)",
            decision,
            click.namespace,
            click.run,
            user.username,
            click.slack_user,
        )
        return {
            "decision": decision,
            "run": {"namespace": click.namespace, "name": click.run},
            "user": user.username,
            "card": slackcard.decided_card(run, decision, user.username, click.text),
        }

    def _annotations(
        self, click: Click, run: dict[str, Any], user: admission.User
    ) -> dict[str, str | None]:
        """The decision kubectl would write, once the card is shown to still be current."""
        status = run.get("status") or {}
        ref = f"AgentRun {click.namespace}/{click.run}"
        phase = status.get("phase") or "Pending"
        if click.action == slack.ACTION_ANSWER:
            pending_input = status.get("pendingInput") or {}
            if phase != "AwaitingInput" or pending_input.get("step") != click.step:
                raise Outcome(
                    "StaleCard",
                    f"This card is stale: {ref} no longer waits for an answer to the question of "
                    f"step {click.step} (it is {phase}); nothing was done.",
                )
            if not click.text:
                raise Outcome("AnswerRequired", "Type your answer in the field, then press Answer.")
            return {ANNOTATION_ANSWER: click.text}
        pending = status.get("pendingAction") or {}
        if phase != "AwaitingApproval" or pending.get("actionHash") != click.action_hash:
            last = (status.get("approvals") or [{}])[-1]
            seen = (
                f" Last decision: {last.get('decision')} by {last.get('approver') or 'unknown'}."
                if last.get("actionHash") == click.action_hash
                else ""
            )
            raise Outcome(
                "StaleCard",
                f"This card is stale: the action it shows ({click.action_hash[:12]}) is no longer "
                f"pending on {ref} (it is {phase}); nothing was done.{seen}",
            )
        if click.action == slack.ACTION_REJECT:
            if not click.text:
                raise Outcome(
                    "ReasonRequired", "Type a reason in the Reason field, then press Reject."
                )
            return {ANNOTATION_REJECT: click.text}
        return {ANNOTATION_APPROVE: click.action_hash}

    async def _identity(self, click: Click) -> admission.User:
        ref = self.config.userMapping
        where = f"ConfigMap {ref.namespace}/{ref.name} (key {ref.key})"
        try:
            cm = await self.store.config_map(ref.namespace, ref.name)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.warning("Cannot read the Slack user mapping %s: %s", where, exc)
            raise Outcome("MappingUnavailable", f"cannot read the user mapping {where}") from None
        if cm is None:
            raise Outcome("MappingUnavailable", f"the user mapping {where} does not exist")
        try:
            mapping = slack.load_mapping((cm.get("data") or {}).get(ref.key), where)
        except slack.MappingError as err:
            log.warning("%s", err)
            raise Outcome("MappingUnavailable", str(err)) from None
        row = mapping.by_id(click.slack_user)
        if row is None and mapping.needs_email():
            email = await self._email(click.slack_user)
            row = mapping.by_email(email) if email else None
        if row is None:
            raise Outcome(
                "UnmappedUser",
                f"Your Slack user {click.slack_user} is not mapped to a Kubernetes user in "
                f"{where}, so it cannot decide; ask your platform team to add you. "
                "Nothing was done.",
            )
        return admission.User(username=row.user, groups=tuple(row.groups))

    # ------------------------------------------------------------ Slack calls

    async def _email(self, slack_user: str) -> str:
        """The user's e-mail from users.info (scope users:read.email); "" when unknown."""
        tokens = self.bot_token() if self.bot_token else []
        url = f"{self.config.apiURL.rstrip('/')}/users.info"
        if not tokens or not url_allowed(url, tuple(self.config.allowedURLs)):
            return ""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT / 2)) as s,
                s.post(
                    url,
                    data={"user": slack_user},
                    headers={"Authorization": f"Bearer {tokens[0]}"},
                    allow_redirects=False,
                ) as resp,
            ):
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            log.warning("Slack users.info failed: %s", type(err).__name__)
            return ""
        profile = ((body or {}).get("user") or {}).get("profile") or {}
        return str(profile.get("email") or "") if body.get("ok") else ""

    def _respond(self, click: Click, message: dict[str, Any]) -> None:
        """Posts to the click's response_url in the background, when it is an allowed URL."""
        url = click.response_url
        if not url:
            return
        if not url_allowed(url, tuple(self.config.allowedURLs)):
            log.warning("Slack response_url not under slack.allowedURLs; not called")
            return
        task = asyncio.get_running_loop().create_task(_post(url, message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _post(url: str, message: dict[str, Any]) -> None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(url, json=message, allow_redirects=False) as resp,
        ):
            if resp.status >= 300:
                log.warning("Slack response_url answered HTTP %d", resp.status)
    except (aiohttp.ClientError, TimeoutError) as err:
        log.warning("Slack response_url failed: %s", type(err).__name__)
