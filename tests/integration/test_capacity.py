"""The cap on runs in progress (AGENTRUN_MAX_ACTIVE_RUNS): a new run past it waits, Pending
with reason Queued, and starts in order of arrival when a place frees up; nothing of it runs
before, and nothing is left waiting for good."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.integration.spine import Spine, condition, shell_tool
from tests.integration.test_faults import add_tools, call
from tests.support.stack import OperatorProcess


def _queued(spine: Spine, name: str) -> dict[str, Any]:
    status = spine.status(name)
    assert status.get("phase") == "Pending", json.dumps(status, indent=1)
    running = condition(status, "Running")
    assert (running["status"], running["reason"]) == ("False", "Queued"), running
    assert "AGENTRUN_MAX_ACTIVE_RUNS" in running["message"]
    assert "startTime" not in status
    return status


def _metrics(op: OperatorProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name:
            out[name] = float(value)
    return out


def test_runs_past_the_cap_wait_their_turn_and_start_when_a_place_frees_up(
    own_operator: tuple[Spine, Callable[..., OperatorProcess]],
) -> None:
    spine, start = own_operator
    # Each run reads for ~6 s, then proposes the write and parks for a human.
    spine.setup([call("slow"), spine.write()])
    add_tools(spine, shell_tool("slow", "sleep 6; echo 'web: 3/3 ready'"))
    op = start(AGENTRUN_MAX_ACTIVE_RUNS="1")
    spine.start("first")
    spine.wait(lambda: spine.jobs("first"), "the first run's Job")
    for name in ("second", "third"):
        spine.start(name)

    def queued() -> bool:
        statuses = [spine.status(n) for n in ("second", "third")]
        if not all(s.get("conditions") for s in statuses):
            return False
        assert [condition(s, "Running")["reason"] for s in statuses] == ["Queued"] * 2
        return True

    spine.wait(queued, "the second and third runs queued")
    # While the first works, the others get no model call and no Job.
    assert spine.status("first")["phase"] == "Running"
    for name in ("second", "third"):
        _queued(spine, name)
        assert spine.jobs(name) == []
        assert not [r for r in spine.model_requests() if r.get("run", "").endswith(f"/{name}")]

    # What an SRE graphs: one at work, two waiting.
    scraped = _metrics(op)
    assert scraped["agentrun_runs_in_progress"] == 1.0
    assert scraped["agentrun_runs_queued"] == 2.0

    # A queued run deleted leaves the queue: the one behind it is not stuck.
    spine.cluster.kubectl("delete", "agentrun", "second", "-n", spine.namespace)
    first = spine.wait_phase("AwaitingApproval", name="first", timeout=60)
    third = spine.wait_phase("AwaitingApproval", name="third", timeout=60)
    # It started once the first parked: the cap counts runs at work, not runs waiting for a
    # human.
    parked_at = condition(first, "ApprovalPending")["lastTransitionTime"]
    assert third["startTime"] >= parked_at
    assert condition(third, "Running")["reason"] == "Started"


def test_the_cap_does_not_hold_back_runs_under_it(
    own_operator: tuple[Spine, Callable[..., OperatorProcess]],
) -> None:
    spine, start = own_operator
    spine.setup([call("slow"), spine.write()])
    add_tools(spine, shell_tool("slow", "sleep 4; echo 'web: 3/3 ready'"))
    start(AGENTRUN_MAX_ACTIVE_RUNS="2")
    for name in ("a", "b"):
        spine.start(name)
    for name in ("a", "b"):
        status = spine.wait_phase("AwaitingApproval", name=name, timeout=60)
        assert condition(status, "Running")["reason"] == "Started"
