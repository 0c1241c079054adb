"""The in-process channel (common/inprocess_grpc.py): what a caller sees is what gRPC would show it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc.aio import AioRpcError
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from common.inprocess_grpc import PEER, STREAM_WINDOW, InProcessServer
from tests.support.timing import timeout


class Recorder:
    """Handlers of a made-up service, and what they saw."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed: list[str] = []
        self.seen: list[Any] = []

    async def echo(self, request: bytes, context: Any) -> bytes:
        self.seen.append((context.peer(), context.invocation_metadata()))
        return b"echo:" + request

    async def refuse(self, request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "topic is required")
        return b""

    async def crash(self, request: bytes, context: Any) -> bytes:
        raise ValueError("boom")

    async def slow(self, request: bytes, context: Any) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def times_out(self, request: bytes, context: Any) -> bytes:
        raise TimeoutError("its own")

    async def count(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        """Streams `n` responses for each request `n`, then ends; `abort` aborts after what it sent."""
        try:
            async for request in requests:
                if request == b"abort":
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "broker unavailable")
                for _ in range(int(request)):
                    self.produced += 1
                    yield str(self.produced).encode()
        finally:
            self.closed.append("count")


def channel(recorder: Recorder) -> Any:
    server = InProcessServer()
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(recorder.echo),
        "Refuse": grpc.unary_unary_rpc_method_handler(recorder.refuse),
        "Crash": grpc.unary_unary_rpc_method_handler(recorder.crash),
        "Slow": grpc.unary_unary_rpc_method_handler(recorder.slow),
        "TimesOut": grpc.unary_unary_rpc_method_handler(recorder.times_out),
        "Count": grpc.stream_stream_rpc_method_handler(recorder.count),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Made", handlers),))
    server.add_registered_method_handlers("test.Made", handlers)
    return server.channel()


async def requests(*items: Any) -> AsyncIterator[Any]:
    """These, then nothing more (the stream stays open, as an edge's does)."""
    for item in items:
        yield item
    await asyncio.Event().wait()


