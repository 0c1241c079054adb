import asyncio
import logging
import random

import pytest

from common.backoff import Backoff
from common.reconnect import reconnect_forever


async def test_the_backoff_grows_until_an_attempt_says_it_is_up(caplog: pytest.LogCaptureFixture):
    backoff = Backoff(initial=0.001, maximum=0.004, rng=random.Random(1))
    attempts: list[int] = []

    async def attempt(up):  # type: ignore[no-untyped-def]
        attempts.append(backoff.attempt)
        if len(attempts) == 4:
            up()  # this one worked, then was lost
        if len(attempts) == 6:
            raise asyncio.CancelledError
        raise ConnectionError("refused")

    with caplog.at_level(logging.INFO, logger="t"), pytest.raises(asyncio.CancelledError):
        await reconnect_forever(attempt, backoff, logging.getLogger("t"), "link", expected=(ConnectionError,))
    assert attempts == [0, 1, 2, 3, 1, 2]  # after `up()` the delays start over
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][:1] == ["link lost: refused"]


async def test_an_attempt_that_returns_was_ended_by_the_other_side(caplog: pytest.LogCaptureFixture):
    calls = 0

    async def attempt(up):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise asyncio.CancelledError

    with caplog.at_level(logging.WARNING, logger="t"), pytest.raises(asyncio.CancelledError):
        await reconnect_forever(attempt, Backoff(initial=0.001), logging.getLogger("t"), "push stream to x")
    assert [r.getMessage() for r in caplog.records] == ["push stream to x ended by the server"]


async def test_an_unexpected_error_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture):
    calls = 0

    async def attempt(up):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise asyncio.CancelledError
        raise KeyError("bug")

    with caplog.at_level(logging.ERROR, logger="t"), pytest.raises(asyncio.CancelledError):
        await reconnect_forever(attempt, Backoff(initial=0.001), logging.getLogger("t"), "link")
    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [("link failed", True)]
