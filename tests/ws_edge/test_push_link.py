"""The push link's interest bookkeeping, without a network: what travels in one request, under which
sequence, and which futures its acknowledgement resolves; and its watchdog, on a stream stood in for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from tests.support.timing import timeout
from ws_edge import push_link
from ws_edge.push_link import PushLink, StreamSilent

# Longer than the edge's 5 ms, so that "not yet sent" holds on a loaded machine too (a process
# descheduled for 5 ms between two lines would see the interval already over).
INTERVAL = 0.2


def connected_link() -> tuple[PushLink, asyncio.Queue]:
    link = PushLink("unused:1", lambda address: None, lambda deliveries: None, lambda: ([], [], []),  # type: ignore[arg-type, return-value]
                    flush_interval=INTERVAL)
    requests: asyncio.Queue = asyncio.Queue()
    link._changes = requests  # as while its stream is up
    return link, requests


async def test_changes_until_the_flush_travel_as_one_request_and_share_one_future():
    link, requests = connected_link()
    first = link.change(add_client_ids=["a"])
    second = link.change(add_client_ids=["b"], add_topics=["t"])
    assert first is second
    await asyncio.sleep(0)  # after a quiet spell: sent at the end of the turn
    request = requests.get_nowait()
    assert (list(request.add_client_ids), list(request.add_topics), request.sequence) == (["a", "b"], ["t"], 1)
    assert requests.empty()
    later = link.change(add_client_ids=["c"])  # the next turn: a new request, a new sequence
    assert later is not first
    await asyncio.sleep(0)
    assert requests.empty()  # within the interval after the last request: it waits, gathering more
    also = link.change(add_client_ids=["d"])
    assert also is later
    await asyncio.sleep(INTERVAL * 2)
    request = requests.get_nowait()
    assert (list(request.add_client_ids), request.sequence) == (["c", "d"], 2)
    assert requests.empty()
    link._confirm(1)
    assert first.done() and not later.done()
    link._confirm(2)
    assert later.done()
    await asyncio.sleep(INTERVAL * 2)
    link.change(remove_client_ids=["a"])  # quiet again: no wait
    await asyncio.sleep(0)
    assert requests.get_nowait().sequence == 3


async def test_a_key_changing_direction_within_a_turn_splits_the_request_and_the_futures():
    link, requests = connected_link()
    added = link.change(add_topics=["t"])
    removed = link.change(remove_topics=["t"])
    assert removed is not added
    await asyncio.sleep(INTERVAL * 2)
    first, second = requests.get_nowait(), requests.get_nowait()
    assert (list(first.add_topics), first.sequence) == (["t"], 1)
    assert (list(second.remove_topics), second.sequence) == (["t"], 2)
    link._confirm(1)
    assert added.done() and not removed.done()  # the removal is not applied before its own answer


# --- the watchdog ---------------------------------------------------------------------------------

# Against responses every 50 ms and ticks every 0.2 s: a pause the machine makes on its own (under
# STALL) cannot reach it.
SILENCE = 0.8


def heard_stream(link: PushLink, responses: int | None = None):
    """In place of the gRPC stream: a response every 50 ms, handed to the loop a few turns after it is
    due (as gRPC's poller thread does); quiet after `responses` of them."""
    async def stream(up) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        heard = 0
        while True:
            await asyncio.sleep(0.05)
            for _ in range(3):
                await asyncio.sleep(0)
            if responses is None or heard < responses:
                heard += 1
                link._heard = loop.time()
    return stream


def not_running(seconds: float) -> None:
    """The loop does not run (as when the process is stopped or starved): its timers fall due meanwhile,
    and the stream's answers reach it a few turns after they do."""
    time.sleep(seconds)


def watched_link(responses: int | None = None) -> PushLink:
    link = PushLink("unused:1", lambda address: None, lambda deliveries: None, lambda: ([], [], []),  # type: ignore[arg-type, return-value]
                    silence_timeout=SILENCE)
    link._stream = heard_stream(link, responses)  # type: ignore[method-assign]
    return link


async def test_a_stall_of_this_process_longer_than_the_limit_is_not_the_replicas_silence():
    link = watched_link()
    watchdog = asyncio.create_task(link._watched(lambda: None))
    await asyncio.sleep(0.2)
    not_running(3 * SILENCE)
    await asyncio.sleep(2 * SILENCE)
    assert not watchdog.done()
    watchdog.cancel()
    await asyncio.gather(watchdog, return_exceptions=True)


async def test_a_replica_silent_across_a_stall_is_still_given_up_one_limit_later():
    link = watched_link(responses=1)
    watchdog = asyncio.create_task(link._watched(lambda: None))
    await asyncio.sleep(0.2)
    not_running(3 * SILENCE)
    loop = asyncio.get_running_loop()
    resumed = loop.time()  # (the watchdog's own clock)
    with pytest.raises(StreamSilent):
        await asyncio.wait_for(watchdog, timeout(10 * SILENCE))
    assert loop.time() - resumed >= SILENCE  # the grace: a whole limit after it ran again


async def test_a_silent_replica_is_given_up_after_its_limit():
    link = watched_link(responses=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StreamSilent, match="said nothing for"):
        await asyncio.wait_for(link._watched(lambda: None), timeout(10 * SILENCE))
    assert link._heard - started >= 0.04 and loop.time() - link._heard >= SILENCE  # heard once (at 50 ms), then silent


class HungReplica(pb_grpc.PushServiceServicer):
    """A replica that takes calls and never answers them (stopped, or cut off without a reset)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def History(self, request, context):  # type: ignore[no-untyped-def]
        self.called.set()
        await asyncio.Event().wait()


class AnsweringReplica(pb_grpc.PushServiceServicer):
    def __init__(self) -> None:
        self.requests: list[pb.HistoryRequest] = []

    async def History(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        return pb.HistoryResponse(publications=[pb.Delivery(topic="t", offset=4, epoch="e")], offset=4, epoch="e",
                                  recovered=True)


@contextlib.asynccontextmanager
async def linked(*replicas: pb_grpc.PushServiceServicer) -> AsyncIterator[PushLink]:
    """A push link to these replicas, each a real in-process gRPC server, their channels open (no stream)."""
    servers = []
    for replica in replicas:
        server = grpc.aio.server()
        pb_grpc.add_PushServiceServicer_to_server(replica, server)
        servers.append((server, f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"))
        await server.start()
    link = PushLink(",".join(address for _, address in servers), grpc.aio.insecure_channel,  # type: ignore[arg-type]
                    lambda deliveries: None, lambda: ([], [], []))
    for index in range(len(replicas)):
        link._open_channel(index)
    try:
        yield link
    finally:
        await link.close()
        for server, _ in servers:
            await server.stop(None)


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_history_read_on_a_silent_replicas_channel_is_answered_when_the_channel_is_replaced(
        monkeypatch: pytest.MonkeyPatch, replicas: int):
    """It is read again at once on the channel the link moved to (not when its call reaches its
    deadline: here 30 s with two replicas), and answered there. With the one replica, silent still,
    the read again there ends "unavailable" at its deadline: an answer all the same."""
    monkeypatch.setattr(push_link, "UNARY_TIMEOUT", timeout(30) if replicas == 2 else timeout(3))
    hung, answering = HungReplica(), AnsweringReplica()
    async with linked(hung, *([answering] if replicas == 2 else [])) as link:
        reading = asyncio.create_task(link.history("t", (3, "e")))
        await asyncio.wait_for(hung.called.wait(), timeout(5))
        assert not reading.done()  # the call is still on the replica's channel
        link._next_replica(True)  # given up for its silence: the channel replaced, the old one closed
        answer = await asyncio.wait_for(reading, timeout(10))
        if replicas == 2:
            assert (answer.recovered, answer.offset, [d.offset for d in answer.publications]) == (True, 4, [4])
            assert [(r.topic, r.since_offset, r.epoch) for r in answering.requests] == [("t", 3, "e")]
        else:
            assert (answer.recovered, answer.reason) == (False, "history unavailable")


class RefusingReplica(pb_grpc.PushServiceServicer):
    """A replica going away: its calls are refused as unavailable."""

    async def History(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")


async def test_a_read_refused_as_unavailable_is_read_again_where_the_link_moves_next(monkeypatch: pytest.MonkeyPatch):
    """A replica that went away fails the read a little before the stream: the read waits for the
    move, and is answered by the next replica. (Its wait is made long here, so that a process starved
    between the failure and the move cannot see the wait run out first.)"""
    monkeypatch.setattr(push_link, "MOVE_WAIT", timeout(30))
    refusing, answering = RefusingReplica(), AnsweringReplica()
    async with linked(refusing, answering) as link:
        failed = asyncio.Event()
        read = link._read_history

        async def reading(*args):  # type: ignore[no-untyped-def]
            try:
                return await read(*args)
            except grpc.aio.AioRpcError:
                failed.set()
                raise

        link._read_history = reading  # type: ignore[method-assign]
        answered = asyncio.create_task(link.history("t", (3, "e")))
        await asyncio.wait_for(failed.wait(), timeout(5))
        await asyncio.sleep(0.1)
        assert not answered.done()  # it waits for the move (before the wait: answered unavailable)
        link._next_replica(False)
        answer = await asyncio.wait_for(answered, timeout(5))
        assert (answer.recovered, answer.offset) == (True, 4) and len(answering.requests) == 1


async def test_a_read_out_when_the_link_closes_is_answered_unavailable():
    """Not read again elsewhere, and not left to end its caller with the channel's cancellation."""
    hung = HungReplica()
    async with linked(hung) as link:
        reading = asyncio.create_task(link.history("t", (3, "e")))
        await asyncio.wait_for(hung.called.wait(), timeout(5))
        await link.close()
        answer = await asyncio.wait_for(reading, timeout(5))
        assert (answer.recovered, answer.reason) == (False, "history unavailable")
