"""The fan-out round: one write per socket that takes it, frames of at most the cap; the others queue."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.support.deliveries import D
from ws_edge.core.frames import batch_frame, websocket_text_frame
from ws_edge.core.recovery import GapNotice, Position
from ws_edge.core.routing import DeliveryRouter
from ws_edge.delivery import DeliveryPump


class FakeConnection:
    def __init__(self, ready: bool) -> None:
        self.wires: list[bytes] = []
        self.queued: list[Any] = []
        self.direct = self._write if ready else None

    def _write(self, wire: bytes) -> bool:
        self.wires.append(wire)
        return True

    def send_frames(self, frames: list[bytes], wire: bytes, messages: list[Any], key: Any) -> None:
        self.queued.extend(messages)


def test_a_round_of_several_batches_goes_in_full_frames_to_ready_sockets_and_queues_for_the_others():
    router = DeliveryRouter()
    ready, behind = FakeConnection(True), FakeConnection(False)
    router.topics.add("t", ready)
    router.topics.add("t", behind)
    pump = DeliveryPump(router, read_history=None, conflated=[], batch_max=3)  # type: ignore[arg-type]
    deliveries = [D(topic="t", frame=f'{{"n":{n}}}'.encode()) for n in range(5)]
    pump.fan_out([[d] for d in deliveries])  # five batches of one, as a quiet push service sends them
    frames = [batch_frame([d.frame for d in deliveries[:3]]), batch_frame([d.frame for d in deliveries[3:]])]
    assert ready.wires == [b"".join(websocket_text_frame(f) for f in frames)]
    assert behind.queued == deliveries and behind.wires == []


def test_a_bare_transport_write_counts_as_written_and_one_closed_under_the_round_does_not_stop_it():
    """`direct` may be a transport's own write (wire.SocketWrite.raw): it answers None, and raises
    RuntimeError if its handle is closed (uvloop), which the protocol's listener should have prevented."""
    router = DeliveryRouter()
    written: list[bytes] = []

    def closed(wire: bytes) -> None:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    first, gone, last = FakeConnection(True), FakeConnection(True), FakeConnection(True)
    first.direct, gone.direct = written.append, closed  # type: ignore[assignment]
    for connection in (first, gone, last):
        router.topics.add("t", connection)
    pump = DeliveryPump(router, read_history=None, conflated=[])  # type: ignore[arg-type]
    delivery = D(topic="t", frame=b'{"n":1}')
    pump.fan_out([[delivery]])
    wire = websocket_text_frame(delivery.frame)
    assert (written, last.wires) == ([wire], [wire])  # the closed one in between stopped nothing
    assert first.queued == [] and gone.queued == [] and gone.direct is None  # nothing queued for either


def test_sockets_behind_get_each_message_with_its_conflation_key():
    router = DeliveryRouter()
    behind = FakeConnection(False)
    keys: list[Any] = []
    behind.send_frames = lambda frames, wire, messages, key: keys.extend(key(m) for m in messages)  # type: ignore[method-assign]
    router.topics.add("feed:1", behind)
    router.topics.add("other", behind)
    pump = DeliveryPump(router, read_history=None, conflated=["feed:*"])  # type: ignore[arg-type]
    pump.fan_out([[D(topic="feed:1", frame=b"1", conflation_key="a"), D(topic="other", frame=b"2", conflation_key="b")]])
    assert keys == ["feed:1\x00a", None]


class Noticed(FakeConnection):
    """A subscriber whose socket is behind, and the notices it is sent."""

    def __init__(self) -> None:
        super().__init__(False)
        self.notices: list[dict[str, Any]] = []

    def send(self, frame: bytes, wire: bytes | None = None) -> None:
        assert wire == websocket_text_frame(frame)  # encoded once, by the pump, for every subscriber
        self.notices.append(orjson.loads(frame))


class History:
    def __init__(self, publications: list[D]) -> None:
        self.recovered, self.publications, self.offset, self.epoch, self.reason = True, publications, 0, "e", ""


