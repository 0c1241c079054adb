"""One contract suite for the broker interface, run against every engine: memory, Redis (a real
redis-server) and Redis Cluster (3 masters with a replica each, real redis-servers, one cluster for the
module)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from push_service.broker import broker_from_url
from push_service.broker.base import Broker, BrokerUnavailable
from push_service.core.history import HistoryPolicy, HistoryRule, PageLimits
from push_service.core.publication import Ack, InvalidPublish, Publication, control_publication, make_publication
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

TOPIC_BYTES = 2500  # frames of one topic's history: two of the 1,000-byte ones of `big`
POLICY = HistoryPolicy((HistoryRule("h:*", size=3, ttl=60), HistoryRule("p:*", size=100, ttl=60),
                        HistoryRule("short:*", size=100, ttl=2.0), HistoryRule("*", size=0, ttl=0)),
                       topic_bytes=TOPIC_BYTES)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


class Engine:
    def __init__(self, broker: Broker, kind: str, redis: RedisServer | None, url: str) -> None:
        self.broker, self.kind, self.redis, self.url = broker, kind, redis, url
        self.received: list[Publication] = []
        self.arrived = asyncio.Event()

    def handler(self, publication: Publication) -> None:
        self.received.append(publication)
        self.arrived.set()

    async def wait_for(self, count: int) -> list[Publication]:
        while len(self.received) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout(5))
        return self.received

    def assert_order(self, delivered: list[str], published: list[str], channels: list[str]) -> None:
        """Delivered in publish order: across channels on one store; on a cluster, per channel (two
        channels on two shards come over two connections), and all of them."""
        if self.kind != "cluster":
            assert delivered == published
            return
        assert sorted(delivered) == sorted(published)
        channel_of = dict(zip(delivered, channels, strict=True))
        for channel in set(channels):
            assert [m for m in delivered if channel_of[m] == channel] == [m for m in published if channel_of[m] == channel]

    async def lose_everything(self) -> None:
        """What a restart does to the memory engine (a new one), or Redis losing its data."""
        if self.kind == "memory":
            await self.broker.close()
            self.broker = broker_from_url("memory://", POLICY, sweep_interval=0.05)
            await self.broker.start(self.handler)
        elif self.kind == "cluster":
            await self.broker._redis.flushall(target_nodes="primaries")  # type: ignore[attr-defined]
        else:
            await self.broker._redis.flushall()  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    url = redis.url if redis else "memory://"
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    broker = broker_from_url(url, POLICY, prefix=f"test-{uuid.uuid4().hex[:8]}", sweep_interval=0.05)
    engine = Engine(broker, request.param, redis, url)
    await broker.start(engine.handler)
    yield engine
    await broker.close()


def pub(topic: str, n: int, *, client_id: str = "", retain: bool = False, pad: int = 0) -> Publication:
    data = orjson.dumps({"n": n, "pad": "x" * pad} if pad else {"n": n})
    return make_publication(topic=topic, type_="t", data=data, id_=f"m{n}", client_id=client_id,
                            retain=retain, now_ms=1, max_data_bytes=65536)


def big(topic: str, n: int) -> Publication:
    """A publication whose frame, once positioned, is exactly 1,000 bytes (n < 10)."""
    frame = pub(topic, n).at(n, "x" * 12).frame
    return pub(topic, n, pad=1000 - len(frame) - len(',"pad":""'))


async def test_delivered_only_to_subscribed_channels_in_order(engine: Engine):
    await engine.broker.publish(pub("h:a", 0))  # nobody subscribed: not delivered
    await engine.broker.subscribe("t:h:a")
    for n in range(1, 4):
        await engine.broker.publish(pub("h:a", n))
    got = await engine.wait_for(3)
    assert [p.id for p in got] == ["m1", "m2", "m3"]
    await engine.broker.unsubscribe("t:h:a")
    await engine.broker.subscribe("t:other")
    await engine.broker.publish(pub("h:a", 4))
    await engine.broker.publish(pub("other", 5))
    got = await engine.wait_for(4)
    assert [p.id for p in got][3:] == ["m5"]


async def test_many_channels_subscribed_and_unsubscribed_at_once(engine: Engine):
    clients = [f"burst-{n}" for n in range(50)]
    await engine.broker.subscribe("t:h:many", *(f"c:{c}" for c in clients))  # returns once all hold
    await engine.broker.publish(pub("h:many", 0))
    for n, client in enumerate(clients, 1):
        await engine.broker.publish(pub("", n, client_id=client))
    got = await engine.wait_for(51)
    engine.assert_order([p.id for p in got], [f"m{n}" for n in range(51)], [p.channel for p in got])
    await engine.broker.unsubscribe(*(f"c:{c}" for c in clients[1:]))
    await engine.broker.subscribe()  # nothing: a no-op
    await engine.broker.unsubscribe()
    for n, client in enumerate(clients, 100):
        await engine.broker.publish(pub("", n, client_id=client))
    await engine.broker.publish(pub("h:many", 200))
    got = await engine.wait_for(53)
    assert sorted(p.id for p in got[51:]) == ["m100", "m200"]  # (on a cluster, in either order)
    engine.assert_order([p.id for p in got][51:], ["m100", "m200"], [p.channel for p in got[51:]])


async def test_positions_and_the_frame(engine: Engine):
    await engine.broker.subscribe("t:h:pos", "t:nohistory")
    first = await engine.broker.publish(pub("h:pos", 1))
    second = await engine.broker.publish(pub("h:pos", 2))
    assert (first.offset, second.offset) == (1, 2) and first.epoch == second.epoch != ""
    assert second == Ack("m2", 1, 2, first.epoch)
    plain = await engine.broker.publish(pub("nohistory", 3))
    assert plain == Ack("m3", 1, 0, "")
    delivered = await engine.wait_for(3)
    assert orjson.loads(delivered[1].frame) == {"type": "t", "id": "m2", "timestamp": 1, "data": {"n": 2},
                                                "topic": "h:pos", "offset": 2, "epoch": second.epoch}
    assert (delivered[1].offset, delivered[1].epoch) == (2, second.epoch)
    assert b"offset" not in delivered[2].frame


async def test_a_topics_position_is_its_latest_offset_and_epoch_once_it_has_one(engine: Engine):
    assert await engine.broker.position("h:where") == (0, "")  # never published: no epoch yet
    for n in range(1, 6):  # more than its history keeps (3): the position is the latest all the same
        last = await engine.broker.publish(pub("h:where", n))
    assert await engine.broker.position("h:where") == (5, last.epoch)
    assert await engine.broker.position("nohistory") is None  # a topic that keeps nothing has no position
    await engine.broker.publish(pub("nohistory", 1))
    assert await engine.broker.position("nohistory") is None
    # All at once (Redis: one round trip), in the order asked.
    assert await engine.broker.positions(["nohistory", "h:where", "h:never"]) == [None, (5, last.epoch), (0, "")]
    await engine.lose_everything()
    assert await engine.broker.position("h:where") == (0, "")


async def test_an_epoch_is_read_from_its_first_message_after_offset_0(engine: Engine):
    """What an edge asks for a topic that had nothing published when it was subscribed (ws_edge/delivery.py)."""
    first = await engine.broker.publish(pub("h:start", 1))
    await engine.broker.publish(pub("h:start", 2))
    read = await engine.broker.history("h:start", 0, first.epoch)
    assert (read.recovered, [p.offset for p in read.publications], read.offset) == (True, [1, 2], 2)
    for n in range(3, 5):  # 1 is no longer kept (it keeps 3)
        await engine.broker.publish(pub("h:start", n))
    assert (await engine.broker.history("h:start", 0, first.epoch)).reason == "too old"
    never = await engine.broker.history("h:never", None, "")  # (the memory engine names the epoch to come)
    assert (never.recovered, never.offset, never.publications, never.reason) == (True, 0, [], "")
    keeps_none = await engine.broker.history("nohistory", None, "")
    assert (keeps_none.offset, keeps_none.epoch, keeps_none.publications, keeps_none.reason) \
        == (0, "", [], "no history for this topic")


async def test_history_recovery_and_its_refusals(engine: Engine):
    published = [await engine.broker.publish(pub("h:r", n)) for n in range(1, 6)]  # keeps 3, 4, 5
    epoch = published[0].epoch
    read = await engine.broker.history("h:r", 3, epoch)
    assert (read.recovered, [p.offset for p in read.publications], read.offset) == (True, [4, 5], 5)
    assert [p.ack for p in read.publications] == published[3:]
    assert read.truncated is False
    latest = await engine.broker.history("h:r", None, "", limit=2)
    assert [p.offset for p in latest.publications] == [4, 5]
    assert (await engine.broker.history("h:r", 1, epoch)).reason == "too old"
    assert (await engine.broker.history("h:r", 9, epoch)).reason == "ahead of the stream"
    assert (await engine.broker.history("h:r", 2, "other")).reason == "epoch changed"
    assert (await engine.broker.history("nohistory", 0, epoch)).reason == "no history for this topic"

    await engine.lose_everything()
    lost = await engine.broker.history("h:r", 5, epoch)
    assert (lost.recovered, lost.reason) == (False, "epoch changed")
    again = await engine.broker.publish(pub("h:r", 6))
    assert again.offset == 1 and again.epoch != epoch


async def test_retained_state_and_personal_channels(engine: Engine):
    assert await engine.broker.retained("h:list") is None
    await engine.broker.publish(pub("h:list", 1, retain=True))
    await engine.broker.publish(pub("h:list", 2, retain=True))
    retained = await engine.broker.retained("h:list")
    assert retained is not None and (retained.id, retained.retain) == ("m2", True)
    await engine.broker.subscribe("c:client-1")
    await engine.broker.publish(pub("", 7, client_id="client-1"))
    await engine.broker.publish(pub("", 8, client_id="client-2"))
    got = await engine.wait_for(1)
    assert [(p.id, p.client_id) for p in got] == [("m7", "client-1")]


async def test_a_signal_reaches_the_edge_channel_subscribed_now_and_keeps_nothing(engine: Engine):
    session = "~0123456789ab." + "f" * 32
    signal = control_publication(session, ['{"type":"ping","id":"p"}'], 5)
    assert await engine.broker.signal(signal) is False  # nobody holds that edge's channel
    await engine.broker.subscribe("c:~0123456789ab")
    assert await engine.broker.signal(signal) is True
    got = await engine.wait_for(1)
    assert [(p.client_id, p.control, p.frame, p.offset) for p in got] == [
        (session, True, b'["{\\"type\\":\\"ping\\",\\"id\\":\\"p\\"}"]', 0)]
    read = await engine.broker.history("", None, "")
    assert list(read.publications) == []  # a signal keeps no history
    with pytest.raises(InvalidPublish):
        control_publication("chosen-id", ["{}"], 5)  # not `~<mark>.<id>`: no edge to route it to


@pytest.mark.parametrize("engine", ["redis"], indirect=True)  # the memory engine has no outage
async def test_redis_outage_is_unavailable_then_the_subscriber_comes_back(engine: Engine):
    assert engine.redis is not None
    await engine.broker.subscribe("t:h:o")
    engine.redis.stop()
    with pytest.raises(BrokerUnavailable):
        await engine.broker.publish(pub("h:o", 1))
    engine.redis.start()
    for _ in range(100):  # the subscriber reconnects and subscribes its channels again
        await asyncio.sleep(0.1)
        try:
            await engine.broker.publish(pub("h:o", 2))
        except BrokerUnavailable:
            continue
        if engine.received:
            break
    assert engine.received and engine.received[0].id == "m2"


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_after_redis_restarts_no_command_fails_on_a_connection_from_before(engine: Engine):
    """The pool's idle connections went with the Redis that restarted. Kept, each failed its next
    command once ("Connection closed by server"): a history read answered unavailable, an edge's
    interest change ended its stream (the fault suite, after its Redis restart)."""
    assert engine.redis is not None
    await engine.broker.subscribe("t:h:r")
    await asyncio.gather(*(engine.broker.history(f"h:r{n}", None, "") for n in range(8)))  # 8 in the pool
    engine.redis.stop()
    engine.redis.start()
    async with asyncio.timeout(timeout(10)):
        while not engine.received:  # the subscriber is back, its channels subscribed again
            await asyncio.sleep(0.1)
            with contextlib.suppress(BrokerUnavailable):
                await engine.broker.publish(pub("h:r", 1))
    reads = await asyncio.gather(*(engine.broker.history(f"h:r{n}", None, "") for n in range(8)),
                                 *(engine.broker.retained(f"h:r{n}") for n in range(8)), return_exceptions=True)
    assert [r for r in reads if isinstance(r, BaseException)] == []


async def test_idempotency_key_publishes_once(engine: Engine):
    await engine.broker.subscribe("t:h:idem")
    first = await engine.broker.publish(pub("h:idem", 1), "key-1")
    repeat = await engine.broker.publish(pub("h:idem", 2), "key-1")
    other = await engine.broker.publish(pub("h:idem", 3), "key-2")
    assert repeat == first == Ack("m1", 1, 1, first.epoch)
    assert other.offset == first.offset + 1
    got = await engine.wait_for(2)
    await asyncio.sleep(0.2)
    assert [p.id for p in engine.received] == ["m1", "m3"] and len(got) == 2


async def test_an_idempotency_key_is_a_topics_own(engine: Engine):
    """As in Centrifugo, a key is per topic (per channel: a personal message's client id): the same key on
    another topic is another message, delivered, in every engine alike (Redis Cluster keeps a key in its
    channel's partition, where a global key would have been one partition's only)."""
    for topic in ("h:idem-a", "h:idem-b", "h:idem-b:k"):
        await engine.broker.subscribe(f"t:{topic}")
    first = await engine.broker.publish(pub("h:idem-a", 1), "shared-key")
    other = await engine.broker.publish(pub("h:idem-b", 2), "shared-key")
    repeat = await engine.broker.publish(pub("h:idem-b", 3), "shared-key")
    # Topic and key do not run into each other's: ("h:idem-b:k", "x") is not ("h:idem-b", "k:x").
    colon = await engine.broker.publish(pub("h:idem-b", 4), "k:x")
    another = await engine.broker.publish(pub("h:idem-b:k", 5), "x")
    assert (first.id, other.id, repeat, colon.id, another.id) == ("m1", "m2", other, "m4", "m5")
    assert await engine.wait_for(4)
    await asyncio.sleep(0.2)
    assert sorted((p.topic, p.id) for p in engine.received) == [
        ("h:idem-a", "m1"), ("h:idem-b", "m2"), ("h:idem-b", "m4"), ("h:idem-b:k", "m5")]


async def test_a_chosen_client_id_is_bound_to_its_first_owner_until_the_hold_runs_out(engine: Engine):
    broker, hold = engine.broker, timeout(2)
    assert await broker.claim_client_id("chosen", "alice", hold) is True
    assert await broker.claim_client_id("chosen", "bob", hold) is False
    assert await broker.claim_client_id("chosen", "", hold) is False  # anonymous is not alice either
    assert await broker.claim_client_id("chosen", "alice", hold) is True
    await asyncio.sleep(hold * 0.6)
    await broker.refresh_client_ids(["chosen", "unclaimed"], hold, hold)  # its hold starts over
    await asyncio.sleep(hold * 0.6)  # past the first hold, within the refreshed one
    assert await broker.claim_client_id("chosen", "bob", hold) is False
    assert await broker.claim_client_id("unclaimed", "bob", hold) is True  # the refresh bound nothing
    await asyncio.sleep(hold * 1.1)
    assert await broker.claim_client_id("chosen", "bob", hold) is True


async def test_a_refresh_holds_anonymous_ids_for_the_anonymous_hold_only(engine: Engine):
    broker = engine.broker
    assert await broker.claim_client_id("anon-id", "", 60) is True
    assert await broker.claim_client_id("user-id", "alice", 60) is True
    await broker.refresh_client_ids(["anon-id", "user-id"], 60, 0.5)
    await asyncio.sleep(1.5)  # past the anonymous hold; long before the users'
    assert await broker.claim_client_id("anon-id", "bob", 60) is True
    assert await broker.claim_client_id("user-id", "bob", 60) is False


@pytest.mark.parametrize("engine", ["redis", "cluster"], indirect=True)
async def test_replicas_agree_on_who_holds_a_client_id(engine: Engine):
    prefix = engine.broker.keys.prefix  # type: ignore[attr-defined]
    other = broker_from_url(engine.url, POLICY, prefix=prefix)
    await other.start(lambda _: None)
    try:
        results = await asyncio.gather(*(broker.claim_client_id("raced", owner, 60)
                                         for broker, owner in [(engine.broker, "alice"), (other, "bob")] * 5))
        winner = "alice" if results[0] else "bob"
        assert results == [winner == "alice", winner == "bob"] * 5
        assert await other.claim_client_id("raced", winner, 60) is True
    finally:
        await other.close()


async def test_history_is_read_in_pages(engine: Engine):
    acks = [await engine.broker.publish(pub("p:paged", n)) for n in range(1, 11)]
    epoch = acks[0].epoch
    whole = await engine.broker.history("p:paged", 0, epoch)  # the default page holds all ten
    assert ([p.offset for p in whole.publications], whole.truncated) == (list(range(1, 11)), False)
    size = {p.offset: len(p.frame) for p in whole.publications}
    pages, since = [], 0
    while True:  # the way a caller reads everything: from the last offset of each truncated page
        read = await engine.broker.history("p:paged", since, epoch, page=PageLimits(max_count=4))
        assert read.recovered and read.offset == 10
        pages.append([p.offset for p in read.publications])
        if not read.truncated:
            break
        since = read.publications[-1].offset
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    by_bytes = await engine.broker.history("p:paged", 0, epoch, page=PageLimits(max_bytes=size[1] + size[2] + size[3] - 1))
    assert ([p.offset for p in by_bytes.publications], by_bytes.truncated) == ([1, 2], True)
    exact = await engine.broker.history("p:paged", 7, epoch, page=PageLimits(max_bytes=size[8] + size[9] + size[10]))
    assert ([p.offset for p in exact.publications], exact.truncated) == ([8, 9, 10], False)
    one = await engine.broker.history("p:paged", 2, epoch, page=PageLimits(max_bytes=1))  # never empty
    assert ([p.offset for p in one.publications], one.truncated) == ([3], True)
    latest = await engine.broker.history("p:paged", None, "", limit=6, page=PageLimits(max_count=4))
    assert ([p.offset for p in latest.publications], latest.truncated) == ([5, 6, 7, 8], True)
    everything = await engine.broker.history("p:paged", None, "", page=PageLimits(max_count=4))
    assert ([p.offset for p in everything.publications], everything.truncated) == ([1, 2, 3, 4], True)
    capped = await engine.broker.history("p:paged", 5, epoch, limit=2)
    assert ([p.offset for p in capped.publications], capped.truncated) == ([6, 7], True)


async def test_history_is_bounded_by_bytes_per_topic(engine: Engine):
    acks = [await engine.broker.publish(big("h:big", n)) for n in range(1, 4)]  # 3 allowed by count
    read = await engine.broker.history("h:big", None, "")
    assert [len(p.frame) for p in read.publications] == [1000, 1000]
    assert [p.offset for p in read.publications] == [2, 3]  # the oldest went: 3,000 > TOPIC_BYTES
    assert (await engine.broker.history("h:big", 0, acks[0].epoch)).reason == "too old"
    assert [p.offset for p in (await engine.broker.history("h:big", 1, acks[0].epoch)).publications] == [2, 3]


async def test_an_idle_topic_is_forgotten_and_starts_a_new_epoch(engine: Engine):
    # A 2 s TTL (0.3 s ran out before the first read, once, with three workers beside a CPU hog).
    first = await engine.broker.publish(pub("short:idle", 1))
    assert (await engine.broker.history("short:idle", 0, first.epoch)).publications != []
    deadline = asyncio.get_running_loop().time() + timeout(10)
    while (read := await engine.broker.history("short:idle", 1, first.epoch)).recovered:
        assert asyncio.get_running_loop().time() < deadline, "the idle topic was never forgotten"
        await asyncio.sleep(0.05)
    assert (read.reason, read.publications) == ("epoch changed", [])  # its position went with it
    again = await engine.broker.publish(pub("short:idle", 2))
    assert again.offset == 1 and again.epoch != first.epoch


@pytest.mark.parametrize("engine", ["redis"], indirect=True)  # the memory engine has no outage
async def test_every_operation_is_unavailable_while_redis_is_away(engine: Engine):
    assert engine.redis is not None
    await engine.broker.publish(pub("h:away", 1, retain=True))
    engine.redis.stop()
    try:
        with pytest.raises(BrokerUnavailable):
            await engine.broker.history("h:away", None, "")
        with pytest.raises(BrokerUnavailable):
            await engine.broker.retained("h:away")
        with pytest.raises(BrokerUnavailable):
            await engine.broker.publish_many([(pub("h:away", 2), ""), (pub("h:away", 3), "")])
        read = await engine.broker.history("nohistory", None, "")  # needs no Redis: answered
        assert (read.recovered, read.publications) == (True, [])
    finally:
        engine.redis.start()


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_redis_keeps_only_the_ack_of_an_idempotency_key(engine: Engine):
    redis = engine.broker._redis  # type: ignore[attr-defined]
    first = await engine.broker.publish(pub("nohistory", 1, pad=60_000), "big-key")
    stored = await redis.get(engine.broker.keys.idempotency(pub("nohistory", 1).idempotency_key("big-key")))  # type: ignore[attr-defined]
    assert orjson.loads(stored) == {"i": "m1", "ts": 1, "o": 0, "e": ""}
    assert await engine.broker.publish(pub("nohistory", 2), "big-key") == first


async def test_a_lane_and_concurrent_calls_keep_their_order(engine: Engine):
    """A stream's requests handed over without waiting for each other's answers, with unary publishes
    to the same topic made meanwhile: every request is published in the order it was handed over, so
    positions and deliveries follow that order."""
    await engine.broker.subscribe("t:p:order", "t:p:other")
    lane = engine.broker.lane()
    handed, unary, n = [], [], 0
    for request in range(40):
        items = []
        for _ in range(1 + request % 3):
            n += 1
            items.append((pub("p:order" if n % 4 else "p:other", n), ""))
        handed.append((items, lane.publish_many(items)))
        unary.append(asyncio.ensure_future(engine.broker.publish(pub("p:order", 1000 + request))))
    outcomes = [await outcome for _, outcome in handed]
    unary_acks = await asyncio.gather(*unary)
    acks = [ack for outcome in outcomes for ack in outcome]
    assert all(isinstance(ack, Ack) for ack in acks) and len(acks) == n
    lane_ids = [p.id for items, _ in handed for p, _ in items]
    assert [ack.id for ack in acks] == lane_ids
    other = [ack.offset for ack in acks if int(ack.id[1:]) % 4 == 0]
    assert other == list(range(1, n // 4 + 1))
    ordered = [ack.offset for ack in acks if int(ack.id[1:]) % 4]
    assert ordered == sorted(ordered)
    assert sorted([*ordered, *(a.offset for a in unary_acks)]) == list(range(1, len(ordered) + len(unary) + 1))
    got = await engine.wait_for(n + len(unary))
    lane_got = [p for p in got if int(p.id[1:]) < 1000]
    engine.assert_order([p.id for p in lane_got], lane_ids, [p.channel for p in lane_got])  # the lane's order
    by_offset = sorted((p.offset, p.id) for p in got if p.topic == "p:order")
    assert [offset for offset, _ in by_offset] == list(range(1, len(by_offset) + 1))  # no gap, no repeat
    assert [p.id for p in got if p.topic == "p:order"] == [pid for _, pid in by_offset]  # delivered in offset order
    assert {a.id for a in unary_acks} == {f"m{1000 + r}" for r in range(40)}


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_redis_pipelines_a_lane_bounded_and_waits_while_redis_is_slow(engine: Engine):
    """With Redis paused for writes, everything handed over is written without waiting for an answer
    (up to the in-flight bound, the rest queued), nothing fails, and all is published in order after."""
    broker = engine.broker
    pipeline = broker._pipeline  # type: ignore[attr-defined]
    await broker.publish(pub("p:slow", 0))  # the pipeline's connection is up
    pipeline._max_in_flight = 8
    # Writes wait 1.5 s: slow, yet within the engine's 2 s read timeout (a longer silence is Redis away).
    await broker._redis.client_pause(1500, all=False)  # type: ignore[attr-defined]
    lane = broker.lane()
    outcomes = [lane.publish_many([(pub("p:slow", n), "")]) for n in range(1, 21)]
    deadline = asyncio.get_running_loop().time() + 1.2
    while pipeline.in_flight < 8 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert (pipeline.in_flight, len(pipeline._queued)) == (8, 12)  # the bound: 8 on the wire, 12 waiting
    acks = [(await outcome)[0] for outcome in outcomes]  # answered once Redis resumes: none refused
    assert [(a.id, a.offset) for a in acks] == [(f"m{n}", n + 1) for n in range(1, 21)]


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_nothing_a_lane_pipelined_behind_a_refused_message_is_published(engine: Engine):
    """A message refused by Redis while later ones of its stream are already on the wire: those later
    ones are refused by Redis too (the lane's place is checked in the publish script), so a publisher
    that sends again from the refused one keeps its order. Other lanes and unary calls go on."""
    broker = engine.broker
    await broker.subscribe("t:p:lane", "t:p:broken")
    await broker._redis.set(broker.keys.meta("p:broken"), "not a hash")  # type: ignore[attr-defined]  # its publish fails
    await broker.publish(pub("p:lane", 0))
    # Handed over without a wait in between: each is written before the one before it is answered.
    lane, other = broker.lane(), broker.lane()
    first = lane.publish_many([(pub("p:lane", 1), "")])
    refused = lane.publish_many([(pub("p:broken", 2), ""), (pub("p:lane", 3), "")])
    later = lane.publish_many([(pub("p:lane", 4), "")])
    elsewhere = other.publish_many([(pub("p:lane", 5), "")])
    assert isinstance((await first)[0], Ack)
    outcome = await refused
    assert [type(o) for o in outcome] == [BrokerUnavailable, BrokerUnavailable]
    assert "WRONGTYPE" in str(outcome[0]) and "HALTED" in str(outcome[1])
    assert [type(o) for o in await later] == [BrokerUnavailable]
    assert [type(o) for o in await elsewhere] == [Ack]
    after = lane.publish_many([(pub("p:lane", 6), "")])  # known refused: not even sent
    assert "an earlier message of this stream was refused" in str((await after)[0])
    got = await engine.wait_for(3)
    assert [p.id for p in got] == ["m0", "m1", "m5"]
    read = await broker.history("p:lane", None, "")
    assert [p.id for p in read.publications] == ["m0", "m1", "m5"]


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_a_lane_after_redis_went_away_publishes_nothing_more(engine: Engine):
    assert engine.redis is not None
    lane = engine.broker.lane()
    assert isinstance((await lane.publish_many([(pub("h:gone", 1), "")]))[0], Ack)
    engine.redis.stop()
    try:
        outcome = await lane.publish_many([(pub("h:gone", 2), ""), (pub("h:gone", 3), "")])
        assert [type(o) for o in outcome] == [BrokerUnavailable, BrokerUnavailable]
    finally:
        engine.redis.start()
    outcome = await lane.publish_many([(pub("h:gone", 4), "")])  # Redis is back; this stream stays halted
    assert "an earlier message of this stream was refused" in str(outcome[0])
    fresh = engine.broker.lane()  # the publisher's next stream
    for _ in range(100):
        (ack,) = await fresh.publish_many([(pub("h:gone", 5), "")])
        if isinstance(ack, Ack):
            break
        fresh = engine.broker.lane()
        await asyncio.sleep(0.05)
    assert isinstance(ack, Ack) and ack.offset == 1  # Redis came back empty: a new epoch


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_a_lost_connection_refuses_everything_after_it_and_publishes_none_of_it(engine: Engine):
    """The pipeline's connection dies with a stream's messages written and queued: every one of them
    is refused (none published), and the stream publishes nothing more; a new stream does."""
    broker = engine.broker
    pipeline = broker._pipeline  # type: ignore[attr-defined]
    await broker.subscribe("t:p:cut")
    await broker.publish(pub("p:cut", 0))
    pipeline._max_in_flight = 4
    await broker._redis.client_pause(1500, all=False)  # type: ignore[attr-defined]  # nothing runs meanwhile
    lane = broker.lane()
    outcomes = [lane.publish_many([(pub("p:cut", n), "")]) for n in range(1, 11)]
    deadline = asyncio.get_running_loop().time() + 1.2
    while pipeline.in_flight < 4 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert (pipeline.in_flight, len(pipeline._queued)) == (4, 6)
    await broker._redis.client_kill_filter(_type="normal", skipme=True)  # type: ignore[attr-defined]
    results = [(await outcome)[0] for outcome in outcomes]
    assert [type(r) for r in results] == [BrokerUnavailable] * 10
    later = await lane.publish_many([(pub("p:cut", 11), "")])
    assert "an earlier message of this stream was refused" in str(later[0])
    (fresh,) = await broker.lane().publish_many([(pub("p:cut", 12), "")])
    assert isinstance(fresh, Ack) and fresh.offset == 2  # m0 was 1: none of m1-m11 was published
    got = await engine.wait_for(2)
    assert [p.id for p in got] == ["m0", "m12"]


async def test_the_memory_engine_lets_a_retained_state_go_after_its_ttl_as_redis_does():
    """One state per task, room or entity, published once: kept as long as the process lived."""
    from push_service.broker.memory import MemoryBroker

    broker = MemoryBroker(sweep_interval=0.05, retained_ttl=4.0)
    await broker.start(lambda publication: None)
    try:
        await broker.publish(pub("old", 1, retain=True))
        await broker.publish(pub("kept", 1, retain=True))
        await asyncio.sleep(3.0)
        await broker.publish(pub("kept", 2, retain=True))  # a newer state: its own ttl
        # Past the first two's ttl (a sleep is never short), within the newer one's unless this sleep
        # overruns by 2.8 s.
        await asyncio.sleep(1.2)
        assert await broker.retained("old") is None and list(broker._retained) == ["kept"]
        assert orjson.loads((await broker.retained("kept")).frame)["id"] == "m2"  # type: ignore[union-attr]
    finally:
        await broker.close()
