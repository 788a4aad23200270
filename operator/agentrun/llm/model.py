"""The model adapter: one OpenAI-compatible chat completion per step, as a core observation.

Retries with backoff for 429/5xx/timeouts are the openai client's own (max_retries from the
Agent's ModelSpec); whatever still fails becomes ModelUnavailable and the core decides.

An Agent's author picks the endpoint, and the model's reply is untrusted, so: the endpoint
must be under an admin's allowed model URLs (checked before any I/O), redirects are not
followed (an allowed host cannot bounce the API key elsewhere), a reply is read up to
MAX_REPLY_BYTES and no further, a tool call's arguments are bounded, and no error body
reaches status beyond a short redacted reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Final, cast
from urllib.parse import urlsplit

import httpx2
import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)

from agentrun.api import AgentRun, ModelSpec, Usage
from agentrun.engine.core import Config, InvalidAction, ModelReply, ModelUnavailable
from agentrun.engine.policy import ENV_MODEL_URLS, Policy
from agentrun.llm import context, toolcall
from agentrun.text import clip
from agentrun.tool.redaction import redact

log = logging.getLogger(__name__)

# Local endpoints (vLLM, Ollama, llama.cpp, the test server) need no key, the client does.
NO_API_KEY = "agentrun-no-api-key"
# "auto", not "required": every OpenAI-compatible server accepts it, while some reject
# "required"; a reply without a tool call is an InvalidAction the model is told to fix.
TOOL_CHOICE: Final = "auto"
HEADER_RUN = "X-Agentrun-Run"
HEADER_STEP = "X-Agentrun-Step"
# OpenAI-style keys, even partly masked ("sk-proj-ab***yz"), as providers echo them in 401s;
# the caller's own key is removed verbatim whatever its shape.
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_*\-]{8,}")
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the openai client's, when baseURL is unset
# A chat completion with one tool call is a few KiB; 1 MiB leaves room for long answers and
# verbose servers while one run's runaway reply cannot eat the operator's memory.
MAX_REPLY_BYTES = 1 << 20
# One tool call's raw arguments (the `done` answer included); more is refused, not parsed.
MAX_ARGUMENTS_CHARS = 32 * 1024
# At most this much of a provider's error message reaches status (after redaction).
MAX_REASON_CHARS = 100
# Pool sizes of the openai client's own default transport.
_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)

_ClientKey = tuple[str | None, str, float, int]


class ReplyRefused(openai.OpenAIError):
    """A reply the client stopped reading (too large, or compressed though asked not to be).
    An OpenAIError raised while sending is not retried by the openai client."""


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, host: str) -> None:
        self._inner, self._limit, self._host = inner, limit, host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ReplyRefused(
                    f"reply from {self._host} is larger than {self._limit} bytes; not read"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx2.AsyncBaseTransport):
    """The HTTP transport with a byte budget per response body: a declared Content-Length
    over it is refused before reading, a chunked body is cut off when it passes it. Bodies
    are asked for uncompressed, and a compressed one is refused, so the budget is what gets
    parsed (a 1 MiB gzip body can inflate to a gigabyte)."""

    def __init__(self, limit: int = MAX_REPLY_BYTES) -> None:
        self.limit = limit
        self._inner = httpx2.AsyncHTTPTransport(limits=_LIMITS)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        host = request.url.netloc.decode("ascii", "replace")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        length = response.headers.get("content-length", "").strip()
        problem = ""
        if encoding not in ("", "identity"):
            problem = f"reply from {host} is compressed ({encoding[:20]}) though asked not to be"
        elif length.isdigit() and int(length) > self.limit:
            problem = f"reply from {host} is {length} bytes, more than {self.limit}; not read"
        if problem:
            await response.aclose()
            raise ReplyRefused(problem)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self.limit, host),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def endpoint_refusal(base_url: str, policy: Policy) -> str | None:
    """Why the operator will not call base_url, or None when the admin allowed it."""
    if policy.model_url_allowed(base_url):
        return None
    shown = redact(base_url)[:200]
    return (
        f"model endpoint {shown} is not in the operator's allowed model URLs "
        f"({ENV_MODEL_URLS}: {', '.join(policy.model_urls)}); a platform admin sets them "
        "(chart value model.allowedURLs); no request was sent"
    )


class ModelClient:
    """Caches one AsyncOpenAI client (and so one HTTP connection pool) per endpoint config.
    `policy`: the admin's settings (allowed model URLs); from the environment when None."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy if policy is not None else Policy.from_env()
        self._clients: dict[_ClientKey, openai.AsyncOpenAI] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self, spec: ModelSpec, api_key: str | None) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connection pools belong to one event loop
            self._clients, self._loop = {}, loop
        key_digest = hashlib.sha256((api_key or "").encode()).hexdigest()  # not the key itself
        cache_key = (spec.baseURL, key_digest, float(spec.timeoutSeconds), spec.maxRetries)
        found = self._clients.get(cache_key)
        if found is None:
            found = openai.AsyncOpenAI(
                api_key=api_key or NO_API_KEY,
                base_url=spec.baseURL,
                timeout=float(spec.timeoutSeconds),
                max_retries=spec.maxRetries,
                # identity: the byte cap is on what is parsed (see CappedTransport)
                default_headers={"Accept-Encoding": "identity"},
                # A redirect is answered as an error: following it would send the key and
                # the run's context to a host nobody allowed.
                http_client=openai.DefaultAsyncHttpxClient(
                    follow_redirects=False, transport=CappedTransport()
                ),
            )
            self._clients[cache_key] = found
        return found

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()

    aclose = close

    async def next_action(
        self,
        run: AgentRun,
        config: Config,
        prompt_text: str,
        api_key: str | None,
        step: int,
    ) -> ModelReply | ModelUnavailable:
        spec = config.agent.model
        run_id = f"{run.metadata.get('namespace', 'default')}/{run.metadata.get('name', '')}"
        refusal = endpoint_refusal(spec.baseURL or DEFAULT_BASE_URL, self.policy)
        if refusal is not None:  # before any I/O: not one byte goes to that host
            log.warning("model call for %s step %d refused: %s", run_id, step, refusal)
            return ModelUnavailable(message=refusal)
        # Plain dicts from the pure modules; the openai TypedDicts describe the same shapes.
        # In a worker thread: rendering a run's context (up to a ~1 MB input context and
        # thread) takes a second or more of CPU, and the event loop meanwhile serves every
        # other run and the admission webhook (approvals time out if it stalls).
        built = await asyncio.to_thread(
            context.build_messages, run, prompt_text, config.tools, config.agent.contextBudgetTokens
        )
        messages = cast(list[ChatCompletionMessageParam], built)
        tools = cast(list[ChatCompletionToolUnionParam], toolcall.tool_definitions(config.tools))
        try:
            completion = await self.client(spec, api_key).chat.completions.create(
                model=spec.name,
                messages=messages,
                tools=tools,
                tool_choice=TOOL_CHOICE,
                temperature=openai.omit if spec.temperature is None else spec.temperature,
                max_tokens=spec.maxTokens,
                extra_headers={HEADER_RUN: run_id, HEADER_STEP: str(step)},
            )
        except openai.OpenAIError as e:
            message = describe_error(e, spec, api_key)
            log.warning("model call for %s step %d failed: %s", run_id, step, message)
            return ModelUnavailable(message=message)
        if not completion.choices:
            return ModelUnavailable(message=f"model {spec.name} returned no choices")
        answer = completion.choices[0].message
        action = oversized(answer) or toolcall.parse_reply(answer, config.tools)
        if isinstance(action, InvalidAction):
            log.info("model reply for %s step %d invalid: %s", run_id, step, action.message)
        return ModelReply(action=action, usage=usage_of(completion))


