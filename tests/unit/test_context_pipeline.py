"""The pieces of the context builder on their own: sections, blocks and the budget steps."""

from __future__ import annotations

from typing import Any

import pytest

from agentrun.api import AgentRun, AgentToolSpec, Effect, EventType, ThreadEvent
from agentrun.llm.blocks import FULL, HIDDEN, LINE, OMITTED, SUMMARY
from agentrun.llm.budget import CONTEXT_FLOOR_CHARS, Fit, fit_to_budget
from agentrun.llm.sections import (
    Item,
    Section,
    context_block,
    event_sections,
    fixed_parts,
    next_instruction,
    tools_block,
    triage_errors,
)
from agentrun.llm.tokens import estimate

T = "2026-01-01T00:00:00Z"
CALL, RESULT, ERROR = EventType.TOOL_CALL, EventType.TOOL_RESULT, EventType.ERROR


def ev(step: int, type_: EventType, content: str = "", **extra: Any) -> ThreadEvent:
    return ThreadEvent(step=step, type=type_, time=T, content=content, **extra)


def rendered(*events: ThreadEvent) -> list[Item]:
    items = [Item(e) for e in events]
    for item in items:
        item.set(item.mode)
    return items


def make_run(thread: list[ThreadEvent], **status: Any) -> AgentRun:
    return AgentRun.model_validate(
        {
            "metadata": {"name": "web-down", "namespace": "shop"},
            "spec": {"agentRef": "sre", "input": {"task": "Find why web is down."}},
            "status": {
                "step": max((e.step for e in thread), default=0),
                "thread": [e.model_dump() for e in thread],
                **status,
            },
        }
    )


def lines(step: int, n: int) -> str:
    return "\n".join(f"step {step} line {i} " + "x" * 60 for i in range(n))


def fit_of(run: AgentRun, budget: int) -> Fit:
    prefetch, thread = event_sections(run)
    return Fit(budget, fixed_parts(run, "system", {}), prefetch, thread)


# ---------------------------------------------------------------- sections


def test_triage_hides_resolved_errors_with_their_failed_call() -> None:
    items = [
        Item(ev(1, CALL, tool="k8s-get")),
        Item(ev(1, ERROR, "boom", tool="k8s-get")),
        Item(ev(2, CALL, tool="k8s-get")),
        Item(ev(2, RESULT, "ok", tool="k8s-get")),
        Item(ev(3, ERROR, "first")),
        Item(ev(4, ERROR, "second")),
        Item(ev(5, ERROR, "last")),
    ]
    hidden = triage_errors(items)
    assert hidden == [items[1]]
    assert [i.mode for i in items] == [HIDDEN, HIDDEN, FULL, FULL, LINE, LINE, FULL]


def test_triage_keeps_a_call_for_another_tool() -> None:
    items = [
        Item(ev(1, CALL, tool="k8s-get")),
        Item(ev(1, ERROR, "boom", tool="pod-logs")),
        Item(ev(2, RESULT, "ok")),
    ]
    triage_errors(items)
    assert [i.mode for i in items] == [FULL, HIDDEN, FULL]


def test_event_sections_split_prefetch_from_thread_and_render_every_item() -> None:
    run = make_run([ev(0, RESULT, "evidence"), ev(1, CALL, tool="k8s-get"), ev(1, RESULT, "x")])
    prefetch, thread = event_sections(run)
    assert [i.event.step for i in prefetch.items] == [0]
    assert [i.event.step for i in thread.items] == [1, 1]
    assert all(i.text and i.cost == estimate(i.text) + 1 for i in prefetch.items + thread.items)


def test_section_notes_lead_in_order_dropped_omitted_hidden() -> None:
    run = make_run([ev(1, ERROR, "boom"), ev(2, RESULT, "a"), ev(3, RESULT, "b")], threadDropped=4)
    _, thread = event_sections(run)
    thread.items[1].set(OMITTED)
    text = thread.render()
    dropped = text.index("4 oldest events were dropped")
    omitted = text.index("1 older events omitted to fit the context budget (step 2)")
    hidden = text.index("1 resolved error hidden (step 1)")
    assert dropped < omitted < hidden < text.index('<tool_result step="3"')


def test_empty_section_renders_self_closing() -> None:
    section = Section("prefetched", [], lambda omitted: "")
    assert section.render() == "<prefetched/>"
    assert section.cost() == estimate("<prefetched/>")


@pytest.mark.parametrize("omit", [0, 1, 3])
def test_section_cost_bounds_its_rendering(omit: int) -> None:
    run = make_run([ev(s, RESULT, lines(s, 5)) for s in range(1, 5)], threadDropped=2)
    _, thread = event_sections(run)
    for item in thread.items[:omit]:
        item.set(OMITTED)
    assert estimate(thread.render()) <= thread.cost()


