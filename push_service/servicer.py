"""The gRPC adapter: protobuf in, core calls, protobuf out; domain errors become statuses here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace

import grpc
import orjson
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from common import tracing
from common.client_ids import chosen_client_id_error
from common.clock import now_ms
from common.logs import connection_id
from common.topics import topic_error

from . import metrics
from .broker.base import BrokerUnavailable, unavailable_message
from .core.claims import ANONYMOUS_OWNER
from .core.history import PageLimits
from .core.presence import ClientEntry, PresenceChange
from .core.publication import Ack, InvalidPublish, Publication, control_publication, make_publication
from .hub import Applied, Deliver, EdgeSession, EdgeTooSlow, Heartbeat, Hub, Resync
from .presence import EdgeMirror, Roster

log = logging.getLogger("push_service.grpc")
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
MAX_IDEMPOTENCY_KEY_LENGTH = 128
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
# A publishing stream's messages handed to the broker and not yet answered, at most (a few round
# trips' worth at 1,000s of msg/s; the stream publisher sends up to 200 per request).
MAX_STREAM_IN_FLIGHT = 2000


class PushServicer(pb_grpc.PushServiceServicer):
    def __init__(self, hub: Hub, *, max_data_bytes: int, history_page: PageLimits | None = None,
                 roster: Roster | None = None) -> None:
        self._hub = hub
        self._roster = roster
        self._max_data_bytes = max_data_bytes
        self._history_page = history_page or PageLimits()

    def _publication(self, message: pb.OutgoingMessage) -> Publication:
        return make_publication(
            topic=message.topic,
            type_=message.type,
            data=message.data,
            id_=message.id,
            client_id=message.client_id,
            retain=message.retain,
            now_ms=now_ms(),
            max_data_bytes=self._max_data_bytes,
            conflation_key=message.conflation_key,
        )

    def _checked(self, message: pb.OutgoingMessage) -> tuple[Publication, str]:
        """The publication and its idempotency key; raises InvalidPublish."""
        key = message.idempotency_key
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise InvalidPublish(f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        return self._publication(message), key

    def _checked_traced(self, message: pb.OutgoingMessage) -> tuple[Publication, str]:
        """`_checked` for a sampled message of a stream: its publish span (the publisher's child) covers
        validation (the request's messages go to the broker together); the fan-out is its child."""
        with tracing.start_span("push.publish", parent=message.traceparent, kind=tracing.SpanKind.SERVER,
                                attributes=_span_attributes(message, "PublishStream")) as span:
            publication, key = self._checked(message)
            return replace(publication, traceparent=tracing.traceparent(span)), key

    async def _publish(self, message: pb.OutgoingMessage) -> Ack:
        """Validate and publish (at most once per idempotency key); raises InvalidPublish /
        BrokerUnavailable. Returns the publication's ack with its position (the first's, for a repeat)."""
        return await self._hub.publish(*self._checked(message))

    async def _publish_in(self, span: tracing.Span, message: pb.OutgoingMessage) -> Ack:
        """`_publish`, its two steps as children of the publish's `span`."""
        with tracing.start_span("push.validate", parent=span):
            publication, key = self._checked(message)
        publication = replace(publication, traceparent=tracing.traceparent(span))
        with tracing.start_span("push.broker.publish", parent=span, kind=tracing.SpanKind.CLIENT) as step:
            ack = await self._hub.publish(publication, key)
            step.set_attribute("push.offset", ack.offset)
        return ack

    async def Publish(self, request: pb.PublishRequest, context: grpc.aio.ServicerContext) -> pb.PublishResponse:
        message, span = request.message, None
        if tracing.ENABLED and (parent := _trace_context(message, context)):
            # A sampled publish: its span (the publisher's child) has validation and the broker as its
            # children; the publication carries its context through the broker to the fan-out.
            span = tracing.start_span("push.publish", parent=parent, kind=tracing.SpanKind.SERVER,
                                      attributes=_span_attributes(message, "Publish"))
        try:
            result = await (self._publish(message) if span is None else self._publish_in(span, message))
        except InvalidPublish as exc:
            metrics.REJECTED.labels("Publish", "INVALID_ARGUMENT").inc()
            _failed(span, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BrokerUnavailable as exc:
            metrics.REJECTED.labels("Publish", "UNAVAILABLE").inc()
            _failed(span, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        finally:
            if span is not None:
                span.end()
        metrics.PUBLISHED.labels("Publish").inc()
        return pb.PublishResponse(id=result.id, timestamp_ms=result.timestamp_ms, offset=result.offset,
                                  epoch=result.epoch)

    async def History(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryResponse:
        if (why := topic_error(request.topic)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid topic: {why}")
        since = request.since_offset if request.HasField("since_offset") else None
        try:
            read = await self._hub.history(request.topic, since, request.epoch, request.limit, self._history_page)
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        return pb.HistoryResponse(
            publications=[_delivery(p) for p in read.publications],
            offset=read.offset,
            epoch=read.epoch,
            recovered=read.recovered,
            reason=read.reason,
            truncated=read.truncated,
        )

    async def ClaimClientId(
        self, request: pb.ClaimClientIdRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimClientIdResponse:
        if (why := chosen_client_id_error(request.client_id)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
        if request.HasField("user") and not request.user:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user must not be empty (absent: anonymous)")
        owner = request.user if request.HasField("user") else ANONYMOUS_OWNER
        try:
            granted = await self._hub.claim_client_id(request.client_id, owner)
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        return pb.ClaimClientIdResponse(granted=granted)

    async def Emulate(self, request: pb.EmulateRequest, context: grpc.aio.ServicerContext) -> pb.EmulateResponse:
        total = sum(len(f) for f in request.frames)
        if total > self._max_data_bytes * 4:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"frames are {total} bytes; the limit is {self._max_data_bytes * 4}")
        try:
            delivered = await self._hub.signal(control_publication(request.session_id, list(request.frames), now_ms()))
        except InvalidPublish as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BrokerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, unavailable_message(exc))
        return pb.EmulateResponse(delivered=delivered)

    async def PublishStream(
        self, request_iterator: AsyncIterator[pb.PublishStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PublishStreamResponse]:
        """Requests are handed to the broker's lane as they arrive, without waiting for the answers of
        those before them (the lane keeps their order: issue 17.8), at most MAX_STREAM_IN_FLIGHT
        messages unanswered, valid or not, an empty request as one (then the stream is read no further:
        the publisher waits); answers go back in request order. After a refusal the lane publishes nothing later on this stream: the
        publisher sends again from the refused message, in order."""
        published = metrics.PUBLISHED.labels("PublishStream")
        invalid = metrics.REJECTED.labels("PublishStream", "INVALID_ARGUMENT")
        unavailable = metrics.REJECTED.labels("PublishStream", "UNAVAILABLE")
        lane = self._hub.lane()
        taken: asyncio.Queue[_Taken | None] = asyncio.Queue()  # bounded by `room`, in messages
        room = _Room(MAX_STREAM_IN_FLIGHT)

        async def take() -> None:
            try:
                async for request in request_iterator:
                    results: list[pb.PublishResult | None] = []
                    valid: list[tuple[Publication, str]] = []
                    for message in request.messages:
                        try:
                            valid.append(self._checked(message) if not (tracing.ENABLED and message.traceparent)
                                         else self._checked_traced(message))
                            results.append(None)  # answered once published
                        except InvalidPublish as exc:
                            invalid.inc()
                            results.append(pb.PublishResult(error_code=INVALID_ARGUMENT, error_message=str(exc)))
                    # A request of no valid message is still an answer queued: a publisher that never
                    # reads its answers meets the bound whatever it sends.
                    count = max(1, len(request.messages))
                    await room.take(count)
                    taken.put_nowait(_Taken(request.sequence, results, lane.publish_many(valid) if valid else None,
                                            count))
            finally:
                taken.put_nowait(None)

        reader = asyncio.create_task(take(), name="publish-stream-reader")
        try:
            while (item := await taken.get()) is not None:
                outcomes = await item.outcomes if item.outcomes is not None else []
                room.give(item.count)
                answers = iter(outcomes)
                response = []
                for result in item.results:
                    if result is not None:
                        response.append(result)
                        continue
                    outcome = next(answers)
                    if isinstance(outcome, BrokerUnavailable):
                        unavailable.inc()
                        response.append(pb.PublishResult(error_code=UNAVAILABLE,
                                                         error_message=unavailable_message(outcome)))
                    else:
                        published.inc()
                        response.append(pb.PublishResult(id=outcome.id, timestamp_ms=outcome.timestamp_ms))
                yield pb.PublishStreamResponse(sequence=item.sequence, results=response)
            await reader  # the request stream's own end or error
        finally:
            reader.cancel()

    async def EdgeStream(
        self, request_iterator: AsyncIterator[pb.EdgeStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EdgeStreamResponse]:
        session = self._hub.open_session(context.peer())
        connection_id.set(f"edge-{session.name}")  # in every log line about this stream
        metrics.EDGE_STREAMS_OPENED.inc()
        log.info("edge stream %s opened", session.name)
        reader = asyncio.create_task(self._read_interest(request_iterator, session))
        first = self._first_response()  # rides on the first heartbeat (the stream's first response)
        try:
            if first is not None and not session.heartbeat_interval:
                yield first
                first = None
            async for event in session.events():
                match event:
                    case Deliver(batch):
                        metrics.SENT.inc(len(batch))
                        metrics.BATCH_SIZE.observe(len(batch))
                        yield pb.EdgeStreamResponse(deliveries=[_delivery(p) for p in batch])
                    case Applied(sequence, positions):
                        yield pb.EdgeStreamResponse(
                            applied_sequence=sequence,
                            topic_positions=[pb.TopicPosition(topic=t, offset=o, epoch=e) for t, o, e in positions if o],
                            unpublished_topics=[t for t, o, _ in positions if not o])
                    case Resync():
                        yield pb.EdgeStreamResponse(resync=True)
                    case Heartbeat(interval):
                        response = pb.EdgeStreamResponse(heartbeat_ms=max(1, round(interval * 1000)))
                        if first is not None:
                            response.MergeFrom(first)
                            first = None
                        yield response
            if reader.done() and not reader.cancelled() and (why := reader.result()):
                # The broker could not apply an interest change: the edge reconnects and declares again.
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"broker unavailable: {why}")
        except EdgeTooSlow as exc:
            metrics.EDGES_TOO_SLOW.inc()
            log.warning("%s", exc)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            reader.cancel()
            await self._hub.close_session(session)
            log.info("edge stream %s closed", session.name)

    def _first_response(self) -> pb.EdgeStreamResponse | None:
        """What an edge learns once per stream: the presence rules and its report interval."""
        if self._roster is None:
            return None
        return pb.EdgeStreamResponse(presence_rules=str(self._roster.rules),
                                     report_interval_ms=max(1, round(self._roster.report_interval * 1000)))

    async def _read_interest(
        self, request_iterator: AsyncIterator[pb.EdgeStreamRequest], session: EdgeSession
    ) -> str:
        """Applies the edge's interest changes until the stream ends; returns why the broker refused
        one ("" if it did not)."""
        try:
            await self._hub.route_commands(session)
            first = True  # a new stream's snapshot: the edge knows its topics' positions, but those it asks for
            # (a later change: every topic it adds)
            async for change in request_iterator:
                positions = await self._hub.change_interest(
                    session,
                    add_topics=change.add_topics,
                    remove_topics=change.remove_topics,
                    add_client_ids=change.add_client_ids,
                    remove_client_ids=change.remove_client_ids,
                    add_join_leave=change.add_join_leave,
                    remove_join_leave=change.remove_join_leave,
                    positions=set(change.position_topics if first else change.add_topics if change.sequence else ()),
                )
                first = False
                await self._edge_presence(session, change)
                if change.sequence:
                    session.acknowledge(change.sequence, positions)
        except asyncio.CancelledError:
            raise
        except BrokerUnavailable as exc:
            log.warning("edge stream %s: interest change refused, ending the stream: %s", session.name, exc)
            return str(exc)
        except Exception:  # the stream broke: the edge will reconnect
            log.debug("edge stream %s: interest reader ended", session.name, exc_info=True)
        finally:
            session.close()
        return ""


    async def _edge_presence(self, session: EdgeSession, change: pb.EdgeStreamRequest) -> None:
        """The edge's presence, occupancy and report (the broker away: recorded once it answers)."""
        if self._roster is None or not change.edge_id:
            return
        first = session.edge_id is None
        session.edge_id = change.edge_id
        if first:
            session.presence = EdgeMirror()
        await self._roster.on_edge_request(
            session.presence, change.edge_id, first=first, report=_report_json(change.report) if change.HasField("report") else None,
            presence=[PresenceChange(c.topic, ClientEntry(c.client.client_id, c.client.user, c.client.info,
                                                          c.client.joined_ms), c.leave)
                      for c in change.presence if topic_error(c.topic) is None and c.client.client_id],
            add_topics=change.add_topics, remove_topics=change.remove_topics,
            add_users=change.add_users, remove_users=change.remove_users)


def _report_json(report: pb.EdgeReport) -> bytes:
    return orjson.dumps({"kind": "edge", "address": report.address, "version": report.version,
                         "started_ms": report.started_ms, "connections": report.connections,
                         "subscriptions": report.subscriptions, "topics": dict(report.topics),
                         "truncated": report.truncated})


@dataclass(slots=True)
class _Taken:
    """A stream request handed to the lane: its answers so far (None: published below) and the lane's."""

    sequence: int
    results: list[pb.PublishResult | None]
    outcomes: Awaitable[list[Ack | BrokerUnavailable]] | None
    count: int


class _Room:
    """At most `limit` messages of a stream unanswered; a request larger than that alone still goes
    (it waits until nothing is in flight)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_flight = 0
        self._freed = asyncio.Event()

    async def take(self, count: int) -> None:
        while self._in_flight and self._in_flight + count > self._limit:
            self._freed.clear()
            await self._freed.wait()
        self._in_flight += count

    def give(self, count: int) -> None:
        self._in_flight -= count
        self._freed.set()


def _delivery(p: Publication) -> pb.Delivery:
    delivery = pb.Delivery(topic=p.topic, client_id=p.client_id, frame=p.frame, retained=p.retain, offset=p.offset,
                           epoch=p.epoch, conflation_key=p.conflation_key, timestamp_ms=p.timestamp_ms,
                           control=p.control, kind=p.kind, replay=p.replay)
    if p.traceparent:  # a sampled message: the edge's delivery span is the fan-out's child
        delivery.traceparent = p.traceparent
    return delivery


def _trace_context(message: pb.OutgoingMessage, context: grpc.aio.ServicerContext) -> str:
    """A sampled publish's W3C context: from the message, else the call's metadata ("": not traced)."""
    parent = message.traceparent or tracing.from_metadata(context.invocation_metadata() or ())
    return parent if tracing.sampled(parent) else ""


def _failed(span: tracing.Span | None, exc: Exception) -> None:
    if span is not None:
        span.record_exception(exc)
        span.set_status(tracing.Status(tracing.StatusCode.ERROR, str(exc)))


def _span_attributes(message: pb.OutgoingMessage, rpc: str) -> dict[str, str]:
    return {"rpc.method": rpc, "messaging.destination.name": message.topic, "messaging.message.type": message.type}
