"""Text helpers shared by every program (the in-pod tool runner too): standard library only."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def clip(
    text: str,
    limit: int,
    marker: str = "…",
    *,
    room: int | None = None,
    collapse_space: bool = False,
) -> str:
    """`text` if it has at most `limit` characters; else its head and `marker`, which says it
    was cut ("{dropped}" in the marker becomes the number of characters cut).

    The head is `limit - room` characters; `room` defaults to the marker's length, so the
    result is exactly `limit` long. A marker with a count reserves a fixed room instead (or
    none: the head is then `limit` characters and the marker comes on top).
    `collapse_space` first turns every run of whitespace into one space (for one-line text).
    """
    if collapse_space:
        text = _SPACE.sub(" ", text)
    if len(text) <= limit:
        return text
    head = limit - (len(marker) if room is None else room)
    return text[:head] + marker.replace("{dropped}", str(len(text) - head))
