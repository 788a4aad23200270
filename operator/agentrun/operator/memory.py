"""Giving memory back after a burst of runs: glibc's malloc_trim, soon after steps ran.

An alert storm puts hundreds of runs in flight at once; once they are parked for a human
each keeps a few KiB, but the C allocator keeps the pages the burst freed (VmRSS stays at
its high-water mark). malloc_trim(0) returns the free pages of every arena to the system.
It costs milliseconds (1-3 ms measured for a 50 MiB heap, 17 ms for 240 MiB), so it runs in
a worker thread, at most once per INTERVAL_SECONDS and only after steps ran. It reaches what
glibc holds (blocks over 512 bytes, the I/O threads' buffers), not pymalloc's 1 MiB arenas
of small objects, which stay while any object in them lives (docs/benchmarks.md, "Memory
per parked run").
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger("agentrun.operator.memory")

INTERVAL_SECONDS = 10.0

Trim = Callable[[], object]


def malloc_trim() -> Trim | None:
    """glibc's malloc_trim(0); None where the C library has none (musl, macOS)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> object:
        return fn(0)

    return trim


class Trimmer:
    """Trims `interval` seconds after the first step since the last trim: during a burst at
    most once per interval, and once more within `interval` of its last step. Not on a
    quiet spell: a trickle of late Job and pod events after a burst may never leave one."""

    def __init__(self, trim: Trim | None, interval: float = INTERVAL_SECONDS) -> None:
        self._trim, self._interval = trim, interval
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def stepped(self) -> None:
        if self._trim is None or self._timer is not None:
            return
        # A fresh context: nothing of the step that set the timer is kept alive by it.
        self._timer = asyncio.get_running_loop().call_later(
            self._interval, self._run, context=contextvars.Context()
        )

    def _run(self) -> None:
        self._timer = None
        if self._trim is None:
            return
        self.trims += 1
        done = asyncio.get_running_loop().run_in_executor(None, self._trim)
        done.add_done_callback(_log_failure)


def _log_failure(done: asyncio.Future[object]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("malloc_trim failed: %s", done.exception())
