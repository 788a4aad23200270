"""Forks, pure: what `kubectl agentrun fork` copies from a source (engine.fork.plan) and how
the core starts a fork from that copy (a run with spec.forkOf)."""

from __future__ import annotations

import pytest

from agentrun.api import (
    ANNOTATION_APPROVE,
    AgentRun,
    AgentRunSpec,
    AgentRunStatus,
    AgentSpec,
    Decision,
    EventType,
    ForkOf,
    ModelSpec,
    Phase,
    PromptSelector,
    RunInput,
    ThreadEvent,
)
from agentrun.engine.config import read_agent
from agentrun.engine.core import (
    MAX_THREAD_BYTES,
    MAX_THREAD_EVENTS,
    CallModel,
    CreateJob,
    RecordEvent,
)
from agentrun.engine.fork import ForkRefused, plan
from tests.unit.test_core import (
    CONFIG,
    NOW_S,
    READ,
    UID,
    WRITE,
    WRITE_ARGS,
    Adapter,
    done,
    events,
    make_run,
    obs,
    of,
    read_call,
    step,
    write_call,
    write_hash,
)

FORK_UID = "f0f0f0f0-1111-4222-8333-444455556666"


def finished_source(reject: bool = False) -> AgentRun:
    """A source that read (steps 1, 2), had a write at step 3 (approved, or rejected), and
    finished at step 4 (or 4 after the rejection)."""
    script = {1: [read_call()], 2: [read_call(name="db")], 3: [write_call()], 4: [done()]}
    a = Adapter(make_run(), script, tool_results={READ: (True, "3/3 ready"), WRITE: (True, "ok")})
    a.settle()
    assert a.status.phase is Phase.AWAITING_APPROVAL
    status = a.annotate(reject="not now") if reject else a.annotate(approve=write_hash(3))
    assert status.phase is Phase.SUCCEEDED
    return a.run


def fork_run(fork: ForkOf, **spec: object) -> AgentRun:
    return AgentRun(
        metadata={"name": "web-oom-fork", "namespace": "prod", "uid": FORK_UID, "generation": 1},
        spec=AgentRunSpec(
            agentRef="sre",
            input=RunInput(task="web is OOMKilled", context={"alert": "KubePodCrashLooping"}),
            forkOf=fork,
            **spec,
        ),
    )


def plan_of(run: AgentRun, at: int) -> ForkOf:
    return plan(run.metadata["name"], str(run.metadata["uid"]), run.status, at)


# ---------------------------------------------------------------- the source's side


def test_a_fork_copies_the_events_up_to_its_step_and_names_its_source() -> None:
    source = finished_source()
    fork = plan_of(source, 2)
    assert (fork.name, fork.uid, fork.step, fork.omitted) == ("web-oom", UID, 2, 0)
    assert fork.events == [e for e in source.status.thread if e.step <= 2]
    assert [(e.step, e.type) for e in fork.events] == [
        (1, EventType.TOOL_CALL),
        (1, EventType.TOOL_RESULT),
        (2, EventType.TOOL_CALL),
        (2, EventType.TOOL_RESULT),
    ]
    assert fork.promptRef == source.status.promptRef
    # Plain YAML: what the CLI creates validates as the CRD's model does.
    assert ForkOf.model_validate(fork.model_dump(mode="json")) == fork


@pytest.mark.parametrize(
    ("at", "says"),
    [
        (5, "never reached step 5: it is at step 4 (phase Succeeded); fork from step 0 to 4"),
        (-1, "--from-step must be 0 or more"),
        (4, "step 4 of run web-oom is its final answer"),
        (3, "step 3 of run web-oom is the write rollout-restart, approved in that run"),
    ],
)
def test_refusals_say_why_and_from_which_step_a_fork_works(at: int, says: str) -> None:
    with pytest.raises(ForkRefused) as refused:
        plan_of(finished_source(), at)
    assert says in str(refused.value)


def test_a_rejected_write_changed_nothing_so_a_fork_may_inherit_it() -> None:
    source = finished_source(reject=True)
    fork = plan_of(source, 3)
    assert [e.type for e in fork.events if e.step == 3] == [
        EventType.TOOL_CALL,
        EventType.REJECTION,
    ]


def test_a_write_that_waits_for_approval_or_a_running_step_is_refused() -> None:
    a = Adapter(make_run(), {1: [read_call()], 2: [write_call()]}, tool_results={READ: (True, "x")})
    a.settle()
    assert a.status.phase is Phase.AWAITING_APPROVAL
    with pytest.raises(ForkRefused, match="step 2 of run web-oom waits for approval"):
        plan_of(a.run, 2)
    assert plan_of(a.run, 1).step == 1
    b = Adapter(make_run(), {1: [read_call()]})  # the read Job keeps running
    b.settle()
    with pytest.raises(ForkRefused, match="step 1 of run web-oom is still running"):
        plan_of(b.run, 1)


