"""The Redis engine: several push replicas share topics through one Redis.

- Publish is one Lua script per message: assign the topic's next offset (and its epoch, created on
  first use), add the message to the topic's history stream (bounded by count, bytes of frames and
  age, and a TTL), keep it as the retained state if asked, and PUBLISH it to the channel: atomic per
  topic.
- A history stream's entry ids are `<offset>-<Redis time in ms>`: reads go straight to a position
  (XRANGE from `since + 1`, XREVRANGE … COUNT for the latest N), their cost independent of how much
  is kept, and the time part says when an entry is past its age. One Lua script per read, one page.
- Replicas SUBSCRIBE to a channel on their first local interest and UNSUBSCRIBE on the last (the hub
  calls `subscribe` / `unsubscribe` exactly then).
- If Redis loses its data (or a topic's keys expire, idle), the next publish on a topic creates a new
  epoch: clients holding old positions are told `recovered: false` ("epoch changed") instead of
  silently missing messages.
- While Redis is unreachable, every operation raises BrokerUnavailable (UNAVAILABLE to callers, who
  retry); the subscriber reconnects and subscribes its channels again by itself.
- Connections come from a blocking pool of `max_connections`: a burst waits for one (up to
  `pool_timeout` seconds, then UNAVAILABLE) instead of opening more than Redis accepts.

- A chosen client_id's owner is one key, claimed by a Lua script (the same owner, or nobody: set it
  with the hold as its TTL; another owner: refused), so replicas agree on it; refreshing the hold is
  a PEXPIRE, which binds nothing.

On a Redis Cluster, `redis_cluster.py` runs these scripts with its keys in hash-tagged partitions.

Every key lives under one prefix (`RedisKeys`) and has a bound: streams their rule's count, bytes and
age + PEXPIRE, the topic meta PEXPIRE (its history's TTL), the retained state 24 h, idempotency keys
(their first publication's ack only) their window, client id owners their hold. What all topics hold together is bounded by
Redis's `maxmemory` (with `noeviction`, writes past it answer UNAVAILABLE; every key has a TTL, so a
`volatile-*` eviction policy would apply to all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import (
    NoScriptError,
    RedisError,
    ResponseError,
)

from common.backoff import Backoff
from common.reconnect import reconnect_forever

from ..core.history import HistoryPolicy, HistoryRead, PageLimits, decide, no_history
from ..core.publication import Ack, Publication
from .base import Broker, BrokerUnavailable, EngineEvents, PublicationHandler, PublishLane, ReconnectHandler
from .redis_errors import UNAVAILABLE_ERRORS, unavailable_as
from .redis_pipeline import OrderedPipeline
from .redis_presence import RedisPresence

log = logging.getLogger("push_service.broker.redis")

RETAINED_MS = 24 * 3600 * 1000
# A lane's place is checked only while the message before it is unanswered (a few seconds at most):
# a minute is plenty, and an idle stream's lane key goes.
LANE_MS = 60_000
PIPELINE_MAX_IN_FLIGHT = 4096  # commands written to Redis and not yet answered; more wait
CONFIRM_TIMEOUT = 2.0

# Shared by both scripts: a stream entry's time (ms) from its id, and its frame's length.
LUA_HELPERS = """
local function entry_ms(id)
  return tonumber(string.match(id, '%-(%d+)$'))
end
local function frame_length(payload)
  return #payload - string.find(payload, '\\n', 1, true)
end
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
"""

# KEYS: history stream, topic meta, retained, idempotency key, lane. ARGV: channel, header JSON, frame
# without its final "}", history size, history ttl (ms), retain ("1"/"0"), a fresh epoch in case the
# topic has none, idempotency window (ms; 0: no key), history bytes per topic, this message's place
# in its lane ("": no lane), the place the lane must be at ("": no check). Returns the ack JSON.
# The lane (a publishing stream) is checked first and moved last: if an earlier message of the stream
# was not published (refused, or lost with a connection), this one is refused too (HALTED), so what
# a stream has pipelined behind a refusal never overtakes it. (A script that fails at its first write,
# e.g. out of memory, has changed nothing, the lane included.)
PUBLISH_SCRIPT = LUA_HELPERS + """
if ARGV[11] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[11] then
  return redis.error_reply('HALTED an earlier message of this stream was not published')
