import asyncio
import logging
from typing import Any

import pytest
import uvicorn
import uvloop
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

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def make_protocol(protocol_class: type) -> Any:
    config = uvicorn.Config(app=lambda scope, receive, send: None, ws=protocol_class, log_config=None)
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
    assert protocol.unwritable is None  # told once, and the connection no longer held
    assert "unwritable" not in protocol.__dict__ and "close_sent" not in protocol.__dict__  # slots: no dict growth


@pytest.mark.parametrize("edge_protocol", [True, False], ids=["edge-protocol", "uvicorn-protocol"])
async def test_a_socket_that_still_holds_unsent_bytes_when_it_is_upgraded_is_not_clean(edge_protocol: bool):
    """A keep-alive connection whose last HTTP response is not all sent is paused already, and uvloop
    pauses a protocol only once: whichever protocol serves it, its writer must not take it for writable."""
    protocol_class = edge_websocket_protocol() if edge_protocol else fast_path_protocol()[0]
    protocol = make_protocol(protocol_class)
    protocol.transport.get_write_buffer_size = lambda: 70_000
    write = SocketWrite(protocol)
    assert not protocol.writable.is_set() and not write.clean() and write(b"frame") is False


def test_a_real_transport_stops_the_bare_write_from_inside_the_write_that_fills_it():
    """The assumption the bare write rests on, with uvloop's own transport: at a high-water mark of 0 a
    write that leaves bytes unsent pauses the protocol (and tells the listener) before it returns, and
    a closed transport's write drops the bytes instead of raising."""

    async def main() -> list[str]:
        told: list[str] = []
        made: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol_class = edge_websocket_protocol()

        def serve() -> Any:
            protocol = make_protocol(protocol_class)
            protocol.connections.discard(protocol)
            made.set_result(protocol)
            return protocol

        server = await asyncio.get_running_loop().create_server(serve, "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])  # never reads
        protocol = await made
        protocol.unwritable = lambda: told.append("stop")
        write = SocketWrite(protocol)
        assert write.raw is not None and write.clean()
        chunk = b"x" * 65536
        for _ in range(1000):  # the kernel's buffers take some; the first write that leaves bytes over
            write.raw(chunk)
            if told:
                break
        told.append(f"clean={write.clean()}")
        seen = list(told)
        protocol.transport.close()
        write.raw(chunk)  # closing with bytes unsent: kept for the close, never raised
        writer.close()
        server.close()
        return seen

    assert uvloop.run(main()) == ["stop", "clean=False"]
