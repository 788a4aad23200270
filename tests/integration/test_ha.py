"""Two operator replicas with kopf peering: one handles runs; killing it hands over."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.integration.spine import READ, Spine, done
from tests.support import stack
from tests.support.stack import OperatorProcess

Starter = Callable[..., OperatorProcess]
LIFETIME = 5  # seconds a replica's lease lasts without renewal


def _handled_by(op: OperatorProcess, run: str) -> bool:
    return f"{run}: Run started" in op.log_path.read_text(errors="replace")


def test_only_the_active_replica_works_and_a_standby_takes_over(
    own_operator: tuple[Spine, Starter],
) -> None:
    spine, start = own_operator
    spine.setup([READ, done()])
    spine.cluster.kubectl(
        "wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=30s"
    )
    stack.apply(
        spine.cluster,
        [
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": "agentrun", "namespace": spine.namespace},
            }
        ],
    )
    env = {"AGENTRUN_PEERING_LIFETIME": str(LIFETIME)}
    active = start("--peering", "agentrun", "--priority", "200", **env)
    standby = start("--peering", "agentrun", "--priority", "100", **env)
    time.sleep(2)  # the replicas see each other's leases

    spine.start("first")
    spine.wait_phase("Succeeded", name="first")
    assert _handled_by(active, "first") and not _handled_by(standby, "first")

    active.kill()
    killed = time.monotonic()
    spine.start("second")
    spine.wait_phase("Succeeded", name="second", timeout=LIFETIME * 6)
    handover = time.monotonic() - killed
    print(f"handover and run finished {handover:.1f}s after the active replica was killed")
    assert _handled_by(standby, "second")
    assert handover < LIFETIME * 6
    # No Job was created twice: one per step of each run.
    for run in ("first", "second"):
        assert len(spine.jobs(run)) == 1
