"""The one clip helper reproduces each format the modules used before sharing it."""

from __future__ import annotations

import re

import pytest

from agentrun.engine import core
from agentrun.text import clip
from agentrun.tool.builtins import common

SAMPLES = ["", "short", "x" * 64, "y" * 65, "a b\n\tc " * 40, "é" * 5000]


@pytest.mark.parametrize("text", SAMPLES)
@pytest.mark.parametrize("limit", [1, 10, 64, 65, 300, 4000])
def test_each_format(text: str, limit: int) -> None:
    # Ellipsis, fitting in limit (notifications, model errors).
    want = text if len(text) <= limit else text[: limit - 1] + "…"
    assert clip(text, limit) == want
    # One line, three dots, fitting in limit (messages to the model).
    one = re.sub(r"\s+", " ", text)
    want = one if len(one) <= limit else one[: limit - 3] + "..."
    assert clip(text, limit, "...", collapse_space=True) == want
    # The thread's marker with a count, room 60.
    want = (
        text
        if len(text) <= limit
        else text[: limit - 60] + f"\n[... truncated {len(text) - limit + 60} characters]"
    )
    assert core.clip(text, limit) == want
    # Built-in tools: the head is limit characters, the count on top.
    want = text if len(text) <= limit else text[:limit] + f"...[{len(text) - limit} more chars]"
    assert common.clip(text, limit) == want


def test_core_default_limit() -> None:
    long = "z" * (core.MAX_EVENT_CONTENT + 1)
    assert core.clip(long) == core.clip(long, core.MAX_EVENT_CONTENT)
    assert len(core.clip(long)) < core.MAX_EVENT_CONTENT
