"""One browser's connection: an id, who it is, and a non-blocking send with a bounded backlog.

Fan-out never awaits a browser. `send` writes the frame straight to the socket when the socket takes
it without waiting (the common case: its transport holds nothing unsent; see `wire.py`); otherwise
the frame joins a backlog that a writer task drains once the socket has drained, what waits leaving
as batch frames (core/sendqueue.py). A client whose backlog reaches the limit is a slow consumer and
is closed with 4008 so that it can reconnect.

The sink is the transport: `WebSocketSink` (the ASGI WebSocket) or an HTTP stream's
(`http_stream.py`: SSE, newline-delimited JSON), which encodes frames itself (`write_json`: written
at once while its socket takes them) and drains its backlog frame by frame through the sink.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from itertools import count
from typing import Protocol

from starlette.websockets import WebSocket

from .core.auth import ANONYMOUS, Principal
from .core.codes import CloseCode
from .core.frames import websocket_text_frame
from .core.sendqueue import SendQueue
from .core.sequencer import DeliveryLike
from .metrics import DROPPED

log = logging.getLogger("ws_edge.connection")
CLOSE_TIMEOUT = 30.0
_ids = count(1)


class Sink(Protocol):
    """Where a connection's backlog goes: one JSON frame at a time, then the close."""

    async def send(self, frame: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class WebSocketSink:
    """The ASGI WebSocket as a sink (the fast path, when there is one, bypasses it)."""

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send(self, frame: bytes) -> None:
        await self.websocket.send({"type": "websocket.send", "text": frame.decode()})

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code=code, reason=reason)


