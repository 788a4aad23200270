"""The one rule for a call naming a tool the run does not offer (pure).

Reply parsing (llm.toolcall) applies it first, since it needs the tool's schema to validate
the arguments; the core applies it again to every ToolCall it takes, because a ToolCall can
reach decide() without parsing (built by hand) and the core needs the tool's snapshot to
build the Job. Both tell the model the same thing in the same words.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from agentrun.text import clip

NAME_CHARS = 64  # the model's text is quoted back clipped, never in full


def unknown_tool(
    name: str, configured: Collection[str], builtins: Sequence[str] = ()
) -> str | None:
    """None when `name` is a configured or built-in tool; else the error the model reads next
    turn. The parser knows the built-in tools and lists every allowed name; the core sees
    only configured tools and points at the offered list instead of listing half of it."""
    if name in configured or name in builtins:
        return None
    shown = clip(name, NAME_CHARS, "...", collapse_space=True)
    if not builtins:
        return f"Unknown tool {shown!r}; use one of the offered tools."
    allowed = ", ".join([*sorted(t for t in configured if t not in builtins), *builtins])
    return f"Unknown tool {shown!r}; allowed tools: {allowed}."
