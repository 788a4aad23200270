"""Giving memory back after a burst: malloc_trim once no step is in flight."""

from __future__ import annotations

import asyncio

from agentrun.operator.memory import Trimmer, malloc_trim


def test_trims_once_a_burst_of_steps_has_ended_and_not_while_one_runs() -> None:
    async def scenario() -> list[int]:
        calls: list[int] = []
        t = Trimmer(lambda: calls.append(1), quiet=0.02, interval=0.0)
        seen = []
        t.busy()
        t.busy()
        t.idle()
        await asyncio.sleep(0.05)
        seen.append(len(calls))  # one step still in flight: nothing
        t.idle()
        await asyncio.sleep(0.05)
        seen.append(len(calls))  # all ended, quiet: one trim
        await asyncio.sleep(0.05)
        seen.append(len(calls))  # no step since: no other trim
        t.busy()
        t.idle()
        t.busy()  # a step starts within the quiet time: the trim waits for it
        await asyncio.sleep(0.05)
        seen.append(len(calls))
        t.idle()
        await asyncio.sleep(0.05)
        seen.append(len(calls))
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1, 1, 2]


def test_trims_at_most_once_per_interval() -> None:
    async def scenario() -> tuple[int, int]:
        calls: list[int] = []
        t = Trimmer(lambda: calls.append(1), quiet=0.01, interval=0.3)
        for _ in range(3):
            t.busy()
            t.idle()
            await asyncio.sleep(0.05)
        early = len(calls)
        await asyncio.sleep(0.4)
        return early, len(calls)

    assert asyncio.run(scenario()) == (1, 2)


def test_the_c_library_trim_is_found_on_glibc_and_returns_memory() -> None:
    trim = malloc_trim()
    assert trim is not None  # the image and this machine run glibc
    assert trim() in (0, 1)
