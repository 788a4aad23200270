"""A scripted OpenAI-compatible chat completions server, for tests and the demo.

Real HTTP, driven through the real openai client. A script is a list of entries per model
name; the entry is picked by the X-Agentrun-Step header (1-based). Entries:

    {"tool": "k8s-get", "arguments": {...}}        one tool call
    {"done": "final answer"}                        a `done` tool call
    {"raw_tool_calls": [{"name": n, "arguments": "<raw string>"}, ...]}
    {"text": "..."}                                 plain content, no tool call
    {"error": 429, "times": 2, "then": {...}}       HTTP error the first `times` asks of this
                                                    (run, step), then `then` (no `times`: always)
    {"delay": 2.5, "then": {...}}                   sleep first (also: delay next to other keys)
    {"huge_mib": 40, "chunked": true, "trickle": 0.01}
                                                    a 200 completion whose text is 40 MiB, sent
                                                    chunked (else with Content-Length), pausing
                                                    `trickle` seconds between 64 KiB writes

"text" may accompany a tool call as its content. Steps past the end of a script answer a
`done` call saying so. Every request is recorded (GET /_requests); POST /_scripts replaces
scripts at runtime. Any API key is accepted.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Entry = dict[str, Any]
Scripts = dict[str, list[Entry]]
HUGE_WRITE = 64 * 1024  # bytes per write of a huge body

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


@dataclass(frozen=True)
class Huge:
    """A hostile reply: a valid completion whose text fills `size` bytes of body, streamed
    without ever being built in memory."""

    head: bytes
    tail: bytes
    size: int
    chunked: bool
    trickle: float

    @classmethod
    def of(cls, model: str, messages: list[Any], entry: Entry) -> Huge:
        marker = "@@huge@@"
        completion = json.dumps(_completion(model, messages, {"text": marker})).encode()
        head, tail = completion.split(marker.encode())
        size = max(len(head) + len(tail), int(float(entry["huge_mib"]) * (1 << 20)))
        return cls(head, tail, size, bool(entry.get("chunked")), float(entry.get("trickle", 0)))

    def parts(self) -> Iterator[bytes]:
        yield self.head
        left, filler = self.size - len(self.head) - len(self.tail), b"x" * HUGE_WRITE
        while left > 0:
            yield filler[:left]
            left -= HUGE_WRITE
            if self.trickle:
                time.sleep(self.trickle)
        yield self.tail


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the operator in the crash tests) is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class ScriptedModelServer:
    def __init__(
        self, scripts: Scripts | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.scripts: Scripts = dict(scripts or {})
        self._requests: list[dict[str, Any]] = []
        self._asked: dict[tuple[str, str, int, int], int] = {}
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ScriptedModelServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="scripted-model-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- state

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def set_scripts(self, scripts: Scripts) -> None:
        with self._lock:
            self.scripts.update(scripts)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._asked.clear()

    # ---------------------------------------------------------------- answering

    def answer(
        self, body: dict[str, Any], headers: dict[str, str], peer: str = ""
    ) -> tuple[int, Any, float, Entry]:
        """Returns (HTTP status, JSON body, seconds to sleep first, the request's record)."""
        model = str(body.get("model", ""))
        messages = body.get("messages") or []
        run = headers.get("x-agentrun-run", "-")
        step_header = headers.get("x-agentrun-step")
        if step_header is not None and step_header.strip().isdigit():
            step = int(step_header)
        else:  # a plain chat client: one step per assistant turn so far
            step = 1 + sum(1 for m in messages if m.get("role") == "assistant")
        with self._lock:
            script = self.scripts.get(model)
            record = {
                "run": run,
                "step": step,
                "model": model,
                "messages": messages,
                "tools": body.get("tools"),
                "tool_choice": body.get("tool_choice"),
                "temperature": body.get("temperature"),
                "retry_count": headers.get("x-stainless-retry-count"),
                "has_authorization": "authorization" in headers,
                # The value too: tests prove which credential (if any) reached the endpoint.
                "authorization": headers.get("authorization"),
                "accept_encoding": headers.get("accept-encoding"),
                "max_tokens": body.get("max_tokens"),
                "peer": peer,  # client address: equal across requests = a pooled connection
                "received": time.time(),
            }
            self._requests.append(record)
            if script is None:
                status, payload, delay = 404, _error(404, f"no script for model {model!r}"), 0.0
            elif step < 1 or step > len(script):
                entry: Entry = {"done": f"script ended (model {model!r}, step {step})"}
                status, payload, delay = 200, _completion(model, messages, entry), 0.0
            else:
                status, payload, delay = self._resolve(run, model, step, script[step - 1], messages)
            record["status"] = status
        return status, payload, delay, record

    def _resolve(
        self, run: str, model: str, step: int, entry: Entry, messages: list[Any]
    ) -> tuple[int, Any, float]:
        delay, depth = 0.0, 0
        while True:
            if "delay" in entry:
                delay += float(entry["delay"])
                rest = {k: v for k, v in entry.items() if k not in ("delay", "then")}
                entry = entry.get("then") or rest or {"done": "script ended after delay"}
                continue
            if "error" in entry:
                key = (run, model, step, depth)
                asked = self._asked.get(key, 0)
                self._asked[key] = asked + 1
                times = entry.get("times")
                if times is None or asked < int(times):
                    code = int(entry["error"])
                    message = str(entry.get("message", f"scripted error {code}"))
                    return code, _error(code, message), delay
                entry = entry.get("then") or {"done": "script ended after errors"}
                depth += 1
                continue
            if "huge_mib" in entry:
                return 200, Huge.of(model, messages, entry), delay
            return 200, _completion(model, messages, entry), delay

    def mark_answered(self, record: Entry) -> None:
        with self._lock:
            record["answered"] = time.time()


def _error(code: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(code)}}


