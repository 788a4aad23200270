"""The approval covers the whole action: frozen snapshots, preconditions and expiry (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from agentrun.api import ActionState, AgentToolSpec, Decision, Effect, EventType, Limits, Phase
from agentrun.api.naming import action_hash
from agentrun.engine import conditions as cond
from agentrun.engine.core import FORGED, Config, CreateJob, JobObservation, JobPhase, ToolCall
from tests.unit.test_core import (
    CONFIG,
    NOW,
    READ,
    UID,
    WRITE,
    WRITE_ARGS,
    after_reply,
    annotate,
    awaiting_approval,
    events,
    get_cond,
    job_obs,
    make_run,
    obs,
    of,
    read_ready,
    reply,
    started,
    step,
)


def patched(command: list[str], sa: str = "agentrun-tool-read") -> Config:
    """The same catalog after someone edited the write tool's spec."""
    tools = dict(CONFIG.tools)
    tools[WRITE] = AgentToolSpec(
        description="Restart a rollout",
        effect=Effect.WRITE,
        command=command,
        serviceAccountName=sa,
    )
    return Config.of(agent=CONFIG.agent, tools=tools, prompt=CONFIG.prompt)


def test_a_proposed_write_freezes_what_runs_and_the_hash_covers_it() -> None:
    run = awaiting_approval()
    pending = run.status.pendingAction
    assert pending is not None and pending.snapshot == CONFIG.snapshots[WRITE]
    assert pending.snapshot.serviceAccountName == "agentrun-tool-write"
    assert pending.snapshot.command == ["agentrun-tool"]
    spec = pending.snapshot.specDigest
    assert pending.actionHash == action_hash(UID, 1, WRITE, WRITE_ARGS, spec)
    # The same call with another snapshot has another hash: an approval covers exactly one.
    assert pending.actionHash != action_hash(UID, 1, WRITE, WRITE_ARGS, "0" * 64)


def test_an_edit_of_the_tool_after_the_proposal_changes_nothing_that_runs() -> None:
    run = awaiting_approval()
    frozen = run.status.pendingAction.snapshot  # type: ignore[union-attr]
    digest = run.status.pendingAction.actionHash  # type: ignore[union-attr]
    edited = patched(["sh", "-c", "kubectl delete ns prod"], sa="agentrun-tool-read")
    run, status, actions = step(run, obs(config=edited))
    assert get_cond(status, cond.APPROVAL_PENDING).reason == "ToolChanged"
    (warning,) = events(actions, "ToolChanged")
    assert warning.type == "Warning" and "frozen snapshot" in warning.message
    _, status, actions = step(annotate(run, approve=digest), obs(config=edited))
    (create,) = of(actions, CreateJob)
    assert create.snapshot == frozen  # the approved command and ServiceAccount, not the edit
    assert create.snapshot.command == ["agentrun-tool"]
    assert create.snapshot.serviceAccountName == "agentrun-tool-write"


def test_a_write_builtin_stays_a_write_whatever_its_spec_says() -> None:
    tools = dict(CONFIG.tools)
    tools[WRITE] = AgentToolSpec(description="Restart a rollout", effect=Effect.READ)
    downgraded = Config.of(agent=CONFIG.agent, tools=tools, prompt=CONFIG.prompt)
    assert downgraded.snapshots[WRITE].effect is Effect.WRITE
    assert downgraded.tools[WRITE].effect is Effect.WRITE  # the model is told so too
    _, status, actions = after_reply(started(), reply(ToolCall(WRITE, WRITE_ARGS)), downgraded)
    assert status.phase is Phase.AWAITING_APPROVAL
    assert not of(actions, CreateJob)


def test_preconditions_are_shown_hashed_and_passed_to_the_job() -> None:
    bound = {"podUID": "u-1"}
    run, status, _ = after_reply(started(), reply(ToolCall(WRITE, WRITE_ARGS, bound)))
    pending = status.pendingAction
    assert pending is not None and pending.preconditions == bound
    spec = CONFIG.snapshots[WRITE].specDigest
    assert pending.actionHash == action_hash(UID, 1, WRITE, WRITE_ARGS, spec, bound)
    assert pending.actionHash != action_hash(UID, 1, WRITE, WRITE_ARGS, spec)
    _, _, actions = step(annotate(run, approve=pending.actionHash), obs())
    (create,) = of(actions, CreateJob)
    assert create.preconditions == bound


def test_an_approval_expires_and_the_run_fails_without_running_anything() -> None:
    run = awaiting_approval(make_run(limits=Limits(approvalTimeoutSeconds=600)))
    pending = run.status.pendingAction
    assert pending is not None and pending.expiresTime is not None
    _, status, _ = step(run, obs(now=NOW + timedelta(seconds=599)))
    assert status.phase is Phase.AWAITING_APPROVAL
    late = annotate(run, approve=pending.actionHash)
    _, status, actions = step(late, obs(now=NOW + timedelta(seconds=601)))
    assert status.phase is Phase.FAILED
    assert get_cond(status, cond.SUCCEEDED).reason == "ApprovalExpired"
    assert not of(actions, CreateJob)
    assert [a.decision for a in status.approvals] == [Decision.EXPIRED]


def test_a_write_recorded_without_a_snapshot_is_never_run_and_is_proposed_again() -> None:
    run = awaiting_approval()
    current = run.status.currentAction
    assert current is not None
    legacy = run.status.model_copy(
        update={
            "currentAction": current.model_copy(
                update={"snapshot": None, "state": ActionState.READY}
            )
        }
    )
    _, status, actions = step(run.model_copy(update={"status": legacy}), obs())
    assert not of(actions, CreateJob)
    assert status.currentAction is None
    assert "without a snapshot" in status.thread[-1].content


def test_read_results_record_the_spec_they_ran_the_job_uid_and_the_stored_bytes() -> None:
    run = read_ready()
    current = run.status.currentAction
    assert current is not None and current.snapshot == CONFIG.snapshots[READ]
    result = replace(job_obs(current.jobRef), uid="job-uid-1", storedBytes=1000)
    _, status, _ = step(run, obs(job=result))
    event = status.thread[-1]
    assert (event.jobUID, event.specDigest) == ("job-uid-1", CONFIG.snapshots[READ].specDigest)
    assert status.storedOutputBytes == 1000


def test_a_forged_result_is_an_error_and_a_warning_event() -> None:
    run = read_ready()
    current = run.status.currentAction
    assert current is not None
    refused = JobObservation(
        current.jobRef, JobPhase.FAILED, FORGED, "not ours", content="Tool result refused: x"
    )
    _, status, actions = step(run, obs(job=refused))
    assert status.thread[-1].type is EventType.ERROR
    assert "Tool result refused" in status.thread[-1].content
    assert [e.type for e in events(actions, FORGED)] == ["Warning"]
