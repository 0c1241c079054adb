"""Publishing over the push service's gRPC API.

    client = PushClient("127.0.0.1:50051")
    await client.queue_message({"type": "task_progress", "data": {...}}, topic="task:progress")
    await client.send_personal_message({"type": "notification", "data": {...}}, client_id)

`StreamPublisher` is for high-rate producers: `submit()` never blocks; a background task streams the
messages over `PublishStream`, reconnecting when the push service goes away.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import grpc
import orjson
from prometheus_client import Counter, Gauge
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from common import tracing
from common.backoff import Backoff
from common.grpc_security import MAX_RECEIVE, secure_channel
from common.reconnect import reconnect_forever

if TYPE_CHECKING:
    from .server_api import ServerApi

log = logging.getLogger("pushclient")
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
MAX_REQUEST_BYTES = 1 << 20  # a PublishStream request's messages, about (the push service takes up to 4 MiB)

# A producer's buffer, visible to Prometheus (a process that serves its default registry exposes them).
BUFFERED = Gauge("push_publisher_buffered_messages", "Messages waiting for the push service's answer")
DROPPED = Counter("push_publisher_dropped_messages", "Messages dropped because the publish buffer was full")
ACCEPTED = Counter("push_publisher_accepted_messages", "Messages the push service accepted")
REJECTED = Counter("push_publisher_rejected_messages", "Messages the push service refused (invalid)")
RECONNECTS = Counter("push_publisher_stream_reconnects", "Publish streams started again after one was lost")
REQUESTS = Counter("push_publisher_stream_requests", "PublishStream requests sent (messages per request: accepted / this)")


class PublishError(Exception):
    """The push service refused a message (or could not be reached); `code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def encode_data(data: Any) -> bytes:
    """JSON bytes for `data`: bytes/str are taken as already-encoded JSON, anything else is encoded."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return orjson.dumps(data)


def outgoing(
    topic: str,
    type_: str,
    data: Any = None,
    *,
    id: str = "",
    client_id: str = "",
    retain: bool = False,
    idempotency_key: str = "",
    conflation_key: str = "",
) -> pb.OutgoingMessage:
    return pb.OutgoingMessage(
        topic=topic, type=type_, data=encode_data(data), id=id or "", client_id=client_id or "", retain=retain,
        idempotency_key=idempotency_key, conflation_key=conflation_key,
    )


def _publish_span(message: pb.OutgoingMessage) -> tracing.Span | None:
    """A publish's span when it is traced: the child of the caller's current span, or a new trace
    sampled at the process's ratio (tracing.sampled_root)."""
    if not (tracing.current_sampled() or tracing.sampled_root()):
        return None
    return tracing.start_span("pushclient.publish", kind=tracing.SpanKind.PRODUCER, attributes={
        "messaging.destination.name": message.topic or "", "messaging.message.type": message.type,
        **({"push.client_id": message.client_id} if message.client_id else {})})


class PushClient:
    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        timeout: float = 5.0,
        token: str | None = None,
        tls_ca_file: Path | None = None,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        tls_server_name: str | None = None,
        max_in_flight: int = 256,
    ) -> None:
        """`token`: the push service's bearer token; `tls_ca_file`: its CA, for TLS; a client
        certificate and key for mutual TLS; `tls_server_name`: the name in the servers' certificates
        when `address` does not carry it (e.g. a list of replicas' IP addresses); `max_in_flight`:
        unary calls on the wire at once, more wait here (`timeout` counts from when one is sent)."""
        self.address = address
        self.timeout = timeout
        # A gRPC server cancels calls beyond its queue of unanswered ones (grpc core: 1,000 by default,
        # without a message); thousands of publishes gathered at once wait their turn here instead.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._channel = secure_channel(address, token=token, ca_file=tls_ca_file, cert_file=tls_cert_file,
                                       key_file=tls_key_file, server_name=tls_server_name, options=MAX_RECEIVE)
        self.stub = pb_grpc.PushServiceStub(self._channel)

    @property
    def server(self) -> ServerApi:
        """The server API (presence, channels, info, disconnect, subscribe, unsubscribe), on this channel."""
        from .server_api import ServerApi

        return ServerApi(self._channel, self.timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def publish(
        self,
        topic: str,
        type_: str,
        data: Any = None,
        *,
        id: str = "",
        client_id: str = "",
        retain: bool = False,
        idempotency_key: str = "",
    ) -> pb.PublishResponse:
        """Publish one message. With `idempotency_key`, a retry (after a timeout, say) is delivered once."""
        request = pb.PublishRequest(message=outgoing(topic, type_, data, id=id, client_id=client_id, retain=retain,
                                                     idempotency_key=idempotency_key))
        # A traced publish's context goes in the call's metadata: the push service's spans are its children.
        span = _publish_span(request.message) if tracing.ENABLED else None
        try:
            async with self._in_flight:
                return await self.stub.Publish(request, timeout=self.timeout,
                                               metadata=None if span is None else tracing.metadata(span))
        except grpc.aio.AioRpcError as exc:
            if span is not None:
                span.set_status(tracing.Status(tracing.StatusCode.ERROR, f"{exc.code().name}: {exc.details()}"))
            raise PublishError(exc.code(), exc.details() or "") from None
        finally:
            if span is not None:
                span.end()

    async def queue_message(self, message: Mapping[str, Any], topic: str) -> str:
        """The guide's `manager.queue_message(message, topic=...)`: to every subscriber of `topic`.

        `message` is the guide's envelope (`type`, optional `id`, `data`); the push service stamps
        the timestamp at publish. Returns the message id."""
        reply = await self.publish(topic, message["type"], message.get("data"), id=message.get("id") or "")
        return reply.id

    async def send_personal_message(self, message: Mapping[str, Any], client_id: str) -> str:
        """The guide's `manager.send_personal_message(message, client_id)`: to one connection."""
        reply = await self.publish(
            message.get("topic") or "", message["type"], message.get("data"), id=message.get("id") or "",
            client_id=client_id,
        )
        return reply.id

    async def tail(self, topics: Iterable[str], on_ready: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
        """Every frame published on `topics` from now on (as an edge would see it), batches unpacked.

        `on_ready` is called once the push service has the subscription in effect."""
        request = pb.EdgeStreamRequest(add_topics=list(topics), sequence=1)

        async def requests():  # type: ignore[no-untyped-def]
            yield request
            await asyncio.Event().wait()  # keep the stream open

        call = self.stub.EdgeStream(requests())
        try:
            async for response in call:
                if response.applied_sequence and on_ready is not None:
                    on_ready()
                for delivery in response.deliveries:
                    yield delivery.frame
        finally:
            call.cancel()

    def stream_publisher(self, *, max_buffer: int = 10_000, idempotent: bool = False,
                         max_in_flight: int = 1) -> StreamPublisher:
        return StreamPublisher(self.stub, max_buffer=max_buffer, idempotent=idempotent, max_in_flight=max_in_flight)


class StreamPublisher:
    """Publishes through one long-lived `PublishStream`; `submit()` queues and returns at once.

    A message stays in the buffer until the push service has answered it, so a stream that breaks
    loses nothing: the unanswered messages are sent again, in order, on the next stream (at least
    once; exactly once with `idempotent=True`, which gives every message an idempotency key). The buffer holds at most `max_buffer` messages; when it is full the oldest is dropped and
    counted in `dropped` with a warning in the log, never silently. Rejections (e.g. an invalid
    topic) are counted in `rejected` and logged.

    Batching follows back-pressure, as TCP's Nagle does: at most `max_in_flight` requests are
    unanswered at a time, and what is submitted meanwhile leaves as one request (up to `max_batch`
    messages) once an answer comes. A push service that keeps up answers before the next message
    comes, so each message leaves at once, as itself; a busy one (its answers late) gets fewer,
    larger requests, and every gRPC operation after it (the answer, the edge stream's write and read)
    is then shared by the whole request instead of paid per message. One stream then carries at most
    `max_in_flight` × `max_batch` messages (and ~1 MiB each) per round trip: for a push service far
    away (tens of milliseconds) at thousands of messages a second, raise `max_in_flight`.
    """

    def __init__(
        self, stub: pb_grpc.PushServiceStub, *, max_buffer: int = 10_000, max_batch: int = 200, idempotent: bool = False,
        max_in_flight: int = 1,
    ) -> None:
        self._stub = stub
        # Resent messages (after a broken stream) carry the same key, so they are delivered once.
        self._key_prefix = f"{uuid.uuid4().hex}:" if idempotent else None
        self._max_buffer = max_buffer
        self._max_batch = max_batch  # messages per request: what is waiting goes out together
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._max_in_flight = max_in_flight
        self._in_flight = 0  # requests sent on the current stream and not answered yet
        self.requests = 0  # requests sent, every stream
        self._pending: deque[tuple[int, pb.OutgoingMessage]] = deque()  # oldest first, unanswered
        self._sent = 0  # how many of `_pending` went out on the current stream
        self._sequence = 0
        self._generation = 0
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.accepted = 0
        self.rejected = 0
        self.dropped = 0
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-publisher")

    async def close(self, drain_timeout: float = 2.0) -> None:
        try:
            await asyncio.wait_for(self.flush(), drain_timeout)
        except TimeoutError:
            log.warning("closing with %d messages unanswered", len(self._pending))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def submit(self, message: pb.OutgoingMessage) -> None:
        if len(self._pending) >= self._max_buffer:
            self._pending.popleft()
            self._sent = max(0, self._sent - 1)
            self.dropped += 1
            DROPPED.inc()
            BUFFERED.dec()
            log.warning("publish buffer full (%d): oldest message dropped (%d so far)", self._max_buffer, self.dropped)
        self._sequence += 1
        if tracing.ENABLED and (span := _publish_span(message)) is not None:
            message.traceparent = tracing.traceparent(span)  # a stream carries each message's own context
            span.end()  # the span is the hand-over: the push service's spans follow as its children
        if self._key_prefix is not None and not message.idempotency_key:
            message.idempotency_key = f"{self._key_prefix}{self._sequence}"
        self._pending.append((self._sequence, message))
        BUFFERED.inc()
        self._idle.clear()
        self._has_work.set()

    async def flush(self) -> None:
        """Wait until every submitted message has been answered by the push service."""
        await self._idle.wait()

    async def _run(self) -> None:
        await reconnect_forever(self._stream_once, Backoff(initial=0.1, maximum=2.0), log, "publish stream",
                                expected=(grpc.aio.AioRpcError, PublishError))

    async def _stream_once(self, up: Callable[[], None]) -> None:
        try:
            await self._stream(up)
        finally:
            if self._pending:
                log.info("publish stream: %d messages unanswered, sent again on the next stream", len(self._pending))
            self.connected = False
            self._sent = 0  # resend whatever was not answered
            RECONNECTS.inc()

    async def _stream(self, up: Callable[[], None]) -> None:
        # Each stream has its own request generator; gRPC may keep a broken stream's generator
        # suspended, so a stale one must stop instead of taking messages meant for the new stream.
        self._generation += 1
        generation = self._generation

        async def requests():  # type: ignore[no-untyped-def]
            while True:
                while ((self._sent >= len(self._pending) or self._in_flight >= self._max_in_flight)
                       and generation == self._generation):
                    self._has_work.clear()
                    await self._has_work.wait()
                if generation != self._generation:
                    return
                batch = self._next_batch()
                self._sent += len(batch)
                self._in_flight += 1
                self.requests += 1
                REQUESTS.inc()
                yield pb.PublishStreamRequest(sequence=batch[-1][0], messages=[m for _, m in batch])

        self._sent = 0
        self._in_flight = 0
        call = self._stub.PublishStream(requests())
        try:
            await call.wait_for_connection()
            self.connected = True
            await self._read_answers(call, up)
        finally:
            self._generation += 1
            self._has_work.set()  # wake the stale generator so that it ends
            call.cancel()

    def _next_batch(self) -> list[tuple[int, pb.OutgoingMessage]]:
        """What waits to be sent, oldest first: at most `max_batch` messages and about
        MAX_REQUEST_BYTES of their data (at least one message), so that a request stays under gRPC's
        4 MiB. (Counting `data` alone: it is what can be large, and encoding each message to measure
        it would encode it twice.)"""
        batch, size = [], 0
        for entry in itertools.islice(self._pending, self._sent, self._sent + self._max_batch):
            size += len(entry[1].data)
            if batch and size > MAX_REQUEST_BYTES:
                break
            batch.append(entry)
        return batch

    async def _read_answers(self, call, up: Callable[[], None]) -> None:  # type: ignore[no-untyped-def]
        """Settle what the push service answered. The backoff starts over only once messages are
        accepted: a stream that connects while the broker refuses everything keeps slowing down."""
        async for response in call:
            self._in_flight -= 1
            self._has_work.set()  # what waited for this answer goes out as the next request
            answered = []
            while self._pending and self._pending[0][0] <= response.sequence:
                answered.append(self._pending.popleft())
                self._sent = max(0, self._sent - 1)
            retry = []
            # The results of a request's messages, the last ones matched to what is still pending (a
            # full buffer may have dropped its oldest messages while they were in flight).
            results = response.results[max(0, len(response.results) - len(answered)):]
            for entry, result in zip(answered, results, strict=False):
                if result.error_code == UNAVAILABLE:
                    retry.append(entry)  # the push service cannot publish now (its broker is down)
                elif result.error_code:
                    self.rejected += 1
                    REJECTED.inc()
                    BUFFERED.dec()
                    log.warning("message rejected: %s", result.error_message)
                else:
                    self.accepted += 1
                    ACCEPTED.inc()
                    BUFFERED.dec()
            if retry:
                # Kept, in order, at the front: a new stream sends them again after a pause (with
                # idempotency keys, whatever went through meanwhile is not published twice).
                self._pending.extendleft(reversed(retry))
                raise PublishError(grpc.StatusCode.UNAVAILABLE, f"{len(retry)} messages refused for now, retrying")
            up()
            if not self._pending:
                self._idle.set()
