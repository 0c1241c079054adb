"""The fast path of fan-out: the same WebSocket frame bytes written to every receiving socket.

A server's frames are unmasked, so a text frame that many clients receive is identical on every
socket: it is built once (`core.frames.websocket_text_frame`) and written with one `transport.write`
per client, skipping the per-client frame encoding of the ASGI stack. This reaches into uvicorn's
sans-I/O WebSocket protocol (pinned in requirements.txt; `/healthz` counts the connections on the fast
path and a test checks it). Where the protocol is another one, or its transport is paused (a slow
reader), the connection falls back to the ordinary ASGI send and its own backlog.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .core.codes import fit_close_reason

SCOPE_KEY = "ws_edge.protocol"

def capture_protocol(scope: MutableMapping[str, Any], send: Callable[..., Awaitable[Any]]) -> None:
    """Remember in the scope which uvicorn protocol object serves this WebSocket (its `send` is a
    bound method of it)."""
    protocol = getattr(send, "__self__", None)
    if isinstance(protocol, WebSocketsSansIOProtocol):
        scope[SCOPE_KEY] = protocol


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


def writer_for(scope: MutableMapping[str, Any]) -> Callable[[bytes], bool] | None:
    """`write(frame_bytes) -> bool` for this socket: False when it cannot be written at once."""
    protocol: WebSocketsSansIOProtocol | None = scope.get(SCOPE_KEY)
    if protocol is None:
        return None
    writable = protocol.writable
    transport = protocol.transport

    def write(frame: bytes) -> bool:
        if not writable.is_set() or protocol.close_sent or protocol.disconnected or transport.is_closing():
            return False
        transport.write(frame)
        return True

    return write


def tag_frame_logs(scope: MutableMapping[str, Any], tag: str) -> None:
    """At DEBUG, the WebSocket layer logs every frame from the protocol's callbacks, outside the
    connection's task: give its logger the connection id (`conn`). Nothing is kept otherwise."""
    protocol: WebSocketsSansIOProtocol | None = scope.get(SCOPE_KEY)
    if protocol is not None and protocol.conn.debug:
        protocol.conn.logger = logging.LoggerAdapter(protocol.conn.logger, {"conn": tag})


def aborter_for(scope: MutableMapping[str, Any]) -> Callable[[], None] | None:
    """`abort()`: drop this socket at once, for a client that does not read even its close frame."""
    protocol: WebSocketsSansIOProtocol | None = scope.get(SCOPE_KEY)
    return protocol.transport.abort if protocol is not None else None
