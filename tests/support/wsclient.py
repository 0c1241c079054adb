"""Test clients speaking the guide's protocol, with exact-frame helpers: over a WebSocket (WsClient)
or an HTTP stream (StreamClient: `GET /sse` or `/stream`, its frames by `POST /emulation`), with the
same methods, so one test runs over every transport (`connect_client(transport, ...)`). A close is
`Closed(code, reason)` on both: the WebSocket's close frame, or the stream's `close` frame (1006 when
the stream ended without one, as when its edge was killed)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import urlencode

import orjson
import websockets

from pushclient.streams import StreamConnection
from ws_edge.core.streams import MAX_EMULATION_FRAMES

from .asyncapi import check_server_frame
from .timing import timeout

TRANSPORTS = ("websocket", "sse", "http_stream")


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        Exception.__init__(self, f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class WebSocketClosed(Closed, websockets.ConnectionClosed):
    """A WebSocket's close: `Closed` for the tests over every transport, and still the library's own
    exception (with `rcvd`) for the WebSocket tests that look at it."""

    def __init__(self, original: websockets.ConnectionClosed) -> None:
        websockets.ConnectionClosed.__init__(self, original.rcvd, original.sent, original.rcvd_then_sent)

    @property  # type: ignore[override]
    def code(self) -> int:  # the library's own (deprecated, warning) property would be in the way
        return self.rcvd.code if self.rcvd else 1006

    @property  # type: ignore[override]
    def reason(self) -> str:
        return self.rcvd.reason if self.rcvd else ""


class WsClient:
    transport = "websocket"

    def __init__(self, connection: websockets.ClientConnection, welcome: dict[str, Any]) -> None:
        self.connection = connection
        self.welcome = welcome
        self.client_id: str = welcome["data"]["client_id"]
        self._backlog: deque[dict[str, Any]] = deque()  # frames read past by request(), in order

    @classmethod
    async def connect(cls, base_url: str, path: str = "/ws", *, welcome_wait: float = 10, **params: str) -> WsClient:
        """`welcome_wait`: seconds (scaled) to wait for `connected`; `params`: the URL's query."""
        query = f"?{urlencode(params)}" if params else ""
        connection = await websockets.connect(base_url + path + query, max_size=None)
        welcome = parse_server_frame(await asyncio.wait_for(connection.recv(), timeout(welcome_wait)))
        assert welcome["type"] == "connected", welcome
        return cls(connection, welcome)

    async def close(self) -> None:
        await self.connection.close()

    async def send(self, message: Any) -> None:
        await self.send_raw(orjson.dumps(message).decode())

    async def send_raw(self, frame: str | bytes) -> None:
        await self.connection.send(frame)

    async def send_all(self, messages: list[Any]) -> None:
        """Send messages back to back, as fast as the transport takes them."""
        for message in messages:
            await self.send(message)

    async def _recv_raw(self) -> str | bytes:
        try:
            return await self.connection.recv()
        except websockets.ConnectionClosed as exc:
            raise WebSocketClosed(exc) from None

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        """The next frame, parsed."""
        if self._backlog:
            return self._backlog.popleft()
        return parse_server_frame(await asyncio.wait_for(self._recv_raw(), timeout(wait)))

    async def frames_until(self, count: int, wait: float = 10.0) -> list[dict[str, Any]]:
        """Frames (batches kept whole) until they hold `count` messages in all."""
        frames, seen = [], 0
        while seen < count:
            frame = await self.recv(wait)
            frames.append(frame)
            seen += len(frame["messages"]) if frame["type"] == "batch" else 1
        assert seen == count, f"expected {count} messages, got {seen}"
        return frames

    async def messages(self, count: int, wait: float = 10.0) -> list[dict[str, Any]]:
        """The next `count` messages, batches unpacked."""
        return unpack(await self.frames_until(count, wait))

    async def expect_silence(self, seconds: float = 0.5) -> None:
        assert not self._backlog, f"expected no frame, got {self._backlog[0]!r}"
        try:
            frame = await asyncio.wait_for(self._recv_raw(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame!r}")

    async def request(self, message: dict[str, Any], wait: float = 5.0) -> dict[str, Any]:
        """Send and return the answer with the same id (ack, pong or error). Published messages that
        arrive first are kept, in order, for the next recv()."""
        await self.send(message)
        while True:
            frame = parse_server_frame(await asyncio.wait_for(self._recv_raw(), timeout(wait)))
            if frame.get("type") in ("ack", "pong", "error") and frame.get("id") == message.get("id"):
                return frame
            self._backlog.append(frame)


class StreamClient(WsClient):
    """The same client over `GET /sse` or `/stream`; what it sends goes by `POST /emulation`, to
    `post_url`'s edge (another edge than the stream's, to show that no sticky routing is needed)."""

    def __init__(self, stream: StreamConnection, transport: str) -> None:
        self.stream = stream
        self.transport = transport
        self._frames: asyncio.Queue[bytes | Closed] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """In a task of its own: a frame read halfway is never lost to a timeout."""
        try:
            while (raw := await self.stream.recv_raw()) is not None:
                self._frames.put_nowait(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._frames.put_nowait(Closed(1006, ""))
            await self.stream.close()

    @classmethod
    async def open(cls, base_url: str, path: str, transport: str, post_url: str | None = None,
                   headers: dict[str, str] | None = None, **params: str) -> StreamClient:
        client = cls(await StreamConnection.open(base_url, path, post_url, headers, **params), transport)
        welcome = parse_server_frame(await asyncio.wait_for(client._recv_raw(), timeout(10)))
        if welcome["type"] == "close":
            raise Closed(welcome["data"]["code"], welcome["data"]["reason"])
        assert welcome["type"] == "connected", welcome
        assert welcome["data"]["session"] == client.stream.session
        WsClient.__init__(client, client.stream, welcome)  # type: ignore[arg-type]
        return client

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.stream.close()

    async def send_raw(self, frame: str | bytes) -> None:
        await self.stream.send(frame.decode() if isinstance(frame, bytes) else frame)

    async def send_all(self, messages: list[Any]) -> None:
        """As many frames in each `POST /emulation` as one may carry (as the browser client sends what
        queued up while a POST was out): back to back, whatever one request costs on this machine."""
        for start in range(0, len(messages), MAX_EMULATION_FRAMES):
            status, answer = await self.stream.send_frames(messages[start:start + MAX_EMULATION_FRAMES])
            assert status == 202, (status, answer)

    async def _recv_raw(self) -> str | bytes:
        item = await self._frames.get()
        if isinstance(item, Closed):
            self._frames.put_nowait(item)  # closed for good
            raise item
        if item.startswith(b'{"type":"close"'):
            data = orjson.loads(item)
            check_server_frame(data)
            self._frames.put_nowait(Closed(1006, ""))  # nothing follows a close frame
            raise Closed(data["data"]["code"], data["data"]["reason"])
        return item


STREAM_PATHS = {"sse": "/sse", "http_stream": "/stream"}


async def connect_client(transport: str, system: Any, path: str = "/ws", post_via: Any = None,
                         headers: dict[str, str] | None = None, **params: str) -> WsClient:
    """A connected client of `system`'s edge over `transport` (TRANSPORTS); `path` is the WebSocket
    endpoint (/ws, /ws/task) whose HTTP-stream twin is used. `post_via`: another system (edge) that
    takes this client's `POST /emulation`."""
    if transport == "websocket":
        return await WsClient.connect(system.ws_url, path, **params)
    stream_path = STREAM_PATHS[transport] + path.removeprefix("/ws")
    return await StreamClient.open(system.http_url, stream_path, transport,
                                   post_via.http_url if post_via is not None else None, headers, **params)


def parse_server_frame(raw: str | bytes) -> dict[str, Any]:
    """A received frame, parsed and held to the published protocol (docs/asyncapi.yaml)."""
    frame = orjson.loads(raw)
    check_server_frame(frame)
    return frame


def unpack(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in frames:
        out.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    return out
