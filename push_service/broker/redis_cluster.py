"""The Redis engine on a Redis Cluster (`redis+cluster://host:port,host:port?partitions=64`).

The same scripts, keys and guarantees as the single-Redis engine (`redis.py`), spread over the
cluster's shards:

- Channels are hashed into a fixed number of *partitions* (64 by default; every replica must use the
  same number), and every key and channel of a partition carries its hash tag `{<tag>}`: a topic's
  history stream, meta, retained state, the idempotency keys and lane places of publishes to it, and
  its channel are in one hash slot, so the publish script stays atomic per topic. The tags are chosen
  so that the partitions' slots are spread evenly over the slot range (a 3-master cluster serves about
  a third of them each). Few slots means one `SSUBSCRIBE` per partition and a bounded number of lane
  and idempotency keys per stream, at the cost of no finer spreading than the partitions.
- Publishing uses sharded pub/sub: the script `SPUBLISH`es, so a message reaches only its slot's
  shard (the master and its replicas), never the whole cluster bus; each replica holds one
  `SSUBSCRIBE` connection per master that serves a partition it listens to (`redis_sharded.py`).
- Publishes go through one ordered pipeline per master (`redis_pipeline.py`): one connection each,
  so the order per channel is kept. A publishing stream's lane is checked per partition (its place
  key is in the partition's slot); when a stream moves to another partition while its previous
  message is unanswered, the next one waits for that answer, so the stream's order and its halting
  on a refusal hold across shards. (Deliveries of different channels on different shards may reach a
  replica in either order: the order is per channel.)
- A topic's epoch belongs to the master that writes it (`CLUSTER MYID` in the meta): when a replica
  takes over after its master died, whatever the old master had not replicated yet may be lost, so
  the new master's first publish to the topic starts a new epoch; clients holding positions are told
  `recovered: false` instead of being handed a reused offset. (Moving a slot to another master does
  the same.)
- A slot moved (MOVED / ASK), a shard failing over (CLUSTERDOWN, a dead master) or the cluster
  unreachable: BrokerUnavailable, and the slot map is read again; a unary publish that was redirected
  is sent again to the new master once (a redirected script did not run).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, ResponseError

from ..core.publication import Ack, Publication
from .base import BrokerUnavailable, PublicationHandler, PublishLane, ReconnectHandler
from .redis import (
    PIPELINE_MAX_IN_FLIGHT,
    PUBLISH_SCRIPT,
    REFRESH_CHUNK,
    RedisBroker,
    RedisKeys,
    RedisLane,
    encode_header,
)
from .redis_errors import unavailable_as
from .redis_pipeline import OrderedPipeline
from .redis_sharded import ShardedSubscriber

log = logging.getLogger("push_service.broker.redis")

DEFAULT_PARTITIONS = 64
REDIRECT_RETRIES = 3  # a unary publish answered MOVED / ASK is sent again after the slot map is read again

_NEW_EPOCH = """  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  if not epoch then
    epoch = ARGV[7]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0, 'bytes', 0)
  end
"""
_NEW_EPOCH_PER_MASTER = """  local master = redis.call('CLUSTER', 'MYID')
  local meta = redis.call('HMGET', KEYS[2], 'epoch', 'master')
  local epoch = meta[1]
  if not epoch or meta[2] ~= master then
    epoch = ARGV[7]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0, 'bytes', 0, 'master', master)
  end
"""


def cluster_publish_script() -> str:
    """The publish script with SPUBLISH and an epoch per writing master (see the module docstring)."""
    assert _NEW_EPOCH in PUBLISH_SCRIPT and PUBLISH_SCRIPT.count("redis.call('PUBLISH'") == 1
    return PUBLISH_SCRIPT.replace(_NEW_EPOCH, _NEW_EPOCH_PER_MASTER).replace(
        "redis.call('PUBLISH'", "redis.call('SPUBLISH'")


CLUSTER_PUBLISH_SCRIPT = cluster_publish_script()


def partition_tags(partitions: int) -> list[str]:
    """One hash tag per partition, partition i's in the i-th of `partitions` equal ranges of slots (the
    first number whose slot falls there), so partitions spread over masters as their slots do."""
    tags: list[str | None] = [None] * partitions
    missing, n = partitions, 0
    while missing:
        index = key_slot(str(n).encode()) * partitions // REDIS_CLUSTER_HASH_SLOTS
        if tags[index] is None:
            tags[index] = str(n)
            missing -= 1
        n += 1
    return [tag for tag in tags if tag is not None]


@dataclass(frozen=True)
class PartitionKeys(RedisKeys):
    """Every key and channel of one partition: `{prefix}:{<tag>}:...`, all in the tag's slot."""

    tag: str = ""

    @property
    def root(self) -> str:
        return f"{self.prefix}:{{{self.tag}}}"