def test_a_run_that_ended_while_a_write_waited_is_refused_at_that_step() -> None:
    a = Adapter(make_run(), {1: [write_call()]})
    a.settle()
    a.run = a.run.model_copy(update={"spec": a.run.spec.model_copy(update={"cancel": True})})
    assert a.settle().phase is Phase.CANCELLED
    with pytest.raises(ForkRefused, match="step 1 of run web-oom called rollout-restart and has"):
        plan_of(a.run, 1)


def test_a_run_not_started_has_nothing_to_fork() -> None:
    with pytest.raises(ForkRefused, match="has not started"):
        plan_of(make_run(), 0)


def test_events_the_source_dropped_for_size_are_counted_as_left_out() -> None:
    source = finished_source()
    status = source.status.model_copy(update={"threadDropped": 7})
    assert plan("web-oom", UID, status, 2).omitted == 7


# ---------------------------------------------------------------- the fork's side


def test_a_fork_starts_at_its_step_with_the_inherited_events_and_calls_the_model_next() -> None:
    source = finished_source()
    fork = fork_run(plan_of(source, 2))
    _, status, actions = step(fork, obs())
    assert status.phase is Phase.RUNNING
    assert status.step == 2
    assert of(actions, CallModel) == [CallModel(step=3)]
    assert not of(actions, CreateJob)  # reads reused, not re-run
    assert [e.model_copy(update={"inheritedFrom": None}) for e in status.thread] == [
        e for e in source.status.thread if e.step <= 2
    ]
    assert {e.inheritedFrom for e in status.thread} == {"web-oom"}
    assert status.approvals == [] and status.usage.modelCalls == 0
    assert events(actions, "Forked") == [
        RecordEvent("Normal", "Forked", "Fork of web-oom from step 2: 4 events inherited")
    ]
    assert status.startTime == NOW_S


def test_a_fork_proposes_a_write_afresh_and_only_its_own_approval_counts() -> None:
    source = finished_source()
    a = Adapter(fork_run(plan_of(source, 2)), {3: [write_call()], 4: [done("fork done")]})
    a.tool_results = {WRITE: (True, "restarted")}
    status = a.settle()
    assert status.phase is Phase.AWAITING_APPROVAL and a.creates == []
    own = status.currentAction.actionHash  # type: ignore[union-attr]
    # The source's approval of the very same write is not an approval of the fork's.
    assert own != write_hash(3)
    status = a.annotate(approve=write_hash(3))
    assert status.phase is Phase.AWAITING_APPROVAL and a.creates == []
    assert [r.decision for r in status.approvals] == [Decision.REFUSED]
    status = a.annotate(approve=own)
    assert status.phase is Phase.SUCCEEDED
    assert [c.tool for c in a.creates] == [WRITE]
    assert a.creates[0].arguments == WRITE_ARGS
    assert ANNOTATION_APPROVE not in (a.run.metadata.get("annotations") or {})
    # Inherited events first, then the fork's own, unmarked.
    own_events = [e for e in status.thread if e.inheritedFrom is None]
    assert [e.step for e in own_events] == [3, 3, 3, 4]


def test_a_fork_of_a_fork_keeps_where_each_event_happened() -> None:
    source = finished_source()
    a = Adapter(fork_run(plan_of(source, 1)), {2: [read_call(name="cache")], 3: [done()]})
    a.tool_results = {READ: (True, "fine")}
    first = a.settle()
    assert first.phase is Phase.SUCCEEDED
    second = plan("web-oom-fork", FORK_UID, first, 2)
    _, status, _ = step(fork_run(second), obs())
    assert [(e.step, e.inheritedFrom) for e in status.thread] == [
        (1, "web-oom"),
        (1, "web-oom"),
        (2, "web-oom-fork"),
        (2, "web-oom-fork"),
    ]
    assert status.thread[2].arguments == {"name": "cache"}


def test_a_fork_from_step_0_does_not_prefetch_again() -> None:
    config = CONFIG.__class__.of(
        agent=CONFIG.agent.model_copy(
            update={"prefetch": [{"tool": READ, "arguments": {"kind": "Pod"}}]}
        ),
        tools=CONFIG.tools,
        prompt=CONFIG.prompt,
    )
    source = make_run().model_copy(
        update={
            "status": AgentRunStatus(
                startTime=NOW_S,
                thread=[
                    ThreadEvent(step=0, type=EventType.TOOL_CALL, time=NOW_S, tool=READ),
                    ThreadEvent(step=0, type=EventType.TOOL_RESULT, time=NOW_S, tool=READ),
                ],
            )
        }
    )
    _, _, actions = step(fork_run(plan_of(source, 0)), obs(config=config))
    assert of(actions, CallModel) == [CallModel(step=1)] and not of(actions, CreateJob)


def test_a_hand_written_fork_with_later_steps_or_an_approval_fails_invalid_spec() -> None:
    later = ForkOf(
        name="src",
        uid="u",
        step=1,
        events=[ThreadEvent(step=2, type=EventType.TOOL_CALL, time=NOW_S, tool=READ)],
    )
    _, status, actions = step(fork_run(later), obs())
    assert status.phase is Phase.FAILED
    assert (
        "spec.forkOf.events hold step 2, after spec.forkOf.step 1"
        in events(actions, "InvalidSpec")[0].message
    )
    approved = later.model_copy(
        update={
            "step": 2,
            "events": [ThreadEvent(step=2, type=EventType.APPROVAL, time=NOW_S, tool=WRITE)],
        }
    )
    _, status, _ = step(fork_run(approved), obs())
    assert status.phase is Phase.FAILED
    assert not of(actions, CreateJob)


