"""Giving memory back after a burst: malloc_trim soon after steps ran, at most once a while."""

from __future__ import annotations

import asyncio

from agentrun.operator.memory import Trimmer, malloc_trim


def test_a_burst_of_steps_is_followed_by_one_trim_and_no_more_without_steps() -> None:
    async def scenario() -> list[int]:
        calls: list[int] = []
        t = Trimmer(lambda: calls.append(1), interval=0.05)
        seen = []
        for _ in range(100):  # a burst: one trim per interval, not one per step
            t.stepped()
        seen.append(len(calls))
        await asyncio.sleep(0.1)
        seen.append(len(calls))
        await asyncio.sleep(0.1)
        seen.append(len(calls))  # nothing ran since: no other trim
        t.stepped()
        await asyncio.sleep(0.1)
        seen.append(len(calls))
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1, 2]


def test_without_the_c_library_trim_nothing_is_scheduled() -> None:
    async def scenario() -> int:
        t = Trimmer(None, interval=0.01)
        t.stepped()
        await asyncio.sleep(0.05)
        return t.trims

    assert asyncio.run(scenario()) == 0


def test_the_c_library_trim_is_found_on_glibc() -> None:
    trim = malloc_trim()
    assert trim is not None  # the image (python:3.11-slim-bookworm) and this machine: glibc
    assert trim() in (0, 1)