async def test_a_stale_gap_fill_never_resumes_a_newer_hold():
    """Fills overlap (a stream loss's and a broker resync's; a newer gap holds the topic again while an
    old fill still reads): each resumes only its own hold, so nothing is repeated or lost at the seam.
    A resync holds anew a topic held already: the fill begun before it is stale."""
    reads = Reads()
    _, behind, pump = pump_behind(reads, "t")
    pump.fan_out([[D(5)]])
    pump.on_lost()
    pump.on_restored()  # fill A (read 0)
    pump.on_resync()  # fill B (read 1), for a new hold of the topic
    await turns()
    reads.answer(1, History([D(6), D(7)]))
    await turns()
    assert [d.offset for d in behind.queued] == [5, 6, 7]
    pump.fan_out([[D(8)], [D(10)]])  # 9 is missing: a newer hold, and fill C (read 2) for it
    await turns()
    assert len(reads.reads) == 3
    reads.answer(0, History([D(6), D(7)]))  # stale (read before the resync): must not resume the newer hold
    await turns()
    assert [d.offset for d in behind.queued] == [5, 6, 7, 8]
    reads.answer(2, History([D(9)]))
    await turns()
    assert [d.offset for d in behind.queued] == [5, 6, 7, 8, 9, 10]


async def test_a_resync_during_a_gap_fill_reads_again_what_the_broker_missed_after_that_fills_read():
    """A gap's fill read history (11, 12); then the push service's broker reconnected (13 was published
    while its pub/sub was away, after that read) and asked for a resync. The older fill must not resume
    the topic on its answer: the resync's read, with 13, does, and 13 is not left for a next message."""
    reads = Reads()
    _, behind, pump = pump_behind(reads, "t")
    pump.fan_out([[D(10)], [D(12)]])  # 11 is missing: fill F1 (read 0)
    await turns()
    pump.on_resync()  # fill F2 (read 1)
    await turns()
    assert len(reads.reads) == 2
    reads.answer(0, History([D(11), D(12)]))
    await turns()
    assert [d.offset for d in behind.queued] == [10]
    reads.answer(1, History([D(11), D(12), D(13)]))
    await turns()
    assert [d.offset for d in behind.queued] == [10, 11, 12, 13]


async def test_a_topic_with_no_position_here_is_held_over_a_stream_loss_and_its_subscribers_told():
    """A topic this edge delivered nothing of yet (or since an unrecoverable gap) cannot be filled from
    history: what was published while the stream was away is announced, never silently skipped, also
    on a topic that keeps no history; a topic on which nothing was ever published needs no notice
    (the memory engine names the epoch to come, Redis none)."""
    answers = {"busy": Answer(7, publications=[D(7, topic="busy")]), "never": Answer(0),
               "never-on-redis": Answer(0, epoch=""), "keeps-none": Answer(0, epoch="")}
    answers["keeps-none"].reason = "no history for this topic"  # (recovered all the same: no `since`)

    async def read_history(topic: str, since: Any, latest: int) -> Answer:
        assert since is None and latest == 1  # where the topic is now: its latest message says it
        return answers[topic]

    router = DeliveryRouter()
    subscriber = Noticed()
    for topic in answers:
        router.topics.add(topic, subscriber)
    pump = DeliveryPump(router, read_history=read_history, conflated=[])  # type: ignore[arg-type]
    pump.on_lost()
    assert all(router.sequencer.is_held(topic) for topic in answers)
    pump.fan_out([[D(8, topic="busy")]])  # arrives after the stream is back, before the fill answers
    assert subscriber.queued == []
    pump.on_restored()
    await turns()
    assert [(n["type"], n["data"]["topic"], n["data"]["recovered"], n["data"]["offset"], n["data"]["reason"])
            for n in subscriber.notices] == [("recovery", "busy", False, 7, "the edge's stream was interrupted"),
                                             ("recovery", "keeps-none", False, 0, "no history for this topic")]
    assert [d.offset for d in subscriber.queued] == [8]
    assert not any(router.sequencer.is_held(topic) for topic in answers)


async def test_a_gap_notice_for_a_guarding_session_goes_through_its_admit():
    """A session answering a subscribe of the topic holds the notice behind its answer (or drops it when
    its own read is still to come): the pump must not send it past the session, before the `ack`."""
    async def read_history(topic: str, since: Any, latest: int) -> Answer:
        return Answer(7, publications=[D(7)])

    router = DeliveryRouter()
    told, subscribing = Noticed(), Noticed()
    router.topics.add("t", told)
    router.topics.add("t", subscribing)
    admitted: list[Any] = []
    router.guard("t", subscribing, lambda delivery: admitted.append(delivery) or False)
    pump = DeliveryPump(router, read_history=read_history, conflated=[])  # type: ignore[arg-type]
    pump.on_lost()
    pump.on_restored()
    await turns()
    assert [n["data"]["topic"] for n in told.notices] == ["t"] and subscribing.notices == []
    [notice] = admitted
    assert (type(notice), notice.topic, orjson.loads(notice.frame)) == (GapNotice, "t", told.notices[0])


