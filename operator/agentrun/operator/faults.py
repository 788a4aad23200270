"""Fault injection for the crash-and-resume tests: AGENTRUN_FAULT=<point> exits the process there.

Exiting with os._exit skips every cleanup, like SIGKILL, at a point a signal cannot hit
reliably (after a status write, before the side effect it records).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("agentrun.operator.faults")

BEFORE_JOB_CREATE = "crash-before-job-create"


def crash_point(point: str) -> None:
    if os.environ.get("AGENTRUN_FAULT") == point:
        log.critical("Crashed on purpose at %s (AGENTRUN_FAULT)", point)
        logging.shutdown()
        os._exit(70)
