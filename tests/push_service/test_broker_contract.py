"""One contract suite for the broker interface, run against both engines (Redis: a real redis-server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from push_service.broker import broker_from_url
from push_service.broker.base import Broker, BrokerUnavailable
from push_service.core.history import HistoryPolicy, HistoryRule
from push_service.core.publication import Publication, make_publication
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

POLICY = HistoryPolicy((HistoryRule("h:*", size=3, ttl=60), HistoryRule("*", size=0, ttl=0)))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class Engine:
    def __init__(self, broker: Broker, kind: str, redis: RedisServer | None) -> None:
        self.broker, self.kind, self.redis = broker, kind, redis
        self.received: list[Publication] = []
        self.arrived = asyncio.Event()

    def handler(self, publication: Publication) -> None:
        self.received.append(publication)
        self.arrived.set()

    async def wait_for(self, count: int) -> list[Publication]:
        while len(self.received) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)
        return self.received

    async def lose_everything(self) -> None:
        if self.kind == "memory":
            self.broker.lose_everything()  # type: ignore[attr-defined]
        else:
            await self.broker._redis.flushall()  # type: ignore[attr-defined]


@pytest.fixture(params=["memory", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else None
    url = redis.url if redis else "memory://"
    broker = broker_from_url(url, POLICY, prefix=f"test-{uuid.uuid4().hex[:8]}")
    engine = Engine(broker, request.param, redis)
    await broker.start(engine.handler)
    yield engine
    await broker.close()


def pub(topic: str, n: int, *, client_id: str = "", retain: bool = False) -> Publication:
    return make_publication(topic=topic, type_="t", data=orjson.dumps({"n": n}), id_=f"m{n}", client_id=client_id,
                            retain=retain, now_ms=1, max_data_bytes=1000)


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
    assert [p.id for p in got] == [f"m{n}" for n in range(51)]
    await engine.broker.unsubscribe(*(f"c:{c}" for c in clients[1:]))
    await engine.broker.subscribe()  # nothing: a no-op
    await engine.broker.unsubscribe()
    for n, client in enumerate(clients, 100):
        await engine.broker.publish(pub("", n, client_id=client))
    await engine.broker.publish(pub("h:many", 200))
    got = await engine.wait_for(53)
    assert [p.id for p in got][51:] == ["m100", "m200"]


async def test_positions_and_the_frame(engine: Engine):
    first = await engine.broker.publish(pub("h:pos", 1))
    second = await engine.broker.publish(pub("h:pos", 2))
    assert (first.offset, second.offset) == (1, 2) and first.epoch == second.epoch != ""
    assert orjson.loads(second.frame) == {"type": "t", "id": "m2", "timestamp": 1, "data": {"n": 2},
                                          "topic": "h:pos", "offset": 2, "epoch": second.epoch}
    plain = await engine.broker.publish(pub("nohistory", 3))
    assert (plain.offset, plain.epoch) == (0, "") and b"offset" not in plain.frame


async def test_history_recovery_and_its_refusals(engine: Engine):
    published = [await engine.broker.publish(pub("h:r", n)) for n in range(1, 6)]  # keeps 3, 4, 5
    epoch = published[0].epoch
    read = await engine.broker.history("h:r", 3, epoch)
    assert (read.recovered, [p.offset for p in read.publications], read.offset) == (True, [4, 5], 5)
    assert [p.frame for p in read.publications] == [p.frame for p in published[3:]]
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


async def test_idempotency_key_publishes_once(engine: Engine):
    await engine.broker.subscribe("t:h:idem")
    first = await engine.broker.publish(pub("h:idem", 1), "key-1")
    repeat = await engine.broker.publish(pub("h:idem", 2), "key-1")
    other = await engine.broker.publish(pub("h:idem", 3), "key-2")
    assert (repeat.id, repeat.offset, repeat.frame) == (first.id, first.offset, first.frame)
    assert other.offset == first.offset + 1
    got = await engine.wait_for(2)
    await asyncio.sleep(0.2)
    assert [p.id for p in engine.received] == ["m1", "m3"] and len(got) == 2


async def test_a_chosen_client_id_is_bound_to_its_first_owner_until_the_hold_runs_out(engine: Engine):
    broker, hold = engine.broker, timeout(2)
    assert await broker.claim_client_id("chosen", "alice", hold) is True
    assert await broker.claim_client_id("chosen", "bob", hold) is False
    assert await broker.claim_client_id("chosen", "", hold) is False  # anonymous is not alice either
    assert await broker.claim_client_id("chosen", "alice", hold) is True
    await asyncio.sleep(hold * 0.6)
    await broker.refresh_client_ids(["chosen", "unclaimed"], hold)  # its hold starts over
    await asyncio.sleep(hold * 0.6)  # past the first hold, within the refreshed one
    assert await broker.claim_client_id("chosen", "bob", hold) is False
    assert await broker.claim_client_id("unclaimed", "bob", hold) is True  # the refresh bound nothing
    await asyncio.sleep(hold * 1.1)
    assert await broker.claim_client_id("chosen", "bob", hold) is True


@pytest.mark.parametrize("engine", ["redis"], indirect=True)
async def test_replicas_agree_on_who_holds_a_client_id(engine: Engine):
    assert engine.redis is not None
    prefix = engine.broker.keys.prefix  # type: ignore[attr-defined]
    other = broker_from_url(engine.redis.url, POLICY, prefix=prefix)
    await other.start(lambda _: None)
    try:
        results = await asyncio.gather(*(broker.claim_client_id("raced", owner, 60)
                                         for broker, owner in [(engine.broker, "alice"), (other, "bob")] * 5))
        winner = "alice" if results[0] else "bob"
        assert results == [winner == "alice", winner == "bob"] * 5
        assert await other.claim_client_id("raced", winner, 60) is True
    finally:
        await other.close()
