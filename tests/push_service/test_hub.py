"""An edge session: its heartbeats (the first event, and one after every quiet interval: issue 17.2), and
how an idle stream batches what one turn of the loop gives it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import uvloop

from push_service.broker.base import Stopping
from push_service.broker.memory import MemoryBroker
from push_service.core.batching import BatchWindow
from push_service.core.publication import Publication, control_publication, make_publication
from push_service.hub import Applied, Deliver, EdgeSession, EdgeTooSlow, Heartbeat, Hub
from tests.support.counting import CallCounter
from tests.support.timing import timeout


async def test_a_stream_begins_with_a_heartbeat_and_beats_while_quiet():
    session = EdgeSession(BatchWindow(10, 0.1), 100, "e", heartbeat_interval=0.05)
    events = aiter(session.events())
    assert await anext(events) == Heartbeat(0.05)
    session.acknowledge(7)
    assert await anext(events) == Applied(7)  # what there is to say goes first
    assert await asyncio.wait_for(anext(events), timeout(5)) == Heartbeat(0.05)  # then, quiet: a heartbeat
    assert await asyncio.wait_for(anext(events), timeout(5)) == Heartbeat(0.05)
    session.close()
    await events.aclose()


async def test_a_busy_stream_sends_no_heartbeat_and_arms_its_timer_once_an_interval_not_once_a_batch():
    """While batches go out more often than the interval, no heartbeat; its timer is armed again only
    when it fires (a timeout per wait for the next batch cost a tenth of the service's own CPU)."""
    loop = asyncio.get_running_loop()
    interval = 0.5
    session = EdgeSession(BatchWindow(1, 0.1), 10_000, "e", heartbeat_interval=interval)  # a batch per message
    events = aiter(session.events())
    assert await anext(events) == Heartbeat(interval)
    arms = CallCounter(loop, "call_at")  # (a batch of one is handed over at once: no window timer)
    started = loop.time()
    for i in range(200):
        delivered = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)  # the writer waits, idle, for the next batch
        session.enqueue(_publication(i))
        assert await delivered == Deliver([_publication(i)])
    elapsed = loop.time() - started
    assert arms.calls <= 2 + elapsed / interval, (arms.calls, elapsed)
    assert await asyncio.wait_for(anext(events), timeout(5)) == Heartbeat(interval)  # quiet now
    session.close()
    await events.aclose()


async def test_no_heartbeats_when_the_interval_is_zero():
    session = EdgeSession(BatchWindow(10, 0.1), 100, "e")
    events = aiter(session.events())
    session.acknowledge(1)
    assert await anext(events) == Applied(1)
    session.close()
    assert [event async for event in events] == []


def _publication(i: int) -> Publication:
    return make_publication(topic="t", type_="tick", data=b"%d" % i, id_=f"m{i}", client_id="", retain=False, now_ms=1,
                            max_data_bytes=1000)


async def test_what_an_idle_stream_is_given_in_one_turn_leaves_as_one_batch():
    """A publish request of several messages is routed in one turn of the loop: its deliveries reach
    the edge in one write, not the first alone and the rest behind it."""
    session = EdgeSession(BatchWindow(10, 60.0), 100, "e")
    events = aiter(session.events())
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)  # the writer waits: the stream is idle
    for i in range(3):
        session.enqueue(_publication(i))
    event = await asyncio.wait_for(waiting, timeout(5))  # at once: the 60 s window is not waited for
    assert isinstance(event, Deliver) and [p.id for p in event.batch] == ["m0", "m1", "m2"]
    session.enqueue(_publication(3))
    event = await asyncio.wait_for(anext(events), timeout(5))
    assert isinstance(event, Deliver) and [p.id for p in event.batch] == ["m3"]  # a lone one, alone
    session.close()
    assert [event async for event in events] == []


async def test_an_applied_change_follows_the_deliveries_routed_before_it():
    """Retained state routed, then the subscribe's interest applied, in one turn: the edge must see
    the delivery first (the open batch is closed before the acknowledgement is queued)."""
    session = EdgeSession(BatchWindow(10, 60.0), 100, "e")
    events = aiter(session.events())
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    session.enqueue(_publication(0))
    session.acknowledge(9)
    session.enqueue(_publication(1))
    first = await asyncio.wait_for(waiting, timeout(5))
    assert isinstance(first, Deliver) and [p.id for p in first.batch] == ["m0"]
    assert await anext(events) == Applied(9)
    second = await asyncio.wait_for(anext(events), timeout(5))
    assert isinstance(second, Deliver) and [p.id for p in second.batch] == ["m1"]
    session.close()
    await events.aclose()


async def test_an_edge_with_too_many_bytes_unread_is_cut_off():
    """A delivery keeps its frame alive: an edge that stops reading held up to 100,000 of them, 6.5 GB
    of 64 KiB messages, whatever history kept."""
    session = EdgeSession(BatchWindow(2, 60.0, 1 << 20), 100, "e", max_pending_deliveries=1000,
                          max_pending_bytes=3000)
    events = aiter(session.events())
    big = [replace(_publication(i), frame=b"x" * 700) for i in range(6)]
    for publication in big[:4]:  # two batches of 1,400 bytes: 2,800, within the bound
        session.enqueue(publication)
    assert session.queued == 2
    session.enqueue(big[4])
    session.enqueue(big[5])  # a third would make 4,200
    assert session.queued == 0
    with pytest.raises(EdgeTooSlow, match=r"has 2 batches, 4 deliveries \(2800 bytes\) unread"):
        await anext(events)


