"""Where a run's data may go, on the local cluster with the operator as a user runs it.

An Agent's author (a namespace editor) picks the model endpoint, the Secret holding its key
and the notification webhook. The admin's policy decides which of those the operator uses:
the test stack's operator allows model and notification URLs on http://127.0.0.1:* only and
reads credentials from agentrun-system only, from Secrets labelled
agentrun.dev/credentials=true. `localhost` is another host to that allow-list: the same
loopback servers under that name stand in for an attacker's endpoint.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.spine import Spine, condition, done
from tests.support import stack

FAST_FAIL = {"maxConsecutiveErrors": 2}


class Recorder:
    """A loopback HTTP server that records every request it gets (webhooks, or a host that
    must not be contacted) and answers 200."""

    def __init__(self) -> None:
        self.hits: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.hits.append({"path": self.path, "headers": headers, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.stop()


def _agent(spine: Spine, **model: Any) -> dict[str, Any]:
    agent = stack.get(spine.cluster, "agent", "agent", spine.namespace)
    assert agent is not None
    agent["spec"]["model"].update(model)
    agent["spec"]["limits"] = FAST_FAIL
    return agent


def _events(spine: Spine, reason: str) -> list[dict[str, Any]]:
    return [e for e in spine.events() if e.get("reason") == reason]


# ---------------------------------------------------------------- model endpoint


def test_a_model_endpoint_outside_the_allow_list_never_gets_a_request(spine: Spine) -> None:
    spine.setup([done("exfiltrated")])
    evil = spine.server.base_url.replace("127.0.0.1", "localhost")
    stack.apply(spine.cluster, [_agent(spine, baseURL=evil)])
    spine.start()
    cond = condition(spine.wait_phase("Failed", timeout=60), "Succeeded")
    assert cond["reason"] == "TooManyErrors"
    assert f"model endpoint {evil} is not in the operator's allowed model URLs" in cond["message"]
    assert "AGENTRUN_ALLOWED_MODEL_URLS" in cond["message"]
    assert spine.model_requests() == []


# ---------------------------------------------------------------- model credentials


def test_the_api_key_comes_only_from_an_opted_in_secret_of_the_credentials_namespace(
    spine: Spine,
) -> None:
    # An Agent author names a Secret: the operator reads it from agentrun-system, and only
    # when an admin labelled it; the key then reaches the model as its bearer token.
    name = f"model-key-{uuid.uuid4().hex[:6]}"
    stack.credential_secret(spine.cluster, name, {"api-key": "sk-admin-provided-key"})
    spine.setup([done("with a key")])
    stack.apply(spine.cluster, [_agent(spine, apiKeySecretRef={"name": name, "key": "api-key"})])
    spine.start()
    spine.wait_phase("Succeeded")
    (request,) = spine.model_requests()
    assert request["authorization"] == "Bearer sk-admin-provided-key"
    assert "sk-admin-provided-key" not in json.dumps(spine.get())


@pytest.mark.parametrize("where", ["run namespace", "credentials namespace, unlabelled"])
def test_an_agent_cannot_send_another_secret_to_the_model(spine: Spine, where: str) -> None:
    # The attack: point apiKeySecretRef at a database password, in the run's own namespace
    # (readable by the operator, not by the author) or an unlabelled one next to the real
    # keys. The model endpoint (the author's own, in real life) must never see it.
    spine.setup([done("thanks for the password")])
    name = f"db-{uuid.uuid4().hex[:6]}"
    password = f"db-password-{uuid.uuid4().hex}"
    if where == "run namespace":
        stack.credential_secret(spine.cluster, name, {"password": password}, spine.namespace)
        # Labelled even: the label counts only in the credentials namespace.
    else:
        stack.credential_secret(spine.cluster, name, {"password": password}, labelled=False)
    stack.apply(spine.cluster, [_agent(spine, apiKeySecretRef={"name": name, "key": "password"})])
    spine.start()
    cond = condition(spine.wait_phase("Failed", timeout=60), "Succeeded")
    expected = (
        "not found" if where == "run namespace" else 'not labelled agentrun.dev/credentials="true"'
    )
    assert f"Secret {stack.CREDENTIALS_NAMESPACE}/{name}" in cond["message"]
    assert expected in cond["message"]
    assert all(r.get("authorization") != f"Bearer {password}" for r in spine.server.requests)
    assert spine.model_requests() == []
    assert password not in json.dumps(spine.get())


# ---------------------------------------------------------------- notifications


def _notify(spine: Spine, **notify: Any) -> None:
    agent = _agent(spine)
    agent["spec"]["notify"] = {"on": ["Succeeded"], **notify}
    stack.apply(spine.cluster, [agent])


def test_a_webhook_outside_the_allow_list_gets_nothing(spine: Spine, recorder: Recorder) -> None:
    spine.setup([done("the run's findings")])
    _notify(spine, webhookURL=f"http://localhost:{recorder.port}/hook/T0/SECRETPATH")
    spine.start()
    spine.wait_phase("Succeeded")
    (event,) = spine.wait(lambda: _events(spine, "NotificationNotSent") or None, "the Event")
    assert event["type"] == "Warning"
    assert f"webhookURL (http://localhost:{recorder.port})" in event["message"]
    assert "not in the operator's allowed notification URLs" in event["message"]
    assert "SECRETPATH" not in event["message"]
    assert recorder.hits == []


def test_a_webhook_url_comes_only_from_an_opted_in_secret(spine: Spine, recorder: Recorder) -> None:
    # Unlabelled, then labelled: only the opted-in Secret's URL is used, and it too must be
    # under the allowed notification URLs.
    name = f"hook-{uuid.uuid4().hex[:6]}"
    url = f"http://127.0.0.1:{recorder.port}/hook/T0/SECRETPATH"
    stack.credential_secret(spine.cluster, name, {"url": url}, labelled=False)
    spine.setup([done("ok")])
    _notify(spine, webhookSecretRef={"name": name, "key": "url"})
    spine.start("first")
    spine.wait_phase("Succeeded", name="first")
    (event,) = spine.wait(
        lambda: (
            [e for e in spine.events("first") if e.get("reason") == "NotificationNotSent"] or None
        ),
        "the Event",
    )
    assert 'is not labelled agentrun.dev/credentials="true"' in event["message"]
    assert recorder.hits == []

    stack.credential_secret(spine.cluster, name, {"url": url})
    spine.start("second")
    spine.wait_phase("Succeeded", name="second")
    (hit,) = spine.wait(lambda: recorder.hits or None, "the webhook")
    assert hit["path"] == "/hook/T0/SECRETPATH"
    payload = json.loads(hit["body"])
    assert payload["event"] == "Succeeded" and payload["run"]["name"] == "second"

    # The same Secret pointing outside the allow-list: refused, though the Secret opted in.
    stack.credential_secret(spine.cluster, name, {"url": url.replace("127.0.0.1", "localhost")})
    spine.start("third")
    spine.wait_phase("Succeeded", name="third")
    (event,) = spine.wait(
        lambda: (
            [e for e in spine.events("third") if e.get("reason") == "NotificationNotSent"] or None
        ),
        "the Event",
    )
    assert "not in the operator's allowed notification URLs" in event["message"]
    assert len(recorder.hits) == 1
