"""One browser's WebSocket: an id, its rate limit, and a bounded send queue drained by a writer task.

Fan-out never awaits a browser: it puts the shared frame on the queue (no copy) and moves on. A
client whose queue is full is a slow consumer and is closed with 4008 so it can reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from itertools import count

from starlette.websockets import WebSocket

from .core.codes import CloseCode
from .core.ratelimit import TokenBucket

log = logging.getLogger("ws_edge.connection")
_ids = count(1)


class Connection:
    __slots__ = ("id", "client_id", "websocket", "bucket", "last_seen", "_queue", "_writer", "_closing")

    def __init__(self, websocket: WebSocket, client_id: str, bucket: TokenBucket, queue_frames: int, now: float):
        self.id = next(_ids)
        self.client_id = client_id
        self.websocket = websocket
        self.bucket = bucket
        self.last_seen = now
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_frames)
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<Connection #{self.id} client_id={self.client_id!r}>"

    def start_writer(self, first_frame: str) -> None:
        """Start writing: `first_frame` (the `connected` frame), then whatever was routed meanwhile."""
        self._writer = asyncio.create_task(self._write_loop(first_frame), name=f"ws-writer-{self.id}")

    def send(self, frame: str) -> None:
        if self._closing:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("#%d = slow consumer: %d frames unsent, closing", self.id, self._queue.qsize())
            self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def close_soon(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason)

    async def stop(self) -> None:
        """The socket is gone: stop writing."""
        self._closing = True
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_loop(self, first_frame: str) -> None:
        queue = self._queue
        send = self.websocket.send
        try:
            await send({"type": "websocket.send", "text": first_frame})
            while True:
                frame = await queue.get()
                await send({"type": "websocket.send", "text": frame})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket died under us; the receive loop releases the connection
            log.debug("#%d writer stopped: %r", self.id, exc)