async def finite(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_a_unary_call_reaches_the_servicer_with_its_metadata():
    recorder = Recorder()
    echo = channel(recorder).unary_unary("/test.Made/Echo")
    assert await echo(b"hi", metadata=(("traceparent", "00-x"),)) == b"echo:hi"
    assert recorder.seen == [(PEER, (("traceparent", "00-x"),))]


@pytest.mark.parametrize(("method", "code", "details"), [
    ("Refuse", grpc.StatusCode.INVALID_ARGUMENT, "topic is required"),
    ("Crash", grpc.StatusCode.UNKNOWN, "Unexpected <class 'ValueError'>: boom"),
    ("TimesOut", grpc.StatusCode.UNKNOWN, "Unexpected <class 'TimeoutError'>: its own"),
    ("Missing", grpc.StatusCode.UNIMPLEMENTED, "Method not found!"),
])
async def test_a_failed_unary_call_raises_the_status_grpc_would(method: str, code: grpc.StatusCode, details: str):
    with pytest.raises(AioRpcError) as failed:
        await channel(Recorder()).unary_unary(f"/test.Made/{method}")(b"x")
    assert (failed.value.code(), failed.value.details()) == (code, details)


async def test_a_unary_call_past_its_timeout_is_deadline_exceeded():
    with pytest.raises(AioRpcError) as failed:
        await channel(Recorder()).unary_unary("/test.Made/Slow")(b"x", timeout=0.05)
    assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_stream_gives_every_response_in_order_then_ends():
    recorder = Recorder()
    call = channel(recorder).stream_stream("/test.Made/Count")(finite(b"2", b"3"))
    await call.wait_for_connection()
    assert [r async for r in call] == [b"1", b"2", b"3", b"4", b"5"]
    assert await call.code() == grpc.StatusCode.OK
    assert recorder.closed == ["count"]


async def test_an_abort_mid_stream_comes_after_the_responses_sent_before_it():
    call = channel(Recorder()).stream_stream("/test.Made/Count")(requests(b"2", b"abort"))
    got = []
    with pytest.raises(AioRpcError) as failed:
        async for response in call:
            got.append(response)
    assert got == [b"1", b"2"]
    assert (failed.value.code(), failed.value.details()) == (grpc.StatusCode.UNAVAILABLE, "broker unavailable")


async def test_a_stream_to_an_unknown_method_fails_unimplemented():
    call = channel(Recorder()).stream_stream("/test.Made/Missing")(requests(b"1"))
    with pytest.raises(AioRpcError) as failed:
        async for _ in call:
            pass
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_reader_that_stops_reading_holds_the_servicer_back_and_loses_nothing():
    recorder = Recorder()
    call = channel(recorder).stream_stream("/test.Made/Count")(finite(b"1000"))
    for _ in range(20):
        await asyncio.sleep(0)
    # The window is full and the servicer waits on its next response: produced, not yet taken.
    assert recorder.produced == STREAM_WINDOW + 1
    got = [r async for r in call]
    assert got == [str(n).encode() for n in range(1, 1001)]


async def test_the_end_of_a_stream_waits_behind_a_full_window():
    recorder = Recorder()
    call = channel(recorder).stream_stream("/test.Made/Count")(finite(str(STREAM_WINDOW).encode()))
    for _ in range(20):
        await asyncio.sleep(0)
    assert call.done()  # the servicer has ended, with every response still unread
    assert [r async for r in call] == [str(n).encode() for n in range(1, STREAM_WINDOW + 1)]


async def test_cancel_ends_the_servicer_side_and_the_callers_iteration_as_grpc_aio_does():
    recorder = Recorder()
    call = channel(recorder).stream_stream("/test.Made/Count")(requests(b"1000"))
    reader = aiter(call)
    assert await anext(reader) == b"1"
    assert call.cancel() is True
    with pytest.raises(asyncio.CancelledError):  # at once, not after the responses still queued
        await anext(reader)
    assert await call.code() == grpc.StatusCode.CANCELLED
    assert recorder.closed == ["count"]  # its finally ran (an edge stream closes its session there)
    assert call.cancel() is False


async def test_cancelling_the_readers_task_cancels_the_call():
    recorder = Recorder()
    call = channel(recorder).stream_stream("/test.Made/Count")(requests(b"0"))  # then waits on its requests

    async def read() -> None:
        async for _ in call:
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await call.code() == grpc.StatusCode.CANCELLED
    assert recorder.closed == ["count"]


async def test_generic_handlers_alone_are_enough():
    recorder = Recorder()
    server = InProcessServer()
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(recorder.echo)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Made", handlers),))
    assert await server.channel().unary_unary("/test.Made/Echo")(b"x") == b"echo:x"


async def test_generated_stubs_work_on_it_against_the_real_push_service():
    """PushServiceStub over the channel to the real servicers (start_push_server's `local`)."""
    from push_service.config import PushSettings
    from push_service.server import start_push_server

    running = await start_push_server(PushSettings(port=0, metrics_port=0))
    try:
        stub = pb_grpc.PushServiceStub(running.local.channel())
        message = pb.OutgoingMessage(topic="t:1", type="task_progress", data=b'{"p":1}')
        reply = await stub.Publish(pb.PublishRequest(message=message))
        assert reply.id and reply.offset == 1
        history = await stub.History(pb.HistoryRequest(topic="t:1"))
        assert [(p.topic, p.offset, reply.id.encode() in p.frame) for p in history.publications] == [("t:1", 1, True)]
        with pytest.raises(AioRpcError) as failed:
            await stub.Publish(pb.PublishRequest(message=pb.OutgoingMessage(topic="", type="x", data=b"{}")))
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await running.stop()


async def test_an_edge_stream_over_it_is_closed_by_cancel_and_by_the_servers_stop():
    """The real EdgeStream: a session opens, and closes (hub.close_session) whichever side ends it."""
    from push_service.config import PushSettings
    from push_service.server import start_push_server

    running = await start_push_server(PushSettings(port=0, metrics_port=0))
    try:
        stub = pb_grpc.PushServiceStub(running.local.channel())
        interest = pb.EdgeStreamRequest(add_topics=["t:1"], sequence=1)
        call = stub.EdgeStream(requests(interest))
        assert await applied(call) == 1  # the interest change came back confirmed, through the channel
        assert running.hub.stats()["edge_streams"] == 1
        call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED
        assert running.hub.stats()["edge_streams"] == 0
        left_open = stub.EdgeStream(requests(interest))
        assert await applied(left_open) == 1
        assert running.hub.stats()["edge_streams"] == 1
    finally:
        await running.stop(0.1)
    assert running.hub.stats()["edge_streams"] == 0
    assert left_open.done()


async def applied(call: Any) -> int:
    """The first interest change an edge stream confirms (heartbeats and the like before it skipped)."""
    async with asyncio.timeout(timeout(10)):
        async for answer in call:
            if answer.applied_sequence:
                return answer.applied_sequence
    raise AssertionError("the stream ended without confirming")
