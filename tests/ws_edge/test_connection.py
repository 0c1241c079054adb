"""A connection's send paths without a network: the direct write that fan-out uses is offered only
while nothing waits in the backlog, so a message never overtakes one queued before it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

from ws_edge.connection import Connection, WebSocketSink
from ws_edge.core.frames import websocket_text_frame
from ws_edge.core.sendqueue import SendQueue


class RecordingWebSocket:
    """What the backlog's writer task sends through (the ASGI send) and how the connection closes."""

    scope: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: int | None = None

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["text"])

    async def close(self, code: int, reason: str) -> None:
        self.closed = code


class Wire:
    """The socket's direct write: takes frames while `open`, refuses them (a paused transport) otherwise."""

    def __init__(self) -> None:
        self.open = True
        self.frames: list[bytes] = []

    def __call__(self, frame: bytes) -> bool:
        if self.open:
            self.frames.append(frame)
        return self.open


async def test_direct_write_only_while_nothing_is_queued():
    websocket, wire = RecordingWebSocket(), Wire()
    connection = Connection(WebSocketSink(websocket), "c1", SendQueue(), write=wire)  # type: ignore[arg-type]
    assert connection.direct is None  # not before the `connected` frame is out
    connection.start_writer(b'{"type":"connected"}')
    assert connection.direct is wire and wire.frames == [websocket_text_frame(b'{"type":"connected"}')]

    wire.open = False  # the client stops reading: the message queues, and so must what follows it
    first = SimpleNamespace(frame=b'{"n":1}')
    connection.send_frames([first.frame], websocket_text_frame(first.frame), [first], lambda d: None)  # type: ignore[list-item]
    assert connection.direct is None and connection.queued == 1
    wire.open = True
    connection.send(b'{"n":2}')  # behind the backlog, not past it on the wire
    assert wire.frames == [websocket_text_frame(b'{"type":"connected"}')]
    for _ in range(10):
        await asyncio.sleep(0)
    assert websocket.sent == ['{"n":1}', '{"n":2}']  # in order, through the writer task
    assert connection.queued == 0 and connection.direct is wire  # drained: straight to the wire again
    third = SimpleNamespace(frame=b'{"n":3}')
    connection.send_frames([third.frame], websocket_text_frame(third.frame), [third], lambda d: None)  # type: ignore[list-item]
    assert wire.frames[-1] == websocket_text_frame(b'{"n":3}') and len(websocket.sent) == 2

    connection.close_soon(1000, "bye")
    assert connection.direct is None
    for _ in range(10):
        await asyncio.sleep(0)
    assert websocket.closed == 1000