@dataclass(frozen=True)
class ClusterKeys(RedisKeys):
    """Keys by channel: a channel's partition decides its tag. A topic's keys are its channel's
    (`t:<topic>`); a client id's owner key is in the partition of the client's channel."""

    partitions: int = DEFAULT_PARTITIONS
    by_partition: list[PartitionKeys] = field(default_factory=list)

    def __post_init__(self) -> None:
        tags = partition_tags(self.partitions)
        object.__setattr__(self, "by_partition", [PartitionKeys(self.prefix, tag) for tag in tags])

    def partition(self, channel: str) -> int:
        return zlib.crc32(channel.encode()) % self.partitions

    def of(self, channel: str) -> PartitionKeys:
        return self.by_partition[self.partition(channel)]

    def slot(self, channel: str) -> int:
        return key_slot(self.of(channel).tag.encode())

    def stream(self, topic: str) -> str:
        return self.of(f"t:{topic}").stream(topic)

    def meta(self, topic: str) -> str:
        return self.of(f"t:{topic}").meta(topic)

    def retained(self, topic: str) -> str:
        return self.of(f"t:{topic}").retained(topic)

    def channel(self, channel: str) -> str:
        return self.of(channel).channel(channel)

    def client_id_owner(self, client_id: str) -> str:
        return self.of(f"c:{client_id}").client_id_owner(client_id)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """`redis+cluster://[user:password@]host:port[,host:port...][?partitions=N]`: the seed nodes (any
    one that answers is enough) and the options."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for address in filter(None, hosts.split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad node {address!r} in {url!r}: expected host:port")
        seeds.append((host.strip("[]"), int(port)))
    if not seeds:
        raise ValueError(f"no node in {url!r}: expected redis+cluster://host:port[,host:port...]")
    query = parse_qs(parts.query)
    options: dict[str, Any] = {"partitions": int(query.get("partitions", [DEFAULT_PARTITIONS])[0])}
    if not 1 <= options["partitions"] <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"partitions must be 1..{REDIS_CLUSTER_HASH_SLOTS} in {url!r}")
    if credentials:
        user, _, password = credentials.partition(":")
        options.update(username=unquote(user) or None, password=unquote(password) or None)
    return seeds, options


class RedisClusterBroker(RedisBroker):
    def _open(self, url: str, max_connections: int, pool_timeout: float) -> None:
        seeds, options = parse_cluster_url(url)
        partitions = options.pop("partitions")
        self.keys = ClusterKeys(self.keys.prefix, partitions)
        self._node_options = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **options}
        # History reads, retained state, client id claims and signals: redis-py's cluster client routes
        # them by key and follows MOVED / ASK itself. Its slot map is also the pipelines' and subscribers'.
        self._redis = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in seeds],
                                   max_connections=max_connections, require_full_coverage=False,
                                   **self._node_options)
        self._publish = self._redis.register_script(CLUSTER_PUBLISH_SCRIPT)
        self._pipelines: dict[str, OrderedPipeline] = {}
        self._shards = ShardedSubscriber(self._redis, self._node_options, self._events)

    async def start(self, on_publication: PublicationHandler, on_reconnect: ReconnectHandler | None = None) -> None:
        await self._shards.start(on_publication, on_reconnect, self._pipelines_moved)

    async def close(self) -> None:
        await self._shards.close()
        for pipeline in self._pipelines.values():
            await pipeline.close()
        await self._redis.aclose()

    def _pipeline_for(self, channel: str) -> OrderedPipeline:
        """The ordered pipeline of the master serving this channel's slot (per the slot map now)."""
        node = self._redis.nodes_manager.get_node_from_slot(self.keys.slot(channel))
        pipeline = self._pipelines.get(node.name)
        if pipeline is None:
            pool = ConnectionPool(host=node.host, port=node.port, max_connections=2, **self._node_options)
            pipeline = self._pipelines[node.name] = OrderedPipeline(pool, [CLUSTER_PUBLISH_SCRIPT],
                                                                     PIPELINE_MAX_IN_FLIGHT)
        return pipeline

    async def _pipelines_moved(self, masters: set[str]) -> None:
        """The slot map was read again: pipelines to nodes that are no longer masters go."""
        for name in set(self._pipelines) - masters:
            await self._pipelines.pop(name).close()

    def _send_publish(self, publication: Publication, idempotency_key: str, lane: str = "", place: int = 0,
                      after: int | None = None) -> asyncio.Future[Any]:
        keys = self.keys.of(publication.channel)
        command = self._publish_command(keys, publication, idempotency_key, lane, place, after)
        try:
            pipeline = self._pipeline_for(publication.channel)
        except Exception as exc:  # no slot map yet (the cluster unreachable since start): UNAVAILABLE
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(BrokerUnavailable(f"redis: {exc}"))
            self._shards.disturbed()
            return future
        reply = pipeline.send(*command)
        reply.add_done_callback(self._note_reply)
        return reply

    def _note_reply(self, reply: asyncio.Future[Any]) -> None:
        """A redirect or a lost master: read the slot map again (the subscriber's maintainer does)."""
        if reply.cancelled():
            return
        failure = reply.exception() or (reply.result() if isinstance(reply.result(), ResponseError) else None)
        if failure is not None and not str(failure).startswith(("HALTED", "WRONGTYPE")):
            self._shards.disturbed()

    async def publish(self, publication: Publication, idempotency_key: str = "") -> Ack:
        for _ in range(REDIRECT_RETRIES - 1):
            reply = self._send_publish(publication, idempotency_key)
            await asyncio.wait([reply])
            if reply.exception() is not None or not isinstance(reply.result(), AskError):
                return await self._acked(reply)
            log.info("a publish to %s was redirected (%s %s): sent again after reading the slot map",
                     publication.channel, "ASK" if type(reply.result()) is AskError else "MOVED", reply.result())
            await self._shards.refresh_now()  # MOVED / ASK: the script did not run; to the slot's master now
        return await self._acked(self._send_publish(publication, idempotency_key))

    def lane(self) -> PublishLane:
        return ClusterLane(self)

    async def signal(self, publication: Publication) -> bool:
        with unavailable_as("signal", self._events):
            receivers = await self._redis.execute_command(
                "SPUBLISH", self.keys.channel(publication.channel), encode_header(publication) + b"\n" + publication.frame)
        return bool(receivers)

    async def refresh_client_ids(self, client_ids: Sequence[str], hold: float, anonymous_hold: float) -> None:
        """One script call per partition (a script's keys are in one slot)."""
        by_partition: dict[int, list[str]] = {}
        for client_id in client_ids:
            by_partition.setdefault(self.keys.partition(f"c:{client_id}"), []).append(client_id)
        for ids in by_partition.values():
            for start in range(0, len(ids), REFRESH_CHUNK):
                await super().refresh_client_ids(ids[start:start + REFRESH_CHUNK], hold, anonymous_hold)

    async def subscribe(self, *channels: str) -> None:
        await self._shards.subscribe({self.keys.channel(c).encode(): self.keys.slot(c) for c in channels})

    async def unsubscribe(self, *channels: str) -> None:
        await self._shards.unsubscribe([self.keys.channel(c).encode() for c in channels])