class Reads:
    """A `read_history` whose answers the test gives, one read at a time."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, Any, asyncio.Future[Any]]] = []
        self.latest: list[int] = []  # each read's

    async def __call__(self, topic: str, since: Any, latest: int) -> Any:
        self.latest.append(latest)
        self.reads.append((topic, since, asyncio.get_running_loop().create_future()))
        return await self.reads[-1][2]

    def answer(self, index: int, answer: Any) -> None:
        self.reads[index][2].set_result(answer)


async def turns() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def cannot_recover() -> History:
    answer = History([])
    answer.recovered, answer.reason = False, "too old"
    return answer


def pump_behind(reads: Reads, topic: str | None = None, confirmed_now: Any = lambda topic: True,
                applying: Any = lambda topic: False) -> tuple[DeliveryRouter, FakeConnection, DeliveryPump]:
    """A pump and one subscriber whose socket is behind (what it gets queues, in order), on `topic`."""
    router = DeliveryRouter()
    behind = FakeConnection(False)
    if topic is not None:
        router.topics.add(topic, behind)
    return router, behind, DeliveryPump(router, read_history=reads, conflated=[],  # type: ignore[arg-type]
                                        confirmed_now=confirmed_now, applying=applying)


async def answer_last_and_expect(reads: Reads, router: DeliveryRouter, behind: FakeConnection, topic: str,
                                 answer: History, offsets: list[int]) -> None:
    """The last read answers: the subscriber has `offsets`, in order, and the topic is held no more."""
    reads.answer(len(reads.reads) - 1, answer)
    await turns()
    assert [d.offset for d in behind.queued] == offsets
    assert not router.sequencer.is_held(topic)


async def test_a_fill_that_answers_while_the_stream_is_away_leaves_the_hold_to_the_fill_after_it():
    """A broker resync's fill (or an older gap's) that answers after the stream was lost must not end
    the hold: the topic would go on with no position while the stream carries nothing, and a gap over
    the outage would pass unchecked once it is back (the fault suite's "redis restarted empty" once
    lost 4 messages so, silently). A resync while the stream is down waits for the fill when it is back."""
    reads = Reads()
    router, behind, pump = pump_behind(reads, "t")
    pump.fan_out([[D(5)]])
    pump.on_resync()  # the stream is up: a fill for the resync's hold
    await turns()
    pump.on_lost()
    pump.on_resync()  # the stream is down: nothing until it is back
    await turns()
    assert len(reads.reads) == 1
    reads.answer(0, cannot_recover())  # the resync's fill answers while the stream is down
    await turns()
    assert router.sequencer.is_held("t") and [d.offset for d in behind.queued] == [5]
    pump.on_restored()
    await turns()
    assert len(reads.reads) == 2 and reads.reads[1][1].offset == 5
    pump.fan_out([[D(8)]])  # the first message on the stream that is back: held
    await answer_last_and_expect(reads, router, behind, "t", History([D(6), D(7)]), [5, 6, 7, 8])


async def test_a_fill_begun_before_a_loss_and_answering_after_the_restore_is_stale():
    reads = Reads()
    router, behind, pump = pump_behind(reads, "t")
    pump.fan_out([[D(5)]])
    pump.on_resync()
    await turns()
    pump.on_lost()
    pump.on_restored()  # the restore's fill, for the same hold
    await turns()
    assert len(reads.reads) == 2
    reads.answer(0, cannot_recover())  # read before the loss: says nothing of the outage
    await turns()
    assert router.sequencer.is_held("t")
    pump.fan_out([[D(8)]])
    await answer_last_and_expect(reads, router, behind, "t", History([D(6), D(7)]), [5, 6, 7, 8])


async def test_a_fill_caught_by_a_loss_reads_no_more_of_its_topics():
    """Its answers from then on would be stale: the restore's fill reads every held topic."""
    reads = Reads()
    router, behind, pump = pump_behind(reads, "t")
    router.topics.add("u", behind)
    pump.fan_out([[D(5)], [D(2, topic="u")]])
    pump.on_resync()  # reads "t", then "u"
    await turns()
    pump.on_lost()
    reads.answer(0, History([]))
    await turns()
    assert [topic for topic, _, _ in reads.reads] == ["t"]
    pump.on_restored()
    await turns()
    assert [(topic, since.offset) for topic, since, _ in reads.reads] == [("t", 5), ("t", 5)]