class DrainingWire(Wire):
    """The fast path's write: refuses while the transport holds unsent bytes; `drained` until it does not."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.empty = asyncio.Event()
        self.empty.set()

    def __call__(self, frame: bytes) -> bool:
        self.writes += self.open
        return super().__call__(frame)

    async def drained(self) -> None:
        await self.empty.wait()


async def test_a_socket_that_falls_behind_gets_what_waited_as_batch_frames_in_one_write():
    websocket, wire = RecordingWebSocket(), DrainingWire()
    connection = Connection(websocket, "c1", SendQueue(batch_max=10), write=wire)  # type: ignore[arg-type]
    connection.start_writer(b'{"type":"connected"}')
    wire.open = False  # unsent bytes in the transport: nothing more is written to it
    wire.empty.clear()
    messages = [SimpleNamespace(frame=f'{{"n":{n}}}'.encode()) for n in range(12)]
    for message in messages:
        connection.send_frames([message.frame], websocket_text_frame(message.frame), [message], lambda d: None)  # type: ignore[list-item]
    for _ in range(5):
        await asyncio.sleep(0)
    assert connection.queued == 12 and wire.writes == 1  # only `connected` so far
    wire.open = True
    wire.empty.set()  # drained: what waited leaves at once, in frames of at most 10
    for _ in range(5):
        await asyncio.sleep(0)
    first = b'{"type":"batch","messages":[' + b",".join(m.frame for m in messages[:10]) + b"]}"
    second = b'{"type":"batch","messages":[' + b",".join(m.frame for m in messages[10:]) + b"]}"
    assert wire.writes == 2 and wire.frames[-1] == websocket_text_frame(first) + websocket_text_frame(second)
    assert websocket.sent == [] and connection.queued == 0 and connection.direct is wire


async def test_a_socket_gone_while_its_backlog_waited_takes_nothing_more():
    websocket, wire = RecordingWebSocket(), DrainingWire()
    connection = Connection(websocket, "c1", SendQueue(), write=wire)  # type: ignore[arg-type]
    connection.start_writer(b'{"type":"connected"}')
    wire.open = False  # unsent bytes, and then the socket goes: the write is refused even once drained
    wire.empty.clear()
    message = SimpleNamespace(frame=b'{"n":1}')
    connection.send_frames([message.frame], websocket_text_frame(message.frame), [message], lambda d: None)  # type: ignore[list-item]
    wire.empty.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert connection.direct is None and connection.queued == 0  # no writer task per message for a dead socket
    connection.send_frames([message.frame], websocket_text_frame(message.frame), [message], lambda d: None)  # type: ignore[list-item]
    assert connection.queued == 0


class RawWire(Wire):
    """A socket served by the edge's own protocol (wire.SocketWrite): a bare `raw` write with no checks,
    and a listener that the protocol calls the moment the socket stops taking writes."""

    def __init__(self) -> None:
        super().__init__()
        self.raw_frames: list[bytes] = []
        self.listener: Any = None

    def raw(self, frame: bytes) -> None:
        self.raw_frames.append(frame)

    def clean(self) -> bool:
        return self.open

    def listen(self, listener: Any) -> None:
        self.listener = listener

    def pause(self) -> None:  # what EdgeWebSocketProtocol.pause_writing does
        self.open = False
        self.listener()

    async def drained(self) -> None:
        while not self.open:
            await asyncio.sleep(0)


async def test_the_bare_write_is_offered_only_while_the_protocol_says_the_socket_takes_writes():
    websocket, wire = RecordingWebSocket(), RawWire()
    connection = Connection(WebSocketSink(websocket), "c1", SendQueue(), write=wire)  # type: ignore[arg-type]
    connection.start_writer(b'{"type":"connected"}')
    assert connection.direct == wire.raw and wire.listener == connection._unwritable

    wire.pause()  # a write left bytes unsent: fan-out must stop writing straight to it at once
    assert connection.direct is None
    one = SimpleNamespace(frame=b'{"n":1}')
    connection.send_frames([one.frame], websocket_text_frame(one.frame), [one], lambda d: None)  # type: ignore[list-item]
    assert connection.queued == 1 and connection.direct is None  # behind the backlog, through its writer
    wire.open = True  # the kernel took it all: the writer drains the backlog, and the bare write is back
    for _ in range(10):
        await asyncio.sleep(0)
    assert wire.frames[1:] == [websocket_text_frame(one.frame)] and connection.queued == 0
    assert connection.direct == wire.raw

    wire.pause()
    wire.open = True  # resumed before anything came: the next write goes through the checks, then
    two = SimpleNamespace(frame=b'{"n":2}')  # the bare write is offered again
    connection.send_frames([two.frame], websocket_text_frame(two.frame), [two], lambda d: None)  # type: ignore[list-item]
    assert wire.frames[2:] == [websocket_text_frame(two.frame)] and connection.direct == wire.raw
    assert wire.raw_frames == []  # fan-out's calls only

    await connection.stop()
    assert connection.direct is None and wire.listener is None  # the protocol no longer holds the connection


class PausingWire(RawWire):
    """Its checked write leaves bytes unsent once `fills` is set: the protocol pauses it from inside."""

    fills = False

    def __call__(self, frame: bytes) -> bool:
        written = super().__call__(frame)
        if self.fills:
            self.pause()
        return written


async def test_a_write_that_pauses_the_socket_does_not_hand_fan_out_the_bare_write():
    websocket, wire = RecordingWebSocket(), PausingWire()
    connection = Connection(WebSocketSink(websocket), "c1", SendQueue(), write=wire)  # type: ignore[arg-type]
    connection.start_writer(b'{"type":"connected"}')
    wire.pause()
    wire.open, wire.fills = True, True  # resumed; the next write goes through the checks, and fills it
    one = SimpleNamespace(frame=b'{"n":1}')
    connection.send_frames([one.frame], websocket_text_frame(one.frame), [one], lambda d: None)  # type: ignore[list-item]
    assert wire.frames[1:] == [websocket_text_frame(one.frame)]
    assert connection.direct is None  # not restored: the socket holds bytes unsent now
