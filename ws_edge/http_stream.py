"""The HTTP transports: a session served over `GET /sse` or `GET /stream`, its client frames by
`POST /emulation` (on any edge), run by the same SessionDriver and Session as a WebSocket.

What differs from a WebSocket is only how frames move: down, through an `HttpStreamSink` (the
response body: SSE events or JSON lines, core/streams.py); up, through the session's `Inbox`, which
`POST /emulation` fills here, or the push service fills from another edge (a `control` delivery
routed by the session id's edge mark: inboxes.py). Every rule (auth, limits, order, recovery,
acks, errors, rate limit, heartbeats, close codes) is the session's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from common.client_ids import assign_client_id
from common.clock import now_ms
from common.logs import connection_id

from . import metrics
from .connection import Connection
from .core.frames import ProtocolError
from .core.limits import origin_allowed
from .core.session import Session, url_positions
from .core.streams import (
    NDJSON_HEARTBEAT,
    SSE_HEARTBEAT,
    EmulationError,
    PositionTracker,
    close_frame,
    ndjson_line,
    parse_emulation,
    sse_event,
)
from .door import door_refusal
from .edge import Edge
from .http_body import BodyTooLarge, ClientDisconnect, bounded_body
from .session_driver import SessionDriver

log = logging.getLogger("ws_edge.http_stream")
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
INBOX_FRAMES = 256  # client frames waiting for a session (the socket's buffer, on a WebSocket)
# And their characters: a POST brings up to 4 × EDGE_MAX_FRAME_BYTES, and 256 frames of 256 KiB waiting
# for a session that reads none meanwhile (its subscribe waits for the push service) would be 64 MiB.
INBOX_CHARS = 1 << 20


class Inbox:
    """A stream session's client frames, as `POST /emulation` brings them, read by its driver."""

    __slots__ = ("_frames", "_ready", "_ended", "_chars")

    def __init__(self) -> None:
        self._frames: deque[str] = deque()
        self._ready = asyncio.Event()
        self._ended = False
        self._chars = 0

    def put(self, frames: list[str]) -> bool:
        """False (nothing taken) when the session is gone or this would hold over INBOX_FRAMES frames or
        INBOX_CHARS characters (one request's frames are taken whatever their size, if none wait)."""
        chars = sum(map(len, frames))
        if self._ended or len(self._frames) + len(frames) > INBOX_FRAMES or (
                self._frames and self._chars + chars > INBOX_CHARS):
            return False
        self._frames.extend(frames)
        self._chars += chars
        self._ready.set()
        return True

    def end(self) -> None:
        self._ended = True
        self._ready.set()

    async def receive(self) -> str | None:
        while not self._frames:
            if self._ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self._chars -= len(frame)
        return frame


class HttpStreamSink:
    """A response body as a connection's sink: frames encoded for SSE or as JSON lines, a close frame
    and the end of the body to close. Nothing is written after the end."""

    __slots__ = ("_send", "sse", "_positions", "_ended", "_inbox", "_write_body")

    def __init__(self, send: Send, sse: bool, inbox: Inbox,
                 write_body: Callable[[Callable[[], bytes]], bool] | None = None) -> None:
        self._send = send
        self.sse = sse
        self._positions = PositionTracker() if sse else None
        self._ended = False
        self._inbox = inbox
        self._write_body = write_body  # the server's direct write of a body chunk (wire.py), if any

    def write_now(self, frames: Sequence[bytes]) -> bool:
        """Write `frames` at once if the socket takes them without waiting (see wire.py), else False."""
        if self._write_body is None or self._ended:
            return False
        return self._write_body(lambda: b"".join(map(self.encode, frames)))

    def encode(self, frame: bytes) -> bytes:
        if self._positions is None:
            return ndjson_line(frame)
        return sse_event(frame, self._positions.event_id() if self._positions.note(frame) else None)

    async def send(self, frame: bytes) -> None:
        await self._body(self.encode(frame), more=True)

    async def heartbeat(self) -> None:
        await self._body(SSE_HEARTBEAT if self.sse else NDJSON_HEARTBEAT, more=True)

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._body(self.encode(close_frame(code, reason, now_ms())), more=False)
        finally:
            self._inbox.end()

    async def _body(self, body: bytes, more: bool) -> None:
        if self._ended:
            return
        if not more:
            self._ended = True
        await self._send({"type": "http.response.body", "body": body, "more_body": more})


def stream_refusal(edge: Edge, request: Request, address: str) -> JSONResponse | None:
    """The WebSocket handshake's refusals, as HTTP answers: Origin, draining, attempts per address."""
    origin = request.headers.get("origin")
    if not origin_allowed(origin, request.headers.get("host"), edge.origins):
        metrics.REFUSED.labels("origin").inc()
        return JSONResponse({"error": "origin not allowed"}, status_code=403)
    if edge.draining:
        metrics.REFUSED.labels("draining").inc()
        return JSONResponse({"error": "going away"}, status_code=503)
    if not edge.attempts.allow(address, asyncio.get_running_loop().time()):
        metrics.REFUSED.labels("attempt_rate").inc()
        return JSONResponse({"error": "too many connection attempts"}, status_code=429)
    return None


def bearer_token(request: Request) -> str | None:
    """`?token=`, else an `Authorization: Bearer` header (a fetch can send one; an EventSource cannot)."""
    token = request.query_params.get("token")
    if token is None and (header := request.headers.get("authorization", "")).lower().startswith("bearer "):
        token = header[7:].strip()
    return token


