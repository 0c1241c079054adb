"""`StreamPublisher`'s flow control over a real gRPC stream: at most `max_in_flight` requests are
unanswered, and what is submitted meanwhile leaves as one request once an answer comes.

The peer is a scripted PushService that holds each answer until the test releases it. The real push
service answers within a turn of its loop, too soon to see what the publisher holds back; the whole
path against it is covered by the integration tests (tests/integration/test_delivery.py and others)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from pushclient import PushClient
from pushclient.client import StreamPublisher, outgoing
from tests.support.timing import timeout

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class HeldAnswers(pb_grpc.PushServiceServicer):
    """Answers each request when released; a message whose id starts with "bad" is refused."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[list[str]] = asyncio.Queue()  # each request's message ids, as read
        self.answered = 0  # answers sent so far
        self.read_after: list[int] = []  # per request read, how many answers had been sent then
        self._release: asyncio.Queue[None] = asyncio.Queue()

    def answer_one(self) -> None:
        self._release.put_nowait(None)

    async def PublishStream(self, request_iterator: AsyncIterator[pb.PublishStreamRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PublishStreamResponse]:
        read: asyncio.Queue[pb.PublishStreamRequest] = asyncio.Queue()

        async def reader() -> None:  # requests are read as they come, answered when released
            async for request in request_iterator:
                self.read_after.append(self.answered)
                self.requests.put_nowait([m.id for m in request.messages])
                read.put_nowait(request)

        task = asyncio.create_task(reader())
        try:
            while True:
                request = await read.get()
                await self._release.get()
                self.answered += 1
                yield pb.PublishStreamResponse(sequence=request.sequence, results=[
                    pb.PublishResult(error_code=INVALID_ARGUMENT, error_message="refused") if m.id.startswith("bad")
                    else pb.PublishResult(id=m.id, timestamp_ms=1) for m in request.messages])
        finally:
            task.cancel()


@pytest.fixture
async def held() -> AsyncIterator[tuple[HeldAnswers, PushClient]]:
    servicer = HeldAnswers()
    server = grpc.aio.server()
    pb_grpc.add_PushServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = PushClient(f"127.0.0.1:{port}")
    try:
        yield servicer, client
    finally:
        await client.close()
        await server.stop(0)


async def next_request(servicer: HeldAnswers) -> list[str]:
    return await asyncio.wait_for(servicer.requests.get(), timeout(10))


def submit(publisher, *ids: str, data: object = None) -> None:  # type: ignore[no-untyped-def]
    for id_ in ids:
        publisher.submit(outgoing("t", "tick", {"id": id_} if data is None else data, id=id_))


async def started(servicer: HeldAnswers, client: PushClient, **options: int) -> StreamPublisher:
    """A started publisher whose first message, "m1", is on the wire and unanswered (a lone message
    leaves at once)."""
    publisher = client.stream_publisher(**options)
    publisher.start()
    submit(publisher, "m1")
    assert await next_request(servicer) == ["m1"]
    return publisher


async def test_what_is_submitted_while_a_request_is_unanswered_leaves_as_one_request(held):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = await started(servicer, client)  # max_in_flight=1
    submit(publisher, "m2", "m3", "m4")
    servicer.answer_one()
    assert await next_request(servicer) == ["m2", "m3", "m4"]
    assert servicer.read_after == [0, 1], "nothing more went out before the answer"
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert (publisher.accepted, publisher.requests, publisher.buffered) == (4, 2, 0)
    submit(publisher, "m5")  # answered, so idle again: the next message leaves at once
    assert await next_request(servicer) == ["m5"]
    servicer.answer_one()
    await publisher.close()


async def test_max_in_flight_requests_go_out_before_any_answer(held):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = await started(servicer, client, max_in_flight=2)
    submit(publisher, "m2")
    assert await next_request(servicer) == ["m2"]  # the second in flight: not held
    submit(publisher, "m3", "m4")
    servicer.answer_one()
    assert await next_request(servicer) == ["m3", "m4"]
    assert servicer.read_after == [0, 0, 1], "the third went out only after an answer"
    servicer.answer_one()
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert (publisher.accepted, publisher.requests) == (4, 3)
    await publisher.close()


def test_max_in_flight_is_at_least_one():
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamPublisher(None, max_in_flight=0)  # type: ignore[arg-type]


async def test_a_request_stays_about_one_mebibyte_however_much_waits(held):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = await started(servicer, client)
    submit(publisher, "big1", "big2", "big3", data="x" * 600_000)  # 200 would fit the count: 1.8 MB would not
    servicer.answer_one()
    for expected in (["big1"], ["big2"], ["big3"]):
        assert await next_request(servicer) == expected
        servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert (publisher.accepted, publisher.requests) == (4, 4)
    await publisher.close()


async def test_answers_stay_matched_when_a_full_buffer_drops_a_message_in_flight(held):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = await started(servicer, client, max_buffer=3)
    submit(publisher, "bad-b", "c")
    servicer.answer_one()
    assert await next_request(servicer) == ["bad-b", "c"]
    submit(publisher, "d", "e")  # the buffer holds 3: "bad-b", in flight, is dropped
    assert publisher.dropped == 1
    servicer.answer_one()  # "bad-b" refused, "c" accepted: c's answer is the second result, not the first
    assert await next_request(servicer) == ["d", "e"]
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert (publisher.accepted, publisher.rejected, publisher.buffered) == (4, 0, 0)
    await publisher.close()


def progress(id_: str, task: str = "t1"):  # type: ignore[no-untyped-def]
    return outgoing("task:progress", "task_progress", {"task_id": task}, id=id_, conflation_key=task)


def status(id_: str):  # type: ignore[no-untyped-def]
    return outgoing("task:status", "task_status", {"status": "running"}, id=id_)


async def test_a_full_buffer_gives_up_superseded_progress_and_keeps_every_status(held, caplog):  # type: ignore[no-untyped-def]
    # The review's case in small: statuses used to go with the rest, oldest first, while a flood of
    # progress filled the buffer.
    servicer, client = held
    publisher = await started(servicer, client, max_buffer=4)
    for message in (status("s1"), progress("p1"), progress("p2"), progress("p3"), status("s2"), progress("p4")):
        publisher.submit(message)
    servicer.answer_one()
    assert await next_request(servicer) == ["s1", "s2", "p4"]
    # p2, then p3, replaced by a newer step of the same task; s2 took the place of the oldest step, p1.
    assert (publisher.conflated, publisher.dropped) == (2, 1)
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert (publisher.accepted, publisher.buffered, publisher.buffered_bytes) == (4, 0, 0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pushclient"] == [
        ("WARNING", "publish buffer full (4): oldest message dropped of those with a conflation key "
                    "(task:progress task_progress, key t1; 1 dropped so far)")]
    await publisher.close()


async def test_a_status_goes_only_when_nothing_else_can_and_that_is_an_error(held, caplog):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = await started(servicer, client, max_buffer=2)
    publisher.submit(status("s1"))
    publisher.submit(status("s2"))  # nothing with a conflation key: the oldest, m1 (on the wire), goes
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pushclient"] == [
        ("ERROR", "publish buffer full (2): oldest message dropped, one without a conflation key: nothing else "
                  "could go (t tick; 1 dropped so far)")]
    servicer.answer_one()  # m1's answer finds nothing to settle
    assert await next_request(servicer) == ["s1", "s2"]
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), timeout(10))
    assert (publisher.accepted, publisher.dropped) == (2, 1)
    await publisher.close()