class ClusterLane(RedisLane):
    """A stream's messages as in the single-Redis lane, the place checked per partition: a message in
    another partition than the one before it, while that one is unanswered, waits for its answer (and
    the ones after it wait behind it), so nothing of the stream overtakes a refusal on another shard."""

    def __init__(self, broker: RedisClusterBroker) -> None:
        super().__init__(broker)
        self._last_partition = -1
        self._backlog: deque[tuple[Publication, str, int, asyncio.Future[Any]]] = deque()
        self._draining: asyncio.Task[None] | None = None

    def publish_many(self, items: Sequence[tuple[Publication, str]]) -> Awaitable[list[Ack | BrokerUnavailable]]:
        replies = [self._hand_over(publication, key) for publication, key in items]
        return asyncio.ensure_future(self._answers(replies, len(replies)))

    def _must_wait(self, partition: int) -> bool:
        return self._last is not None and not self._last.done() and partition != self._last_partition

    def _hand_over(self, publication: Publication, key: str) -> asyncio.Future[Any]:
        partition = self._redis_broker.keys.partition(publication.channel)  # type: ignore[attr-defined]
        if not self._backlog and not self._must_wait(partition):
            return self._send(publication, key, partition)
        waiting: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._backlog.append((publication, key, partition, waiting))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return waiting

    def _send(self, publication: Publication, key: str, partition: int) -> asyncio.Future[Any]:
        if (reply := self._send_one(publication, key)) is None:
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(self._refusal())
            return refused
        self._last_partition = partition
        return reply

    async def _drain(self) -> None:
        try:
            while self._backlog:
                publication, key, partition, waiting = self._backlog[0]
                if self._must_wait(partition):
                    assert self._last is not None
                    await asyncio.wait([self._last])
                self._backlog.popleft()
                _settle_from(waiting, self._send(publication, key, partition))
        finally:
            self._draining = None


def _settle_from(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    def copy(done: asyncio.Future[Any]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
