import logging
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from ws_edge.wire import Asgi, FastPath, SocketWrite, choose_frame_writer, edge_websocket_protocol, fast_path_protocol


def test_the_fast_path_is_chosen_with_the_pinned_uvicorn():
    """Pins which writer runs: uvicorn's fast path, with the uvicorn in requirements.txt."""
    protocol_class, why = fast_path_protocol()
    assert protocol_class is not None, why
    assert isinstance(choose_frame_writer(), FastPath)


def test_without_the_fast_path_the_edge_says_so_and_uses_asgi(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="ws_edge.wire"):
        writer = choose_frame_writer((None, "uvicorn's websockets-sansio protocol no longer sets writable"))
    assert type(writer) is Asgi and writer.name == "asgi"
    assert [r.getMessage() for r in caplog.records] == [
        "fan-out without the fast path (every frame through the ASGI send, slower): "
        "uvicorn's websockets-sansio protocol no longer sets writable"]
    scope: dict = {}
    writer.capture(scope, object())  # type: ignore[arg-type]
    assert (writer.writer_for(scope), writer.aborter_for(scope), scope) == (None, None, {})


def test_the_fast_path_ignores_a_socket_served_by_another_protocol():
    writer = FastPath(int)
    scope: dict = {}

    async def send(message):  # type: ignore[no-untyped-def]
        pass

    writer.capture(scope, send)
    assert writer.writer_for(scope) is None and writer.aborter_for(scope) is None


class Transport:
    """What the edge's protocol and SocketWrite touch of a uvloop transport."""

    def __init__(self) -> None:
        self.closed = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, frame: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def make_protocol(protocol_class: type) -> Any:
    config = uvicorn.Config(app=lambda scope, receive, send: None, ws=protocol_class)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    protocol.transport = Transport()
    protocol.connections.add(protocol)
    return protocol


async def test_the_edge_protocol_tells_its_listener_the_moment_its_socket_stops_taking_writes():
    protocol_class = edge_websocket_protocol()
    base, _ = fast_path_protocol()
    assert protocol_class is not None and base in protocol_class.__mro__
    protocol = make_protocol(protocol_class)
    told: list[str] = []
    protocol.unwritable = lambda: told.append("stop")
    assert SocketWrite(protocol).raw == protocol.transport.write  # the bare write, only with this protocol
    assert SocketWrite(make_protocol(base)).raw is None

    protocol.resume_writing()
    protocol.close_sent = False
    assert told == []
    protocol.pause_writing()  # from inside the write that left bytes unsent
    assert told == ["stop"] and not protocol.writable.is_set()
    protocol.close_sent = True  # uvicorn's own closes (a keepalive timeout, a parser error) set it
    assert told == ["stop", "stop"] and protocol.close_sent is True
    protocol.unwritable = None  # the connection has stopped: nobody is told, nothing fails
    protocol.pause_writing()
    protocol.unwritable = lambda: told.append("lost")
    protocol.connection_lost(None)
    assert told == ["stop", "stop", "lost"] and protocol.disconnected and protocol.transport.closed
    assert "unwritable" not in protocol.__dict__ and "close_sent" not in protocol.__dict__  # slots: no dict growth
