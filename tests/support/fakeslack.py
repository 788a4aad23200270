"""A local stand-in for Slack, both ways, for tests that play Slack against the receiver.

- Slack -> agentrun: ``FakeSlack.click`` sends an interaction exactly as Slack sends one: a
  form-encoded ``payload=<json>`` body of type ``block_actions`` (user, team, container, the
  pressed button with its value, the card's input ``state``, a ``response_url``), signed with
  the app's signing secret (``X-Slack-Request-Timestamp``, ``X-Slack-Signature: v0=...``).
- agentrun -> Slack: a Web API on loopback (``chat.postMessage``, ``chat.update``,
  ``users.info``, bearer token required) that refuses, as Slack does, a message whose blocks
  break Block Kit's documented limits (``invalid_blocks``); and the response URLs a click
  names. Everything received is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlencode

import urllib3
from aiohttp import web

from agentrun.operator import slacklimits
from agentrun.receiver import slack


class FakeSlack:
    def __init__(self, signing_secret: str, bot_token: str = "xoxb-test") -> None:
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.emails: dict[str, str] = {}  # Slack user id -> e-mail, for users.info
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method or response id, body)
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}  # (channel, ts) -> message
        self._ts = itertools.count(1)
        self._responses = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.http = urllib3.PoolManager()

    # ------------------------------------------------------------ serving

    def start(self) -> None:
        self.thread.start()
        future: Future[int] = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        self.port = future.result(10)

    async def _serve(self) -> int:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/actions/{id}", self._response_url)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        self.calls.append((method, body))
        if method == "users.info":
            email = self.emails.get(str(body.get("user")))
            if email is None:
                return web.json_response({"ok": False, "error": "user_not_found"})
            return web.json_response({"ok": True, "user": {"profile": {"email": email}}})
        if method not in ("chat.postMessage", "chat.update"):
            return web.json_response({"ok": False, "error": "unknown_method"})
        problems = slacklimits.check(body)
        if problems:
            return web.json_response({"ok": False, "error": "invalid_blocks", "errors": problems})
        channel = str(body.get("channel") or "")
        if method == "chat.update":
            key = (channel, str(body.get("ts")))
            if key not in self.messages:
                return web.json_response({"ok": False, "error": "message_not_found"})
        else:
            key = (channel, f"{int(time.time())}.{next(self._ts):06d}")
        self.messages[key] = body
        return web.json_response({"ok": True, "channel": key[0], "ts": key[1]})

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        problems = slacklimits.check(body) if "blocks" in body else []
        self.calls.append((f"response:{request.match_info['id']}", body))
        if problems:
            return web.Response(status=400, text="invalid_blocks")
        return web.Response(text="ok")

    # ------------------------------------------------------------ as Slack, inbound

    def responses(self) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name.startswith("response:")]

    def api_calls(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == method]

    def interaction(
        self,
        user: str,
        action: str,
        value: str,
        text: str = "",
        channel: str = "C0APPROVALS",
        message_ts: str = "1700000000.000100",
    ) -> dict[str, Any]:
        """A block_actions payload as Slack builds it for a button on a message."""
        state: dict[str, Any] = {}
        if text:
            block = slack.BLOCK_ANSWER if action == slack.ACTION_ANSWER else slack.BLOCK_REASON
            state[block] = {slack.INPUT_ACTION: {"type": "plain_text_input", "value": text}}
        return {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": "T0TEAM",
            },
            "api_app_id": "A0AGENTRUN",
            "token": "legacy-verification-token-unused",
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": "1234567890.123456.abcdef",
            "team": {"id": "T0TEAM", "domain": "example"},
            "channel": {"id": channel, "name": "approvals"},
            "message": {"type": "message", "ts": message_ts},
            "state": {"values": state},
            "response_url": f"{self.url}/actions/{next(self._responses)}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action,
                    "block_id": "agentrun.decide",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def signed(
        self, payload: dict[str, Any], timestamp: int | None = None, secret: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        body = urlencode({"payload": json.dumps(payload)}).encode()
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            slack.HEADER_TIMESTAMP: ts,
            slack.HEADER_SIGNATURE: slack.signature(secret or self.signing_secret, ts, body),
        }
        return body, headers

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        resp = self.http.request("POST", url, body=body, headers=headers, timeout=10)
        return resp.status, json.loads(resp.data or b"{}")

    def click(self, url: str, *args: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
        """Builds, signs and sends one interaction to the receiver's Request URL."""
        body, headers = self.signed(self.interaction(*args, **kw))
        return self.post(url, body, headers)
