"""Actions (execute.Executor) against the in-memory API: a Job created once and known as
ours, one found already there stepped again and checked, nothing run for a run whose config
is invalid, annotations removed as one write of our own, and raw outputs stored or kept for
a retry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from agentrun.api import AgentRun
from agentrun.engine.config import ConfigError
from agentrun.engine.core import (
    Action,
    CallModel,
    Config,
    CreateJob,
    JobPhase,
    RecordEvent,
    RemoveAnnotations,
    job_action,
)
from agentrun.kube import client as kube
from agentrun.operator.execute import Outputs
from agentrun.operator.runner import Runner
from tests.support.fakekube import FakeKube
from tests.support.loop import NS, RUN, ScriptedModel, read, runner, step


class Rig:
    """A run whose read Job was just created, and its runner's Executor with wake-ups caught."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = FakeKube()
        self.model = ScriptedModel(read())
        self.r: Runner = runner(monkeypatch, self.fake, self.model)
        step(self.r)
        self.body = self.fake.runs[(NS, RUN)]
        self.run = AgentRun.model_validate(self.body)
        config = asyncio.run(self.r.observer.config(self.run))
        assert isinstance(config, Config)
        self.config = config
        current = self.run.status.currentAction
        assert current is not None and current.snapshot is not None
        self.create = job_action(current, current.snapshot)
        self.woken: list[tuple[str, str, float]] = []
        self.r.executor._wake = lambda ns, name, s: self.woken.append((ns, name, s))
        self.wrote: list[dict[str, Any]] = []
        self.seen: set[str] = set()

    def act(
        self, *actions: Action, config: Config | ConfigError | None = None
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        async def go() -> tuple[dict[str, Any] | None, dict[str, Any]]:
            out = await self.r.executor.act(
                list(actions),
                run=self.run,
                body=self.body,
                config=config or self.config,
                wrote=self.wrote.append,
                seen=self.seen,
            )
            await asyncio.gather(*self.r.executor.tasks)
            return out

        return asyncio.run(go())


def test_a_created_job_is_known_as_ours_and_a_second_create_is_harmless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(monkeypatch)
    job = rig.create.name
    made = rig.fake.jobs[(NS, job)]["metadata"]["uid"]
    assert rig.r.jobs.uid(NS, job) == made
    produced, _ = rig.act(rig.create)  # replayed after a crash between create and write
    assert produced is not None and produced["job"].phase is JobPhase.RUNNING
    assert rig.fake.verbs().count("create_job") == 2
    assert len(rig.fake.jobs) == 1
    assert rig.r.jobs.uid(NS, job) == made  # not re-verified by the 409
    assert rig.seen == {job}


def test_a_job_found_already_there_steps_the_run_again_to_check_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig(monkeypatch)
    rig.r.jobs.uids.clear()  # a new operator: it knows nothing of the Job
    rig.act(rig.create)
    assert rig.woken == [(NS, RUN, 0.0)]  # no watch event may come for a long-finished Job
    assert rig.r.jobs.uid(NS, rig.create.name) is None  # checked by observe, not trusted
    rig.woken.clear()
    rig.act(rig.create)
    assert rig.woken == [(NS, RUN, 0.0)]


def test_nothing_runs_for_a_run_whose_config_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(monkeypatch)
    rig.fake.jobs.clear()
    calls = list(rig.model.calls)
    bad = ConfigError("InvalidTool", "AgentTool get: image not allowed")
    other = CreateJob(**{**rig.create.__dict__, "name": f"{rig.create.name}-b"})
    produced, _ = rig.act(other, CallModel(step=2), config=bad)
    assert produced is None
    assert rig.fake.jobs == {}
    assert rig.model.calls == calls


def test_removed_annotations_are_one_write_of_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(monkeypatch)
    key = "agentrun.dev/approve"
    rig.fake.runs[(NS, RUN)]["metadata"]["annotations"] = {key: "h", "team": "sre"}
    rig.run.metadata["annotations"] = {key: "h", "team": "sre"}
    _, body = rig.act(RemoveAnnotations(keys=(key,)), RecordEvent("Normal", "Approved", "ok"))
    assert body["metadata"]["annotations"] == {"team": "sre"}
    assert rig.wrote == [body]  # its watch echo is not news
    assert rig.run.metadata["annotations"] == {"team": "sre"}  # the next decide sees it gone
    assert rig.fake.verbs()[-2:] == ["remove_annotations", "event"]


def test_an_output_that_failed_to_store_is_kept_and_stored_on_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeKube()
    fake.install(monkeypatch)
    failures = [ApiException(status=503, reason="Unavailable")]
    real = kube.ensure_configmap

    def flaky(api: k8s.ApiClient, manifest: dict[str, Any]) -> None:
        if failures:
            raise failures.pop()
        real(api, manifest)

    monkeypatch.setattr(kube, "ensure_configmap", flaky)
    cm = {"metadata": {"name": "r-1-out", "namespace": NS}, "data": {"output.txt": "x"}}
    outputs = Outputs()

    async def first() -> None:
        outputs.add(k8s.ApiClient(), cm)
        await outputs.stored()

    with pytest.raises(ApiException):
        asyncio.run(first())
    assert "r-1-out" in outputs.waiting

    async def retry() -> None:
        outputs.start(k8s.ApiClient())
        await outputs.stored()

    asyncio.run(retry())
    assert outputs.waiting == {}
    assert (NS, "r-1-out") in fake.configmaps


def test_an_output_refused_for_good_is_dropped_not_retried_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(api: k8s.ApiClient, manifest: dict[str, Any]) -> None:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(kube, "ensure_configmap", refuse)
    outputs = Outputs()

    async def go() -> None:
        outputs.add(k8s.ApiClient(), {"metadata": {"name": "r-1-out", "namespace": NS}})
        await outputs.stored()

    asyncio.run(go())
    assert outputs.waiting == {}
