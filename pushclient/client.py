"""Publishing over the push service's gRPC API.

    client = PushClient("127.0.0.1:50051")
    await client.queue_message({"type": "task_progress", "data": {...}}, topic="task:progress")
    await client.send_personal_message({"type": "notification", "data": {...}}, client_id)

`StreamPublisher` is for high-rate producers: `submit()` never blocks; a background task streams the
messages over `PublishStream`, reconnecting when the push service goes away. What it holds meanwhile is
a `PublishBuffer` (no I/O): bounded in messages and bytes, newer messages superseding older unsent
ones with the same conflation key.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
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
BUFFERED_BYTES = Gauge("push_publisher_buffered_bytes", "Encoded bytes of the messages waiting for an answer")
DROPPED = Counter("push_publisher_dropped_messages", "Messages dropped because the publish buffer was full")
DROPPED_UNKEYED = Counter("push_publisher_dropped_unconflatable_messages",
                          "Messages without a conflation key dropped: the full buffer held no other that could go")
CONFLATED = Counter("push_publisher_conflated_messages",
                    "Unsent messages replaced by a newer one with the same topic and conflation key")
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

    def stream_publisher(self, *, max_buffer: int = 10_000, max_buffer_bytes: int | None = None,
                         conflate_after: int | None = None, idempotent: bool = False,
                         max_in_flight: int = 1) -> StreamPublisher:
        return StreamPublisher(self.stub, max_buffer=max_buffer, max_buffer_bytes=max_buffer_bytes,
                               conflate_after=conflate_after, idempotent=idempotent, max_in_flight=max_in_flight)


@dataclass(slots=True)
class BufferedMessage:
    sequence: int
    message: pb.OutgoingMessage
    size: int  # encoded bytes
    key: tuple[str, str] | None  # (topic, conflation_key); None: no newer message supersedes it


@dataclass(frozen=True, slots=True)
class Added:
    """What `PublishBuffer.add` did besides keeping the new message."""

    superseded: BufferedMessage | None = None  # the unsent message of the same key that the new one replaced
    dropped: tuple[BufferedMessage, ...] = ()  # to make room, oldest first (maybe the new one)


NOTHING_ELSE = Added()  # what nearly every add did: nothing allocated for it


class PublishBuffer:
    """A stream publisher's messages not answered yet, oldest first, bounded in count and in encoded
    bytes. No I/O: the publisher adds to it, takes its requests from it and settles answers into it.

    A message with a `conflation_key` supersedes an unsent older one with the same topic and key (a
    task's earlier progress, an older task list): once the buffer holds `conflate_after` messages
    (None: only when it is full), the older one goes and the new one is added at the end. So what
    is sent is always a subsequence of what was submitted, in submission order: a newer message never
    overtakes one submitted before it (a task list showing a task completed never precedes the
    `completed` status), which keeping the older one's place would break. A message already sent on
    the current stream is not replaced (it is on the wire). The mark counts those too: a request
    taken by a stream that then fails must not lower it (while the push service is away, every
    attempt takes one).

    When full (count or bytes), what goes, in this order: the unsent message the new one supersedes;
    the oldest message with a conflation key (the new one, when no other has a key: a progress step is
    what loses least, a later one of its task tells as much); only then the oldest message without one
    (a status, say), which the publisher reports as such. Oldest first also means sent messages first,
    those the push service most likely took already. A lone message over `max_bytes` is kept (the push
    service judges its size).
    """

    def __init__(self, max_messages: int = 10_000, max_bytes: int | None = None,
                 conflate_after: int | None = None) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.conflate_after = conflate_after
        # Sent on the current stream and not answered yet, then not sent yet; each oldest first.
        # Every sent message is older than every unsent one: a request takes the oldest unsent.
        self._sent: OrderedDict[int, BufferedMessage] = OrderedDict()
        self._unsent: OrderedDict[int, BufferedMessage] = OrderedDict()
        self._keyed: OrderedDict[int, None] = OrderedDict()  # the messages with a key, oldest first
        self._newest: dict[tuple[str, str], int] = {}  # a key's newest message
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._sent) + len(self._unsent)

    def __contains__(self, sequence: int) -> bool:
        return sequence in self._sent or sequence in self._unsent

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def messages(self) -> list[pb.OutgoingMessage]:
        """Every message held, oldest first."""
        return [entry.message for entry in (*self._sent.values(), *self._unsent.values())]

    def add(self, sequence: int, message: pb.OutgoingMessage, *, supersede: bool = False) -> Added:
        """Keep `message` (`sequence`: greater than any before); `supersede`: replace the unsent one
        of its key whatever the backlog."""
        key = (message.topic, message.conflation_key) if message.conflation_key else None
        entry = BufferedMessage(sequence, message, message.ByteSize(), key)
        superseded = None
        older = self._unsent.get(self._newest.get(key, -1)) if key is not None else None
        if older is not None and (supersede or self._conflating() or self._full_for(entry.size)):
            superseded = self._remove(older.sequence)
        self._unsent[sequence] = entry
        self.bytes += entry.size
        if key is not None:
            self._keyed[sequence] = None
            self._newest[key] = sequence
        dropped: list[BufferedMessage] = []
        while (held := len(self._sent) + len(self._unsent)) > 1 and (
                held > self.max_messages or (self.max_bytes is not None and self.bytes > self.max_bytes)):
            victim = next(iter(self._keyed)) if self._keyed else next(iter(self._sent or self._unsent))
            dropped.append(self._remove(victim))
        return Added(superseded, tuple(dropped)) if superseded is not None or dropped else NOTHING_ELSE

    def take(self, max_messages: int, max_data_bytes: int) -> list[BufferedMessage]:
        """The next request's messages, now sent: the oldest unsent, at most `max_messages` and about
        `max_data_bytes` of their data (at least one message)."""
        batch: list[BufferedMessage] = []
        size = 0
        while self._unsent and len(batch) < max_messages:
            sequence, entry = self._unsent.popitem(last=False)
            size += len(entry.message.data)
            if batch and size > max_data_bytes:
                self._unsent[sequence] = entry  # (the next request's first)
                self._unsent.move_to_end(sequence, last=False)
                break
            self._sent[sequence] = entry
            batch.append(entry)
        return batch

    def settle(self, sequence: int) -> BufferedMessage | None:
        """An answered message leaves; None when it was dropped while it was on the wire."""
        entry = self._sent.pop(sequence, None)
        return self._forget(entry) if entry is not None else None

    def unsend_all(self) -> None:
        """The stream is gone: what was sent and not answered is sent again, first."""
        if self._sent:
            self._sent.update(self._unsent)
            self._sent, self._unsent = OrderedDict(), self._sent

    def _conflating(self) -> bool:
        return self.conflate_after is not None and len(self) >= self.conflate_after

    def _full_for(self, size: int) -> bool:
        return len(self) >= self.max_messages or (self.max_bytes is not None and self.bytes + size > self.max_bytes)

    def _remove(self, sequence: int) -> BufferedMessage:
        entry = self._unsent.pop(sequence, None)
        return self._forget(entry if entry is not None else self._sent.pop(sequence))

    def _forget(self, entry: BufferedMessage) -> BufferedMessage:
        """What `entry` counted for (its bytes, its key), now that it has left either queue."""
        sequence = entry.sequence
        self.bytes -= entry.size
        if entry.key is not None:
            del self._keyed[sequence]
            if self._newest.get(entry.key) == sequence:
                del self._newest[entry.key]
        return entry


class StreamPublisher:
    """Publishes through one long-lived `PublishStream`; `submit()` queues and returns at once.

    A message stays in the buffer until the push service has answered it, so a stream that breaks
    loses nothing: the unanswered messages are sent again, in order, on the next stream (at least
    once; exactly once with `idempotent=True`, which gives every message an idempotency key). The
    buffer (`PublishBuffer`) holds at most `max_buffer` messages and `max_buffer_bytes` bytes (None:
    no byte bound). Once it holds `conflate_after` messages (None: only when full), a message with a
    conflation key replaces the unsent one with the same topic and key. When full, messages with a
    conflation key are dropped first, oldest first; one without is dropped only when nothing else can
    go. Every drop is counted in `dropped` with a warning in the log (an error for one without a
    key), never silently. Rejections (e.g. an invalid topic) are counted in `rejected` and logged.
    `on_connect` is called each time a stream connects (a producer re-sends its retained state then:
    a push service that restarted with the memory broker lost it).

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
        self, stub: pb_grpc.PushServiceStub, *, max_buffer: int = 10_000, max_buffer_bytes: int | None = None,
        conflate_after: int | None = None, max_batch: int = 200, idempotent: bool = False, max_in_flight: int = 1,
    ) -> None:
        self._stub = stub
        # Resent messages (after a broken stream) carry the same key, so they are delivered once.
        self._key_prefix = f"{uuid.uuid4().hex}:" if idempotent else None
        self._buffer = PublishBuffer(max_buffer, max_buffer_bytes, conflate_after)
        self._max_batch = max_batch  # messages per request: what is waiting goes out together
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._max_in_flight = max_in_flight
        # Each request sent on the current stream and not answered yet: its messages' sequences, by
        # which its answer's results are matched (a full buffer may have dropped some meanwhile).
        self._requests: deque[list[int]] = deque()
        self.requests = 0  # requests sent, every stream
        self._sequence = 0
        self._generation = 0
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.on_connect: Callable[[], None] | None = None  # set by the producer
        self.accepted = 0
        self.rejected = 0
        self.dropped = 0
        self.conflated = 0
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-publisher")

    async def close(self, drain_timeout: float = 2.0) -> None:
        try:
            await asyncio.wait_for(self.flush(), drain_timeout)
        except TimeoutError:
            log.warning("closing with %d messages unanswered", len(self._buffer))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.bytes

    def submit(self, message: pb.OutgoingMessage, *, supersede: bool = False) -> None:
        """Queue `message` (never blocks). `supersede`: it replaces the unsent message with the same
        topic and conflation key whatever the backlog (a state that makes older unsent copies useless)."""
        self._sequence += 1
        if tracing.ENABLED and (span := _publish_span(message)) is not None:
            message.traceparent = tracing.traceparent(span)  # a stream carries each message's own context
            span.end()  # the span is the hand-over: the push service's spans follow as its children
        if self._key_prefix is not None and not message.idempotency_key:
            message.idempotency_key = f"{self._key_prefix}{self._sequence}"
        held, held_bytes = len(self._buffer), self._buffer.bytes
        added = self._buffer.add(self._sequence, message, supersede=supersede)
        self._count_buffer(held, held_bytes)
        if added.superseded is not None:
            self.conflated += 1
            CONFLATED.inc()
        for entry in added.dropped:
            self._report_drop(entry)
        self._idle.clear()
        self._has_work.set()

    def _count_buffer(self, held: int, held_bytes: int) -> None:
        BUFFERED.inc(len(self._buffer) - held)
        BUFFERED_BYTES.inc(self._buffer.bytes - held_bytes)

    def _report_drop(self, entry: BufferedMessage) -> None:
        self.dropped += 1
        DROPPED.inc()
        buffer, message = self._buffer, entry.message
        bound = str(buffer.max_messages) if len(buffer) >= buffer.max_messages else f"{buffer.max_bytes} bytes"
        if entry.key is not None:
            log.warning("publish buffer full (%s): oldest message dropped of those with a conflation key "
                        "(%s %s, key %s; %d dropped so far)", bound, message.topic, message.type,
                        message.conflation_key, self.dropped)
        else:
            DROPPED_UNKEYED.inc()
            log.error("publish buffer full (%s): oldest message dropped, one without a conflation key: nothing "
                      "else could go (%s %s; %d dropped so far)", bound, message.topic, message.type, self.dropped)

    async def flush(self) -> None:
        """Wait until every submitted message has been answered by the push service (or dropped)."""
        await self._idle.wait()

    async def _run(self) -> None:
        await reconnect_forever(self._stream_once, Backoff(initial=0.1, maximum=2.0), log, "publish stream",
                                expected=(grpc.aio.AioRpcError, PublishError))

    async def _stream_once(self, up: Callable[[], None]) -> None:
        try:
            await self._stream(up)
        finally:
            if self._buffer:
                log.info("publish stream: %d messages unanswered, sent again on the next stream", len(self._buffer))
            self.connected = False
            self._buffer.unsend_all()  # resend whatever was not answered
            self._requests.clear()
            RECONNECTS.inc()

    async def _stream(self, up: Callable[[], None]) -> None:
        # Each stream has its own request generator; gRPC may keep a broken stream's generator
        # suspended, so a stale one must stop instead of taking messages meant for the new stream.
        self._generation += 1
        generation = self._generation

        async def requests():  # type: ignore[no-untyped-def]
            while True:
                while ((not self._buffer.unsent or len(self._requests) >= self._max_in_flight)
                       and generation == self._generation):
                    self._has_work.clear()
                    await self._has_work.wait()
                if generation != self._generation:
                    return
                # About MAX_REQUEST_BYTES of data at most, so that a request stays under gRPC's 4 MiB.
                # (Counting `data` alone: it is what can be large.)
                batch = self._buffer.take(self._max_batch, MAX_REQUEST_BYTES)
                self._requests.append([entry.sequence for entry in batch])
                self.requests += 1
                REQUESTS.inc()
                yield pb.PublishStreamRequest(sequence=batch[-1].sequence, messages=[e.message for e in batch])

        call = self._stub.PublishStream(requests())
        try:
            await call.wait_for_connection()
            self.connected = True
            if self.on_connect is not None:
                try:
                    self.on_connect()
                except Exception:
                    log.exception("publish stream: on_connect failed")
            await self._read_answers(call, up)
        finally:
            self._generation += 1
            self._has_work.set()  # wake the stale generator so that it ends
            call.cancel()

    async def _read_answers(self, call, up: Callable[[], None]) -> None:  # type: ignore[no-untyped-def]
        """Settle what the push service answered. The backoff starts over only once messages are
        accepted: a stream that connects while the broker refuses everything keeps slowing down."""
        async for response in call:
            sequences = self._requests.popleft()  # (the push service answers each request, in order)
            self._has_work.set()  # what waited for this answer goes out as the next request
            held, held_bytes = len(self._buffer), self._buffer.bytes
            retry = 0
            for sequence, result in zip(sequences, response.results, strict=False):
                if sequence not in self._buffer:
                    continue  # dropped by a full buffer while it was on the wire
                if result.error_code == UNAVAILABLE:
                    # The push service cannot publish now (its broker is down): kept, in order, and
                    # sent again on a new stream after a pause (with idempotency keys, whatever went
                    # through meanwhile is not published twice).
                    retry += 1
                    continue
                self._buffer.settle(sequence)
                if result.error_code:
                    self.rejected += 1
                    REJECTED.inc()
                    log.warning("message rejected: %s", result.error_message)
                else:
                    self.accepted += 1
                    ACCEPTED.inc()
            self._count_buffer(held, held_bytes)
            if retry:
                raise PublishError(grpc.StatusCode.UNAVAILABLE, f"{retry} messages refused for now, retrying")
            up()
            if not self._buffer:
                self._idle.set()
