"""`call_at_reached`: a timer whose callback is told a time never short of its deadline."""

from __future__ import annotations

import asyncio
import time

import uvloop

from common.clock import call_at_reached
from tests.support.timing import timeout


def test_the_callback_is_told_its_deadline_is_reached_though_uvloop_runs_it_early():
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        seen: list[bool] = []
        for _ in range(20):
            deadline = loop.time() + 0.0023  # between two ticks of uvloop's millisecond clock
            told: asyncio.Future[tuple[float, float]] = loop.create_future()
            call_at_reached(loop, deadline, lambda now, told=told: told.set_result((now, loop.time())))
            async with asyncio.timeout(timeout(5)):
                now, clock = await told
            # `clock` is read after `now` was (the same millisecond, or a later one if the process was
            # descheduled between the two reads): a clock still short of the deadline means `now` is
            # the deadline itself; otherwise `now` lies between the deadline and that clock.
            seen.append(now == deadline if clock < deadline else deadline <= now <= clock)
        return seen

    assert uvloop.run(main()) == [True] * 20


def test_a_callback_run_late_is_told_the_clock_not_its_deadline():
    """A timer run well after its deadline is told the clock: the time it runs, not the deadline."""
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.002
        told: asyncio.Future[float] = loop.create_future()
        call_at_reached(loop, deadline, told.set_result)
        block_the_loop(0.02)  # the timer falls due meanwhile and runs after
        return deadline, await told

    deadline, now = uvloop.run(main())
    assert now >= deadline + 0.015


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)