async def test_a_topic_a_gap_held_while_the_stream_came_back_is_filled_after_the_restore():
    """A stream that is coming back can deliver before it is up; a gap then holds a topic the loss did
    not (here one subscribed during the outage), and its fill answers while the stream is still down.
    The restore's fill takes it up: no topic stays held."""
    reads = Reads()
    router, behind, pump = pump_behind(reads)
    pump.on_lost()
    router.topics.add("u", behind)
    pump.fan_out([[D(3, topic="u")], [D(5, topic="u")]])  # 4 is missing: the gap's fill
    await turns()
    reads.answer(0, History([D(4, topic="u")]))  # answers while the stream is down: skipped
    await turns()
    assert router.sequencer.is_held("u") and [d.offset for d in behind.queued] == [3]
    pump.on_restored()
    await turns()
    assert [(topic, since.offset) for topic, since, _ in reads.reads[1:]] == [("u", 3)]
    await answer_last_and_expect(reads, router, behind, "u", History([D(4, topic="u")]), [3, 4, 5])


async def test_a_fill_begun_during_the_outage_and_answering_after_the_restore_is_stale():
    reads = Reads()
    router, behind, pump = pump_behind(reads)
    pump.on_lost()
    router.topics.add("u", behind)
    pump.fan_out([[D(3, topic="u")], [D(5, topic="u")]])  # the gap's fill, begun during the outage
    await turns()
    pump.on_restored()  # the restore's fill, for the same hold
    await turns()
    assert [(topic, since.offset) for topic, since, _ in reads.reads] == [("u", 3), ("u", 3)]
    reads.answer(0, cannot_recover())  # read during the outage: says nothing of what the stream missed
    await turns()
    assert router.sequencer.is_held("u")
    await answer_last_and_expect(reads, router, behind, "u", History([D(4, topic="u")]), [3, 4, 5])


async def test_a_topic_started_where_the_push_service_said_is_filled_from_history_over_a_stream_loss():
    """A topic subscribed here with nothing delivered yet, but with history: the applied change told where
    it stood (2). A stream lost before its first delivery is filled from there, with no notice."""
    reads = Reads()
    router, behind, pump = pump_behind(reads, "t")
    pump.on_positions({"t": (2, "e"), "gone": (9, "e")})  # "gone": no subscriber here any more
    assert router.sequencer.positions == {"t": (2, "e")}
    pump.on_lost()
    pump.on_restored()
    await turns()
    assert [(topic, (since.offset, since.epoch)) for topic, since, _ in reads.reads] == [("t", (2, "e"))]
    pump.fan_out([[D(5)]])  # live, held until the fill answers
    await answer_last_and_expect(reads, router, behind, "t", History([D(3), D(4)]), [3, 4, 5])


async def test_a_position_told_after_queued_deliveries_applies_after_they_are_routed_and_never_moves_one():
    """In the stream's order: deliveries that came before the applied change are routed first (the
    first of them places the topic, and the told position no longer does); a position never moves a
    topic already placed or held."""
    reads = Reads()
    router, behind, pump = pump_behind(reads, "t")
    router.topics.add("held", behind)
    router.topics.add("quiet", behind)
    pump.start()
    try:
        pump.on_deliveries([D(3)])  # queued for the fan-out task
        pump.on_positions({"t": (4, "e"), "quiet": (7, "e")})
        assert router.sequencer.positions == {}  # not before the deliveries ahead of it
        for _ in range(100):  # the fan-out task's round (a few turns of the loop)
            if behind.queued:
                break
            await asyncio.sleep(0)
        assert [d.offset for d in behind.queued] == [3]  # routed at no position: goes, and places "t"
        assert router.sequencer.positions == {"t": (3, "e"), "quiet": (7, "e")}
        router.sequencer.hold("held")
        pump.on_positions({"t": (9, "e"), "held": (2, "e")})
        assert router.sequencer.positions == {"t": (3, "e"), "quiet": (7, "e")}
    finally:
        pump.stop()