def entry_message(entry: Entry, call_id: Callable[[int], str]) -> dict[str, Any]:
    """A script entry as the assistant message a model would answer; call_id(i) names the
    i-th tool call. The eval harness replays recordings through this too."""
    calls: list[tuple[str, str]] = []
    if "tool" in entry:
        calls.append((str(entry["tool"]), json.dumps(entry.get("arguments") or {})))
    if "done" in entry:
        calls.append(("done", json.dumps({"answer": str(entry["done"])})))
    for raw in entry.get("raw_tool_calls") or []:
        args = raw.get("arguments", "")
        calls.append(
            (str(raw.get("name", "")), args if isinstance(args, str) else json.dumps(args))
        )
    message: dict[str, Any] = {"role": "assistant", "content": entry.get("text")}
    if calls:
        message["tool_calls"] = [
            {"id": call_id(i), "type": "function", "function": {"name": name, "arguments": args}}
            for i, (name, args) in enumerate(calls)
        ]
    return message


def _completion(model: str, messages: list[Any], entry: Entry) -> dict[str, Any]:
    message = entry_message(entry, lambda _: f"call_{uuid.uuid4().hex[:12]}")
    calls = message.get("tool_calls")
    prompt_chars = sum(len(_text(m.get("content"))) for m in messages if isinstance(m, dict))
    prompt_tokens = max(1, prompt_chars // 4)
    completion_tokens = max(1, len(json.dumps(message)) // 4)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _handler_for(server: ScriptedModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so client connection pooling is real

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet tests

        def _send(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): nothing to answer

        def _send_huge(self, huge: Huge) -> None:
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if huge.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(huge.size))
                self.end_headers()
                for part in huge.parts():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if huge.chunked else part)
                if huge.chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped reading: the cap worked

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw or b"{}")

        def do_GET(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            if path == "/_requests":
                self._send(200, server.requests)
            elif path == "/v1/models":
                models = [
                    {"id": m, "object": "model", "owned_by": "script"} for m in server.scripts
                ]
                self._send(200, {"object": "list", "data": models})
            else:
                self._send(404, _error(404, f"no route {path}"))

        def do_POST(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            try:
                body = self._body()
            except (ValueError, UnicodeDecodeError) as e:
                self._send(400, _error(400, f"invalid JSON body: {e}"))
                return
            if path == "/_scripts":
                if not isinstance(body, dict):
                    self._send(400, _error(400, "expected {model: [entries]}"))
                    return
                server.set_scripts(body)
                self._send(200, {"models": sorted(server.scripts)})
            elif path == "/_reset":
                server.reset()
                self._send(200, {})
            elif path == "/v1/chat/completions":
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, delay, record = server.answer(
                    body, headers, f"{self.client_address[0]}:{self.client_address[1]}"
                )
                if delay:
                    time.sleep(delay)
                # The openai client reads retry-after-ms first: a scripted error retries at once
                # (retry-after: 0 alone would fall back to its 0.5 s+ exponential backoff).
                extra = {"retry-after": "0", "retry-after-ms": "10"} if status >= 400 else {}
                server.mark_answered(record)
                if isinstance(payload, Huge):
                    self._send_huge(payload)
                else:
                    self._send(status, payload, extra)
            else:
                self._send(404, _error(404, f"no route {path}"))

        do_PUT = do_POST

    return Handler
