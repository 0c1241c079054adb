"""What only the Redis Cluster engine does (the broker contract suite runs on it too): sharded pub/sub
stays within a slot's shard, a stream's lane across shards, subscriptions that follow a slot moved to
another master, and a shard's master killed (its replica takes over: publishes come back, the epoch is
the new master's, the subscriber moved by itself and said so). Real redis-servers: one cluster for the
module (3 masters with a replica each; the test that kills a master starts it again)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from push_service.broker import broker_from_url, redis_sharded
from push_service.broker.base import BrokerUnavailable
from push_service.broker.redis_cluster import ClusterKeys, RedisClusterBroker, parse_cluster_url, partition_tags
from push_service.core.history import HistoryPolicy, HistoryRule
from push_service.core.publication import Ack, Publication, make_publication
from tests.support.redis_cluster import ClusterNode, RedisCluster
from tests.support.timing import timeout

POLICY = HistoryPolicy((HistoryRule("h:*", size=100, ttl=60), HistoryRule("*", size=0, ttl=0)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


class Replica:
    """A broker as a push replica holds it: what it received, and how often it was told to resync."""

    def __init__(self, url: str, prefix: str) -> None:
        self.broker: RedisClusterBroker = broker_from_url(url, POLICY, prefix=prefix)  # type: ignore[assignment]
        self.received: list[Publication] = []
        self.resyncs = 0
        self._arrived = asyncio.Event()

    async def start(self) -> Replica:
        await self.broker.start(self._got, self._resync)
        return self

    def _got(self, publication: Publication) -> None:
        self.received.append(publication)
        self._arrived.set()

    def _resync(self) -> None:
        self.resyncs += 1

    async def wait_for(self, count: int) -> list[Publication]:
        while len(self.received) < count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout(5))
        return self.received

    async def wait_for_id(self, message_id: str) -> list[Publication]:
        while message_id not in [p.id for p in self.received]:
            await self.wait_for(len(self.received) + 1)
        return self.received


@pytest.fixture
async def replica(cluster: RedisCluster) -> AsyncIterator[Replica]:
    replica = await Replica(cluster.url, f"test-{uuid.uuid4().hex[:8]}").start()
    yield replica
    await replica.broker.close()


def pub(topic: str, n: int) -> Publication:
    return make_publication(topic=topic, type_="t", data=orjson.dumps({"n": n}), id_=f"m{n}", client_id="",
                            retain=False, now_ms=1, max_data_bytes=65536)


def masters(cluster: RedisCluster) -> list[ClusterNode]:
    return [cluster.node_for_slot(slot) for slot in (0, 8000, 16383)]


def bus_stats(node: ClusterNode) -> dict[str, int]:
    info = node.cli("CLUSTER", "INFO")
    return {k: int(v) for k, v in (line.split(":") for line in info.split() if "stats_messages_publish" in line)}


def topics_on_distinct_masters(cluster: RedisCluster, keys: ClusterKeys, count: int) -> list[str]:
    """`count` topics whose slots three different masters serve (the first found per master)."""
    found: dict[int, str] = {}
    owner = cluster.slot_map()
    for n in range(1000):
        topic = f"h:spread{n}"
        found.setdefault(owner(keys.slot(f"t:{topic}")).port, topic)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("no such topics")


def test_the_url_and_the_partitions():
    assert parse_cluster_url("redis+cluster://a:1,b:2?partitions=16") == ([("a", 1), ("b", 2)], {"partitions": 16})
    assert parse_cluster_url("redis+cluster://u:p%40ss@a:1")[1] == {"partitions": 64, "username": "u",
                                                                     "password": "p@ss"}
    for bad in ("redis+cluster://", "redis+cluster://a", "redis+cluster://a:1?partitions=0"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)
    tags = partition_tags(64)  # one tag per 256-slot range, in order
    assert [ClusterKeys("p", 64).slot(f"t:x{n}") // 256 == ClusterKeys("p", 64).partition(f"t:x{n}")
            for n in range(50)] == [True] * 50
    assert len(tags) == len(set(tags)) == 64
    keys = ClusterKeys("push", 64).of("t:a")
    assert {keys.stream("a").split("}")[0], keys.channel("t:a").split("}")[0], keys.lane("l").split("}")[0]} == {
        f"push:{{{keys.tag}"}


async def test_a_message_reaches_only_its_slots_shard(cluster: RedisCluster, replica: Replica):
    """SPUBLISH, not PUBLISH: the owner's master sends it to its replica over the cluster bus and to
    our subscriber; the other masters neither subscribe to it nor hear of it."""
    topic = "h:sharded"
    channel = replica.broker.keys.channel(f"t:{topic}").encode()
    owner = cluster.node_for_slot(replica.broker.keys.slot(f"t:{topic}"))
    others = [node for node in masters(cluster) if node is not owner]
    await replica.broker.subscribe(f"t:{topic}")
    with cluster.client(owner) as client:
        assert client.execute_command("PUBSUB SHARDNUMSUB", channel) == [(channel, 1)]
    for node in others:
        with cluster.client(node) as client:
            assert client.execute_command("PUBSUB SHARDNUMSUB", channel) == [(channel, 0)]
    before = {node.port: bus_stats(node) for node in masters(cluster)}
    for n in range(20):
        await replica.broker.publish(pub(topic, n))
    assert [p.id for p in await replica.wait_for(20)] == [f"m{n}" for n in range(20)]
    after = {node.port: bus_stats(node) for node in masters(cluster)}
    sent = after[owner.port]["cluster_stats_messages_publishshard_sent"] - before[owner.port].get(
        "cluster_stats_messages_publishshard_sent", 0)
    assert sent == 20  # to its one replica, once each
    for node in others:  # nothing broadcast: no classic publish anywhere, no shard message to them
        assert after[node.port] == before[node.port]
    assert all("cluster_stats_messages_publish_sent" not in stats for stats in after.values())


async def test_partitions_spread_over_the_masters(cluster: RedisCluster, replica: Replica):
    keys = replica.broker.keys
    owner = cluster.slot_map()
    served = [owner(keys.slot(f"t:{n}")).port for n in range(3000)]
    shares = sorted(served.count(node.port) / len(served) for node in masters(cluster))
    assert shares[0] > 0.25 and shares[-1] < 0.42  # about a third each


async def test_a_lane_across_shards_keeps_its_order_and_halts_on_a_refusal(cluster: RedisCluster, replica: Replica):
    """A stream alternating between topics on three masters: acks and each topic's deliveries in the
    stream's order. Then a refused message: what follows it in the same partition is refused by Redis
    (HALTED), what follows it in another partition is not even sent."""
    broker = replica.broker
    topics = topics_on_distinct_masters(cluster, broker.keys, 3)
    await broker.subscribe(*(f"t:{t}" for t in topics))
    lane = broker.lane()
    handed = [lane.publish_many([(pub(topics[n % 3], n), "")]) for n in range(60)]
    acks = [(await outcome)[0] for outcome in handed]
    assert [a.id for a in acks if isinstance(a, Ack)] == [f"m{n}" for n in range(60)]
    got = await replica.wait_for(60)
    for index, topic in enumerate(topics):
        assert [p.id for p in got if p.topic == topic] == [f"m{n}" for n in range(index, 60, 3)]
        assert [p.offset for p in got if p.topic == topic] == list(range(1, 21))

    broken, same, other = "h:broken", None, topics[0]
    for n in range(1000):  # a topic in the broken one's partition
        if broker.keys.partition(f"t:h:same{n}") == broker.keys.partition(f"t:{broken}"):
            same = f"h:same{n}"
            break
    assert same is not None and broker.keys.partition(f"t:{other}") != broker.keys.partition(f"t:{broken}")
    await broker._redis.set(broker.keys.meta(broken), "not a hash")  # its publish fails
    lane = broker.lane()
    first = lane.publish_many([(pub(other, 100), "")])
    refused = lane.publish_many([(pub(broken, 101), ""), (pub(same, 102), ""), (pub(other, 103), "")])
    assert isinstance((await first)[0], Ack)
    outcome = await refused
    assert [type(o) for o in outcome] == [BrokerUnavailable] * 3
    assert "WRONGTYPE" in str(outcome[0]) and "HALTED" in str(outcome[1])
    assert "an earlier message of this stream was refused" in str(outcome[2])
    assert (await broker.history(same, None, "")).publications == []
    assert [p.id for p in (await broker.history(other, None, "")).publications][-1] == "m100"


async def test_subscriptions_follow_a_slot_moved_to_another_master(cluster: RedisCluster, replica: Replica,
                                                                  monkeypatch: pytest.MonkeyPatch, caplog):
    """The slot of a subscribed topic moves (its keys migrated, CLUSTER SETSLOT): the old master ends
    the subscription, the replica subscribes at the new one and is told to resync; the topic's next
    publish starts a new epoch (another master writes it), so no position is silently reused. A
    replica that has not read the slot map since has its publish redirected, and sends it again."""
    monkeypatch.setattr(redis_sharded, "MAP_CHECK_INTERVAL", 60.0)  # the publisher's map stays stale
    broker, topic = replica.broker, "h:moving"
    publisher = await Replica(cluster.url, broker.keys.prefix).start()
    slot = broker.keys.slot(f"t:{topic}")
    await broker.subscribe(f"t:{topic}")
    first = await publisher.broker.publish(pub(topic, 1))
    await replica.wait_for(1)
    source = cluster.node_for_slot(slot)
    target = next(node for node in masters(cluster) if node is not source)
    move_slot(cluster, slot, source, target)
    deadline = asyncio.get_running_loop().time() + timeout(10)
    while replica.resyncs == 0:
        assert asyncio.get_running_loop().time() < deadline, "the subscription never moved"
        await asyncio.sleep(0.05)
    with cluster.client(target) as client:
        channel = broker.keys.channel(f"t:{topic}").encode()
        assert client.execute_command("PUBSUB SHARDNUMSUB", channel) == [(channel, 1)]
    caplog.set_level("INFO", "push_service.broker.redis")
    second = await publisher.broker.publish(pub(topic, 2))  # redirected once, then sent to the new master
    await publisher.broker.close()
    assert "was redirected (MOVED" in caplog.text
    assert (second.offset, second.epoch != first.epoch) == (1, True)
    assert [p.id for p in await replica.wait_for(2)] == ["m1", "m2"]
    read = await broker.history(topic, 1, first.epoch)
    assert (read.recovered, read.reason) == (False, "epoch changed")


def move_slot(cluster: RedisCluster, slot: int, source: ClusterNode, target: ClusterNode) -> None:
    """What `redis-cli --cluster reshard` does for one slot."""
    ids = {node.port: node.cli("CLUSTER", "MYID") for node in (source, target)}
    target.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source.port])
    source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target.port])
    with cluster.client(source) as client:
        while keys := client.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in masters(cluster):
        node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", ids[target.port])
    cluster.wait_until_ok()


async def test_a_masters_death_its_replica_takes_over(cluster: RedisCluster):
    """Kill -9 the master of a subscribed topic's slot: publishes there are UNAVAILABLE until its
    replica is promoted; then they are published again, under a new epoch (what the dead master had
    not replicated may be lost), and the subscription moved to the new master by itself (told). The
    dead node comes back afterwards as a replica (the module's cluster is whole again)."""
    replica = await Replica(cluster.url, "failover").start()
    broker, topic = replica.broker, "h:failover"
    dead = cluster.node_for_slot(broker.keys.slot(f"t:{topic}"))
    try:
        await broker.subscribe(f"t:{topic}", "t:h:elsewhere")
        first = await broker.publish(pub(topic, 1))
        await replica.wait_for(1)
        dead.stop()
        with pytest.raises(BrokerUnavailable):
            await broker.publish(pub(topic, 2))
        deadline = asyncio.get_running_loop().time() + timeout(30)
        while True:
            try:
                again = await broker.publish(pub(topic, 3))
                break
            except BrokerUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "the replica never took over"
                await asyncio.sleep(0.1)
        assert (again.offset, again.epoch != first.epoch) == (1, True)
        assert cluster.node_for_slot(broker.keys.slot(f"t:{topic}")) is not dead
        while replica.resyncs == 0:  # the subscription moved to the new master, and said so
            assert asyncio.get_running_loop().time() < deadline, "the subscription never moved"
            await asyncio.sleep(0.05)
        await broker.publish(pub(topic, 4))
        await replica.wait_for_id("m4")  # m3 may have come before the move: count on m4 itself
        await asyncio.sleep(0.2)  # nothing more comes (a repeat would show below)
        assert [p.id for p in replica.received] in (["m1", "m4"], ["m1", "m3", "m4"])  # m3: perhaps before the move
        read = await broker.history(topic, None, "")
        assert ([p.id for p in read.publications], read.epoch) == (["m3", "m4"], again.epoch)
    finally:
        await replica.broker.close()
        dead.start()
        cluster.wait_until_ok()


async def test_after_a_master_restarts_no_command_fails_on_a_connection_from_before(cluster: RedisCluster,
                                                                                    replica: Replica):
    """The one-Redis engine's pool kept connections to a Redis that restarted, and each failed its next
    command once (test_broker_contract). A master restarted at once leaves the cluster client's pool to
    it holding such connections: none may fail a read once the subscriber is back. Whether the restart
    was quick enough to keep it master, or its replica took over meanwhile, the same must hold.
    Another replica publishes, so that nothing but the reads below takes this one's pooled connections.
    (Two things keep it: the sharded subscriber reads the slot map again when it loses a node, and
    redis-py's cluster client retries a command whose connection failed. Without both, reads are
    refused "Connection closed by server"; with either, none is.)"""
    broker = replica.broker
    topics = [f"h:warm{n}" for n in range(24)]  # spread over the three masters
    await broker.subscribe(*(f"t:{topic}" for topic in topics))
    await asyncio.gather(*(broker.history(topic, None, "") for topic in topics))  # idle in the pools now
    restarted = cluster.node_for_slot(broker.keys.slot(f"t:{topics[0]}"))
    await asyncio.to_thread(restarted.stop)
    await asyncio.to_thread(restarted.start)  # empty: as the master it was, or as its replica's replica
    await asyncio.to_thread(cluster.wait_until_ok)
    other = await Replica(cluster.url, broker.keys.prefix).start()
    try:
        async with asyncio.timeout(timeout(15)):
            n = 0
            while topics[0] not in [p.topic for p in replica.received]:  # this one's subscriber is back
                n += 1
                with contextlib.suppress(BrokerUnavailable):
                    await other.broker.publish(pub(topics[0], n))
                await asyncio.sleep(0.1)
    finally:
        await other.broker.close()
    reads = await asyncio.gather(*(broker.history(topic, None, "") for topic in topics),
                                 *(broker.retained(topic) for topic in topics), return_exceptions=True)
    assert [r for r in reads if isinstance(r, BaseException)] == []


async def test_a_paused_master_replaced_by_its_replica_is_left_within_seconds(cluster: RedisCluster):
    """SIGSTOP the master of a subscribed topic: no connection breaks, but its replica takes over.
    Another replica publishes there; ours reads the slot map every few seconds, moves its subscription
    to the new master and is told to resync, and gets what is published next."""
    ours = await Replica(cluster.url, "paused").start()
    other = await Replica(cluster.url, "paused").start()
    topic = "h:paused"
    paused = cluster.node_for_slot(ours.broker.keys.slot(f"t:{topic}"))
    try:
        await ours.broker.subscribe(f"t:{topic}")
        await other.broker.publish(pub(topic, 1))
        await ours.wait_for(1)
        paused.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        deadline = asyncio.get_running_loop().time() + timeout(30)
        while ours.resyncs == 0:
            assert asyncio.get_running_loop().time() < deadline, "never left the paused master"
            await asyncio.sleep(0.1)
        while True:  # as a publisher does: again while UNAVAILABLE (its map may still name the paused one)
            try:
                await other.broker.publish(pub(topic, 2))  # the promoted replica, a new epoch
                break
            except BrokerUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "never published to the promoted replica"
                await asyncio.sleep(0.1)
        assert [p.id for p in await ours.wait_for(2)] == ["m1", "m2"]
    finally:
        paused.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        for replica in (ours, other):
            await replica.broker.close()
        cluster.wait_until_ok()


async def test_a_cluster_unreachable_is_unavailable_for_every_operation():
    """No seed answers (at start, and since): every operation says UNAVAILABLE; a subscription waits
    for the cluster instead of failing the caller (as with one Redis away)."""
    from tests.support.processes import free_port

    broker = broker_from_url(f"redis+cluster://127.0.0.1:{free_port()}", POLICY, prefix="away")
    await broker.start(lambda _: None)
    try:
        await broker.subscribe("t:h:away")
        for call in (broker.publish(pub("h:away", 1)), broker.history("h:away", None, ""), broker.retained("h:away"),
                     broker.claim_client_id("id", "owner", 60), broker.lane().publish_many([(pub("h:away", 2), "")])):
            with pytest.raises(BrokerUnavailable):
                outcome = await call
                if isinstance(outcome, list):
                    raise outcome[0]
    finally:
        await broker.close()