async def test_positions_told_behind_queued_deliveries_are_settled_before_a_loss_holds_every_topic():
    """The stream is lost while a position waits for the deliveries ahead of it: they are routed, the
    topic starts there, and the restore's fill reads from it (not "no position": a notice)."""
    reads = Reads()
    router, behind, pump = pump_behind(reads, "t")
    router.topics.add("quiet", behind)
    pump.on_deliveries([D(3)])  # queued: the fan-out task has not run
    pump.on_positions({"t": (4, "e"), "quiet": (7, "e")})
    pump.on_lost()
    assert [d.offset for d in behind.queued] == [3]
    assert router.sequencer.positions == {"t": (3, "e"), "quiet": (7, "e")}
    pump.on_restored()
    await turns()
    reads.answer(0, History([]))  # one topic at a time
    await turns()
    assert [(topic, (since.offset, since.epoch)) for topic, since, _ in reads.reads] == [("t", (3, "e")), ("quiet", (7, "e"))]


async def test_a_position_for_a_subscription_since_replaced_is_not_taken():
    router, behind, pump = pump_behind(Reads(), "t", confirmed_now=lambda topic: topic == "u")  # "t" replaced
    router.topics.add("u", behind)
    pump.on_positions({"t": (4, "e"), "u": (2, "e")})
    assert router.sequencer.positions == {"u": (2, "e")}


async def test_a_topic_placed_nowhere_whose_interest_is_not_applied_yet_is_not_held_over_a_loss_nor_told():
    """Nothing of it was missed here: it starts where the push service says when it applies it. A topic
    placed nowhere since a gap nobody could recover is still held, and its subscribers told."""
    reads = Reads()
    router, _, pump = pump_behind(reads, "t", applying=lambda topic: topic == "new")
    subscriber = Noticed()
    router.topics.add("new", subscriber)
    router.topics.add("lost", subscriber)
    pump.fan_out([[D(5)]])
    pump.on_lost()
    assert router.sequencer.held_topics() == ["t", "lost"]
    pump.on_restored()
    await turns()
    reads.answer(0, History([]))
    await turns()
    now = History([])
    now.offset = 9
    reads.answer(1, now)  # where "lost" is now: its subscribers are told
    await turns()
    assert [(topic, since) for topic, since, _ in reads.reads] == [("t", Position(5, "e")), ("lost", None)]
    assert [(n["type"], n["data"]["topic"], n["data"]["reason"]) for n in subscriber.notices] == [
        ("recovery", "lost", "the edge's stream was interrupted")]
    assert not router.sequencer.is_held("new") and router.sequencer.unplaced(["new"]) == ["new"]


def test_deliveries_still_queued_at_a_loss_are_routed_before_the_hold_and_the_topics_they_place_are_held():
    """Routed after the hold was decided, a topic they place would go on unheld over the outage."""
    router, behind, pump = pump_behind(Reads(), "new", applying=lambda topic: topic == "new")
    pump.on_deliveries([D(3, topic="new")])  # queued: the fan-out task has not run
    pump.on_lost()
    assert [d.offset for d in behind.queued] == [3] and router.sequencer.held_topics() == ["new"]


def test_a_position_told_behind_queued_deliveries_is_dropped_with_its_subscription():
    """The topic's last subscriber leaves, and another subscribes, before the deliveries ahead of its
    told position are routed: that position was the old subscription's, not the new one's."""
    router, behind, pump = pump_behind(Reads(), "t")
    pump.on_deliveries([D(1, topic="other")])  # queued: the fan-out task has not run
    pump.on_positions({"t": (4, "e")})
    assert router.remove_connection(behind) == ["t"]
    router.topics.add("t", behind)  # subscribed again: its own change will tell its position
    pump._route_incoming()
    assert router.sequencer.positions == {}



async def test_a_topic_with_nothing_published_when_subscribed_is_filled_from_its_epochs_start_over_a_stream_loss():
    """The applied change said nothing was published on it yet ((0, "")). A stream lost before its first
    delivery is filled from offset 1 of the epoch history holds after the restore, with no notice: every
    message of that epoch came after the subscription."""
    reads = Reads()
    router, _, pump = pump_behind(reads)
    subscriber = Noticed()
    router.topics.add("t", subscriber)
    pump.on_positions({"t": (0, "")})
    pump.on_lost()
    pump.on_restored()
    await turns()
    pump.fan_out([[D(3, epoch="new")]])  # live, held until the fill answers
    assert [(topic, since) for topic, since, _ in reads.reads] == [("t", None)]  # where the topic is now
    reads.answer(0, Answer(2, "new", [D(1, epoch="new"), D(2, epoch="new")]))
    await turns()
    assert [(topic, (since.offset, since.epoch)) for topic, since, _ in reads.reads[1:]] == [("t", (0, "new"))]
    assert reads.latest == [1, 0]  # where the topic is now from its latest message; then all of its epoch
    reads.answer(1, History([D(1, epoch="new"), D(2, epoch="new")]))
    await turns()
    assert [(d.offset, d.epoch) for d in subscriber.queued] == [(1, "new"), (2, "new"), (3, "new")]
    assert subscriber.notices == [] and not router.sequencer.is_held("t")


