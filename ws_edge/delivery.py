"""Deliveries from the push service to sockets: the fan-out loop, and the gaps a dropped stream leaves.

The push link's reader queues batches here; one task takes all that is queued, routes them
(core/routing.py) and writes each frame once to every socket that gets it. When the stream drops (or
the push service's broker reconnects, or a topic's stream skips offsets) the topics are held where
they were (core/sequencer.py) and, once it is back, what was missed is read from history and routed
the same way as live deliveries: through the sequencer (no repeats) and each recovering session's
`admit` (its hold and floor), so a gap fill can neither duplicate nor reorder for any connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from fnmatch import fnmatchcase

from common import tracing
from common.clock import now_ms

from . import metrics
from .core.frames import MAX_FRAME_MESSAGES, regroup, server_frame, websocket_text_frame
from .core.pacing import FanoutPacing
from .core.recovery import GapNotice, Position, recovery_report
from .core.routing import DeliveryRouter
from .core.sequencer import DeliveryLike
from .core.session import HistoryAnswer

log = logging.getLogger("ws_edge.delivery")
MAX_BATCHES_PER_FANOUT = 32
MAX_SPAN_LINKS = 32  # a delivery span links at most so many other sampled messages of its round
# (topic, since, latest): without `since`, the latest `latest` messages (0: all that is kept)
ReadHistory = Callable[[str, Position | None, int], Awaitable[HistoryAnswer]]


class DeliveryPump:
    def __init__(self, router: DeliveryRouter, read_history: ReadHistory, conflated: Sequence[str],
                 batch_max: int = MAX_FRAME_MESSAGES, confirmed_now: Callable[[str], bool] = lambda topic: True,
                 applying: Callable[[str], bool] = lambda topic: False) -> None:
        self.router = router
        self._confirmed_now = confirmed_now  # whether a told position is for the topic's latest subscription
        self._applying = applying  # whether the push service has yet to apply the topic's first interest here
        self.batch_max = batch_max  # messages per frame (EDGE_BATCH_MAX_MESSAGES)
        self._read_history = read_history
        self._conflated = list(conflated)
        self._conflated_topics: dict[str, bool] = {}  # topic -> whether it matches a conflated pattern
        self._incoming: list[Sequence[DeliveryLike]] = []  # batches from the push service, not yet fanned out
        self._incoming_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gap_fills: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references
        # Stream losses and restores so far, and whether the stream is down now (from a loss until it
        # is back with the whole interest): no fill that began before the latest loss or restore, or
        # answers while the stream is down, ends a hold (see _fill_gaps).
        self._stream_changes = 0
        self._stream_down = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._fan_out_forever(), name="fan-out")

    def stop(self) -> None:
        for task in (self._task, *self._gap_fills):
            if task is not None:
                task.cancel()

    # --- from the push link ---------------------------------------------------------------------

    def on_deliveries(self, deliveries: Sequence[DeliveryLike]) -> None:
        """From the push stream's reader: queue for the fan-out task, which takes all that is queued."""
        metrics.RECEIVED.inc(len(deliveries))
        metrics.PUSH_BATCH.observe(len(deliveries))
        self._incoming.append(deliveries)
        self._incoming_ready.set()

    def on_lost(self) -> None:
        """Hold every topic's deliveries until the restore's fill: the order stays right."""
        self._settle_positions()
        self._stream_changes += 1
        self._stream_down = True
        self._hold_every_topic()

    def on_restored(self) -> None:
        """Every topic held now is filled from its last position (a held topic's does not move): those
        the loss held, and any that a gap held meanwhile (a stream coming back can deliver before it is
        up). Fills begun during the outage answer stale: this one covers their topics."""
        self._stream_changes += 1
        self._stream_down = False
        sequencer = self.router.sequencer
        self._fill_gaps_soon({topic: sequencer.positions.get(topic) for topic in sequencer.held_topics()})

    def on_positions(self, positions: dict[str, tuple[int, str]]) -> None:
        """Where the topics of an applied interest change stood: each still subscribed here, by the
        subscription that change made, starts there (core/sequencer.py `start_at`), so that a stream
        lost before its first delivery is filled from history. Taken in the stream's order: after the
        deliveries that came before it are routed."""
        sequencer, subscribed = self.router.sequencer, self.router.topics
        for topic, position in positions.items():
            if self._confirmed_now(topic) and subscribed.subscribers(topic):
                sequencer.tell(topic, position)
        if not self._incoming:
            sequencer.start_told()

    def _settle_positions(self) -> None:
        """Before every topic is held: the deliveries still queued are routed now, then the topics whose
        positions were told after them start, so that the hold keeps what they said (and a topic placed
        by them is held: routed after the hold was decided, it would go on unheld over the outage)."""
        if self._incoming or self.router.sequencer.told:
            self._route_incoming()

    def _route_incoming(self) -> None:
        """What the stream queued, routed and written; then the topics whose positions were told after it."""
        batches, self._incoming = self._incoming, []
        try:
            self.fan_out(batches)
        except Exception:
            log.exception("fan-out failed")
        if (sequencer := self.router.sequencer).told:  # told after those deliveries: they are routed now
            sequencer.start_told()

    def on_resync(self) -> None:
        """The push service's broker reconnected: every topic is checked against history (while the
        stream is down, by the fill when it is back: a replica sends this before it takes the stream)."""
        if not self._stream_down:
            self._settle_positions()
            self._fill_gaps_soon(self._hold_every_topic())

    def _hold_every_topic(self) -> dict[str, tuple[int, str] | None]:
        """Every subscribed topic held, with where this edge was (None: nowhere known yet, e.g. no
        message since a gap nobody could recover: what is published meanwhile cannot be found again,
        so its subscribers are told). Not a topic placed nowhere yet whose interest the push service
        has yet to apply: nothing of it was missed here, it starts where the push service says when it
        applies it (a new stream's first request asks), and a recovering client reads from its own
        position once it has. (Held, it could only have been told "interrupted": the fault suite's
        paused replica and paused Redis told three or four subscribers so in a run, with all they had.)"""
        sequencer = self.router.sequencer
        topics = list(self.router.topics.keys())
        applying = {topic for topic in sequencer.unplaced(topics) if self._applying(topic)}
        positions = {topic: sequencer.positions.get(topic) for topic in topics if topic not in applying}
        for topic in positions:
            sequencer.hold(topic)  # (anew if held for a gap already: see TopicSequencer.hold)
        return positions

    # --- gaps -----------------------------------------------------------------------------------

    def _fill_gaps_soon(self, positions: dict[str, tuple[int, str]] | dict[str, tuple[int, str] | None]) -> None:
        """Fill these topics' gaps: each only while it is still in the hold it is in now."""
        holds = {topic: self.router.sequencer.hold_id(topic) for topic in positions}
        task = asyncio.create_task(self._fill_gaps(positions, holds, self._stream_changes), name="fill-gaps")
        self._gap_fills.add(task)
        task.add_done_callback(self._gap_fills.discard)

    async def _fill_gaps(self, positions: dict[str, tuple[int, str]] | dict[str, tuple[int, str] | None],
                         holds: dict[str, int | None], stream_changes: int) -> None:
        """Per topic: what was published meanwhile comes from history, then what was held, all routed
        as live deliveries. If history cannot say (a new epoch, a gap older than it keeps, or no
        answer), every subscriber is told (`recovery` with recovered false) and the topic goes on
        from what the new epoch holds, or from the next delivery."""
        for topic, position in positions.items():
            if self._stream_changes != stream_changes:
                return  # its answers would be stale (below): the restore's fill reads its topics
            try:
                resume_at, missed, notice, told_at = await self._recover(
                    topic, None if position is None else Position(*position))
            except Exception:
                log.exception("filling the gap of %s failed", topic)
                resume_at, missed, notice, told_at = None, [], None, None
            sequencer = self.router.sequencer
            if holds.get(topic) is None or sequencer.hold_id(topic) != holds[topic]:
                # Forgotten with its last subscriber, resumed by another fill of the same hold, or held
                # again for a newer gap, which its own fill answers: this answer is stale.
                continue
            if self._stream_down or self._stream_changes != stream_changes:
                # The stream is down, or was lost or restored after this fill began (a restore holds
                # nothing anew). An answer read before the loss, or during it, says nothing of what the stream
                # missed: resumed on it, the topic could go on with no position, and the first message
                # after the stream is back would pass unchecked over the outage (a session that recovered
                # from history meanwhile then loses what came between, silently). The fill after the
                # restore resumes it, filling or telling.
                continue
            if resume_at == (0, "") and (first := sequencer.first_held(topic)) is not None and first[0] > 1:
                # History holds nothing (lost, expired), yet the stream went past a first message: what
                # came before it cannot be found, and from (0, "") it would only be held again.
                resume_at, notice = None, _notice(topic, first[0] - 1, first[1], "too old")
            elif told_at is not None and not missed and sequencer.first_held(topic) is None:
                # The subscribers are told where the topic is now, and nothing came since: it goes on from
                # there (from nowhere, the next loss would tell them again though nothing was published).
                # Held messages place it themselves (resumed there, they would be dropped as repeats).
                # (A copy of a message the read saw that comes later is a repeat: the subscribers were told
                # the topic is at that position, and re-sync from there.)
                resume_at = told_at
            if told_at is not None:
                sequencer.history_at(topic, told_at)
            held = sequencer.resume(topic, resume_at)
            if notice is not None:
                wire = websocket_text_frame(notice)  # encoded once for every subscriber
                for connection in self.router.notice_targets(GapNotice(topic, notice)):
                    connection.send(notice, wire)  # type: ignore[attr-defined]
            self.fan_out([[*missed, *held]])

    async def _recover(self, topic: str, since: Position | None) -> tuple[
            tuple[int, str] | None, list[DeliveryLike], bytes | None, tuple[int, str] | None]:
        """Where the topic resumes, what was missed, the notice for its subscribers if history cannot
        say, and the position that notice tells (None: none, or one the topic cannot go on from)."""
        if since is None:  # nothing to recover from: the subscribers are told where the topic is now
            latest = await self._read_history(topic, None, 1)  # (its position: one message says it)
            if latest.recovered and not latest.offset and not latest.reason:
                return None, [], None, None  # nothing was ever published on it: nothing can have been missed
            reason = latest.reason if not latest.epoch and latest.reason else "the edge's stream was interrupted"
            return None, [], _notice(topic, latest.offset, latest.epoch, reason), _told_at(latest)
        if since.epoch:
            read = await self._read_history(topic, since, 0)
        else:  # (0, ""): nothing was published when it was subscribed here
            read = await self._read_history(topic, None, 1)  # where it is now
            if read.recovered and not read.offset:
                return (0, ""), [], None, None  # still nothing: nothing can have been missed (see _fill_gaps)
            if read.recovered:
                since = Position(0, read.epoch)  # all its epoch holds came after: from its first message on
                read = await self._read_history(topic, since, 0)
        if read.recovered:
            return (since.offset, since.epoch), list(read.publications), None, None
        notice = _notice(topic, read.offset, read.epoch, read.reason)
        missed: list[DeliveryLike] = []
        if read.reason == "epoch changed":
            # What the new epoch holds, a page of it (a gap after it is held and filled as any other).
            latest = await self._read_history(topic, None, 0)
            if latest.epoch != read.epoch:  # (changed again meanwhile: that epoch is gone too)
                return None, [], notice, None
            missed = list(latest.publications)
        return None, missed, notice, _told_at(read)

    # --- fan-out ----------------------------------------------------------------------------------

    async def _fan_out_forever(self) -> None:
        pacing = FanoutPacing()
        resumed = time.perf_counter()  # when the previous round (and its rest) ended
        while True:
            await self._incoming_ready.wait()
            # Let the stream's reader take what gRPC has already received before fanning out, so that
            # a busy edge writes several frames to a socket in one call (two quiet rounds: nothing more).
            quiet = 0
            while quiet < 2 and len(self._incoming) < MAX_BATCHES_PER_FANOUT:
                queued = len(self._incoming)
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(self._incoming) == queued else 0
            self._incoming_ready.clear()
            started = time.perf_counter()
            self._route_incoming()
            ended = time.perf_counter()
            rest = pacing.after_round(ended - started, ended - resumed)
            if rest and await self._behind():  # see core/pacing.py
                await asyncio.sleep(rest)
            resumed = time.perf_counter()

    async def _behind(self) -> bool:
        """Whether deliveries came in while the last round was written (the stream's reader takes
        what gRPC has received once the loop turns, twice: the poller's wake-up, then the read)."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return bool(self._incoming)

    def fan_out(self, batches: Sequence[Sequence[DeliveryLike]]) -> None:
        """Route what came (in publish order) and write it: one write per socket that takes it now (its
        transport holds nothing unsent), in frames of at most `batch_max` messages built once for all
        the sockets that get the same; the others queue it (`Connection.send_frames`), to leave batched
        when they drain."""
        if tracing.ENABLED and (traced := _traced(batches)):
            self._fan_out_traced(batches, traced)
        else:
            self._fan_out(batches)

    def _fan_out_traced(self, batches: Sequence[Sequence[DeliveryLike]], traced: list[str]) -> None:
        """A round with sampled messages: one span for the round's writes to sockets (not one per socket),
        the child of its first sampled message's fan-out on the push service, linked to the others'."""
        with tracing.start_span("edge.deliver", parent=traced[0], kind=tracing.SpanKind.CONSUMER,
                                links=[tracing.link(t) for t in traced[1:MAX_SPAN_LINKS]]) as span:
            written = self._fan_out(batches)
            span.set_attributes({"push.messages": sum(map(len, batches)), "push.traced_messages": len(traced),
                                 "push.deliveries": written})

    def _fan_out(self, batches: Sequence[Sequence[DeliveryLike]]) -> int:
        delivered = 0
        for frames, wire, connections, messages in self.router.route(regroup(batches, self.batch_max)):
            key_of = None
            for connection in connections:
                direct = connection.direct  # type: ignore[attr-defined]
                if direct is not None:
                    try:
                        if direct(wire) is not False:  # the transport's bare write answers None
                            continue
                    except RuntimeError:
                        # Its transport's handle is closed (uvloop raises then). The protocol's listener
                        # clears `direct` before that can happen; this keeps one socket from ending the
                        # round if it ever does. Nothing more for it: its receive loop releases it.
                        connection.direct = None  # type: ignore[attr-defined]
                        continue
                if key_of is None:  # each message's conflation key once, for all the sockets behind
                    keys = {id(d): self._conflation_key(d) for d in messages}
                    key_of = lambda d, keys=keys: keys[id(d)]  # noqa: E731
                connection.send_frames(frames, wire, messages, key_of)  # type: ignore[attr-defined]
            delivered += len(connections) * len(messages)
        metrics.DELIVERED.inc(delivered)
        now = now_ms()
        observe = metrics.LATENCY.observe
        for batch in batches:
            for delivery in batch:
                if delivery.timestamp_ms:
                    observe((now - delivery.timestamp_ms) / 1000)
        if gaps := self.router.sequencer.take_gaps():
            # A message skipped offsets or began a new epoch (e.g. Redis lost its data): never silently.
            self._fill_gaps_soon(gaps)
        return delivered

    def _conflation_key(self, delivery: DeliveryLike) -> str | None:
        """On a conflated topic, what a newer message supersedes (only asked while a client is slow)."""
        topic = delivery.topic
        conflated = self._conflated_topics.get(topic)
        if conflated is None:
            if len(self._conflated_topics) >= 4096:
                self._conflated_topics.clear()
            conflated = self._conflated_topics[topic] = any(fnmatchcase(topic, p) for p in self._conflated)
        if not topic or not conflated:
            return None
        return f"{topic}\x00{delivery.conflation_key}"


def _traced(batches: Sequence[Sequence[DeliveryLike]]) -> list[str]:
    """The trace contexts of the sampled messages among these (only asked while tracing is on)."""
    return [tp for batch in batches for d in batch if (tp := getattr(d, "traceparent", ""))]


def _told_at(answer: HistoryAnswer) -> tuple[int, str] | None:
    """The position a history answer tells, if a topic can go on from it (a kept epoch, a message in it)."""
    return (answer.offset, answer.epoch) if answer.epoch and answer.offset else None


def _notice(topic: str, offset: int, epoch: str, reason: str) -> bytes:
    """What every subscriber of `topic` is told when the edge cannot fill its gap: where it is now."""
    log.warning("%s: subscribers cannot recover: %s", topic, reason)
    return server_frame("recovery", None, now_ms(), {"topic": topic, **recovery_report(False, offset, epoch, reason)})
