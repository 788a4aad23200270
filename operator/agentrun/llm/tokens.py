"""A dependency-free token estimate for budgeting model requests (pure).

Plain `chars / 4` undercounts what the context is mostly made of: JSON, YAML and log lines,
where quotes, braces, colons and dashes are often a token each. So every ASCII symbol counts
as an extra quarter token and every non-ASCII character as its UTF-8 bytes:

    tokens = ceil((chars + ascii_symbols + extra_utf8_bytes) / 4)

On English prose this is close to `chars / 4` (slightly over); on compact JSON it comes to
about 2.6 characters per token, which is what BPE tokenizers of the GPT-4 family give. It is
an estimate for budgeting, not billing: the provider's `usage` is what status records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from agentrun.api.naming import canonical_json

# Anything not a letter, digit or whitespace: punctuation and non-ASCII characters.
_SYMBOL = re.compile(r"[^A-Za-z0-9\s]")
MESSAGE_OVERHEAD = 4  # role and separators of one chat message
REQUEST_OVERHEAD = 3  # the reply's priming


def estimate(text: str) -> int:
    """Estimated tokens of one text; 0 for the empty string."""
    if not text:
        return 0
    symbols = len(_SYMBOL.findall(text))
    extra_bytes = len(text.encode("utf-8")) - len(text)
    return math.ceil((len(text) + symbols + extra_bytes) / 4)


def estimate_request(
    messages: Iterable[Mapping[str, Any]], tool_definitions: list[dict[str, Any]] | None = None
) -> int:
    """Estimated prompt tokens of a chat request: its messages plus its tool definitions."""
    total = REQUEST_OVERHEAD
    for message in messages:
        content = message.get("content")
        total += MESSAGE_OVERHEAD + estimate(content if isinstance(content, str) else "")
    if tool_definitions:
        total += estimate(canonical_json(tool_definitions))
    return total