end
local function advance_lane()
  if ARGV[10] ~= '' then
    redis.call('SET', KEYS[5], ARGV[10], 'PX', %d)
  end
end
if ARGV[8] ~= '0' then
  local first = redis.call('GET', KEYS[4])
  if first then
    advance_lane()
    return first
  end
end
local header = cjson.decode(ARGV[2])
local frame = ARGV[3] .. '}'
local size = tonumber(ARGV[4])
if size > 0 then
  local epoch = redis.call('HGET', KEYS[2], 'epoch')
  if not epoch then
    epoch = ARGV[7]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0, 'bytes', 0)
  end
  local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
  header['o'] = offset
  header['e'] = epoch
  frame = ARGV[3] .. ',"offset":' .. offset .. ',"epoch":' .. cjson.encode(epoch) .. '}'
  local payload = cjson.encode(header) .. '\\n' .. frame
  local now = now_ms()
  redis.call('XADD', KEYS[1], offset .. '-' .. now, 'm', payload)
  local bytes = redis.call('HINCRBY', KEYS[2], 'bytes', #frame)
  local length = redis.call('XLEN', KEYS[1])
  local oldest = now - tonumber(ARGV[5])
  local max_bytes = tonumber(ARGV[9])
  while length > 0 do
    local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
    if length <= size and bytes <= max_bytes and entry_ms(head[1]) >= oldest then
      break
    end
    bytes = redis.call('HINCRBY', KEYS[2], 'bytes', -frame_length(head[2][2]))
    redis.call('XDEL', KEYS[1], head[1])
    length = length - 1
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local payload = cjson.encode(header) .. '\\n' .. frame
if ARGV[6] == '1' then
  redis.call('SET', KEYS[3], payload, 'PX', %d)
end
redis.call('PUBLISH', ARGV[1], payload)
local ack = cjson.encode({i = header['i'], ts = header['ts'], o = header['o'] or 0, e = header['e'] or ''})
if ARGV[8] ~= '0' then
  redis.call('SET', KEYS[4], ack, 'PX', ARGV[8])
end
advance_lane()
return ack
""" % (LANE_MS, RETAINED_MS)  # noqa: UP031 (the Lua source is full of braces; a format string would double them)

# KEYS: history stream, topic meta. ARGV: since (-1: none), limit (latest N; 0: all), page count,
# page bytes, history ttl (ms). Returns {} when the topic has no epoch, else {epoch, offset, payload...}:
# from the first entry after `since` on (none if one of them is past its age: too old), or of the
# latest `limit`, or of all, the entries a page holds and one more if there is one (so the caller
# knows it is truncated). Entries past their age are skipped.
READ_SCRIPT = LUA_HELPERS + """
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
if not meta[1] then
  return {}
end
local oldest = now_ms() - tonumber(ARGV[5])
local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_count, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {meta[1], meta[2] or '0'}
local size = 0
local function add(entry)
  local payload = entry[2][2]
  out[#out + 1] = payload
  size = size + frame_length(payload)
  local taken = #out - 2
  return taken > max_count or (taken > 1 and size > max_bytes)
end
if since < 0 and limit > 0 then
  local latest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)
  for i = #latest, 1, -1 do
    if entry_ms(latest[i][1]) >= oldest and add(latest[i]) then
      break
    end
  end
  return out
end
local start = since >= 0 and ((since + 1) .. '-0') or '-'
while true do
  local chunk = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 100)
  for _, entry in ipairs(chunk) do
    if entry_ms(entry[1]) < oldest then
      if since >= 0 then
        return {meta[1], meta[2] or '0'}
      end
    elseif add(entry) then
      return out
    end
  end
  if #chunk < 100 then
    return out
  end
  start = '(' .. chunk[#chunk][1]
end
"""


# KEYS: the client id's owner key. ARGV: the owner, the hold (ms). 1: bound to the owner, 0: taken.
CLAIM_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# The hold of each bound id starts over: the anonymous owner's ("") for ARGV[2] ms, a user's for ARGV[1].
REFRESH_SCRIPT = """
for _, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner then
    redis.call('PEXPIRE', key, (owner == '') and ARGV[2] or ARGV[1])
  end
end
return 0
"""
REFRESH_CHUNK = 1000  # owner keys per script call


@dataclass(frozen=True)
class RedisKeys:
    """Every key and channel name, under one prefix. History streams and their meta are in their second
    format (`h2`, `m2`: stream ids by offset, byte count in the meta), idempotency keys in their third
    (`i3`: per topic, acks only), so a replica of this version never misreads keys an older one wrote
    (their topics start a new epoch; an older key is not taken for a channel's)."""

    prefix: str = "push"

    @property
    def root(self) -> str:
        """What every name starts with (a cluster partition adds its hash tag: redis_cluster.py)."""
        return self.prefix

    def stream(self, topic: str) -> str:
        return f"{self.root}:h2:{topic}"

    def meta(self, topic: str) -> str:
        return f"{self.root}:m2:{topic}"

    def retained(self, topic: str) -> str:
        return f"{self.root}:r:{topic}"

    def idempotency(self, scoped_key: str) -> str:
        """`scoped_key`: `Publication.idempotency_key` (a topic's own, as in Centrifugo)."""
        return f"{self.root}:i3:{scoped_key}"

    def channel(self, channel: str) -> str:
        return f"{self.root}:c:{channel}"

    def client_id_owner(self, client_id: str) -> str:
        return f"{self.root}:o:{client_id}"

    def lane(self, lane: str) -> str:
        return f"{self.root}:l:{lane}"


def encode_header(publication: Publication) -> bytes:
    return orjson.dumps({"t": publication.topic, "c": publication.client_id, "i": publication.id,
                         "ts": publication.timestamp_ms, "r": publication.retain, "k": publication.conflation_key,
                         **({"x": 1} if publication.control else {}), **({"n": publication.kind} if publication.kind else {}),
                         **({"tp": publication.traceparent} if publication.traceparent else {})})


def decode_payload(payload: bytes) -> Publication:
    header, frame = payload.split(b"\n", 1)
    h = orjson.loads(header)
    return Publication(topic=h["t"], client_id=h["c"], id=h["i"], timestamp_ms=h["ts"], frame=frame,
                       retain=bool(h["r"]), offset=int(h.get("o", 0)), epoch=h.get("e", ""),
                       conflation_key=h.get("k", ""), control=bool(h.get("x", 0)), traceparent=h.get("tp", ""),
                       kind=int(h.get("n", 0)))


def decode_ack(payload: bytes) -> Ack:
    a = orjson.loads(payload)
    return Ack(id=a["i"], timestamp_ms=int(a["ts"]), offset=int(a["o"]), epoch=a["e"])


def _position(epoch: bytes | None, offset: bytes | None) -> tuple[int, str]:
    """A topic's meta as a position: (0, "") while it has no epoch (never published, or Redis lost it)."""
    return (int(offset), epoch.decode()) if epoch and offset and int(offset) else (0, "")


class RedisBroker(Broker):
    def __init__(self, url: str, history: HistoryPolicy | None = None, prefix: str = "push",
                 idempotency_window: float = 300.0, max_connections: int = 32, pool_timeout: float = 10.0,
                 events: EngineEvents | None = None, presence_max_clients: int = 1000) -> None:
        self._events = events or EngineEvents()
        self._idempotency_ms = int(idempotency_window * 1000)
        self._history = history or HistoryPolicy()
        self.keys = RedisKeys(prefix)
        self._open(url, max_connections, pool_timeout)
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        self._refresh = self._redis.register_script(REFRESH_SCRIPT)
        self._read = self._redis.register_script(READ_SCRIPT)
        self.presence = RedisPresence(self._redis, prefix, presence_max_clients, self._events)
        self._handler: PublicationHandler | None = None
        self._channels: set[str] = set()
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # the subscriber connection is up, with every channel subscribed
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._on_reconnect: ReconnectHandler | None = None
        self._was_up = False

    def _open(self, url: str, max_connections: int, pool_timeout: float) -> None:
        """The client (`_redis`), the publish script and the ordered pipeline publishes go through."""
        # At most max_connections to Redis (the subscriber's among them); a burst waits for a free one.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout,
                                                        socket_timeout=2.0, socket_connect_timeout=2.0)
        self._redis = aioredis.Redis.from_pool(pool)  # closed with the client
        self._publish = self._redis.register_script(PUBLISH_SCRIPT)
        # Publishes (unary calls and streams alike) share one connection, in order, pipelined.
        self._pipeline = OrderedPipeline(pool, [PUBLISH_SCRIPT], PIPELINE_MAX_IN_FLIGHT)

    async def start(self, on_publication: PublicationHandler, on_reconnect: ReconnectHandler | None = None) -> None:
        self._handler = on_publication
        self._on_reconnect = on_reconnect
        self._reader = asyncio.create_task(self._read_forever(), name="redis-subscriber")
        with contextlib.suppress(TimeoutError):  # Redis down at start: the subscriber keeps trying
            await asyncio.wait_for(self._ready.wait(), CONFIRM_TIMEOUT)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._pipeline.close()
        await self._redis.aclose()

    async def publish(self, publication: Publication, idempotency_key: str = "") -> Ack:
        """Through the ordered pipeline: concurrent calls share one connection's round trips."""
        return await self._acked(self._send_publish(publication, idempotency_key))

    async def publish_many(self, items: Sequence[tuple[Publication, str]]) -> list[Ack]:
        """In order, without waiting for each other (one connection keeps the order). If one is
        refused, those after it may still have been published: a stream uses its lane instead."""
        replies = [self._send_publish(publication, key) for publication, key in items]
        if replies:
            await asyncio.wait(replies)
        return [await self._acked(reply) for reply in replies]

    def lane(self) -> PublishLane:
        return RedisLane(self)

    def _send_publish(self, publication: Publication, idempotency_key: str, lane: str = "", place: int = 0,
                      after: int | None = None) -> asyncio.Future[Any]:
        return self._pipeline.send(*self._publish_command(self.keys, publication, idempotency_key, lane, place, after))

    def _publish_command(self, keys: RedisKeys, publication: Publication, idempotency_key: str, lane: str, place: int,
                         after: int | None) -> tuple[Any, ...]:
        """The publish script's call (EVALSHA, its keys and arguments) for one message."""
        rule = None if publication.client_id else self._history.rule_for(publication.topic)
        topic = publication.topic or "-"
        return (
            "EVALSHA", self._publish.sha, 5,
            keys.stream(topic), keys.meta(topic), keys.retained(topic),
            keys.idempotency(publication.idempotency_key(idempotency_key) if idempotency_key else "-"),
            keys.lane(lane or "-"),
            keys.channel(publication.channel), encode_header(publication), publication.frame[:-1],
            rule.size if rule else 0, int(rule.ttl * 1000) if rule else 0,
            "1" if publication.retain else "0", uuid.uuid4().hex[:12],
            self._idempotency_ms if idempotency_key else 0, self._history.topic_bytes,
            str(place) if lane else "", "" if after is None else str(after),
        )

    async def _acked(self, reply: asyncio.Future[Any]) -> Ack:
        """A publish's reply as its ack; Redis away, refusing writes, or a halted lane: BrokerUnavailable."""
        with unavailable_as("publish", self._events):
            answer = await reply
        if isinstance(answer, ResponseError):
            if isinstance(answer, (*UNAVAILABLE_ERRORS, NoScriptError)) or str(answer).startswith("HALTED"):
                self._events.failed("publish")
                raise BrokerUnavailable(f"redis: {answer}")
            raise answer
        return decode_ack(answer)

    async def signal(self, publication: Publication) -> bool:
        """PUBLISH on the channel (no history): Redis answers how many subscribers received it."""
        with unavailable_as("signal", self._events):
            receivers = await self._redis.publish(self.keys.channel(publication.channel),
                                                  encode_header(publication) + b"\n" + publication.frame)
        return bool(receivers)

    async def history(self, topic: str, since: int | None, epoch: str, limit: int = 0,
                      page: PageLimits | None = None) -> HistoryRead:
        rule = self._history.rule_for(topic)
        if rule is None:
            return no_history(since)
        page = page or PageLimits()
        # A recovery's `limit` caps its page (decide does the same).
        count = min(limit, page.max_count) if since is not None and limit else page.max_count
        with unavailable_as("history", self._events):
            found = await self._read(
                keys=[self.keys.stream(topic), self.keys.meta(topic)],
                args=[-1 if since is None else since, 0 if since is not None else limit, count, page.max_bytes,
                      int(rule.ttl * 1000)],
            )
        if not found:
            # Nothing kept (never published, expired, or Redis lost it): whatever comes next starts a
            # new epoch, so any position held now cannot be honoured.
            return HistoryRead([], 0, "", since is None, "" if since is None else "epoch changed")
        current_epoch, offset = found[0].decode(), int(found[1])
        return decide([decode_payload(p) for p in found[2:]], offset, current_epoch, since, epoch, limit, page)

    async def position(self, topic: str) -> tuple[int, str] | None:
        return (await self.positions([topic]))[0]

    async def positions(self, topics: list[str]) -> list[tuple[int, str] | None]:
        """The topics' meta (as READ_SCRIPT reads it), one pipeline: one connection and one round trip
        for an interest change however many topics it adds, not one of the pool's connections each."""
        kept = [topic for topic in topics if self._history.rule_for(topic) is not None]
        if not kept:
            return [None] * len(topics)
        with unavailable_as("history", self._events):
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic in kept:
                    pipe.hmget(self.keys.meta(topic), "epoch", "offset")
                metas = dict(zip(kept, await pipe.execute(), strict=True))
        return [None if (meta := metas.get(topic)) is None else _position(*meta) for topic in topics]

    async def retained(self, topic: str) -> Publication | None:
        with unavailable_as("retained", self._events):
            payload = await self._redis.get(self.keys.retained(topic))
        return decode_payload(payload) if payload else None

    async def claim_client_id(self, client_id: str, owner: str, hold: float) -> bool:
        with unavailable_as("claim", self._events):
            granted = await self._claim(keys=[self.keys.client_id_owner(client_id)],
                                        args=[owner, max(1, int(hold * 1000))])
        return bool(granted)

    async def refresh_client_ids(self, client_ids: Sequence[str], hold: float, anonymous_hold: float) -> None:
        holds = [max(1, int(hold * 1000)), max(1, int(anonymous_hold * 1000))]
        with unavailable_as("refresh", self._events):
            for start in range(0, len(client_ids), REFRESH_CHUNK):
                keys = [self.keys.client_id_owner(c) for c in client_ids[start:start + REFRESH_CHUNK]]
                await self._refresh(keys=keys, args=holds)

    async def subscribe(self, *channels: str) -> None:
        """Returns once Redis confirmed the subscriptions (one command for all of them), so what is
        published next is delivered."""
        if not channels:
            return
        self._channels.update(channels)
        names = [self.keys.channel(channel).encode() for channel in channels]
        try:
            await asyncio.wait_for(self._ready.wait(), CONFIRM_TIMEOUT)
            assert self._pubsub is not None
            loop = asyncio.get_running_loop()
            confirmations = [self._confirmations.setdefault(name, loop.create_future()) for name in names]
            await self._pubsub.subscribe(*names)
            await asyncio.wait_for(asyncio.gather(*confirmations), CONFIRM_TIMEOUT)
        except (TimeoutError, RedisError, OSError, AssertionError) as exc:
            self._events.failed("subscribe")
            # Redis is away: the subscriber subscribes every channel again when it reconnects.
            log.warning("subscription to %s (%d channels) deferred to the reconnect: %r", channels[0], len(channels), exc)
        finally:
            for name in names:
                self._confirmations.pop(name, None)

    async def unsubscribe(self, *channels: str) -> None:
        if not channels:
            return
        self._channels.difference_update(channels)
        if self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(*map(self.keys.channel, channels))
            except (RedisError, OSError) as exc:
                self._events.failed("unsubscribe")
                log.warning("unsubscribe from %s (%d channels) failed (the reconnect leaves it out): %s", channels[0],
                            len(channels), exc)

    async def _read_forever(self) -> None:
        await reconnect_forever(self._read_once, Backoff(initial=0.1, maximum=1.0), log, "redis subscriber",
                                expected=(RedisError, OSError))

    async def _read_once(self, up: Callable[[], None]) -> None:
        pubsub = self._redis.pubsub()
        try:
            # A private channel first, so that listening works before any interest.
            channels = [self.keys.channel(f"_replica:{uuid.uuid4().hex}"), *map(self.keys.channel, self._channels)]
            await pubsub.subscribe(*channels)
            self._pubsub = pubsub
            up()
            waiting = len(channels)
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    if waiting:
                        waiting -= 1
                        if not waiting:
                            self._ready.set()
                            log.info("redis subscriber up (%d channels)", len(self._channels))
                            if self._was_up:
                                self._events.reconnected()
                            if self._was_up and self._on_reconnect is not None:
                                self._on_reconnect()  # publications may have passed us by
                            self._was_up = True
                    confirmed = self._confirmations.get(message["channel"])
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
                    continue
                if message["type"] != "message" or self._handler is None:
                    continue
                try:
                    self._handler(decode_payload(message["data"]))
                except Exception:
                    log.exception("bad message on %s", message.get("channel"))
        except (RedisError, OSError):
            self._events.failed("subscriber")
            # Redis went away (restarted, perhaps), and the pool's idle connections with it: dropped
            # now, each connects again when next taken. Kept, each would fail its next command once (a
            # history read answered unavailable, an edge's interest change ending its stream).
            with contextlib.suppress(Exception):
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            raise
        finally:
            self._ready.clear()
            self._pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()



class RedisLane(PublishLane):
    """A publishing stream's messages go into the ordered pipeline as they are handed over; each one
    whose predecessor is still unanswered carries the place the lane must be at, which Redis checks
    (HALTED otherwise): nothing overtakes a refused message, whatever refused it."""

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__(broker)
        self._redis_broker = broker
        self._name = uuid.uuid4().hex
        self._place = 0
        self._last: asyncio.Future[Any] | None = None  # the reply of the latest message handed over

    def publish_many(self, items: Sequence[tuple[Publication, str]]) -> Awaitable[list[Ack | BrokerUnavailable]]:
        replies = []
        for publication, key in items:
            if (reply := self._send_one(publication, key)) is None:
                break  # refused: this one and the rest are answered with the refusal
            replies.append(reply)
        return asyncio.ensure_future(self._answers(replies, len(items)))

    def _send_one(self, publication: Publication, key: str) -> asyncio.Future[Any] | None:
        """Into the pipeline, with the place to check; None once the lane is refused."""
        if self.refused is None and self._last is not None and self._last.done():
            self._note(self._last)
        if self.refused is not None:
            return None
        self._place += 1
        # No check when the message before is known to be published (or there is none): then the lane
        # key may have expired on an idle stream without meaning anything.
        after = None if self._last is None or self._last.done() else self._place - 1
        self._last = self._redis_broker._send_publish(publication, key, self._name, self._place, after)
        return self._last

    async def _answers(self, replies: list[asyncio.Future[Any]], count: int) -> list[Ack | BrokerUnavailable]:
        """The answers of `count` messages, of which `replies` went out (the others: the refusal)."""
        answered: list[Ack | BrokerUnavailable] = []
        for reply in replies:
            try:
                answered.append(await self._redis_broker._acked(reply))
            except (BrokerUnavailable, ResponseError) as exc:  # any refusal halts the lane
                refusal = exc if isinstance(exc, BrokerUnavailable) else BrokerUnavailable(f"redis: {exc}")
                self.refused = self.refused or str(refusal)
                answered.append(refusal)
        return answered + [self._refusal()] * (count - len(replies))

    def _note(self, reply: asyncio.Future[Any]) -> None:
        """A settled reply that was a refusal halts the lane at once."""
        if reply.cancelled():
            self.refused = "cancelled"
        elif reply.exception() is not None:
            self.refused = f"redis: {reply.exception()}"
        elif isinstance(reply.result(), ResponseError):
            self.refused = f"redis: {reply.result()}"
