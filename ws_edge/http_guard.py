"""The edge's HTTP protocol: uvicorn's httptools protocol, plus the bounds it lacks before a request is in.

uvicorn never times out a request that does not finish (its only timer is keep-alive, between
requests), does not bound a request's URL or header size under httptools, and never writes the
answer (or closes the socket) when the WebSocket layer refuses a handshake's request line as too long.
So one address could hold 1,000 half-sent handshakes for as long as it liked and, with a small
descriptor limit, lock out real clients and `/healthz`. uvicorn has no setting for any of this; a
subclass passed as `http=` (see `__main__.py`) is the smallest place to add it, and the only one
that sees a connection before it has sent a byte. It relies on HttpToolsProtocol's callbacks
(connection_made, on_message_begin, on_url, on_header, on_headers_complete, on_message_complete,
handle_websocket_upgrade, send_400_response), as `wire.py` relies on the WebSocket protocol: uvicorn
is pinned in requirements-runtime.txt and the tests in tests/integration/test_security.py use raw
sockets against a real edge.

What it adds:
- a deadline (`handshake_timeout`) from the connection (or a keep-alive request's first byte) to the
  request being complete (or upgraded to a WebSocket): past it, 408 and close;
- at most `pending.per_address` connections per address, and `pending.limit` in all, that have not
  finished their first request: one more is answered 429 / 503 and closed at once;
- a URL over MAX_URL_BYTES: 414 and close; a header line over MAX_HEADER_LINE_BYTES, more than
  MAX_HEADERS headers or a request head over MAX_HEAD_BYTES: 431 and close (within what the WebSocket
  layer accepts, so that a handshake it would refuse is refused here, with an answer);
- when the WebSocket layer refuses a request anyway, its answer is written and the socket closed.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from . import metrics
from .core.limits import PendingConnections

log = logging.getLogger("ws_edge.http")

# websockets reads a handshake's lines up to 8192 bytes (request line, each header line) and at most
# 128 headers; ours stay inside, with room for the method and "HTTP/1.1".
MAX_URL_BYTES = 8000
MAX_HEADER_LINE_BYTES = 8000
MAX_HEADERS = 100
MAX_HEAD_BYTES = 32 * 1024


class RequestRefused(Exception):
    """Raised from a parser callback to stop parsing a request that was answered already."""


class GuardedHttpProtocol(HttpToolsProtocol):
    pending: PendingConnections
    handshake_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = "unknown"
        self.held = False  # counted in `pending`
        self.answered = False  # our own refusal is written: nothing more is parsed or written
        self.deadline: TimerHandle | None = None
        self.head_complete = False  # the head of the current request (the first one, at the start) is in
        self.head_bytes = 0  # bytes received while a head was not complete: bounded by MAX_HEAD_BYTES
        self.header_count = 0

    # --- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else "unknown"
        refusal = self.pending.admit(self.address)
        if refusal == "address":
            self.refuse(429, "too many connections from this address are still in their handshake", "pending_address")
            return
        if refusal == "total":
            self.refuse(503, "too many connections are still in their handshake", "pending_total")
            return
        self.held = True
        self.start_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.settle()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        if not self.head_complete:
            self.head_bytes += len(data)
        super().data_received(data)
        if not self.answered and not self.head_complete and self.head_bytes > MAX_HEAD_BYTES:
            self.refuse(431, f"request head over {MAX_HEAD_BYTES} bytes", "head_too_large")

    def send_400_response(self, msg: str) -> None:
        if not self.answered:  # else the parser stopped because of our own refusal, already written
            super().send_400_response(msg)

    # --- the request -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_complete = False
        self.header_count = 0
        if self.deadline is None:  # a later request on a kept-alive connection: it gets a deadline too
            self.start_deadline()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self.refuse(414, f"URL over {MAX_URL_BYTES} bytes", "url_too_long")
            raise RequestRefused

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if len(name) + len(value) + 2 > MAX_HEADER_LINE_BYTES:
            self.refuse(431, f"header line over {MAX_HEADER_LINE_BYTES} bytes", "head_too_large")
            raise RequestRefused
        if self.header_count > MAX_HEADERS:
            self.refuse(431, f"more than {MAX_HEADERS} headers", "head_too_large")
            raise RequestRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_complete = True
        self.head_bytes = 0  # what follows is a body, then the next request's head, counted anew
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.settle()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self.settle()
        super().handle_websocket_upgrade()
        # The WebSocket layer parses the request again, with its own limits; when it refuses it (a
        # line too long, a malformed request) it neither writes its answer nor closes the socket.
        protocol = self.transport.get_protocol()
        if (isinstance(protocol, WebSocketsSansIOProtocol) and not protocol.handshake_initiated
                and protocol.conn.handshake_exc is not None):
            log.info("handshake from %s refused by the WebSocket layer: %s", self.address,
                     protocol.conn.handshake_exc)
            protocol.transport.write(b"".join(protocol.conn.data_to_send()))
            protocol.transport.close()
        # This HTTP protocol is done (the transport has the WebSocket's), and no connection_lost will
        # come to it: drop its parser (which holds it back) as connection_lost would, so that it is
        # freed now instead of waiting for the collector's full passes.
        self.parser = None  # type: ignore[assignment]

    # --- bounds ----------------------------------------------------------------------------------

    def start_deadline(self) -> None:
        self.deadline = self.loop.call_later(self.handshake_timeout, self.deadline_passed)

    def settle(self) -> None:
        """The request is in (or the connection gone): no deadline, no longer pending."""
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.held:
            self.held = False
            self.pending.release(self.address)

    def deadline_passed(self) -> None:
        self.deadline = None
        # `cycle` is this request's once its head is in (its body is late), else an earlier request's.
        cycle = self.cycle if self.head_complete else None
        if cycle is not None and cycle.response_started:  # no room for an answer: only close
            self.settle()
            self.transport.close()
            return
        log.info("request from %s not complete in %gs: closed", self.address, self.handshake_timeout)
        if cycle is not None:
            cycle.disconnected = True  # the application's answer, if any, is not written now
        self.refuse(408, f"request not complete in {self.handshake_timeout:g} s", "handshake_timeout")

    def refuse(self, status: int, message: str, reason: str) -> None:
        """Answer `status` with `message`, close, and let the address's slot go (`reason`: the label of
        ws_edge_connections_refused_total)."""
        self.settle()
        if self.answered or self.transport.is_closing():
            return
        self.answered = True
        metrics.REFUSED.labels(reason).inc()
        body = message.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: text/plain; charset=utf-8\r\n", b"content-length: ", str(len(body)).encode(),
                 b"\r\n", b"connection: close\r\n", b"\r\n", body]
        self.transport.write(b"".join(head))
        self.transport.close()


def guarded_http_protocol(pending: PendingConnections, handshake_timeout: float) -> type[GuardedHttpProtocol]:
    """The protocol class for uvicorn's `http=`, bound to this edge's counters and timeout."""
    return type("EdgeHttpProtocol", (GuardedHttpProtocol,),
                {"pending": pending, "handshake_timeout": handshake_timeout})