async def serve_stream(edge: Edge, scope: MutableMapping[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Send, sse: bool, topics: list[str]) -> None:
    """One `GET /sse` or `GET /stream`: refused with an HTTP status before the stream (as a WebSocket
    before its upgrade), else a 200 stream served by the session's driver until a close frame."""
    request = Request(scope, receive)
    address = request.client.host if request.client else "unknown"
    if request.method != "GET":
        await JSONResponse({"error": "use GET"}, status_code=405, headers={"allow": "GET"})(scope, receive, send)
        return
    if (refusal := stream_refusal(edge, request, address)) is not None:
        await refusal(scope, receive, send)
        return
    token = bearer_token(request)
    if token is None and not edge.settings.allow_anonymous:
        # A WebSocket may send `auth` as its first frame; a stream's frames need its session id,
        # which only `connected` gives: its token comes with the request.
        await JSONResponse({"error": "a token is required: ?token= or Authorization: Bearer"},
                           status_code=401)(scope, receive, send)
        return
    inbox = Inbox()
    sink = HttpStreamSink(send, sse, inbox, edge.frames.body_writer_for(send))
    content_type = b"text/event-stream; charset=utf-8" if sse else b"application/x-ndjson"
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", content_type), (b"cache-control", b"no-cache, no-store"),
        (b"x-accel-buffering", b"no")]})  # nginx: do not buffer the stream
    params = request.query_params
    client_id = params.get("client_id")
    if (refusal := door_refusal(edge, client_id, address)) is not None:
        await sink.close(*refusal)
        return
    try:
        await _serve_session(edge, request, send, receive, sink, inbox, address, client_id, token, topics, sse)
    finally:
        edge.addresses.release(address)


async def _serve_session(edge: Edge, request: Request, send: Send, receive: Callable[..., Awaitable[Any]],
                         sink: HttpStreamSink, inbox: Inbox, address: str, client_id: str | None,
                         token: str | None, topics: list[str], sse: bool) -> None:
    try:
        positions, since_error = url_positions(request.query_params.get("since")), None
        if sse and (last := request.headers.get("last-event-id")):
            positions = {**positions, **url_positions(last)}  # the EventSource's own resume is newer
    except ProtocolError as exc:
        positions, since_error = {}, exc.message  # said after `connected`, as on a WebSocket
    connection = Connection(sink, client_id or assign_client_id(edge.client_id_mark), edge.new_send_queue(),
                            address=address, write_json=sink.write_now, abort=edge.frames.body_aborter_for(send))
    connection_id.set(connection.tag)
    session_id = assign_client_id(edge.client_id_mark)  # the mark routes POSTs from any edge here
    session = Session(edge.rules, connection.client_id, asyncio.get_running_loop().time(), session_id=session_id)
    driver = SessionDriver(edge, session, connection, "sse" if sse else "http_stream", request.headers)
    edge.inboxes[session_id] = inbox
    watcher = asyncio.create_task(_watch_disconnect(receive, inbox), name=f"stream-watch-{connection.id}")
    beat = asyncio.create_task(_heartbeats(driver, sink, edge.settings.stream_heartbeat_interval),
                               name=f"stream-heartbeat-{connection.id}")
    try:
        await driver.serve(inbox.receive, token, topics, positions, since_error)
    finally:
        edge.inboxes.pop(session_id, None)
        for task in (watcher, beat):
            task.cancel()
        await asyncio.gather(watcher, beat, return_exceptions=True)
    log.debug("#%d = stream closed", connection.id)


async def _watch_disconnect(receive: Callable[..., Awaitable[Any]], inbox: Inbox) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    inbox.end()


async def _heartbeats(driver: SessionDriver, sink: HttpStreamSink, interval: float) -> None:
    """Keeps proxies from timing the stream out; a heartbeat the client took (its socket accepted it)
    counts as the client's activity, so a page that never posts is not closed as silent."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        if not driver.connection.started:
            continue
        await sink.heartbeat()
        driver.session.peer_alive(loop.time())


async def emulation(request: Request) -> JSONResponse:
    """`POST /emulation`: client frames for a stream session, on this edge or (through the push
    service) the one holding it. 202 when handed over; the answers come on the stream."""
    edge: Edge = request.app.state.edge
    origin = request.headers.get("origin")
    if not origin_allowed(origin, request.headers.get("host"), edge.origins):
        metrics.REFUSED.labels("origin").inc()
        return JSONResponse({"error": "origin not allowed"}, status_code=403)
    limit = edge.settings.max_frame_bytes * 4
    try:
        body = await bounded_body(request, limit)
    except BodyTooLarge as exc:
        return JSONResponse({"error": str(exc)}, status_code=413)
    except ClientDisconnect:  # (nobody reads the answer; an uncaught one was a traceback at ERROR)
        log.debug("an emulation request's client went away before its body was read")
        return JSONResponse({"error": "the body was not sent whole"}, status_code=400)
    try:
        parsed = parse_emulation(body, limit)
    except EmulationError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    if parsed.edge_mark == edge.client_id_mark:
        inbox = edge.inboxes.get(parsed.session)
        if inbox is None:
            return JSONResponse({"error": "unknown session (ended, or never opened)"}, status_code=404)
        if not inbox.put(parsed.frames):
            return JSONResponse({"error": "too many frames waiting for this session; retry"}, status_code=429)
        return JSONResponse({"accepted": len(parsed.frames)}, status_code=202)
    delivered = await edge.push.emulate(parsed.session, parsed.frames)
    if delivered is None:
        return JSONResponse({"error": "the push service cannot be reached; retry"}, status_code=503)
    if not delivered:
        return JSONResponse({"error": "unknown session (no edge holds it)"}, status_code=404)
    return JSONResponse({"accepted": len(parsed.frames)}, status_code=202)
