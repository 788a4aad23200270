"""Slack's side of an interactive approval, pure: who sent the request, what was clicked.

- ``verify``: Slack signs every request it sends with the app's signing secret:
  ``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + X-Slack-Request-Timestamp + ":" +
  raw body))``. Checked in constant time against every configured secret (rotation), with
  the timestamp no more than five minutes from now; ``ReplayGuard`` refuses a signature seen
  before inside that window, so a captured click cannot be sent again.
- ``parse_click``: the ``block_actions`` payload of a button of an agentrun card. The button's
  value names the run and the action hash (or the question's step) it was shown for.
- ``UserMapping``: the platform team's table of Slack users (id or e-mail) to Kubernetes users
  and groups, from a ConfigMap. An unmapped Slack user decides nothing.

Nothing here touches the network or the cluster (interact.py does).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentrun.api import NAME_PATTERN

SIGNATURE_VERSION = "v0"
MAX_AGE_SECONDS = 300  # Slack's own recommendation: refuse older requests
HEADER_TIMESTAMP = "X-Slack-Request-Timestamp"
HEADER_SIGNATURE = "X-Slack-Signature"

# action_id of each card element; the receiver ignores any other.
ACTION_APPROVE = "agentrun.approve"
ACTION_REJECT = "agentrun.reject"
ACTION_ANSWER = "agentrun.answer"
ACTIONS = (ACTION_APPROVE, ACTION_REJECT, ACTION_ANSWER)
# block_id/action_id of the free-text inputs on a card; their values come in payload.state.
BLOCK_REASON = "agentrun.reason"
BLOCK_ANSWER = "agentrun.answer-text"
INPUT_ACTION = "text"
MAX_REASON = 1000
MAX_ANSWER = 3000


class SlackRefused(Exception):
    """A request that decides nothing: HTTP status, code, and a message for the caller."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------- signature


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Slack-Signature Slack sends for this body and timestamp."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(
    secrets: Iterable[str],
    timestamp: str | None,
    presented: str | None,
    body: bytes,
    now: float,
) -> None:
    """Raises SlackRefused (401) unless the request is signed by one of the secrets within
    MAX_AGE_SECONDS of now."""
    if not timestamp or not presented:
        raise SlackRefused(
            401,
            "MissingSignature",
            f"not a Slack request: {HEADER_TIMESTAMP} and {HEADER_SIGNATURE} are required",
        )
    try:
        sent = int(timestamp)
    except ValueError:
        raise SlackRefused(
            401, "InvalidTimestamp", f"{HEADER_TIMESTAMP} is not a Unix time"
        ) from None
    # Checked before the signature: an old request is refused whatever it carries.
    if abs(now - sent) > MAX_AGE_SECONDS:
        raise SlackRefused(
            401,
            "StaleTimestamp",
            f"request timestamp is {int(now - sent)}s from now; Slack requests older than "
            f"{MAX_AGE_SECONDS}s are refused (replay protection)",
        )
    given = presented.encode()
    # Every secret compared, no early exit: the timing says nothing about which matched.
    matches = [hmac.compare_digest(given, signature(s, timestamp, body).encode()) for s in secrets]
    if not any(matches):
        raise SlackRefused(
            401, "InvalidSignature", "the Slack signature does not match the signing secret"
        )


class ReplayGuard:
    """Signatures seen in the last MAX_AGE_SECONDS (older requests fail the timestamp check,
    so nothing older needs remembering). In memory: with several receiver replicas a replay
    sent to another one passes here, and is then refused as a stale card by the run itself
    (the hash it carries is no longer pending)."""

    def __init__(self, window: float = MAX_AGE_SECONDS) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def check(self, presented: str, now: float) -> None:
        """Raises SlackRefused (401) for a signature already accepted; else remembers it."""
        for sig, at in list(self._seen.items()):
            if now - at > 2 * self.window:
                del self._seen[sig]
        if presented in self._seen:
            raise SlackRefused(
                401,
                "Replayed",
                "this exact Slack request was already received; a replayed request decides nothing",
            )
        self._seen[presented] = now


def now() -> float:
    return time.time()


# ---------------------------------------------------------------- the click


