"""Factor 3, own your context window: the run rendered as two dense messages (pure).

The whole history lives in ONE user message of explicit blocks rather than a replay of chat
turns: it is rebuilt from status alone on every step (any operator replica can do it), it
works with any OpenAI-compatible server, and tool output is fenced as untrusted data.

`build_context` is the one renderer of a run: the model request and anything showing a run's
thread to a person (CLI, notifications) use it, so what a human reads is what the model read.

The request is fitted into the Agent's `contextBudgetTokens` (see `tokens.estimate`):

1. always, independent of the budget: errors followed by a later successful step are hidden
   (with their failed tool call) behind a one-line count; trailing consecutive errors are
   shown compactly, the last one whole and the earlier ones one line each;
2. while over the budget, in this order: older tool results are summarised oldest first
   (first lines + "[summarised; full output in ConfigMap X]"), then the prefetched evidence
   is summarised, then the oldest thread events are omitted behind a count, then the
   prefetched evidence is omitted, then the newest tool result is shortened, then the
   input context is clipped. The newest tool result stays whole as long as anything else
   can give way.

Output is a function of its inputs only: the same run, prompt, tools and budget give
byte-identical messages.

The pipeline: `sections` renders the parts (one `blocks.render_event` per event, errors
triaged), `budget` lowers them in the order above until they fit, and this module assembles
the messages and the stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from agentrun.api import AgentRun, AgentSpec, AgentToolSpec
from agentrun.llm.blocks import (
    ERROR_LINE_CHARS,
    LINE,
    OMITTED,
    SUMMARY_CHARS,
    SUMMARY_LINES,
    neutralise,
    one_line,
    render_event,
    summary,
)
from agentrun.llm.budget import CONTEXT_FLOOR_CHARS, NEWEST_FLOOR_CHARS, Fit, fit_to_budget
from agentrun.llm.prompts import render
from agentrun.llm.sections import context_block, event_sections, fixed_parts, next_instruction

__all__ = [
    "CONTEXT_FLOOR_CHARS",
    "DEFAULT_BUDGET_TOKENS",
    "ERROR_LINE_CHARS",
    "NEWEST_FLOOR_CHARS",
    "PROMPT_VARIABLES",
    "SUMMARY_CHARS",
    "SUMMARY_LINES",
    "Context",
    "ContextStats",
    "build_context",
    "build_messages",
    "neutralise",
    "next_instruction",
    "one_line",
    "prompt_values",
    "render_event",
    "summary",
]

# Names a prompt template may use as {{ name }}.
PROMPT_VARIABLES = frozenset({"run.name", "run.namespace", "run.agent", "run.step"})
DEFAULT_BUDGET_TOKENS: Final[int] = AgentSpec.model_fields["contextBudgetTokens"].default


def prompt_values(run: AgentRun) -> dict[str, str]:
    meta = run.metadata
    return {
        "run.name": str(meta.get("name", "")),
        "run.namespace": str(meta.get("namespace", "default")),
        "run.agent": run.spec.agentRef,
        "run.step": str(run.status.step + 1),
    }


@dataclass(frozen=True)
class ContextStats:
    """What the builder did to fit the budget; `tokens` is the estimate of the request."""

    budget: int
    tokens: int
    events: int  # thread events in status
    summarised: int = 0
    omitted: int = 0
    hidden_errors: int = 0
    compact_errors: int = 0
    context_clipped: bool = False
    over_budget: bool = False  # the fixed parts alone (prompt, task, tools) exceed it


@dataclass(frozen=True)
class Context:
    messages: list[dict[str, Any]]
    stats: ContextStats


def build_messages(
    run: AgentRun,
    prompt_text: str,
    tools: dict[str, AgentToolSpec],
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
) -> list[dict[str, Any]]:
    """The system prompt, then one user message: task, input context, tools, prefetched
    evidence, event thread and the instruction for this step, within the token budget."""
    return build_context(run, prompt_text, tools, budget_tokens).messages


def build_context(
    run: AgentRun,
    prompt_text: str,
    tools: dict[str, AgentToolSpec],
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
) -> Context:
    """The messages of this step's model request and how they were fitted to the budget."""
    system = render(prompt_text, prompt_values(run))
    prefetch, thread = event_sections(run)
    fit = Fit(budget_tokens, fixed_parts(run, system, tools), prefetch, thread)
    fit_to_budget(fit)
    return Context(messages=_messages(fit), stats=_stats(fit, len(run.status.thread)))


def _messages(fit: Fit) -> list[dict[str, Any]]:
    fixed = fit.fixed
    parts = [fixed.task]
    context = context_block(fixed.context_yaml, fit.context_limit)
    if context:
        parts.append(context)
    if fixed.tools:
        parts.append(fixed.tools)
    if fit.prefetch.items:
        parts.append(fit.prefetch.render())
    parts.append(fit.thread.render())
    parts.append(fixed.instruction)
    return [
        {"role": "system", "content": fixed.system},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def _stats(fit: Fit, events: int) -> ContextStats:
    tokens = fit.total()
    items = fit.prefetch.items + fit.thread.items
    return ContextStats(
        budget=fit.budget,
        tokens=tokens,
        events=events,
        summarised=fit.summarised,
        omitted=sum(1 for i in items if i.mode == OMITTED),
        hidden_errors=len(fit.thread.hidden),
        compact_errors=sum(1 for i in items if i.mode == LINE),
        context_clipped=fit.clipped,
        over_budget=tokens > fit.budget,
    )
