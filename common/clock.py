import asyncio
import time
from collections.abc import Callable


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the envelope's `timestamp`."""
    return time.time_ns() // 1_000_000


def call_at_reached(loop: asyncio.AbstractEventLoop, deadline: float,
                    callback: Callable[[float], object]) -> asyncio.TimerHandle:
    """`callback(now)` at `deadline` on the loop's clock, with `now` never short of `deadline`.

    uvloop's clock moves in whole milliseconds, and it runs a timer with `loop.time()` up to one short
    of the timer's deadline. A callback that asked the clock whether its deadline had come would find
    "not yet", arm itself again for a deadline already past, and run on every turn of the loop until
    the clock ticked; told `now`, it finds its deadline reached on its first run."""
    return loop.call_at(deadline, lambda: callback(max(loop.time(), deadline)))