def oversized(message: ChatCompletionMessage) -> InvalidAction | None:
    """An InvalidAction when a tool call's arguments are too long to take in; the model is
    told the limit (parse_reply clips everything else it quotes)."""
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)  # custom tool calls have none
        raw = str(getattr(function, "arguments", "") or "")
        if len(raw) > MAX_ARGUMENTS_CHARS:
            name = str(getattr(function, "name", ""))[:64]
            return InvalidAction(
                f"The arguments of your {name!r} call are {len(raw)} characters; at most "
                f"{MAX_ARGUMENTS_CHARS} are accepted. Send shorter arguments."
            )
    return None


def usage_of(completion: ChatCompletion) -> Usage:
    u = completion.usage
    if u is None:  # some servers omit it; the call still counts
        return Usage(modelCalls=1)
    total = u.total_tokens or (u.prompt_tokens + u.completion_tokens)
    return Usage(
        promptTokens=u.prompt_tokens,
        completionTokens=u.completion_tokens,
        totalTokens=total,
        modelCalls=1,
    )


def describe_error(error: openai.OpenAIError, spec: ModelSpec, api_key: str | None) -> str:
    """A short, secret-free reason: status code and the provider's message, redacted."""
    host = urlsplit(spec.baseURL).netloc if spec.baseURL else "api.openai.com"
    retries = f"after {spec.maxRetries} retries" if spec.maxRetries else "without retries"
    if isinstance(error, openai.APITimeoutError):
        return f"timed out after {spec.timeoutSeconds}s from {host} ({retries})"
    if isinstance(error, openai.APIConnectionError):
        cause = type(error.__cause__).__name__ if error.__cause__ else "connection error"
        return f"cannot reach {host}: {cause} ({retries})"
    if isinstance(error, ReplyRefused):
        return _redact(str(error), api_key)[:200]
    if isinstance(error, openai.APIStatusError):
        code = error.status_code
        try:
            phrase = f" {HTTPStatus(code).phrase}"  # the standard phrase, not the server's
        except ValueError:
            phrase = ""
        head = f"HTTP {code}{phrase} from {host} ({retries})"
        detail = _redact(_error_message(error.body), api_key)
        return f"{head}: {clip(detail, MAX_REASON_CHARS)}" if detail else head
    return f"{type(error).__name__}: {clip(_redact(str(error), api_key), MAX_REASON_CHARS)}"


def _error_message(body: object) -> str:
    """The `message` field of an OpenAI-style error body; nothing else of the body (an HTML
    page or a proxy's dump is not a reason)."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error", body)
    message = error.get("message") if isinstance(error, dict) else None
    return " ".join(message.split()) if isinstance(message, str) else ""


def _redact(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "[redacted]")
    return redact(_KEYLIKE.sub("[redacted]", text))
