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


class HeldAnswers(pb_grpc.PushServiceServicer):
    def __init__(self) -> None:
        self.requests: asyncio.Queue[list[str]] = asyncio.Queue()  # each request's message ids, as read
        self._release: asyncio.Queue[None] = asyncio.Queue()

    def answer_one(self) -> None:
        self._release.put_nowait(None)

    async def PublishStream(self, request_iterator: AsyncIterator[pb.PublishStreamRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PublishStreamResponse]:
        read: asyncio.Queue[pb.PublishStreamRequest] = asyncio.Queue()

        async def reader() -> None:  # requests are read as they come, answered when released
            async for request in request_iterator:
                self.requests.put_nowait([m.id for m in request.messages])
                read.put_nowait(request)

        task = asyncio.create_task(reader())
        try:
            while True:
                request = await read.get()
                await self._release.get()
                yield pb.PublishStreamResponse(sequence=request.sequence, results=[
                    pb.PublishResult(id=m.id, timestamp_ms=1) for m in request.messages])
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
    return await asyncio.wait_for(servicer.requests.get(), 10)


def submit(publisher, *ids: str) -> None:  # type: ignore[no-untyped-def]
    for id_ in ids:
        publisher.submit(outgoing("t", "tick", {"id": id_}, id=id_))


async def test_what_is_submitted_while_a_request_is_unanswered_leaves_as_one_request(held):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = client.stream_publisher()  # max_in_flight=1
    publisher.start()
    submit(publisher, "m1")
    assert await next_request(servicer) == ["m1"]  # a lone message leaves at once
    submit(publisher, "m2", "m3", "m4")
    await asyncio.sleep(0.3)
    assert servicer.requests.empty(), "nothing more goes out before the answer"
    servicer.answer_one()
    assert await next_request(servicer) == ["m2", "m3", "m4"]
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), 10)
    assert (publisher.accepted, publisher.requests, publisher.buffered) == (4, 2, 0)
    submit(publisher, "m5")  # answered, so idle again: the next message leaves at once
    assert await next_request(servicer) == ["m5"]
    servicer.answer_one()
    await publisher.close()


async def test_max_in_flight_requests_go_out_before_any_answer(held):  # type: ignore[no-untyped-def]
    servicer, client = held
    publisher = client.stream_publisher(max_in_flight=2)
    publisher.start()
    submit(publisher, "m1")
    assert await next_request(servicer) == ["m1"]
    submit(publisher, "m2")
    assert await next_request(servicer) == ["m2"]  # the second in flight: not held
    submit(publisher, "m3", "m4")
    await asyncio.sleep(0.3)
    assert servicer.requests.empty()
    servicer.answer_one()
    assert await next_request(servicer) == ["m3", "m4"]
    servicer.answer_one()
    servicer.answer_one()
    await asyncio.wait_for(publisher.flush(), 10)
    assert (publisher.accepted, publisher.requests) == (4, 3)
    await publisher.close()


def test_max_in_flight_is_at_least_one():
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamPublisher(None, max_in_flight=0)  # type: ignore[arg-type]
