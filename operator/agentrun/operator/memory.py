"""Giving memory back after a burst of runs: glibc's malloc_trim once the runner is quiet.

An alert storm puts hundreds of runs in flight at once; once they are parked for a human
each keeps a few KiB, but the C allocator keeps the pages the burst freed (VmRSS stays at
its high-water mark). malloc_trim(0) returns the free pages of every arena to the system.
It costs milliseconds (1-3 ms measured for a 50 MiB heap), so it runs in a worker thread
once no step has been in flight for QUIET_SECONDS, at most once per MIN_INTERVAL seconds,
and only after steps ran since the last one. With PYTHONMALLOC=malloc (the image's and the
chart's default) Python's objects live in those arenas too; pymalloc's own 1 MiB arenas
would stay pinned by the few objects each parked run keeps (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import logging
import time
from collections.abc import Callable

log = logging.getLogger("agentrun.operator.memory")

QUIET_SECONDS = 1.0
MIN_INTERVAL = 10.0

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
    """Counts steps in flight; trims once they have all ended and stayed so for `quiet`."""

    def __init__(
        self,
        trim: Trim | None,
        quiet: float = QUIET_SECONDS,
        interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim, self._quiet, self._interval, self._clock = trim, quiet, interval, clock
        self._busy = 0
        self._dirty = False  # steps ran since the last trim
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0

    def busy(self) -> None:
        self._busy += 1
        self._dirty = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle(self) -> None:
        self._busy -= 1
        if self._busy > 0 or not self._dirty or self._trim is None or self._timer is not None:
            return
        delay = max(self._quiet, self._last + self._interval - self._clock())
        # A fresh context: nothing of the step that ended is kept alive by the timer.
        self._timer = asyncio.get_running_loop().call_later(
            delay, self._run, context=contextvars.Context()
        )

    def _run(self) -> None:
        self._timer = None
        if self._busy > 0 or self._trim is None:
            return
        self._dirty, self._last = False, self._clock()
        self.trims += 1
        done = asyncio.get_running_loop().run_in_executor(None, self._trim)
        done.add_done_callback(_log_failure)


def _log_failure(done: asyncio.Future[object]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("malloc_trim failed: %s", done.exception())
