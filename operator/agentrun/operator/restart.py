"""Starting the operator process over when kopf stops on an error.

kopf stops all its tasks when one of its root tasks fails: for example a watch that the
apiserver answers 404 while, just restarted, it is still registering the custom resources.
That stop can hang forever on a watcher waiting to re-authenticate with a closed session
(nolar/kopf#1168, #1276), leaving a process that is alive but handles nothing. All state is in
the cluster, so the process replaces itself with a fresh copy: right away when kopf returned,
or when it has not returned within a grace period.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

# kopf's root tasks log their failure under this logger, at ERROR, and nothing else there.
KOPF_ROOT_LOGGER = "kopf._core.reactor.running"

log = logging.getLogger("agentrun.operator")


def reexec(reason: str, delay: float) -> None:
    """Replaces this process with a new one started the same way (same pid, args, env)."""
    log.error("Operator stopped: %s; restarting the process in %ss", reason, delay)
    time.sleep(delay)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


class StopWatchdog(logging.Handler):
    """Arms a timer on kopf's first root-task failure; `restart` runs if it expires."""

    def __init__(self, grace: float, restart: Callable[[str, float], None] = reexec) -> None:
        super().__init__(logging.ERROR)
        self.grace = grace
        self.restart = restart
        self.timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.timer is not None:
            return
        reason = f"kopf did not stop within {self.grace:g}s of: {record.getMessage()}"
        self.timer = threading.Timer(self.grace, self.restart, args=(reason, 0.0))
        self.timer.daemon = True
        self.timer.start()


def watch_kopf(grace: float) -> StopWatchdog:
    watchdog = StopWatchdog(grace)
    logging.getLogger(KOPF_ROOT_LOGGER).addHandler(watchdog)
    return watchdog
