"""An edge session's heartbeats: the first event, and one after every quiet interval (issue 17.2)."""

from __future__ import annotations

import asyncio

from push_service.core.batching import BatchWindow
from push_service.hub import Applied, EdgeSession, Heartbeat


async def test_a_stream_begins_with_a_heartbeat_and_beats_while_quiet():
    session = EdgeSession(BatchWindow(10, 0.1), 100, "e", heartbeat_interval=0.05)
    events = aiter(session.events())
    assert await anext(events) == Heartbeat(0.05)
    session.acknowledge(7)
    assert await anext(events) == Applied(7)  # what there is to say goes first
    assert await asyncio.wait_for(anext(events), 5) == Heartbeat(0.05)  # then, quiet: a heartbeat
    assert await asyncio.wait_for(anext(events), 5) == Heartbeat(0.05)
    session.close()
    await events.aclose()


async def test_no_heartbeats_when_the_interval_is_zero():
    session = EdgeSession(BatchWindow(10, 0.1), 100, "e")
    events = aiter(session.events())
    session.acknowledge(1)
    assert await anext(events) == Applied(1)
    session.close()
    assert [event async for event in events] == []