class Answer:
    """A history answer: `recovered` false with a reason when history cannot say."""

    def __init__(self, offset: int, epoch: str = "e", publications: list[D] | None = None, reason: str = "") -> None:
        self.publications, self.offset, self.epoch = publications or [], offset, epoch
        self.recovered, self.reason = not reason, reason


def unpublished_subscribed(reads: Reads) -> tuple[DeliveryRouter, Noticed, DeliveryPump]:
    router, _, pump = pump_behind(reads)
    subscriber = Noticed()
    router.topics.add("t", subscriber)
    pump.on_positions({"t": (0, "")})
    return router, subscriber, pump


async def lose_and_restore(pump: DeliveryPump) -> None:
    pump.on_lost()
    pump.on_restored()
    await turns()


def told(subscriber: Noticed) -> list[tuple[str, bool, int, str, str]]:
    return [(n["data"]["topic"], n["data"]["recovered"], n["data"]["offset"], n["data"]["epoch"], n["data"]["reason"])
            for n in subscriber.notices]


async def test_a_topic_still_unpublished_after_a_stream_loss_stays_so_and_one_past_its_history_is_told():
    """Nothing published meanwhile: no notice, and the topic still starts at (0, ""). More published than
    history keeps (its offset 1 is gone): the subscribers are told, as for any gap history cannot fill."""
    reads = Reads()
    router, subscriber, pump = unpublished_subscribed(reads)
    await lose_and_restore(pump)
    reads.answer(0, Answer(0, epoch=""))  # (Redis: no epoch before the first message)
    await turns()
    assert router.sequencer.positions == {"t": (0, "")} and subscriber.notices == [] and len(reads.reads) == 1
    await lose_and_restore(pump)
    reads.answer(1, Answer(9))
    await turns()
    assert (reads.reads[2][1].offset, reads.reads[2][1].epoch) == (0, "e")
    reads.answer(2, Answer(9, reason="too old"))
    await turns()
    assert told(subscriber) == [("t", False, 9, "e", "too old")]
    # nothing came meanwhile: the topic goes on from where they were told it is
    assert len(reads.reads) == 3 and not router.sequencer.is_held("t") and router.sequencer.positions == {"t": (9, "e")}


async def told_over_a_loss_that_quiet_is_at(offset: int) -> tuple[Reads, DeliveryRouter, Noticed, DeliveryPump]:
    """A topic with no position here ("quiet"), over a stream loss: its subscriber is told where it is now."""
    reads = Reads()
    router, _, pump = pump_behind(reads)
    subscriber = Noticed()
    router.topics.add("quiet", subscriber)
    await lose_and_restore(pump)
    reads.answer(0, Answer(offset))
    await turns()
    assert told(subscriber) == [("quiet", False, offset, "e", "the edge's stream was interrupted")]
    return reads, router, subscriber, pump


async def test_a_topic_whose_subscribers_were_told_where_it_is_is_not_told_again_when_nothing_came_since():
    """A topic with no position here, over a stream loss: its subscribers are told where it is now (7).
    Nothing is published before the next loss: that fill reads on from 7, and tells them nothing."""
    reads, router, subscriber, pump = await told_over_a_loss_that_quiet_is_at(7)
    assert router.sequencer.positions == {"quiet": (7, "e")}
    await lose_and_restore(pump)
    assert (reads.reads[1][1].offset, reads.reads[1][1].epoch) == (7, "e")
    reads.answer(1, Answer(7))
    await turns()
    assert len(subscriber.notices) == 1 and not router.sequencer.is_held("quiet")


