"""How frames reach a socket: a port with two implementations, chosen once at start-up.

`FastPath`: the same WebSocket frame bytes written to every receiving socket. A server's frames are
unmasked, so a text frame that many clients receive is identical on every socket: it is built once
(`core.frames.websocket_text_frame`) and written with one `transport.write` per client, skipping the
per-client frame encoding of the ASGI stack. This reaches into uvicorn's sans-I/O WebSocket protocol
(pinned in requirements.txt). `Asgi`: the ordinary ASGI send, for any other server, or a uvicorn whose
internals moved; the edge then says so loudly (a WARNING at start, `/healthz`'s `frame_writer`, the
`ws_edge_frame_writer` metric). On the fast path too, a socket whose transport still holds unsent
bytes (a slow reader) takes nothing more: its connection's backlog does, and leaves batched when it
drains (`SocketWrite`).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .core.codes import fit_close_reason

log = logging.getLogger("ws_edge.wire")
SCOPE_KEY = "ws_edge.protocol"
Scope = MutableMapping[str, Any]
Write = Callable[[bytes], bool]
BodyWrite = Callable[[Callable[[], bytes]], bool]
# What the fast path uses of uvicorn's protocol object (set in its __init__).
FAST_PATH_ATTRIBUTES = ("writable", "transport", "close_sent", "disconnected", "conn")
# What an HTTP stream's direct write uses of uvicorn's httptools RequestResponseCycle.
HTTP_CYCLE_ATTRIBUTES = ("transport", "flow", "disconnected", "response_complete", "response_started",
                         "chunked_encoding")


class Asgi:
    """Frames go through the ASGI send of each connection (its writer task drains the backlog)."""

    name = "asgi"

    def capture(self, scope: Scope, send: Callable[..., Awaitable[Any]]) -> None:
        pass

    def writer_for(self, scope: Scope) -> Write | None:
        return None

    def aborter_for(self, scope: Scope) -> Callable[[], None] | None:
        return None

    def tag_frame_logs(self, scope: Scope, tag: str) -> None:
        pass

    def body_writer_for(self, send: Callable[..., Awaitable[Any]]) -> BodyWrite | None:
        """For an HTTP stream: `write(make_body) -> bool` writing `make_body()` as a chunk of a started,
        chunked response at once (the body is made only then); False when it cannot (None: every
        chunk through the ASGI send)."""
        return None

    def body_aborter_for(self, send: Callable[..., Awaitable[Any]]) -> Callable[[], None] | None:
        return None


class SocketWrite:
    """`write(frame_bytes) -> bool` for one socket on the fast path: False when it cannot be written at
    once; `await drained()` until its transport holds nothing unsent.

    The transport is paused as soon as it holds a byte it could not hand to the kernel, and resumed once
    it has handed over everything: `writable` then says "nothing unsent", and what comes for a socket
    that is not meanwhile waits in its connection's backlog and leaves batched when it drains.

    When the socket is served by `EdgeWebSocketProtocol` (as `python -m ws_edge` runs it), `raw` is the
    transport's own `write`, and the protocol calls the listener given to `listen` the moment the socket
    stops taking writes (paused, close frame sent, lost): a connection may then hand `raw` to fan-out,
    which calls it for each of a thousand sockets with none of these checks (~1 µs of Python a socket, a
    tenth of a round's CPU). A transport that uvicorn closes itself (answering the client's close frame)
    drops later writes silently, and its handle closes only after `connection_lost` has told the
    listener; fan-out still takes a RuntimeError from `raw` as "not this socket". Otherwise `raw` is None."""

    __slots__ = ("protocol", "transport", "writable", "raw")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.writable = protocol.writable
        self.transport.set_write_buffer_limits(high=0)
        if self.transport.get_write_buffer_size():
            # Upgraded on a keep-alive connection whose last HTTP response is not all sent: the
            # transport is paused already and tells no new protocol so (uvloop pauses once); it will
            # call the protocol's resume_writing once it has drained.
            self.writable.clear()
        self.raw: Callable[[bytes], None] | None = (
            self.transport.write if isinstance(protocol, TellsUnwritable) else None)

    def __call__(self, frame: bytes) -> bool:
        if not self.clean():
            return False
        self.transport.write(frame)
        return True

    def clean(self) -> bool:
        """Whether a frame written now goes to the kernel at once: open, nothing unsent, no close sent."""
        protocol = self.protocol
        return (self.writable.is_set() and not protocol.close_sent and not protocol.disconnected
                and not self.transport.is_closing())

    def listen(self, listener: Callable[[], None] | None) -> None:
        """Have `listener` called when the socket stops taking writes (None: no more). Only with `raw`."""
        self.protocol.unwritable = listener

    async def drained(self) -> None:
        await self.writable.wait()


class FastPath(Asgi):
    name = "uvicorn-fast-path"

    def __init__(self, protocol_class: type) -> None:
        self._protocol_class = protocol_class

    def capture(self, scope: Scope, send: Callable[..., Awaitable[Any]]) -> None:
        """Remember which uvicorn protocol object serves this WebSocket (its `send` is a bound
        method of it); a socket served by anything else uses the ASGI send."""
        protocol = getattr(send, "__self__", None)
        if isinstance(protocol, self._protocol_class):
            # A weak reference: the protocol holds the scope, and a cycle would leave every closed
            # connection (its transport, parser, buffers) to the collector's full passes.
            scope[SCOPE_KEY] = weakref.ref(protocol)

    @staticmethod
    def _protocol(scope: Scope) -> Any:
        ref = scope.get(SCOPE_KEY)
        return ref() if ref is not None else None

    def writer_for(self, scope: Scope) -> Write | None:
        """`write(frame_bytes) -> bool` for this socket: False when it cannot be written at once."""
        protocol = self._protocol(scope)
        if protocol is None:
            return None
        return SocketWrite(protocol)

    def aborter_for(self, scope: Scope) -> Callable[[], None] | None:
        """`abort()`: drop this socket at once, for a client that does not read even its close frame."""
        protocol = self._protocol(scope)
        return protocol.transport.abort if protocol is not None else None

    def body_writer_for(self, send: Callable[..., Awaitable[Any]]) -> BodyWrite | None:
        """What uvicorn's httptools cycle does for a body chunk while its transport is not paused,
        done without a coroutine: a stream's frames then reach the socket as a WebSocket's do, and
        only a slow reader's wait in its connection's backlog."""
        cycle = getattr(send, "__self__", None)
        if cycle is None or not all(hasattr(cycle, name) for name in HTTP_CYCLE_ATTRIBUTES):
            return None
        transport, flow = cycle.transport, cycle.flow

        def write(make_body: Callable[[], bytes]) -> bool:
            if (flow.write_paused or cycle.disconnected or cycle.response_complete or not cycle.response_started
                    or not cycle.chunked_encoding or transport.is_closing()):
                return False
            body = make_body()
            transport.write(b"%x\r\n%b\r\n" % (len(body), body))
            return True

        return write

    def body_aborter_for(self, send: Callable[..., Awaitable[Any]]) -> Callable[[], None] | None:
        """`abort()`: drop an HTTP stream's socket at once, for a client that does not read its close frame."""
        cycle = getattr(send, "__self__", None)
        return cycle.transport.abort if cycle is not None and hasattr(cycle, "transport") else None

    def tag_frame_logs(self, scope: Scope, tag: str) -> None:
        """At DEBUG, the WebSocket layer logs every frame from the protocol's callbacks, outside the
        connection's task: give its logger the connection id (`conn`). Nothing is kept otherwise."""
        protocol = self._protocol(scope)
        if protocol is not None and protocol.conn.debug:
            protocol.conn.logger = logging.LoggerAdapter(protocol.conn.logger, {"conn": tag})


