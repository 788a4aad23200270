"""The runner's memory of runs and tool pods: what a step starts from instead of a GET/LIST."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from typing import Any

from kubernetes import client as k8s

from agentrun.llm.model import ModelClient
from agentrun.operator.runner import Runner, Settings
from agentrun.operator.toolpods import ToolPods


def runner() -> Runner:
    return Runner(k8s.ApiClient(), ModelClient(), Settings())


def run(version: str, phase: str = "Running", **meta: Any) -> dict[str, Any]:
    metadata = {"namespace": "ns", "name": "r", "resourceVersion": version, **meta}
    return {"metadata": metadata, "spec": {}, "status": {"phase": phase}}


def cached(r: Runner) -> dict[str, Any] | None:
    state = r._runs.get("ns/r")
    return None if state is None else state.body


def test_an_event_is_news_and_its_body_is_kept() -> None:
    r = runner()
    assert r.observe_run(run("10")) is True
    assert cached(r) == run("10")


def test_the_echo_of_our_own_write_is_not_news() -> None:
    r = runner()
    r._wrote(r._state("ns/r"), run("11"))
    assert r.observe_run(run("11")) is False
    assert cached(r) == run("11")


def test_an_older_event_never_replaces_a_newer_body() -> None:
    # A lagging watch must not send the runner back before its own last write.
    r = runner()
    r._wrote(r._state("ns/r"), run("12"))
    assert r.observe_run(run("9", labels={"late": "yes"})) is True  # still stepped: news
    assert cached(r) == run("12")
    assert r.observe_run(run("13", labels={"team": "sre"})) is True
    assert cached(r) == run("13", labels={"team": "sre"})


def test_a_finished_run_is_not_stepped_nor_kept() -> None:
    r = runner()
    r.observe_run(run("5"))
    assert r.observe_run(run("6", phase="Succeeded")) is False
    assert cached(r) is None
    other = runner()
    assert other.observe_run(run("7", phase="Failed")) is False
    assert other._runs == {}  # runs kept for audit cost no memory


def pod(
    name: str, created: str, phase: str = "Running", containers: tuple[str, ...] = ("tool",)
) -> dict[str, Any]:
    meta = {"name": name, "creationTimestamp": created, "labels": {"job-name": "j"}}
    spec = {"big": "x" * 1000, "containers": [{"name": c} for c in containers]}
    return {"metadata": meta, "status": {"phase": phase}, "spec": spec}


def test_the_newest_pod_of_a_job_is_kept_trimmed_and_deletion_forgets_it() -> None:
    pods = ToolPods(k8s.ApiClient(), 1024)
    pods.observe("ns", pod("j-new", "2026-01-01T00:00:02Z"), "ADDED")
    pods.observe("ns", pod("j-old", "2026-01-01T00:00:01Z"), "ADDED")
    kept = pods._pods[("ns", "j")]
    assert kept["metadata"]["name"] == "j-new"
    assert "big" not in kept["spec"]  # only what the pod runs (its provenance) is kept
    pods.observe("ns", pod("j-old", "2026-01-01T00:00:01Z"), "DELETED")
    assert ("ns", "j") in pods._pods  # another pod's deletion
    pods.observe("ns", pod("j-new", "2026-01-01T00:00:02Z"), "DELETED")
    assert ("ns", "j") not in pods._pods


class CountingPods(ToolPods):
    """ToolPods whose log reads are counted instead of sent (the cache logic is the subject)."""

    def __init__(self) -> None:
        super().__init__(k8s.ApiClient(), 1024)
        self.reads: list[str] = []

    async def _read_log(self, namespace: str, pod: str, container: str) -> str:
        self.reads.append(pod if container == "tool" else f"{pod}/{container}")
        return f"log of {pod}/{container}"


def test_a_pod_seen_finishing_has_its_log_read_once_and_early() -> None:
    async def scenario() -> tuple[list[str], str, list[str]]:
        pods = CountingPods()
        pods.observe("ns", pod("j-1", "t1", "Running"), "ADDED")
        pods.observe("ns", pod("j-1", "t1", "Succeeded"), "MODIFIED")
        pods.observe("ns", pod("j-1", "t1", "Succeeded"), "MODIFIED")  # seen done again
        await asyncio.sleep(0)  # the early read runs as soon as the loop is free
        early = list(pods.reads)
        finished = await pods.finished_pod("ns", "j")
        assert finished is not None and finished["metadata"]["name"] == "j-1"
        text = await pods.log("ns", "j", "j-1")
        return early, text, pods.reads

    early, text, reads = asyncio.run(scenario())
    assert early == ["j-1"]
    assert text == "log of j-1/tool"
    assert reads == ["j-1"]  # the step used the early read, not a second one


def test_a_grouped_pods_containers_are_each_read_early_once() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        pods = CountingPods()
        pods.observe("ns", pod("j-1", "t1", "Failed", ("tool-0", "tool-1")), "ADDED")
        await asyncio.sleep(0)
        early = list(pods.reads)
        texts = [await pods.log("ns", "j", "j-1", c) for c in ("tool-1", "tool-0")]
        return early, texts, pods.reads

    early, texts, reads = asyncio.run(scenario())
    assert early == ["j-1/tool-0", "j-1/tool-1"]
    assert texts == ["log of j-1/tool-1", "log of j-1/tool-0"]  # each its own container's
    assert reads == early


def test_a_pod_first_seen_finished_by_the_watch_is_read_early() -> None:
    async def scenario() -> list[str]:
        pods = CountingPods()
        # The watch selects finished pods only: a pod arrives ADDED when it finishes.
        pods.observe("ns", pod("j-1", "t1", "Failed"), "ADDED")
        await asyncio.sleep(0)
        assert await pods.log("ns", "j", "j-1") == "log of j-1/tool"
        return pods.reads

    assert asyncio.run(scenario()) == ["j-1"]


def test_a_pod_listed_finished_at_start_up_is_read_when_the_step_asks() -> None:
    async def scenario() -> list[str]:
        pods = CountingPods()
        pods.observe("ns", pod("j-1", "t1", "Succeeded"), None)  # listed at start-up
        await asyncio.sleep(0)
        assert pods.reads == []
        assert await pods.log("ns", "j", "j-1") == "log of j-1/tool"
        return pods.reads

    assert asyncio.run(scenario()) == ["j-1"]


def test_news_of_a_job_steps_the_run_only_for_its_current_action() -> None:
    # The same rule as the core's own filter (concerns): skipping saves a step, not a decision.
    r = runner()
    state = r._state("ns/r")
    assert r._stale(state, "r-1") is False  # the run is not known: read it
    r.observe_run({**run("3"), "status": {"phase": "Running", "currentAction": {"jobRef": "r-1"}}})
    assert r._stale(state, "r-1") is False
    assert r._stale(state, "r-0") is True
    r.observe_run(run("4"))  # no current action
    assert r._stale(state, "r-1") is True
    state.done = True
    assert r._stale(state, "r-1") is True


_TRIGGER: contextvars.ContextVar[object] = contextvars.ContextVar("trigger")


class _Event:
    """Stands for the event a kopf handler holds in its context (a run, Job or pod body)."""


def test_a_pending_wake_up_keeps_nothing_of_the_trigger_that_set_it() -> None:
    # A parked run waits hours for approval with its expiry wake-up pending: that must not
    # keep the event it parked on alive (kopf keeps it in the handler's context).
    async def scenario() -> tuple[bool, bool]:
        r = runner()
        event = _Event()
        gone = weakref.ref(event)

        async def handler(trigger: _Event) -> None:
            _TRIGGER.set(trigger)
            r._wake_later("ns", "r", 3600)

        await asyncio.get_running_loop().create_task(handler(event))
        del event
        await asyncio.sleep(0)  # the finished handler task is let go
        gc.collect()
        state = r._runs["ns/r"]
        pending = state.wake is not None and not state.wake.cancelled()
        return pending, gone() is None

    assert asyncio.run(scenario()) == (True, True)
