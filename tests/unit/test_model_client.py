"""The real ModelClient, through the real openai client, against the scripted HTTP server."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from agentrun.api import AgentRun, AgentSpec, AgentToolSpec, Effect, ModelSpec, PromptRef, Usage
from agentrun.engine.core import (
    CallModel,
    Config,
    Done,
    InvalidAction,
    ModelReply,
    ModelUnavailable,
    Observations,
    ToolCall,
    decide,
)
from agentrun.engine.policy import Policy
from agentrun.llm.model import MAX_ARGUMENTS_CHARS, MAX_REPLY_BYTES, ModelClient
from tests.modelserver import ScriptedModelServer

TOOLS = {
    "k8s-get": AgentToolSpec(
        description="Get objects.",
        effect=Effect.READ,
        parameters={
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "namespace": {"type": "string", "default": "default"},
            },
            "required": ["kind"],
            "additionalProperties": False,
        },
    )
}
PROMPT = PromptRef(name="sre-agent", version="1", sha256="0" * 64)
# The admin policy of these tests: the scripted server listens on a loopback port.
LOCAL = Policy(model_urls=("http://127.0.0.1:*",))


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


def config(server: ScriptedModelServer, model: str, **spec: Any) -> Config:
    spec = {"maxRetries": 2, "timeoutSeconds": 5, **spec}
    return Config.of(
        agent=AgentSpec(model=ModelSpec(name=model, baseURL=server.base_url, **spec)),
        tools=TOOLS,
        prompt=PROMPT,
    )


def make_run(name: str = "web-down") -> AgentRun:
    return AgentRun.model_validate(
        {
            "metadata": {"name": name, "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": {"agentRef": "sre", "input": {"task": "Why is web down?"}},
        }
    )


def ask(
    cfg: Config,
    steps: list[int],
    api_key: str | None = None,
    run: AgentRun | None = None,
    policy: Policy = LOCAL,
) -> list[ModelReply | ModelUnavailable]:
    async def go() -> list[ModelReply | ModelUnavailable]:
        client = ModelClient(policy)
        try:
            return [
                await client.next_action(
                    run or make_run(), cfg, "You are {{ run.name }}.", api_key, s
                )
                for s in steps
            ]
        finally:
            await client.close()

    return asyncio.run(go())


def seen(server: ScriptedModelServer, model: str) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["model"] == model]


def test_tool_call_becomes_validated_tool_call(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-tool": [{}, {}, {"tool": "k8s-get", "arguments": {"kind": "Pod"}}]})
    (reply,) = ask(config(server, "m-tool", temperature=0.2), [3])
    assert isinstance(reply, ModelReply)
    assert reply.action == ToolCall("k8s-get", {"kind": "Pod", "namespace": "default"})
    (req,) = seen(server, "m-tool")
    # Headers carried: the run and the step.
    assert (req["run"], req["step"]) == ("shop/web-down", 3)
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    assert req["messages"][0]["content"] == "You are web-down."
    assert [t["function"]["name"] for t in req["tools"]] == [
        "k8s-get",
        "request_human_input",
        "done",
    ]
    assert req["tool_choice"] == "auto"
    assert req["temperature"] == 0.2
    assert req["has_authorization"]  # a placeholder key: local endpoints need none
    # Usage converted from the server's numbers.
    prompt_tokens = sum(len(m["content"]) for m in req["messages"]) // 4
    assert reply.usage.promptTokens == prompt_tokens
    assert reply.usage.totalTokens == prompt_tokens + reply.usage.completionTokens
    assert reply.usage.modelCalls == 1


def test_done_and_script_end(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-done": [{"done": "Root cause: OOM."}]})
    first, past_end = ask(config(server, "m-done"), [1, 2])
    assert isinstance(first, ModelReply) and first.action == Done("Root cause: OOM.")
    assert isinstance(past_end, ModelReply) and isinstance(past_end.action, Done)
    assert "script ended" in past_end.action.answer


def test_bad_replies_become_invalid_actions(server: ScriptedModelServer) -> None:
    server.set_scripts(
        {
            "m-bad": [
                {"raw_tool_calls": [{"name": "k8s-get", "arguments": '{"kind": "Pod"'}]},
                {"tool": "kubectl-exec", "arguments": {}},
                {
                    "raw_tool_calls": [
                        {"name": "k8s-get", "arguments": {"kind": "Pod"}},
                        {"name": "done", "arguments": {"answer": "x"}},
                    ]
                },
                {"text": "The pod is probably fine."},
                {"tool": "k8s-get", "arguments": {"kind": "Pod", "verb": "delete"}},
            ]
        }
    )
    replies = ask(config(server, "m-bad"), [1, 2, 3, 4, 5])
    messages = []
    for reply in replies:
        assert isinstance(reply, ModelReply) and isinstance(reply.action, InvalidAction)
        messages.append(reply.action.message)
    assert "not valid JSON" in messages[0]
    assert "Unknown tool 'kubectl-exec'; allowed tools: k8s-get, done" in messages[1]
    assert "`done` is called alone" in messages[2] and "none of the 2 calls ran" in messages[2]
    assert "no tool call" in messages[3] and "Every reply calls a tool" in messages[3]
    assert "verb: unknown field" in messages[4]
    # One pooled keep-alive connection served all five steps.
    assert len({r["peer"] for r in seen(server, "m-bad")}) == 1


def test_429_twice_then_success_is_retried(server: ScriptedModelServer) -> None:
    entry = {"error": 429, "times": 2, "then": {"tool": "k8s-get", "arguments": {"kind": "Pod"}}}
    server.set_scripts({"m-429": [entry]})
    (reply,) = ask(config(server, "m-429", maxRetries=2), [1])
    assert isinstance(reply, ModelReply) and isinstance(reply.action, ToolCall)
    reqs = seen(server, "m-429")
    assert [r["status"] for r in reqs] == [429, 429, 200]
    assert [r["retry_count"] for r in reqs] == ["0", "1", "2"]
    assert reqs[-1]["answered"] - reqs[0]["received"] < 2  # retry-after-ms honoured


def test_persistent_500_becomes_model_unavailable(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-500": [{"error": 500}]})
    (reply,) = ask(config(server, "m-500", maxRetries=1), [1])
    assert isinstance(reply, ModelUnavailable)
    assert "HTTP 500" in reply.message and "after 1 retries" in reply.message
    assert len(seen(server, "m-500")) == 2


def test_timeout_becomes_model_unavailable(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-slow": [{"delay": 2, "then": {"done": "late"}}]})
    (reply,) = ask(config(server, "m-slow", maxRetries=0, timeoutSeconds=1), [1])
    assert isinstance(reply, ModelUnavailable)
    assert "timed out after 1s" in reply.message


def test_unreachable_endpoint_becomes_model_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Config.of(
        agent=AgentSpec(
            model=ModelSpec(name="m", baseURL=f"http://127.0.0.1:{port}/v1", maxRetries=0)
        ),
        tools=TOOLS,
        prompt=PROMPT,
    )
    (reply,) = ask(cfg, [1])
    assert isinstance(reply, ModelUnavailable)
    assert f"cannot reach 127.0.0.1:{port}" in reply.message


def test_api_key_never_in_the_message(server: ScriptedModelServer) -> None:
    key = "verysecret-123456"
    message = f"Incorrect API key: {key} (sk-proj-ab****************yz12)"
    server.set_scripts({"m-401": [{"error": 401, "message": message}]})
    (reply,) = ask(config(server, "m-401"), [1], api_key=key)
    assert isinstance(reply, ModelUnavailable)
    assert "HTTP 401" in reply.message and "Incorrect API key" in reply.message
    assert "verysecret" not in reply.message and "yz12" not in reply.message
    assert len(seen(server, "m-401")) == 1  # 401 is not retried


def test_usage_is_summed_by_the_core(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-usage": [{"text": "hmm"}, {"text": "still thinking"}]})
    cfg = config(server, "m-usage")
    run = make_run()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    run.status, actions = decide(run, Observations(now=now, config=cfg))
    total = Usage()
    for _ in range(2):
        (call,) = [a for a in actions if isinstance(a, CallModel)]
        (reply,) = ask(cfg, [call.step], run=run)
        assert isinstance(reply, ModelReply)
        total = Usage(
            promptTokens=total.promptTokens + reply.usage.promptTokens,
            completionTokens=total.completionTokens + reply.usage.completionTokens,
            totalTokens=total.totalTokens + reply.usage.totalTokens,
            modelCalls=total.modelCalls + 1,
        )
        run.status, actions = decide(run, Observations(now=now, config=cfg, model=reply))
    assert run.status.usage == total
    assert total.totalTokens > 0 and run.status.step == 2
    # The second request saw the first reply's error in its thread.
    second = seen(server, "m-usage")[-1]
    assert second["step"] == 2
    assert (
        '<error step="1" untrusted="true">Your reply had no tool call'
        in (second["messages"][1]["content"])
    )


def test_clients_are_cached_per_endpoint_config(server: ScriptedModelServer) -> None:
    async def go() -> None:
        client = ModelClient(LOCAL)
        spec = ModelSpec(name="m", baseURL=server.base_url)
        a = client.client(spec, "k1")
        assert client.client(ModelSpec(name="other", baseURL=server.base_url), "k1") is a
        assert client.client(spec, "k2") is not a
        assert client.client(spec.model_copy(update={"maxRetries": 0}), "k1") is not a
        await client.close()

    asyncio.run(go())


# ---------------------------------------------------------------- what leaves, what comes in


class RawServer:
    """A loopback HTTP server answering every request with one canned response, counting
    hits: the hosts a model call must never reach, and replies the scripted server cannot
    make (redirects, chunked or compressed bodies, HTML errors)."""

    def __init__(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        chunks: Iterator[bytes] | list[bytes] = (),  # type: ignore[assignment]
    ) -> None:
        self.hits: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.hits.append({k.lower(): v for k, v in self.headers.items()})
                body = list(chunks)
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                chunked = "Content-Length" not in (headers or {})
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for part in body:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: the point of some tests

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def raw_config(url: str, name: str = "m", **spec: Any) -> Config:
    model = ModelSpec(name=name, baseURL=url, **{"maxRetries": 2, "timeoutSeconds": 5, **spec})
    return Config.of(agent=AgentSpec(model=model), tools=TOOLS, prompt=PROMPT)


def test_an_endpoint_outside_the_allowed_urls_is_never_contacted(
    server: ScriptedModelServer,
) -> None:
    server.set_scripts({"m-evil": [{"done": "exfiltrated"}]})
    for policy in (
        Policy(),  # the default: the OpenAI API only
        Policy(model_urls=(server.base_url.replace("/v1", "1/v1"),)),  # another port
        Policy(model_urls=(server.base_url + "/safe",)),  # a narrower path
    ):
        (reply,) = ask(config(server, "m-evil"), [1], api_key="sk-live-key", policy=policy)
        assert isinstance(reply, ModelUnavailable)
        assert f"model endpoint {server.base_url} is not in" in reply.message
        assert "AGENTRUN_ALLOWED_MODEL_URLS" in reply.message
    assert seen(server, "m-evil") == []


def test_an_allowed_endpoint_under_its_base_path_is_called(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-ok": [{"done": "fine"}]})
    (reply,) = ask(config(server, "m-ok"), [1], policy=Policy(model_urls=(server.base_url,)))
    assert isinstance(reply, ModelReply) and reply.action == Done("fine")


def test_a_redirect_is_not_followed(server: ScriptedModelServer) -> None:
    # An allowed host answers 307 to another host: following it would resend the key and
    # the run's context there.
    server.set_scripts({"m-307": [{"done": "got your key"}]})
    target = f"{server.base_url}/chat/completions"
    with RawServer(307, {"Location": target, "Content-Length": "0"}) as bouncer:
        (reply,) = ask(raw_config(bouncer.url, name="m-307"), [1], api_key="sk-live-key")
        assert len(bouncer.hits) == 1
    assert seen(server, "m-307") == []
    assert isinstance(reply, ModelUnavailable)
    assert reply.message.startswith("HTTP 307 Temporary Redirect from 127.0.0.1:")


def test_max_tokens_from_the_agent_is_sent(server: ScriptedModelServer) -> None:
    server.set_scripts({"m-max": [{"done": "ok"}, {"done": "ok"}]})
    ask(config(server, "m-max"), [1])
    ask(config(server, "m-max", maxTokens=512), [2])
    assert [r["max_tokens"] for r in seen(server, "m-max")] == [4096, 512]
    assert {r["accept_encoding"] for r in seen(server, "m-max")} == {"identity"}


def test_a_reply_over_the_byte_cap_is_refused_unread(server: ScriptedModelServer) -> None:
    # Declared length (the scripted server sends Content-Length): refused before reading,
    # and not asked again (a retry would only fetch another one).
    server.set_scripts({"m-huge": [{"text": "x" * (MAX_REPLY_BYTES + 1)}]})
    (reply,) = ask(config(server, "m-huge"), [1])
    assert isinstance(reply, ModelUnavailable)
    assert f"more than {MAX_REPLY_BYTES}; not read" in reply.message
    assert len(seen(server, "m-huge")) == 1


def test_a_chunked_reply_is_cut_off_at_the_byte_cap() -> None:
    # No length declared: 40 MiB streamed; the client stops at the cap.
    chunks = (b"x" * 65536 for _ in range(640))
    with RawServer(200, {"Content-Type": "application/json"}, chunks) as endless:
        (reply,) = ask(raw_config(endless.url), [1])
        assert len(endless.hits) == 1
    assert isinstance(reply, ModelUnavailable)
    assert f"is larger than {MAX_REPLY_BYTES} bytes; not read" in reply.message


def test_a_compressed_reply_is_refused() -> None:
    # 1 MiB of gzip can inflate to a gigabyte: the cap only means something uncompressed.
    body = gzip.compress(b" " * (8 * MAX_REPLY_BYTES))
    headers = {"Content-Encoding": "gzip", "Content-Length": str(len(body))}
    with RawServer(200, headers, [body]) as zipper:
        (reply,) = ask(raw_config(zipper.url), [1])
        assert zipper.hits[0]["accept-encoding"] == "identity"
    assert isinstance(reply, ModelUnavailable)
    assert "is compressed (gzip) though asked not to be" in reply.message


def test_oversized_tool_arguments_are_refused_before_the_core(
    server: ScriptedModelServer,
) -> None:
    big = {"tool": "k8s-get", "arguments": {"kind": "x" * (MAX_ARGUMENTS_CHARS + 1)}}
    server.set_scripts({"m-args": [big, {"done": "y" * (MAX_ARGUMENTS_CHARS + 1)}]})
    for reply in ask(config(server, "m-args"), [1, 2]):
        assert isinstance(reply, ModelReply) and isinstance(reply.action, InvalidAction)
        assert f"at most {MAX_ARGUMENTS_CHARS} are accepted" in reply.action.message
        assert len(reply.action.message) < 300


def test_an_error_body_becomes_a_short_redacted_reason(server: ScriptedModelServer) -> None:
    leak = "Bad key. Debug: password=hunter2 " + "internal stack frame " * 100
    server.set_scripts({"m-leak": [{"error": 401, "message": leak}]})
    (reply,) = ask(config(server, "m-leak"), [1], api_key="k-123456789")
    assert isinstance(reply, ModelUnavailable)
    head, _, detail = reply.message.partition(": ")
    assert head.startswith("HTTP 401 Unauthorized from 127.0.0.1:")
    assert detail.startswith("Bad key. Debug: password=****")
    assert len(detail) <= 100 and "hunter2" not in reply.message
    # Not JSON (a proxy's HTML page): nothing of the body is copied.
    html = [b"<html>upstream db=10.0.0.7 password hunter2</html>"]
    headers = {"Content-Type": "text/html", "Content-Length": str(len(html[0]))}
    with RawServer(502, headers, html) as proxy:
        (reply,) = ask(raw_config(proxy.url, maxRetries=0), [1])
    assert isinstance(reply, ModelUnavailable)
    assert reply.message.endswith(
        "HTTP 502 Bad Gateway from " + proxy.url[7:-3] + " (without retries)"
    )