async def test_an_edge_that_reads_gives_back_its_bytes():
    session = EdgeSession(BatchWindow(2, 60.0, 1 << 20), 100, "e", max_pending_bytes=3000)
    events = aiter(session.events())
    for round_ in range(5):  # 2,800 bytes queued each round, read each round: never cut off
        for i in range(4):
            session.enqueue(replace(_publication(4 * round_ + i), frame=b"x" * 700))
        for _ in range(2):
            event = await anext(events)
            assert isinstance(event, Deliver) and event.size == 1400
    session.close()


async def test_an_edge_with_too_many_deliveries_unread_is_cut_off():
    session = EdgeSession(BatchWindow(2, 60.0), 100, "e", max_pending_deliveries=5)
    events = aiter(session.events())
    for i in range(8):  # batches of 2 queue up while nobody reads: the third would pass 5 deliveries
        session.enqueue(_publication(i))
    session.acknowledge(3)  # after the cut-off: nothing more is queued
    assert session.queued == 0  # what it held is freed at once, not kept until the edge reads it
    with pytest.raises(EdgeTooSlow, match=r"has 2 batches, 4 deliveries \(\d+ bytes\) unread"):
        await anext(events)  # the stream ends unsent


def test_a_batch_leaves_on_the_first_run_of_its_timer_under_uvloop():
    """uvloop's clock moves in whole milliseconds, and it runs a timer with `loop.time()` up to one
    short of the timer's deadline. The window's timer still hands its batch over on that first run,
    instead of arming itself again for a past deadline and spinning until the clock ticks."""

    async def main() -> list[int]:
        # 2.3 ms: a deadline between two ticks of uvloop's clock, which it reaches only in part.
        session = EdgeSession(BatchWindow(100, 0.0023), 100, "e")  # not idle: nobody reads it yet
        timer = CallCounter(session, "_on_deadline")
        runs_per_batch = []
        for i in range(20):
            timer.calls, queued = 0, session.queued
            session.enqueue(_publication(i))
            async with asyncio.timeout(timeout(5)):
                while session.queued == queued:
                    await asyncio.sleep(0)
            runs_per_batch.append(timer.calls)
        session.close()
        return runs_per_batch

    assert uvloop.run(main()) == [1] * 20


def test_a_heartbeat_comes_on_the_first_run_of_its_timer_under_uvloop():
    """The same for the heartbeat's timer: due on its first run, not armed again until the clock ticks."""

    async def main() -> list[int]:
        session = EdgeSession(BatchWindow(10, 0.1), 100, "e", heartbeat_interval=0.0023)  # between two ticks
        timer = CallCounter(session, "_on_heartbeat")
        events = aiter(session.events())
        assert await anext(events) == Heartbeat(0.0023)
        runs_per_heartbeat = []
        for _ in range(20):
            timer.calls = 0
            assert await asyncio.wait_for(anext(events), timeout(5)) == Heartbeat(0.0023)
            runs_per_heartbeat.append(timer.calls)
        session.close()
        await events.aclose()
        return runs_per_heartbeat

    assert uvloop.run(main()) == [1] * 20


