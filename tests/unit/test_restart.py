"""The watchdog that starts the operator over when kopf does not finish stopping."""

from __future__ import annotations

import logging
import threading

from agentrun.operator import restart


def test_kopfs_first_root_failure_arms_one_restart_after_the_grace() -> None:
    called: list[str] = []
    fired = threading.Event()

    def restart_now(reason: str, delay: float) -> None:
        called.append(reason)
        fired.set()

    logger = logging.getLogger(restart.KOPF_ROOT_LOGGER + ".test")
    watchdog = restart.StopWatchdog(0.05, restart_now)
    logger.addHandler(watchdog)
    try:
        logger.warning("Daemon killer has finished unexpectedly.")  # below ERROR: not a stop
        assert watchdog.timer is None
        logger.error("Multidimensional multitasker has failed: 404 page not found")
        logger.error("Credentials retriever has failed: session closed")
        assert fired.wait(5)
        assert watchdog.timer is not None
        watchdog.timer.join(5)
    finally:
        logger.removeHandler(watchdog)
    assert called == [
        "kopf did not stop within 0.05s of: "
        "Multidimensional multitasker has failed: 404 page not found"
    ]
