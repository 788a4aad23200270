"""Fitting a request into the Agent's `contextBudgetTokens` (pure; see `tokens.estimate`).

While over the budget, in this order: the newest tool result is cut to half the room if it
alone would take more; older tool results are summarised oldest first; the prefetched
evidence is summarised; the oldest thread events are omitted behind a count; the prefetched
evidence is omitted; the newest tool result is shortened to a floor; the input context is
clipped to a floor; then, as a last resort, everything that can give way does. The newest
tool result stays whole as long as anything else can give way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agentrun.api import EventType
from agentrun.llm.blocks import FULL, LINE, OMITTED, SUMMARY, SUMMARY_CHARS
from agentrun.llm.sections import Fixed, Item, Section, context_block
from agentrun.llm.tokens import estimate

NEWEST_FLOOR_CHARS = 800  # the newest result is shortened below this only as a last resort
CONTEXT_FLOOR_CHARS = 2000  # likewise the input context


@dataclass
class Fit:
    """One request being fitted: its parts, what was given up so far, and its cost."""

    budget: int
    fixed: Fixed
    prefetch: Section
    thread: Section
    context_limit: int | None = None  # characters of the input context kept (None: all)
    clipped: bool = False
    summarised: int = 0
    newest: int | None = field(init=False)  # index of the newest tool result in the thread
    tail: int = field(init=False)  # the thread from here on is omitted only as a last resort
    _context_costs: dict[int | None, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        items = self.thread.items
        results = [n for n, i in enumerate(items) if i.event.type is EventType.TOOL_RESULT]
        self.newest = results[-1] if results else None
        # The newest result, the call that produced it and everything after it.
        self.tail = len(items) - 1
        if self.newest is not None:
            self.tail = self.newest
            if self.newest > 0 and items[self.newest - 1].event.type is EventType.TOOL_CALL:
                self.tail = self.newest - 1

    def context_cost(self, limit: int | None) -> int:
        if limit not in self._context_costs:
            block = context_block(self.fixed.context_yaml, limit)
            self._context_costs[limit] = estimate(block) + 1 if block else 0
        return self._context_costs[limit]

    def total(self) -> int:
        """An upper bound of the request's token estimate as it stands."""
        sections = self.thread.cost() + 1
        if self.prefetch.items:
            sections += self.prefetch.cost() + 1
        return self.fixed.cost + self.context_cost(self.context_limit) + sections

    def fits(self) -> bool:
        return self.total() <= self.budget

    def summarise(self, item: Item, limit: int = SUMMARY_CHARS) -> bool:
        """Summarises one block if that makes it smaller; True when it did."""
        if not item.visible or item.event.type not in (EventType.TOOL_RESULT, EventType.ERROR):
            return False
        before, was = item.cost, item.mode
        item.set(SUMMARY, limit)
        if item.cost >= before:
            item.set(was, item.limit)
            return False
        if was != SUMMARY:
            self.summarised += 1
        return True


def fit_to_budget(fit: Fit) -> None:
    """Gives way, step by step, until the request fits or nothing more can give way."""
    for step in _STEPS:
        if not fit.fits():
            step(fit)


def _newest_within_half(fit: Fit) -> None:
    # If the newest result alone takes more than half of the room nothing else could stay.
    if fit.newest is not None:
        room = fit.budget - fit.fixed.cost - fit.context_cost(None)
        _shrink(fit, fit.thread.items[fit.newest], NEWEST_FLOOR_CHARS, target=room // 2)


def _summarise_older_results(fit: Fit) -> None:
    for n, item in enumerate(fit.thread.items):
        if n != fit.newest and item.mode == FULL and item.event.type is EventType.TOOL_RESULT:
            fit.summarise(item)
            if fit.fits():
                return


def _summarise_prefetch(fit: Fit) -> None:
    for item in fit.prefetch.items:
        if item.mode == FULL:
            fit.summarise(item)
            if fit.fits():
                return


def _omit_oldest(fit: Fit) -> None:
    _omit(fit, fit.thread.items[: fit.tail])


def _omit_prefetch(fit: Fit) -> None:
    _omit(fit, fit.prefetch.items)


def _omit(fit: Fit, items: list[Item]) -> None:
    for item in items:
        if item.visible:
            item.set(OMITTED)
            if fit.fits():
                return


def _shorten_newest(fit: Fit) -> None:
    if fit.newest is not None:
        _shrink(fit, fit.thread.items[fit.newest], NEWEST_FLOOR_CHARS)


def _clip_context(fit: Fit) -> None:
    full = len(fit.fixed.context_yaml)
    if full <= CONTEXT_FLOOR_CHARS:
        return
    fit.clipped = True
    limit = fit.context_limit = full
    while not fit.fits() and limit > CONTEXT_FLOOR_CHARS:
        limit = fit.context_limit = max(CONTEXT_FLOOR_CHARS, limit * 3 // 4)


def _last_resort(fit: Fit) -> None:
    tail = fit.thread.items[fit.tail :]
    for item in tail:
        if item.event.type is EventType.ERROR and item.mode == FULL:
            item.set(LINE)
    if fit.newest is not None:
        _shrink(fit, fit.thread.items[fit.newest], 0)
    for item in tail[:-1]:
        if not fit.fits():
            item.set(OMITTED)
    if not fit.fits() and fit.fixed.context_yaml:
        fit.clipped = True
        fit.context_limit = 0


def _summarise_last(fit: Fit) -> None:
    items = fit.thread.items
    if items and items[-1].visible:
        fit.summarise(items[-1], 0)


_STEPS: tuple[Callable[[Fit], None], ...] = (
    _newest_within_half,
    _summarise_older_results,
    _summarise_prefetch,
    _omit_oldest,
    _omit_prefetch,
    _shorten_newest,
    _clip_context,
    _last_resort,
    _summarise_last,
)


def _shrink(fit: Fit, item: Item, floor: int, target: int | None = None) -> None:
    """Shortens one result step by step, down to `floor` characters, until the request fits
    (or, given a `target`, until the result costs at most that)."""
    limit = len(item.event.content)
    while not _small_enough(fit, item, target) and limit > floor:
        limit = max(floor, limit * 2 // 3)
        fit.summarise(item, limit)


def _small_enough(fit: Fit, item: Item, target: int | None) -> bool:
    return fit.fits() if target is None else item.cost <= target
