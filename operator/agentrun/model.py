"""The model adapter: one OpenAI-compatible chat completion per step, as a core observation.

Retries with backoff for 429/5xx/timeouts are the openai client's own (max_retries from the
Agent's ModelSpec); whatever still fails becomes ModelUnavailable and the core decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Final, cast
from urllib.parse import urlsplit

import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)

from . import context, toolcall
from .api import AgentRun, ModelSpec, Usage
from .core import Config, InvalidAction, ModelReply, ModelUnavailable

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

_ClientKey = tuple[str | None, str, float, int]


class ModelClient:
    """Caches one AsyncOpenAI client (and so one HTTP connection pool) per endpoint config."""

    def __init__(self) -> None:
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
        # Plain dicts from the pure modules; the openai TypedDicts describe the same shapes.
        built = context.build_messages(
            run, prompt_text, config.tools, config.agent.contextBudgetTokens
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
                extra_headers={HEADER_RUN: run_id, HEADER_STEP: str(step)},
            )
        except openai.OpenAIError as e:
            message = describe_error(e, spec, api_key)
            log.warning("model call for %s step %d failed: %s", run_id, step, message)
            return ModelUnavailable(message=message)
        if not completion.choices:
            return ModelUnavailable(message=f"model {spec.name} returned no choices")
        action = toolcall.parse_reply(completion.choices[0].message, config.tools)
        if isinstance(action, InvalidAction):
            log.info("model reply for %s step %d invalid: %s", run_id, step, action.message)
        return ModelReply(action=action, usage=usage_of(completion))


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
    if isinstance(error, openai.APIStatusError):
        detail = _redact(str(getattr(error, "message", "") or ""), api_key)
        return f"HTTP {error.status_code} from {host} ({retries}): {detail[:300]}"
    return f"{type(error).__name__}: {_redact(str(error), api_key)[:300]}"


def _redact(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "[redacted]")
    return _KEYLIKE.sub("[redacted]", text)