class TellsUnwritable:
    """Mixed into uvicorn's sans-I/O WebSocket protocol (`edge_websocket_protocol`): calls `unwritable`
    the moment the socket stops taking writes (paused with bytes unsent, close frame sent, lost)."""

    # Slots, not attributes: a connection's protocol keeps its __dict__ as uvicorn lays it out (an
    # attribute added after __init__ would cost every idle connection a larger dict).
    __slots__ = ("unwritable", "_close_sent")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.unwritable: Callable[[], None] | None = None
        super().__init__(*args, **kwargs)

    @property
    def close_sent(self) -> bool:
        return self._close_sent

    @close_sent.setter
    def close_sent(self, sent: bool) -> None:
        self._close_sent = sent
        if sent and (listener := self.unwritable) is not None:
            listener()

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if (listener := self.unwritable) is not None:
            listener()

    def connection_lost(self, exc: Exception | None) -> None:
        # Told once, and let go: the listener (a connection) is not held past the socket's end.
        listener, self.unwritable = self.unwritable, None
        if listener is not None:
            listener()
        super().connection_lost(exc)  # type: ignore[misc]


def edge_websocket_protocol() -> type | None:
    """The WebSocket protocol class for uvicorn (`ws=`): uvicorn's sans-I/O one, telling a listener the
    moment its socket stops taking writes (`SocketWrite.raw`); None without the fast path."""
    base, _ = fast_path_protocol()
    return None if base is None else type("EdgeWebSocketProtocol", (TellsUnwritable, base), {"__slots__": ()})


def fast_path_protocol() -> tuple[type | None, str]:
    """uvicorn's sans-I/O WebSocket protocol class if it still has what the fast path uses, else
    (None, why not)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError as exc:
        return None, f"uvicorn's websockets-sansio protocol cannot be imported ({exc})"
    assigned = set(WebSocketsSansIOProtocol.__init__.__code__.co_names)
    if missing := [name for name in FAST_PATH_ATTRIBUTES if name not in assigned]:
        return None, f"uvicorn's websockets-sansio protocol no longer sets {', '.join(missing)}"
    return WebSocketsSansIOProtocol, ""


def choose_frame_writer(protocol: tuple[type | None, str] | None = None) -> Asgi:
    protocol_class, why = protocol if protocol is not None else fast_path_protocol()
    if protocol_class is None:
        log.warning("fan-out without the fast path (every frame through the ASGI send, slower): %s", why)
        return Asgi()
    return FastPath(protocol_class)


def bound_close_reasons(send: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The ASGI `send` that every close of a WebSocket goes through (the refusals in `app.py`, a
    connection's close in `connection.py`, any later one): each close reason fitted to the 123 bytes
    a close frame can carry. A longer one makes the WebSocket layer raise ("control frame too long")
    and the client sees 1006 instead of the code it should act on."""

    async def send_bounded(message: MutableMapping[str, Any]) -> Any:
        if message["type"] == "websocket.close" and message.get("reason"):
            message = {**message, "reason": fit_close_reason(message["reason"])}
        return await send(message)

    return send_bounded