class SubscribeAwaited(MemoryBroker):
    """A broker whose subscribe takes effect when the test says (as Redis's does after a round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def subscribe(self, *channels: str) -> None:
        if channels:  # (an empty call is answered at once, as Redis's is)
            await self.answer.wait()
        await super().subscribe(*channels)


@contextlib.asynccontextmanager
async def awaited_subscribes() -> AsyncIterator[tuple[SubscribeAwaited, Hub]]:
    broker = SubscribeAwaited()
    hub = Hub(broker)
    await hub.start()
    try:
        yield broker, hub
    finally:
        await hub.close()


def adding_t(hub: Hub, session: EdgeSession) -> asyncio.Task[list[tuple[str, int, str]]]:
    return asyncio.create_task(hub.change_interest(session, add_topics=["t"]))


async def turns() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def first_and_waiting(hub: Hub, *names: str) -> tuple[list[EdgeSession], list[asyncio.Task[Any]]]:
    """The first edge's subscribe of `t` on its way (the broker not answering yet), the others' waiting for it."""
    sessions = [hub.open_session(name) for name in names]
    changes = [adding_t(hub, sessions[0])]
    await asyncio.sleep(0)
    changes += [adding_t(hub, session) for session in sessions[1:]]
    await turns()
    return sessions, changes


async def stream_ends(hub: Hub, session: EdgeSession, change: asyncio.Task[Any]) -> None:
    """What the servicer does when an edge's stream ends: its interest reader (this change) is cancelled,
    and its session closed."""
    change.cancel()
    await asyncio.gather(change, return_exceptions=True)
    await hub.close_session(session)
    await turns()


async def each_gets_the_next_publication(hub: Hub, *sessions: EdgeSession) -> None:
    await hub.publish(_publication(1))
    for session in sessions:
        event = await asyncio.wait_for(anext(aiter(session.events())), timeout(5))
        assert isinstance(event, Deliver) and [p.id for p in event.batch] == ["m1"]


async def test_a_second_edge_adding_a_topic_whose_subscribe_is_on_its_way_waits_for_it():
    """Its change is answered (and its subscribers acked) only once the broker delivers the topic: what
    is published after the answer reaches it too, never only the first edge."""
    async with awaited_subscribes() as (broker, hub):
        (first, second), (first_change, second_change) = await first_and_waiting(hub, "first", "second")
        assert not first_change.done() and not second_change.done()
        broker.answer.set()
        await asyncio.wait_for(asyncio.gather(first_change, second_change), timeout(5))
        await each_gets_the_next_publication(hub, first, second)


async def test_an_edge_whose_stream_ends_while_it_waits_for_anothers_subscribe_leaves_that_subscribe_alone():
    """The third edge's stream ends while it waits for the first's subscribe of `t` (its change cancelled):
    the first's subscribe and the second edge, waiting for the same, go on as if it had never come, and
    nothing of the topic's subscribing stays behind."""
    async with awaited_subscribes() as (broker, hub):
        (first, second, third), (first_change, second_change, third_change) = await first_and_waiting(
            hub, "first", "second", "third")
        await stream_ends(hub, third, third_change)
        assert not first_change.done() and not second_change.done()
        broker.answer.set()
        await asyncio.wait_for(asyncio.gather(first_change, second_change), timeout(5))
        assert hub._subscribing == {}
        await each_gets_the_next_publication(hub, first, second)


async def test_an_edge_waiting_for_a_subscribe_cut_short_subscribes_the_topic_itself():
    """The first edge's stream ends during its subscribe of `t` (cancelled before the broker applied it):
    the second edge, which waited for that subscribe, is answered only once the broker has `t` for it."""
    async with awaited_subscribes() as (broker, hub):
        (first, second), (first_change, second_change) = await first_and_waiting(hub, "first", "second")
        await stream_ends(hub, first, first_change)
        assert not second_change.done()  # its own subscribe of `t` waits for the broker's answer
        broker.answer.set()
        await asyncio.wait_for(second_change, timeout(5))
        assert hub._subscribing == {}
        await each_gets_the_next_publication(hub, second)


async def test_the_retained_state_an_edge_gets_for_declaring_a_topic_is_marked_a_replay():
    """push.v1.Delivery.replay: the state sent again because the edge added the topic tells the state,
    not where the topic stands (the edge does not place the topic by it); a retained message published
    afterwards is no replay."""
    hub = Hub(MemoryBroker())
    await hub.start()
    try:
        await hub.publish(replace(_publication(0), retain=True))
        session = hub.open_session("edge")
        await hub.change_interest(session, add_topics=["t"])
        await hub.publish(replace(_publication(1), retain=True))
        events, delivered = aiter(session.events()), []
        while len(delivered) < 2:
            event = await asyncio.wait_for(anext(events), timeout(5))
            assert isinstance(event, Deliver)
            delivered += [(p.id, p.retain, p.replay) for p in event.batch]
        assert delivered == [("m0", True, True), ("m1", True, False)]
        session.close()
        await events.aclose()
    finally:
        await hub.close()


class PublishAwaited(MemoryBroker):
    """A broker whose publish completes when the test says (as Redis's does after a round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def publish(self, publication: Publication, idempotency_key: str = "") -> Any:
        await self.answer.wait()
        return await super().publish(publication, idempotency_key)


async def test_a_stopping_hub_refuses_publishes_and_drains_its_edges_only_after_those_it_took():
    """A publish answered while the service stopped, routed to an edge stream already drained, was lost
    (with the memory engine for good: the publisher does not send an answered message again)."""
    broker = PublishAwaited()
    hub = Hub(broker)
    await hub.start()
    try:
        session = hub.open_session("e")
        await hub.change_interest(session, add_topics=["t"])
        taken = asyncio.create_task(hub.publish(_publication(1)))
        await turns()
        stopping = asyncio.create_task(hub.stop_publishing(timeout(5)))
        await turns()
        with pytest.raises(Stopping, match=r"^the push service is stopping$"):
            await hub.publish(_publication(2))
        with pytest.raises(Stopping):
            await hub.signal(control_publication("~e1.s1", ["{}"], 1))
        lane = hub.lane()
        assert [type(o) for o in await lane.publish_many([(_publication(3), ""), (_publication(4), "")])] == [Stopping] * 2
        await turns()
        assert not stopping.done()  # it waits for the publish it took
        broker.answer.set()
        assert (await taken).offset == 1 and (await stopping) is None
        hub.drain()
        events = [event async for event in session.events()]
        assert [[p.id for p in e.batch] for e in events] == [["m1"]]
    finally:
        await hub.close()