class Connection:
    __slots__ = ("id", "client_id", "sink", "principal", "address", "_write", "_write_json", "_abort",
                 "direct", "_fast", "_backlog", "_writer", "_closer", "_open", "_closing", "closed_as_slow")

    def __init__(
        self,
        sink: Sink,
        client_id: str,
        queue: SendQueue,
        write: Callable[[bytes], bool] | None = None,
        address: str = "",
        abort: Callable[[], None] | None = None,
        write_json: Callable[[Sequence[bytes]], bool] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.client_id = client_id
        self.sink = sink
        self.principal: Principal = ANONYMOUS  # who, once admitted: from the verified token, never the client's words
        self.address = address
        self._write = write  # the wire fast path, when the server allows it
        # A transport that encodes frames itself (an HTTP stream's sink): JSON frames written at once,
        # or False; fan-out then skips `direct` (WebSocket frames) and comes through `send_frames`.
        self._write_json = write_json
        self._abort = abort  # drops the socket at once (the fast path's transport), when there is one
        # `_fast` while frames may go straight to the socket (open, nothing queued, not closing),
        # else None: fan-out calls it for each of a thousand sockets without the checks of `send`.
        # `_fast` is the transport's bare write when the socket's protocol says at once that it stops
        # taking writes (wire.SocketWrite.raw: `direct` is then cleared by `_unwritable`; it answers
        # None), else `_write` itself (which checks, and answers False when it cannot write).
        self.direct: Callable[[bytes], bool | None] | None = None
        self._fast: Callable[[bytes], bool | None] | None = getattr(write, "raw", None) or write
        self._backlog = queue  # frames waiting for the writer task: bounded, coalescing
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references to tasks
        self._open = False  # frames wait in the backlog until the `connected` frame is out
        self._closing = False
        self.closed_as_slow = False

    @property
    def tag(self) -> str:
        """Its id in log lines (`conn`): the edge's connection number and the client_id."""
        return f"{self.id}:{self.client_id}"

    def __repr__(self) -> str:
        return f"<Connection #{self.id} client_id={self.client_id!r}>"

    @property
    def fast_path(self) -> bool:
        return self._write is not None or self._write_json is not None

    @property
    def started(self) -> bool:
        return self._open

    async def wait_closed(self) -> None:
        """Until the close this side began (if any) is done."""
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)

    def start_writer(self, first_frame: bytes) -> None:
        """Start writing: `first_frame` (the `connected` frame), then whatever was routed meanwhile."""
        if self._closing:
            return  # closed before it was connected (a slow consumer, the edge going away)
        self._open = True
        if self._fast is not self._write:  # the bare write: the protocol tells when to stop using it
            self._write.listen(self._unwritable)  # type: ignore[union-attr]
        if not self._backlog and self._write is not None and self._write(websocket_text_frame(first_frame)):
            self._resume_direct()
            return
        if not self._backlog and self._write_json is not None and self._write_json((first_frame,)):
            return
        self._backlog.push_first(first_frame)
        self._writer = asyncio.create_task(self._drain(), name=f"ws-writer-{self.id}")

    def send(self, frame: bytes, wire: bytes | None = None) -> None:
        """Send one JSON frame; `wire` is its WebSocket encoding when the caller built it already."""
        if self._closing:
            return
        if self._open and not self._backlog:
            if self._write is not None:
                if self._write(wire if wire is not None else websocket_text_frame(frame)):
                    if self.direct is None:
                        self._resume_direct()
                    return
            elif self._write_json is not None and self._write_json((frame,)):
                return
        self._queue(frame, None, False)

    def send_frames(self, frames: list[bytes], wire: bytes, deliveries: Sequence[DeliveryLike],
                    conflation_key: Callable[[DeliveryLike], str | None]) -> None:
        """Send several JSON frames; `wire` is all of them as WebSocket frames, written in one call.
        When they cannot be written now, the messages (`deliveries`) queue one by one, so that
        superseded ones can be coalesced while the client is slow."""
        if self._closing:
            return
        if self._open and not self._backlog:
            if self._write is not None:
                if self._write(wire):
                    if self.direct is None:
                        self._resume_direct()
                    return
            elif self._write_json is not None and self._write_json(frames):
                return
        for delivery in deliveries:
            if not self._queue(delivery.frame, conflation_key(delivery), True):
                return

    def _unwritable(self) -> None:
        """The socket stopped taking writes (its protocol says so, from inside the write that paused
        it, or as it sends a close frame or loses the socket): fan-out comes through `send_frames`."""
        self.direct = None

    def _resume_direct(self) -> None:
        """Frames may go straight to the socket again, if it takes them now (a write that just went
        through may have paused it: then its backlog's writer, or the next `send`, tries again)."""
        clean = getattr(self._write, "clean", None)
        if self._open and not self._backlog and not self._closing and (clean is None or clean()):
            self.direct = self._fast

    def _queue(self, frame: bytes, key: str | None, envelope: bool) -> bool:
        self.direct = None  # what follows goes behind the backlog, until the writer has drained it
        if not self._backlog.push(frame, key, envelope):
            log.warning("#%d = slow consumer: %d messages, %d bytes unsent, closing", self.id, len(self._backlog),
                        self._backlog.bytes, extra={"conn": self.tag})
            self.closed_as_slow = True
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        if self._open and self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name=f"ws-writer-{self.id}")
        return True

    @property
    def queued(self) -> int:
        return len(self._backlog)

    @property
    def coalesced(self) -> int:
        return self._backlog.coalesced

    async def flush_and_close(self, code: int, reason: str, timeout: float) -> None:
        """Write what is queued (within `timeout`), then close with `code`."""
        if self._closing:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._backlog or self._writer is not None) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        self.close_soon(code, reason)

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        self.direct = None
        self._closer = asyncio.create_task(self._close(code, reason), name=f"ws-close-{self.id}")

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        coalesced = self._backlog.coalesced
        if self._backlog:
            DROPPED.inc(len(self._backlog))
        self._backlog = SendQueue(max_messages=0)  # nothing more will be sent: free the backlog now
        self._backlog.coalesced = coalesced
        try:
            # The close frame waits behind what the socket still holds; a client that never reads
            # it is dropped after CLOSE_TIMEOUT, so nothing stays held for it.
            await asyncio.wait_for(self.sink.close(code, reason), CLOSE_TIMEOUT)
        except TimeoutError:
            log.info("#%d = close not taken in %.0fs, dropping the socket", self.id, CLOSE_TIMEOUT,
                     extra={"conn": self.tag})
            if self._abort is not None:
                self._abort()
        except Exception as exc:
            log.debug("#%d close failed: %r", self.id, exc, extra={"conn": self.tag})

    async def stop(self) -> None:
        """The socket is gone: stop writing."""
        self._closing = True
        self.direct = None
        if self._fast is not self._write:
            self._write.listen(None)  # type: ignore[union-attr]  # the protocol held this connection
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _drain(self) -> None:
        """Write the backlog once the socket can take it: on the fast path, whenever its transport has
        handed everything to the kernel, all that waits (batch frames of at most the cap, shared with
        sockets that drain in the same state) in one write; otherwise frame by frame, through the ASGI
        send (which waits for the transport itself)."""
        write = self._write
        drained = getattr(write, "drained", None)
        try:
            if write is not None and drained is not None:
                while self._backlog:
                    await drained()
                    if self._closing:
                        break  # the close takes over (and frees the backlog)
                    if not write(self._backlog.pop_wire()):
                        self._closing = True  # the socket is gone: the receive loop releases the connection
                        break
            else:
                send = self.sink.send
                while (frame := self._backlog.pop_frame()) is not None:
                    await send(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket died under us; the receive loop releases the connection
            log.debug("#%d writer stopped: %r", self.id, exc, extra={"conn": self.tag})
            self._closing = True
        finally:
            self._writer = None
            self._resume_direct()