@dataclass(frozen=True)
class Click:
    """One button press on an agentrun card, as Slack reported it."""

    action: str  # ACTION_*
    namespace: str
    run: str
    action_hash: str  # approve/reject: the pendingAction's hash shown on the card
    step: int  # answer: the pendingInput's step shown on the card
    slack_user: str
    slack_team: str
    text: str  # reject: the reason; answer: the answer
    response_url: str
    channel: str = ""
    message_ts: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def button_value(namespace: str, run: str, action_hash: str = "", step: int = 0) -> str:
    """What a card's button carries (at most 2000 characters; these are far below)."""
    value: dict[str, Any] = {"ns": namespace, "run": run}
    if action_hash:
        value["hash"] = action_hash
    else:
        value["step"] = step
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class _Value(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ns: str = Field(pattern=NAME_PATTERN, max_length=63)
    run: str = Field(pattern=NAME_PATTERN, max_length=253)
    hash: str = Field(default="", pattern=r"^[0-9a-f]{0,64}$")
    step: int = Field(default=0, ge=0)


def _bad(message: str) -> SlackRefused:
    return SlackRefused(400, "InvalidPayload", message)


def _state_text(payload: dict[str, Any], block: str) -> str:
    values = ((payload.get("state") or {}).get("values") or {}).get(block) or {}
    entry = values.get(INPUT_ACTION) or {}
    value = entry.get("value") if isinstance(entry, dict) else None
    return value.strip() if isinstance(value, str) else ""


def parse_click(body: bytes) -> Click:
    """The click in a verified request body (form-encoded ``payload=<json>``)."""
    try:
        form = parse_qs(body.decode(), strict_parsing=False)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, json.JSONDecodeError):
        raise _bad("expected a form field 'payload' holding Slack's JSON") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        kind = payload.get("type") if isinstance(payload, dict) else None
        raise _bad(f"only block_actions interactions are handled, not {kind!r}")
    actions = [a for a in payload.get("actions") or [] if a.get("action_id") in ACTIONS]
    if not actions:
        raise _bad(f"no agentrun button in the interaction (action_id one of {list(ACTIONS)})")
    pressed = actions[0]
    try:
        value = _Value.model_validate_json(str(pressed.get("value") or ""))
    except ValidationError:
        raise _bad("the button's value does not name a run") from None
    action = str(pressed["action_id"])
    if action != ACTION_ANSWER and not value.hash:
        raise _bad("the button does not carry the action hash it was shown for")
    user = payload.get("user") or {}
    if not isinstance(user, dict) or not user.get("id"):
        raise _bad("the interaction names no Slack user")
    text = ""
    if action == ACTION_REJECT:
        text = _state_text(payload, BLOCK_REASON)[:MAX_REASON]
    elif action == ACTION_ANSWER:
        text = _state_text(payload, BLOCK_ANSWER)[:MAX_ANSWER]
    container = payload.get("container") or {}
    return Click(
        action=action,
        namespace=value.ns,
        run=value.run,
        action_hash=value.hash,
        step=value.step,
        slack_user=str(user["id"]),
        slack_team=str((payload.get("team") or {}).get("id") or user.get("team_id") or ""),
        text=text,
        response_url=str(payload.get("response_url") or ""),
        channel=str(container.get("channel_id") or ""),
        message_ts=str(container.get("message_ts") or ""),
    )


# ---------------------------------------------------------------- who the Slack user is


class MappedUser(BaseModel):
    """One row of the mapping: a Slack user (by id, or by e-mail) -> a Kubernetes identity."""

    model_config = ConfigDict(extra="forbid")

    slackUserID: str | None = Field(default=None, pattern=r"^[UW][A-Z0-9]{2,30}$")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    user: str = Field(min_length=1, max_length=253, description="The Kubernetes user name.")
    groups: list[str] = Field(default_factory=list, max_length=64)


class UserMapping(BaseModel):
    """The ConfigMap's ``users.yaml``: ``users: [{slackUserID | email, user, groups}]``."""

    model_config = ConfigDict(extra="forbid")

    users: list[MappedUser] = Field(default_factory=list)

    def by_id(self, slack_user: str) -> MappedUser | None:
        return next((u for u in self.users if u.slackUserID == slack_user), None)

    def by_email(self, email: str) -> MappedUser | None:
        want = email.strip().lower()
        return next((u for u in self.users if u.email and u.email.lower() == want), None)

    def needs_email(self) -> bool:
        return any(u.email for u in self.users)


class MappingError(ValueError):
    """The mapping ConfigMap cannot be used; the message says what is wrong with it."""


def load_mapping(text: str | None, where: str) -> UserMapping:
    if text is None:
        raise MappingError(f"{where} has no user mapping")
    try:
        data = yaml.safe_load(text) or {}
        mapping = UserMapping.model_validate(data)
    except (yaml.YAMLError, ValidationError) as err:
        raise MappingError(f"{where} is not a valid user mapping: {err}") from None
    for row in mapping.users:
        if not row.slackUserID and not row.email:
            raise MappingError(f"{where}: user {row.user!r} names neither slackUserID nor email")
    return mapping
