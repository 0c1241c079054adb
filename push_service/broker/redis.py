"""The Redis engine: several push replicas share topics through one Redis.

- Publish is one Lua script per message: assign the topic's next offset (and its epoch, created on
  first use), add the message to the topic's history stream (bounded by MAXLEN and a TTL), keep it
  as the retained state if asked, and PUBLISH it to the channel: atomic per topic.
- Replicas SUBSCRIBE to a channel on their first local interest and UNSUBSCRIBE on the last (the hub
  calls `subscribe` / `unsubscribe` exactly then).
- If Redis loses its data, the next publish on a topic creates a new epoch: clients holding old
  positions are told `recovered: false` ("epoch changed") instead of silently missing messages.
- While Redis is unreachable, publishes raise BrokerUnavailable (UNAVAILABLE to producers, who retry);
  the subscriber reconnects and subscribes its channels again by itself.

- A chosen client_id's owner is one key, claimed by a Lua script (the same owner, or nobody: set it
  with the hold as its TTL; another owner: refused), so replicas agree on it; refreshing the hold is
  a PEXPIRE, which binds nothing.

Every key lives under one prefix (`RedisKeys`) and has a bound: streams MAXLEN + PEXPIRE, the topic
meta PEXPIRE (its history's TTL), the retained state 24 h, idempotency keys their window, client id
owners their hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.history import HistoryPolicy, HistoryRead, decide, no_history
from ..core.publication import Publication
from ..metrics import REDIS_ERRORS, REDIS_RECONNECTS
from .base import Broker, BrokerUnavailable, PublicationHandler, ReconnectHandler

log = logging.getLogger("push_service.broker.redis")

RETAINED_MS = 24 * 3600 * 1000
CONFIRM_TIMEOUT = 2.0

# KEYS: history stream, topic meta, retained, idempotency key. ARGV: channel, header JSON, frame
# without its final "}", history size, history ttl (ms), retain ("1"/"0"), a fresh epoch in case the
# topic has none, idempotency window (ms; 0: no key).
PUBLISH_SCRIPT = """
if ARGV[8] ~= '0' then
  local first = redis.call('GET', KEYS[4])
  if first then
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
    redis.call('HSET', KEYS[2], 'epoch', epoch)
  end
  local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
  header['o'] = offset
  header['e'] = epoch
  frame = ARGV[3] .. ',"offset":' .. offset .. ',"epoch":' .. cjson.encode(epoch) .. '}'
  local payload = cjson.encode(header) .. '\\n' .. frame
  redis.call('XADD', KEYS[1], 'MAXLEN', size, '*', 'm', payload)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local payload = cjson.encode(header) .. '\\n' .. frame
if ARGV[6] == '1' then
  redis.call('SET', KEYS[3], payload, 'PX', %d)
end
redis.call('PUBLISH', ARGV[1], payload)
if ARGV[8] ~= '0' then
  redis.call('SET', KEYS[4], payload, 'PX', ARGV[8])
