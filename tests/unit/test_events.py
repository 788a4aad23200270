"""Event correlation (kube/events.py), as client-go's recorder: repeats counted on one Event."""

from __future__ import annotations

from agentrun.kube.events import CACHE_SIZE, COMBINED, SIMILAR, WINDOW_SECONDS, Correlator


def emit(c: Correlator, reason: str, message: str, now: float, uid: str = "u1") -> str | None:
    """Records one Event; returns the name of the Event it counted on (None: a new one)."""
    key, e = c.next("ns", uid, "Normal", reason, message, now)
    name = e.existing or f"ev-{now}"
    c.sent(key, name, e, now)
    return e.existing


def test_a_repeat_on_one_object_is_counted_on_the_same_event() -> None:
    c = Correlator()
    assert emit(c, "Approved", "Step 2 approved", 0) is None
    assert emit(c, "Approved", "Step 2 approved", 5) == "ev-0"
    _, third = c.next("ns", "u1", "Normal", "Approved", "Step 2 approved", 9)
    assert (third.count, third.existing, third.first_seconds) == (3, "ev-0", 0)
    # Another object, another message, or past the window: a new Event.
    assert emit(c, "Approved", "Step 2 approved", 6, uid="u2") is None
    assert emit(c, "Approved", "Step 3 approved", 7) is None
    assert emit(c, "Approved", "Step 2 approved", 5 + WINDOW_SECONDS + 1) is None


def test_many_similar_events_are_combined_under_their_reason() -> None:
    c = Correlator()
    names = [emit(c, "ToolChanged", f"changed {i}", i) for i in range(SIMILAR)]
    assert names == [None] * SIMILAR  # up to SIMILAR distinct messages stay apart
    key, e = c.next("ns", "u1", "Normal", "ToolChanged", "changed 99", 50)
    assert e.existing is None and e.message == COMBINED + "changed 99"
    c.sent(key, "combined", e, 50)
    assert emit(c, "ToolChanged", "changed 100", 51) == "combined"


def test_a_forgotten_event_is_created_anew() -> None:
    c = Correlator()
    emit(c, "Started", "Run started", 0)
    key, e = c.next("ns", "u1", "Normal", "Started", "Run started", 1)
    assert e.existing == "ev-0"
    c.forget(key)
    assert emit(c, "Started", "Run started", 2) is None


def test_similar_events_are_combined_only_within_the_window() -> None:
    c = Correlator()
    for i in range(SIMILAR):
        emit(c, "ToolChanged", f"changed {i}", i)
    _, late = c.next("ns", "u1", "Normal", "ToolChanged", "changed late", SIMILAR + WINDOW_SECONDS)
    assert late.message == "changed late"  # the earlier ones are past the window


def test_what_is_kept_per_object_stays_bounded() -> None:
    # Parked runs keep their Events' entries: per object and in all, the memory is bounded.
    c = Correlator()
    for i in range(1000):
        emit(c, "ToolChanged", f"changed {i}", i / 10)
    assert max(len(times) for times in c._similar.values()) <= SIMILAR + 1
    _, e = c.next("ns", "u1", "Normal", "ToolChanged", "changed again", 100)
    assert e.message.startswith(COMBINED)
    for i in range(CACHE_SIZE + 10):
        emit(c, "Started", "Run started", 200, uid=f"run-{i}")
    assert len(c._seen) <= CACHE_SIZE and len(c._similar) <= CACHE_SIZE