async def test_a_topic_told_where_it_is_takes_no_late_copy_of_what_the_notice_covered():
    """The fill's read saw 8, whose copy through the push service's pub/sub comes after the resume. The
    subscribers were told the topic is at 8 and re-sync from there (as a client whose own recovery is
    answered so gets nothing at or below it): the copy is a repeat; 9 goes."""
    _, _, subscriber, pump = await told_over_a_loss_that_quiet_is_at(8)
    pump.fan_out([[D(8, topic="quiet")], [D(9, topic="quiet")]])
    assert [d.offset for d in subscriber.queued] == [9]


async def test_states_at_offsets_history_lost_go_when_other_messages_use_them_again():
    """A Redis failover lost the writes 6 and 7, the state 7 among them, which had gone out. The fill's
    read says the topic is at 5 ("ahead of the stream"); 6' (a new state at the reused offset) came
    meanwhile and is held. It goes, and is the state a later subscriber is handed."""
    reads = Reads()
    router, _, pump = pump_behind(reads)
    subscriber = Noticed()
    router.topics.add("t", subscriber)
    router.sequencer.start_at("t", (6, "e"))
    pump.fan_out([[D(7, retained=True, frame=b'{"s":"lost 7"}')]])
    await lose_and_restore(pump)
    pump.fan_out([[D(6, retained=True, frame=b'{"s":"new 6"}')]])
    reads.answer(0, Answer(5, reason="ahead of the stream"))
    await turns()
    assert [d.frame for d in subscriber.queued] == [b'{"s":"lost 7"}', b'{"s":"new 6"}']
    assert router.sequencer.retained_frame("t") == b'{"s":"new 6"}'


async def test_an_epoch_changed_again_while_the_fill_read_leaves_the_topic_to_what_comes_next():
    """History said "epoch changed" at (7, e2), then its page of the new epoch came from e3: e2 is gone
    too, so the topic does not go on from it (the first e3 message would be a gap, and a second notice)."""
    reads = Reads()
    router, _, pump = pump_behind(reads, "t")
    router.sequencer.start_at("t", (3, "e1"))
    await lose_and_restore(pump)
    reads.answer(0, Answer(7, epoch="e2", reason="epoch changed"))
    await turns()
    reads.answer(1, Answer(2, epoch="e3"))
    await turns()
    assert "t" not in router.sequencer.positions and not router.sequencer.is_held("t")


async def test_a_topic_told_where_it_is_goes_on_from_what_the_stream_brought_meanwhile():
    """8 came while the fill read where the topic is (7, an answer older than 8): resumed at 7, 8 would
    be the next; but the held message places the topic itself, as before, and goes out."""
    reads = Reads()
    router, _, pump = pump_behind(reads)
    subscriber = Noticed()
    router.topics.add("busy", subscriber)
    await lose_and_restore(pump)
    pump.fan_out([[D(8, topic="busy")]])
    reads.answer(0, Answer(7))
    await turns()
    assert [d.offset for d in subscriber.queued] == [8] and router.sequencer.positions == {"busy": (8, "e")}


async def test_a_topic_unpublished_when_subscribed_whose_history_does_not_answer_is_told():
    """The push service does not answer the first read (where the topic is now): no position is taken
    for "nothing published", the subscribers are told, and the topic goes on from its next message."""
    reads = Reads()
    router, subscriber, pump = unpublished_subscribed(reads)
    await lose_and_restore(pump)
    reads.answer(0, Answer(0, epoch="", reason="history unavailable"))
    await turns()
    assert told(subscriber) == [("t", False, 0, "", "history unavailable")] and len(reads.reads) == 1
    pump.fan_out([[D(4)]])
    assert [d.offset for d in subscriber.queued] == [4] and router.sequencer.positions == {"t": (4, "e")}


async def test_a_topic_whose_history_lost_what_the_stream_went_on_from_is_told_and_not_held_again():
    """History says nothing was published, yet the stream, back, delivers offset 5 (history lost or
    expired 1-4): the subscribers are told, and 5 goes out. From (0, "") it would be a gap again, and
    its fill the same answer, for ever."""
    reads = Reads()
    router, subscriber, pump = unpublished_subscribed(reads)
    await lose_and_restore(pump)
    pump.fan_out([[D(5, epoch="x")]])  # held until the fill answers
    reads.answer(0, Answer(0, epoch=""))
    await turns()
    assert told(subscriber) == [("t", False, 4, "x", "too old")]
    assert [(d.offset, d.epoch) for d in subscriber.queued] == [(5, "x")]
    assert router.sequencer.positions == {"t": (5, "x")} and not router.sequencer.is_held("t")
    await turns()
    assert len(reads.reads) == 1