end
return payload
""" % RETAINED_MS  # noqa: UP031 (the Lua source is full of braces; a format string would double them)


# KEYS: the client id's owner key. ARGV: the owner, the hold (ms). 1: bound to the owner, 0: taken.
CLAIM_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
REFRESH_CHUNK = 1000  # owner keys per pipeline


@dataclass(frozen=True)
class RedisKeys:
    """Every key and channel name, under one prefix."""

    prefix: str = "push"

    def stream(self, topic: str) -> str:
        return f"{self.prefix}:h:{topic}"

    def meta(self, topic: str) -> str:
        return f"{self.prefix}:m:{topic}"

    def retained(self, topic: str) -> str:
        return f"{self.prefix}:r:{topic}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:i:{key}"

    def channel(self, channel: str) -> str:
        return f"{self.prefix}:c:{channel}"

    def client_id_owner(self, client_id: str) -> str:
        return f"{self.prefix}:o:{client_id}"



def encode_header(publication: Publication) -> bytes:
    return orjson.dumps({"t": publication.topic, "c": publication.client_id, "i": publication.id,
                         "ts": publication.timestamp_ms, "r": publication.retain, "k": publication.conflation_key})


def decode_payload(payload: bytes) -> Publication:
    header, frame = payload.split(b"\n", 1)
    h = orjson.loads(header)
    return Publication(topic=h["t"], client_id=h["c"], id=h["i"], timestamp_ms=h["ts"], frame=frame,
                       retain=bool(h["r"]), offset=int(h.get("o", 0)), epoch=h.get("e", ""),
                       conflation_key=h.get("k", ""))


class RedisBroker(Broker):
    def __init__(self, url: str, history: HistoryPolicy | None = None, prefix: str = "push",
                 idempotency_window: float = 300.0) -> None:
        self._idempotency_ms = int(idempotency_window * 1000)
        self._history = history or HistoryPolicy()
        self.keys = RedisKeys(prefix)
        self._redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._publish = self._redis.register_script(PUBLISH_SCRIPT)
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        self._handler: PublicationHandler | None = None
        self._channels: set[str] = set()
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # the subscriber connection is up, with every channel subscribed
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._on_reconnect: ReconnectHandler | None = None
        self._was_up = False

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
        await self._redis.aclose()

    async def publish(self, publication: Publication, idempotency_key: str = "") -> Publication:
        try:
            payload = await self._run_publish(publication, idempotency_key, self._redis)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_ERRORS.labels("publish").inc()
            raise BrokerUnavailable(f"redis: {exc}") from None
        return decode_payload(payload)

    async def publish_many(self, items: Sequence[tuple[Publication, str]]) -> list[Publication]:
        """One round trip for a stream request's messages: a pipeline (one connection, so in order).
        A burst then reaches Redis back to back, and its subscribers get it as a burst (batched)."""
        if len(items) <= 1:
            return [await self.publish(publication, key) for publication, key in items]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for publication, key in items:
                    await self._run_publish(publication, key, pipe)
                payloads = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_ERRORS.labels("publish").inc()
            raise BrokerUnavailable(f"redis: {exc}") from None
        return [decode_payload(payload) for payload in payloads]

    async def _run_publish(self, publication: Publication, idempotency_key: str, client) -> bytes:  # type: ignore[no-untyped-def]
        rule = None if publication.client_id else self._history.rule_for(publication.topic)
        topic = publication.topic or "-"
        return await self._publish(
            keys=[self.keys.stream(topic), self.keys.meta(topic), self.keys.retained(topic),
                  self.keys.idempotency(idempotency_key or "-")],
            args=[self.keys.channel(publication.channel), encode_header(publication), publication.frame[:-1],
                  rule.size if rule else 0, int(rule.ttl * 1000) if rule else 0,
                  "1" if publication.retain else "0", uuid.uuid4().hex[:12],
                  self._idempotency_ms if idempotency_key else 0],
            client=client,
        )

    async def history(self, topic: str, since: int | None, epoch: str, limit: int = 0) -> HistoryRead:
        rule = self._history.rule_for(topic)
        try:
            meta = await self._redis.hgetall(self.keys.meta(topic))
            if rule is None:
                return no_history(since, "")
            now_s, now_us = await self._redis.time()
            oldest_ms = now_s * 1000 + now_us // 1000 - int(rule.ttl * 1000)
            entries = await self._redis.xrange(self.keys.stream(topic), min=f"{max(0, oldest_ms)}", max="+")
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_ERRORS.labels("history").inc()
            raise BrokerUnavailable(f"redis: {exc}") from None
        current_epoch = meta.get(b"epoch", b"").decode()
        offset = int(meta.get(b"offset", 0))
        if not current_epoch:
            # Nothing kept (never published, expired, or Redis lost it): whatever comes next starts a
            # new epoch, so any position held now cannot be honoured.
            return HistoryRead([], 0, "", since is None, "" if since is None else "epoch changed")
        publications = [decode_payload(fields[b"m"]) for _, fields in entries][-rule.size:]
        return decide(publications, offset, current_epoch, since, epoch, limit)

    async def retained(self, topic: str) -> Publication | None:
        try:
            payload = await self._redis.get(self.keys.retained(topic))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_ERRORS.labels("retained").inc()
            raise BrokerUnavailable(f"redis: {exc}") from None
        return decode_payload(payload) if payload else None

    async def claim_client_id(self, client_id: str, owner: str, hold: float) -> bool:
        try:
            granted = await self._claim(keys=[self.keys.client_id_owner(client_id)],
                                        args=[owner, max(1, int(hold * 1000))])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_ERRORS.labels("claim").inc()
            raise BrokerUnavailable(f"redis: {exc}") from None
        return bool(granted)

    async def refresh_client_ids(self, client_ids: Sequence[str], hold: float) -> None:
        hold_ms = max(1, int(hold * 1000))
        try:
            for start in range(0, len(client_ids), REFRESH_CHUNK):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for client_id in client_ids[start:start + REFRESH_CHUNK]:
                        pipe.pexpire(self.keys.client_id_owner(client_id), hold_ms)
                    await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            REDIS_ERRORS.labels("refresh").inc()
            raise BrokerUnavailable(f"redis: {exc}") from None

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
            REDIS_ERRORS.labels("subscribe").inc()
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
                REDIS_ERRORS.labels("unsubscribe").inc()
                log.warning("unsubscribe from %s (%d channels) failed (the reconnect leaves it out): %s", channels[0],
                            len(channels), exc)

    async def _read_forever(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                # A private channel first, so that listening works before any interest.
                channels = [self.keys.channel(f"_replica:{uuid.uuid4().hex}"), *map(self.keys.channel, self._channels)]
                await pubsub.subscribe(*channels)
                self._pubsub = pubsub
                delay = 0.1
                waiting = len(channels)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        if waiting:
                            waiting -= 1
                            if not waiting:
                                self._ready.set()
                                log.info("redis subscriber up (%d channels)", len(self._channels))
                                if self._was_up:
                                    REDIS_RECONNECTS.inc()
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
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                REDIS_ERRORS.labels("subscriber").inc()
                log.warning("redis subscriber lost: %s; retrying in %.1fs", exc, delay)
            finally:
                self._ready.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

