"""Status writes (persist.write_status) against the in-memory API: onto the version decided
from or not at all, the recorded effect right after the write, and a write that stands when
its effect fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s

from agentrun.api import AgentRunStatus, Phase
from agentrun.operator import persist
from tests.support.fakekube import FakeKube
from tests.support.loop import NS, RUN, run_body


def write(
    fake: FakeKube, body: dict[str, Any], status: AgentRunStatus, then: Any = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    told: list[dict[str, Any]] = []
    written = asyncio.run(persist.write_status(k8s.ApiClient(), body, status, told.append, then))
    return written, told


def running() -> AgentRunStatus:
    return AgentRunStatus(phase=Phase.RUNNING, step=1)


def test_a_write_lands_only_on_the_version_it_was_decided_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube(interfere=1)  # someone else writes the run just before us
    fake.install(monkeypatch)
    body = fake.add_run(run_body())
    effects: list[str] = []
    written, told = write(fake, body, running(), lambda: effects.append("job"))
    assert written is None  # a 409: the caller decides again
    assert told == [] and effects == []  # no effect of a status that was not written
    assert "status" not in fake.runs[(NS, RUN)]


def test_the_recorded_effect_runs_right_after_the_write_in_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    fake.install(monkeypatch)
    body = fake.add_run(run_body())
    effects: list[str] = []

    def then() -> None:
        effects.append(fake.runs[(NS, RUN)]["status"]["phase"])  # already written

    written, told = write(fake, body, running(), then)
    assert effects == ["Running"]
    assert written is not None and told == [written]
    assert written["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]


def test_an_unchanged_status_is_not_written_but_its_effect_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    fake.install(monkeypatch)
    as_written = persist.to_wire(running().model_dump(mode="json"))
    body = fake.add_run({**run_body(), "status": as_written})
    effects: list[str] = []
    written, told = write(fake, body, running(), lambda: effects.append("job"))
    assert written is body and told == []
    assert "patch_status" not in fake.verbs()
    assert effects == ["job"]  # e.g. a Job recorded by a write that landed before a crash


def test_a_failed_effect_leaves_the_write_standing_and_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    fake.install(monkeypatch)
    body = fake.add_run(run_body())
    told: list[dict[str, Any]] = []

    def then() -> None:
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        asyncio.run(persist.write_status(k8s.ApiClient(), body, running(), told.append, then))
    assert fake.runs[(NS, RUN)]["status"]["phase"] == "Running"  # retried from here
    assert len(told) == 1  # the loop knows its own write, so its echo is not news


def test_the_patch_removes_what_status_dropped_and_leaves_kopf_its_own() -> None:
    body = {"status": {"phase": "Running", "step": 1, "pendingInput": {"q": "?"}, "kopf": {}}}
    patch = persist.status_patch(body, AgentRunStatus(phase=Phase.RUNNING, step=2))
    assert patch["step"] == 2
    assert patch["pendingInput"] is None
    assert "kopf" not in patch
    assert "phase" not in patch
