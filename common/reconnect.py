"""One reconnect loop for every long-lived link (the edge's push stream, the stream publisher, the Redis
engine's subscriber): run an attempt, and when it ends, wait a backoff delay and run it again.

The backoff starts over only when an attempt says it truly works (`up()`), not when it merely
connected: a publisher whose stream connects but whose messages the broker keeps refusing must slow
down, not restart its stream ten times a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from .backoff import Backoff

Attempt = Callable[[Callable[[], None]], Awaitable[None]]


async def reconnect_forever(attempt: Attempt, backoff: Backoff, log: logging.Logger, what: str,
                            expected: tuple[type[Exception], ...] = ()) -> NoReturn:
    """Run `attempt(up)` again and again until cancelled. Errors of the `expected` types are logged
    as a warning (a link lost), others with their traceback (a bug)."""
    while True:
        try:
            await attempt(backoff.reset)
            log.warning("%s ended by the server", what)
        except asyncio.CancelledError:
            raise
        except expected as exc:
            log.warning("%s lost: %s", what, describe(exc))
        except Exception:
            log.exception("%s failed", what)
        delay = backoff.next_delay()
        log.info("%s: again in %.2fs", what, delay)
        await asyncio.sleep(delay)


def describe(exc: BaseException) -> str:
    """A gRPC error as `CODE details`, anything else as itself."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code().name} {details()}"
    return str(exc)
