"""A session's wake-up runs once at the time the session asked for, under uvloop too, whose timers run
up to a millisecond early (its clock moves in whole milliseconds)."""

from __future__ import annotations

import asyncio
import random
import time

import uvloop

from tests.support.timing import timeout
from ws_edge.session_driver import SessionDriver


class WakeAt:
    """A stand-in session that wants one wake-up at `at` (wall-clock time), and none once it has had it."""

    accepting = False
    closed = False

    def __init__(self, at: float) -> None:
        self.at = at
        self.ticks: list[float] = []

    def tick(self, now: float, wall: float) -> None:
        self.ticks.append(wall)

    def effects(self) -> list[object]:
        return []

    def next_wakeup(self) -> float | None:
        return None if any(wall >= self.at for wall in self.ticks) else self.at


def test_a_wakeup_ticks_the_session_once_at_the_time_it_asked_for_under_uvloop():
    async def one_wakeup() -> list[float]:
        session = WakeAt(time.time() + 0.002 + random.random() / 1000)  # between two ticks of uvloop's clock
        driver = object.__new__(SessionDriver)  # the wake-up alone: no edge, no socket
        driver.session, driver._wakeup_at, driver._wakeup, driver._wake = session, None, None, asyncio.Event()
        driver._set_wakeup(session.next_wakeup())
        async with asyncio.timeout(timeout(5)):
            while not session.ticks or session.ticks[-1] < session.at:
                await asyncio.sleep(0)
        await asyncio.sleep(0.005)  # nothing more comes
        assert session.ticks[-1] >= session.at
        return session.ticks

    async def main() -> list[int]:
        return [len(await one_wakeup()) for _ in range(30)]

    assert uvloop.run(main()) == [1] * 30