def test_context_block_clips_with_a_pointer_to_the_spec() -> None:
    assert context_block("", None) == ""
    assert (
        context_block("a: 1", None) == '<context format="yaml" untrusted="true">\na: 1\n</context>'
    )
    clipped = context_block("a: " + "x" * 100, 10)
    assert "a: xxxxxxx\n[clipped: 93 more characters;" in clipped
    assert "&lt;task" in context_block("a: <task>", None)


def test_tools_block_sorted_with_effect_and_first_line() -> None:
    tools = {
        "b": AgentToolSpec(description="Second.\nMore.", effect=Effect.WRITE),
        "a": AgentToolSpec(description="  First.  ", effect=Effect.READ),
    }
    assert tools_block(tools) == "<tools>\n- a (read): First.\n- b (write): Second.\n</tools>"
    assert tools_block({}) == ""


def test_fixed_parts_cost_grows_with_the_system_prompt() -> None:
    run = make_run([])
    small, large = fixed_parts(run, "s", {}), fixed_parts(run, "s" * 4000, {})
    assert large.cost > small.cost
    assert small.tools == "" and small.context_yaml == ""
    assert small.instruction == next_instruction(run)


def test_instruction_hints() -> None:
    assert "Your last step failed" in next_instruction(make_run([ev(1, ERROR, "x")]))
    assert "Your last 3 steps failed" in next_instruction(
        make_run([ev(1, ERROR, "x")], consecutiveErrors=3)
    )
    assert "rejected" in next_instruction(make_run([ev(1, EventType.REJECTION, "no")]))
    assert "answered" in next_instruction(make_run([ev(1, EventType.ANSWER, "yes")]))
    plain = next_instruction(make_run([ev(0, ERROR, "prefetch failed")]))
    assert plain.startswith("This is step 1. Call a tool now")


# ---------------------------------------------------------------- the budget


def test_tail_is_the_newest_result_and_its_call() -> None:
    run = make_run([ev(1, CALL), ev(1, RESULT, "a"), ev(2, CALL), ev(2, RESULT, "b"), ev(3, CALL)])
    fit = fit_of(run, 10**9)
    assert (fit.newest, fit.tail) == (3, 2)
    no_result = fit_of(make_run([ev(1, CALL), ev(2, CALL)]), 10**9)
    assert (no_result.newest, no_result.tail) == (None, 1)


def test_summarise_counts_each_item_once_and_only_results_or_errors() -> None:
    fit = fit_of(make_run([ev(1, CALL, lines(1, 40)), ev(1, RESULT, lines(1, 40))]), 10**9)
    call, result = fit.thread.items
    assert not fit.summarise(call)
    assert fit.summarise(result)
    assert fit.summarise(result, 100)
    assert result.mode == SUMMARY and fit.summarised == 1


def test_summarise_refuses_when_it_would_not_shrink() -> None:
    fit = fit_of(make_run([ev(1, RESULT, "short")]), 10**9)
    (item,) = fit.thread.items
    assert not fit.summarise(item)
    assert item.mode == FULL and fit.summarised == 0


def test_nothing_gives_way_within_the_budget() -> None:
    run = make_run([ev(s, RESULT, lines(s, 50)) for s in range(1, 6)])
    fit = fit_of(run, 10**9)
    before = [i.text for i in fit.thread.items]
    fit_to_budget(fit)
    assert [i.text for i in fit.thread.items] == before
    assert fit.summarised == 0 and fit.context_limit is None and not fit.clipped


def test_newest_result_cut_to_half_the_room_first() -> None:
    run = make_run([ev(1, RESULT, lines(1, 5)), ev(2, RESULT, lines(2, 400))])
    fit = fit_of(run, 0)
    room = 3000
    fit.budget = fit.fixed.cost + fit.context_cost(None) + room
    fit_to_budget(fit)
    older, newest = fit.thread.items
    assert newest.mode == SUMMARY and newest.cost <= room // 2
    assert older.mode == FULL  # it fits next to the newest result's half
    assert fit.fits()


def test_context_clipped_down_to_its_floor_only() -> None:
    run = AgentRun.model_validate(
        {
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {
                "agentRef": "sre",
                "input": {"task": "t", "context": {"blob": "y" * 20_000}},
            },
        }
    )
    fit = fit_of(run, 0)
    fit.budget = fit.total() - 1000
    fit_to_budget(fit)
    assert fit.clipped and fit.fits()
    assert fit.context_limit is not None and fit.context_limit >= CONTEXT_FLOOR_CHARS


def test_last_resort_summarises_the_newest_result_to_a_pointer_only() -> None:
    run = make_run([ev(1, RESULT, lines(1, 400))])
    fit = fit_of(run, 0)
    fit_to_budget(fit)
    (newest,) = fit.thread.items
    assert newest.mode == SUMMARY and newest.limit == 0
    assert not fit.fits()  # the fixed parts alone exceed a budget of 0
