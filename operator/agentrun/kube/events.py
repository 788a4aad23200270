"""Event correlation as client-go's recorder does it (tools/record/events_cache.go), pure.

An Event repeated on one object (same type, reason and message) within the window is the
same Event with a higher count: one PATCH instead of a new object. Once an object has had
`SIMILAR` Events of one type and reason with different messages within the window, later
ones are combined into one Event under that reason ("(combined from similar events): ...")
and counted there. The cache is bounded (least recently used first out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

WINDOW_SECONDS = 600.0  # client-go: 10 minutes
SIMILAR = 10  # client-go's maxEvents for aggregation
CACHE_SIZE = 4096  # client-go's maxLruCacheEntries
COMBINED = "(combined from similar events): "

Key = tuple[str, str, str, str, str]  # namespace, object uid, type, reason, message


@dataclass(frozen=True)
class Emit:
    """What to send: a new Event (`existing` None) or a count update of `existing`."""

    message: str
    count: int
    first_seconds: float
    existing: str | None


@dataclass
class _Seen:
    name: str
    count: int
    first: float
    last: float


@dataclass
class Correlator:
    _seen: OrderedDict[Key, _Seen] = field(default_factory=OrderedDict)
    # The times of an object's Events of one type and reason, the newest SIMILAR + 1 within
    # the window (all the decision needs): a small tuple, not a deque (~600 bytes empty), as
    # there are two such keys per run (Started, ApprovalRequested) for every parked run.
    _similar: OrderedDict[Key, tuple[float, ...]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next(
        self, namespace: str, uid: str, type_: str, reason: str, message: str, now: float
    ) -> tuple[Key, Emit]:
        """What to send for this Event; `sent` must follow with the name it got."""
        with self._lock:
            similar_key: Key = (namespace, uid, type_, reason, "")
            kept = self._similar.get(similar_key, ())[-SIMILAR:]
            times = (*(t for t in kept if now - t <= WINDOW_SECONDS), now)
            self._similar[similar_key] = times
            self._similar.move_to_end(similar_key)
            if len(times) > SIMILAR:
                message = COMBINED + message
                key: Key = (namespace, uid, type_, reason, COMBINED)
            else:
                key = (namespace, uid, type_, reason, message)
            seen = self._seen.get(key)
            if seen is not None and now - seen.last <= WINDOW_SECONDS:
                return key, Emit(message, seen.count + 1, seen.first, seen.name)
            return key, Emit(message, 1, now, None)

    def sent(self, key: Key, name: str, emit: Emit, now: float) -> None:
        with self._lock:
            self._seen[key] = _Seen(name, emit.count, emit.first_seconds, now)
            self._seen.move_to_end(key)
            for cache in (self._seen, self._similar):
                while len(cache) > CACHE_SIZE:
                    cache.popitem(last=False)

    def forget(self, key: Key) -> None:
        """The Event is gone (expired or deleted): the next one is a new object."""
        with self._lock:
            self._seen.pop(key, None)
