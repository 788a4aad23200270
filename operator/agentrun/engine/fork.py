"""Forks (pure): what a fork takes from its source, and how it starts from that.

A fork (spec.forkOf) goes on from step N of another run with another prompt, model or agent.
`plan` is the source's side, run by `kubectl agentrun fork` on the source as read: the events
of steps 0..N it copies, or why it refuses. The copy travels in the fork's spec, so the fork
needs nothing of its source afterwards (the source may be deleted). `fork_refusal` and
`inherited_events` are the fork's side, used by the core when the fork starts.

A write is never replayed: the events copied may hold no write that ran or still waits for a
decision (only a rejected one, which changed nothing); from the step of such a write on, the
fork's own model proposes again and the fork waits for its own approval (its hash binds its
own uid, so no approval of the source can ever apply to it).
"""

from __future__ import annotations

from collections import Counter

from agentrun.api import AgentRunStatus, Decision, EventType, ForkOf, ThreadEvent

# What ends a tool call within its step: it ran (a result or an error) or was rejected.
_OUTCOMES = (EventType.TOOL_RESULT, EventType.ERROR, EventType.REJECTION)


class ForkRefused(ValueError):
    """The source cannot be forked from that step; the message says why and what to do."""


def plan(name: str, uid: str, status: AgentRunStatus, step: int) -> ForkOf:
    """spec.forkOf for a fork of run `name` (as its status is now) from `step`."""
    if step < 0:
        raise ForkRefused(f"--from-step must be 0 or more, not {step}")
    if status.startTime is None:
        raise ForkRefused(f"run {name} has not started: there is nothing to fork yet")
    if step > status.step:
        raise ForkRefused(
            f"run {name} never reached step {step}: it is at step {status.step} "
            f"(phase {status.phase.value}); fork from step 0 to {status.step}"
        )
    _refuse_unfinished(name, status, step)
    events = [e for e in status.thread if e.step <= step]
    _refuse_writes(name, status, step, events)
    return ForkOf(
        name=name,
        uid=uid,
        step=step,
        events=events,
        omitted=status.threadDropped,
        promptRef=status.promptRef,
    )


def _refuse_unfinished(name: str, status: AgentRunStatus, step: int) -> None:
    """Step `step` must be over: no tool still running or waiting, no open question."""
    current = status.currentAction
    if current is not None and current.step == step:
        what = "waits for approval" if status.pendingAction is not None else "is still running"
        raise ForkRefused(
            f"step {step} of run {name} {what} ({current.tool}): fork from an earlier step, "
            "or once the step is over"
        )
    asked = status.pendingInput
    if asked is not None and asked.step == step:
        raise ForkRefused(
            f"step {step} of run {name} asked a question nobody has answered yet: fork from "
            f"step {step - 1} or earlier, or once it is answered"
        )
    for event in status.thread:
        if event.type is EventType.DONE and event.step <= step:
            raise ForkRefused(
                f"step {event.step} of run {name} is its final answer, so nothing follows it: "
                f"fork from step {event.step - 1} or earlier"
            )


def _refuse_writes(name: str, status: AgentRunStatus, step: int, events: list[ThreadEvent]) -> None:
    """No write that ran, or that was proposed and never decided, among the copied steps."""
    ran = [r for r in status.approvals if r.step <= step and r.decision is Decision.APPROVED]
    approved = [e for e in events if e.type is EventType.APPROVAL]
    if ran or approved:
        at, tool = (ran[0].step, ran[0].tool) if ran else (approved[0].step, approved[0].tool)
        raise ForkRefused(
            f"step {at} of run {name} is the write {tool}, approved in that run: a write is "
            f"never replayed. Fork from step {at - 1} or earlier: from there the fork's model "
            "proposes again, and any write waits for the fork's own approval"
        )
    calls: Counter[tuple[int, str | None]] = Counter(
        (e.step, e.tool) for e in events if e.type is EventType.TOOL_CALL
    )
    ended: Counter[tuple[int, str | None]] = Counter(
        (e.step, e.tool) for e in events if e.type in _OUTCOMES and e.tool
    )
    for (at, tool), count in sorted(calls.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if ended[(at, tool)] < count:
            raise ForkRefused(
                f"step {at} of run {name} called {tool} and has no result for it (the run "
                f"ended while it was pending): fork from step {at - 1} or earlier"
            )


def fork_refusal(fork: ForkOf) -> str | None:
    """Why a fork's spec cannot start (a hand-written spec.forkOf), or None."""
    late = [e.step for e in fork.events if e.step > fork.step]
    if late:
        return (
            f"spec.forkOf.events hold step {max(late)}, after spec.forkOf.step {fork.step}: "
            "a fork inherits only the steps up to the one it goes on from"
        )
    approved = [e.step for e in fork.events if e.type is EventType.APPROVAL]
    if approved:
        return (
            f"spec.forkOf.events hold an approval (step {approved[0]}): a fork never inherits "
            "a write that ran; create the fork with kubectl agentrun fork"
        )
    return None


def inherited_events(fork: ForkOf) -> list[ThreadEvent]:
    """The fork's first events: the source's, each marked with the run it happened in (the
    first one, for a fork of a fork)."""
    return [
        e.model_copy(update={"inheritedFrom": e.inheritedFrom or fork.name}) for e in fork.events
    ]