def test_the_fork_copy_stays_within_the_thread_bound_and_says_what_it_left_out() -> None:
    big = "x" * 3900
    events_ = [
        ThreadEvent(step=s, type=t, time=NOW_S, tool=READ, content=big)
        for s in range(1, 101)
        for t in (EventType.TOOL_CALL, EventType.TOOL_RESULT)
    ]
    fork = ForkOf(name="src", uid="u", step=100, events=events_, omitted=3)
    _, status, actions = step(fork_run(fork), obs())
    size = sum(len(e.content) + 200 for e in status.thread)
    assert size <= MAX_THREAD_BYTES and len(status.thread) <= MAX_THREAD_EVENTS
    assert status.threadDropped >= 3
    said = events(actions, "Forked")[0].message
    assert f"{status.threadDropped} left out" in said
    with pytest.raises(ValueError, match="at most 200"):
        ForkOf(name="src", uid="u", step=1, events=events_ + events_[:2])


def test_model_and_prompt_overrides_change_only_the_name_and_the_prompt() -> None:
    run = make_run().model_copy(
        update={
            "spec": make_run().spec.model_copy(
                update={
                    "model": "cheap-model",
                    "prompt": PromptSelector(name="sre-agent", version="2"),
                }
            )
        }
    )
    body = {
        "spec": {
            "model": {"name": "gpt-4o", "baseURL": "https://llm.example/v1"},
            "prompt": {"name": "sre-agent"},
        }
    }
    agent = read_agent(run, "prod", body)
    assert isinstance(agent, AgentSpec)
    assert agent.model == ModelSpec(name="cheap-model", baseURL="https://llm.example/v1")
    assert agent.prompt == PromptSelector(name="sre-agent", version="2")
    plain = read_agent(make_run(), "prod", body)
    assert isinstance(plain, AgentSpec) and plain.model.name == "gpt-4o"


# ---------------------------------------------------------------- the CLI's manifest


def test_the_fork_manifest_keeps_the_source_input_and_pins_its_prompt_version() -> None:
    from agentrun.cli import view

    source = finished_source()
    body = source.model_dump(mode="json", exclude_none=True)
    fork = plan_of(source, 2).model_dump(mode="json", exclude_none=True)
    same = view.fork_manifest(body, fork)
    assert same["metadata"] == {
        "namespace": "prod",
        "generateName": "web-oom-fork-",
        "labels": {"agentrun.dev/fork-of": "web-oom"},
    }
    assert same["spec"]["input"] == body["spec"]["input"]
    assert same["spec"]["prompt"] == {"name": "sre-agent", "version": "3"}  # what it ran with
    assert "model" not in same["spec"]
    other = view.fork_manifest(body, fork, name="f", agent="sre-2", model="m")
    assert other["metadata"]["name"] == "f"
    assert (other["spec"]["agentRef"], other["spec"]["model"]) == ("sre-2", "m")
    assert "prompt" not in other["spec"]  # another agent: its own prompt
    # The manifest is a valid AgentRun as the CRD's model reads it.
    AgentRun.model_validate({**other, "metadata": {"name": "f"}})
    assert view.parse_prompt("no-restarts@2") == {"name": "no-restarts", "version": "2"}
    with pytest.raises(view.InputError, match="expected NAME or NAME@VERSION"):
        view.parse_prompt("Bad Name@")


# ---------------------------------------------------------------- diff


def test_diff_names_the_first_divergence_each_side_after_it_and_the_totals() -> None:
    from agentrun.cli import diff

    source = finished_source()
    a = Adapter(fork_run(plan_of(source, 2)), {3: [read_call(name="db")], 4: [done("db is down")]})
    a.tool_results = {READ: (True, "db: 0/1 ready")}
    assert a.settle().phase is Phase.SUCCEEDED
    src = source.model_dump(mode="json", exclude_none=True)
    fork = a.run.model_dump(mode="json", exclude_none=True)
    text = diff.render_diff(src, fork)
    lines = text.splitlines()
    assert lines[2] == "B is a fork of A from step 2 (steps 0-2 inherited)"
    assert "Same actions in steps 1-2; first divergence at step 3:" in lines
    at = lines.index("Same actions in steps 1-2; first divergence at step 3:")
    assert lines[at + 1 : at + 5] == [
        '  A: step 3   rollout-restart {"name":"web","namespace":"prod"}   [approved]',
        "     step 4   done: Raised the memory limit.",
        '  B: step 3   k8s-get {"name":"db"}',
        "     step 4   done: db is down",
    ]
    assert "  A: step 3 rollout-restart Approved" in lines
    assert "  B: none" in lines
    assert "  B: 240 tokens (200 prompt + 40 completion), 2 model calls" in lines
    same = diff.render_diff(src, src)
    assert "Same actions in all 4 steps." in same
