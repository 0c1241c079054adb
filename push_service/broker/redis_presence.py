"""The Redis engine's presence store: per-edge entries, liveness by beats (see broker/presence.py).

Keys, under the engine's prefix in one hash tag (`{<p>:pn}:`, so that on a Redis Cluster they share a
slot and the scripts stay atomic; every call declares the `alive` key, which routes it there):
- `alive`: a sorted set, node -> alive until (Redis ms); `r:<node>`: its report (expires with it);
- `h:<topic>:<edge>`: a hash, client id -> entry JSON (one edge's clients in that topic);
- `te:<topic>`: the edges with entries in the topic; `et:<edge>`: the topics an edge has entries in;
- `o:<kind>:<key>`: the edges holding a topic or a user (occupancy); `eo:<edge>`: what an edge holds.
Each script runs atomically, so a join, a leave or a dead edge's sweep is told by exactly one
replica. Reads skip the entries of edges past their time before any sweep has run. An edge's keys
also expire by themselves (3 x TTL + 60 s after its last beat), should no replica be left to sweep.
The scripts compute the other key names from the prefix; all are in the tag's slot (one shard of a
cluster carries presence).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from ..core.presence import ClientEntry, Occupancy, PresenceChange, PresenceEvent, first_joins
from .base import EngineEvents
from .presence import Applied, PresenceStore
from .redis_errors import unavailable_as

LUA_COMMON = """
local p = '{' .. ARGV[1] .. ':pn}:'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function hash(topic, edge) return p .. 'h:' .. topic .. ':' .. edge end
local function elsewhere(topic, edge, cid)
  for _, e in ipairs(redis.call('SMEMBERS', p .. 'te:' .. topic)) do
    if e ~= edge and redis.call('HEXISTS', hash(topic, e), cid) == 1 then return true end
  end
  return false
end
local function remove(out, topic, edge, cid)
  local h = hash(topic, edge)
  local old = redis.call('HGET', h, cid)
  if not old then return end
  redis.call('HDEL', h, cid)
  if redis.call('HLEN', h) == 0 then
    redis.call('SREM', p .. 'te:' .. topic, edge)
    redis.call('SREM', p .. 'et:' .. edge, topic)
  end
  if not elsewhere(topic, edge, cid) then
    table.insert(out, topic); table.insert(out, 'l'); table.insert(out, old)
  end
end
local function release(out, edge, hk)
  local o = p .. 'o:' .. hk
  if redis.call('SREM', o, edge) == 1 then
    redis.call('SREM', p .. 'eo:' .. edge, hk)
    if redis.call('SCARD', o) == 0 then table.insert(out, hk); table.insert(out, '0') end
  end
end
"""

# ARGV: prefix, node, ttl ms, report, safety ttl ms.
BEAT_SCRIPT = LUA_COMMON + """
local node, ttl, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local new = redis.call('ZADD', p .. 'alive', now_ms() + ttl, node)
redis.call('SET', p .. 'r:' .. node, ARGV[4], 'PX', ttl)
for _, topic in ipairs(redis.call('SMEMBERS', p .. 'et:' .. node)) do
  redis.call('PEXPIRE', hash(topic, node), keep)
  redis.call('PEXPIRE', p .. 'te:' .. topic, keep)
end
redis.call('PEXPIRE', p .. 'et:' .. node, keep)
for _, hk in ipairs(redis.call('SMEMBERS', p .. 'eo:' .. node)) do
  redis.call('PEXPIRE', p .. 'o:' .. hk, keep)
end
redis.call('PEXPIRE', p .. 'eo:' .. node, keep)
redis.call('PEXPIRE', p .. 'alive', keep)
return new
"""

# ARGV: prefix, edge, cap, snapshot ("1"/"0"), then (topic, client id, entry JSON or "" for a leave)...
# Returns (topic, "j"|"l"|"x", entry JSON)... ("x": refused, over the cap).
APPLY_SCRIPT = LUA_COMMON + """
local edge, cap = ARGV[2], tonumber(ARGV[3])
local out = {}
if ARGV[4] == '1' then
  local keep = {}
  for i = 5, #ARGV, 3 do
    if ARGV[i + 2] ~= '' then keep[ARGV[i] .. '\\n' .. ARGV[i + 1]] = true end
  end
  for _, topic in ipairs(redis.call('SMEMBERS', p .. 'et:' .. edge)) do
    for _, cid in ipairs(redis.call('HKEYS', hash(topic, edge))) do
      if not keep[topic .. '\\n' .. cid] then remove(out, topic, edge, cid) end
    end
  end
end
for i = 5, #ARGV, 3 do
  local topic, cid, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if entry == '' then
    remove(out, topic, edge, cid)
  elseif redis.call('HEXISTS', hash(topic, edge), cid) == 0 then
    local seen, total = false, 0
    for _, e in ipairs(redis.call('SMEMBERS', p .. 'te:' .. topic)) do
      if e ~= edge and redis.call('HEXISTS', hash(topic, e), cid) == 1 then seen = true end
      total = total + redis.call('HLEN', hash(topic, e))
    end
    if seen or total < cap then
      redis.call('HSET', hash(topic, edge), cid, entry)
      redis.call('SADD', p .. 'te:' .. topic, edge)
      redis.call('SADD', p .. 'et:' .. edge, topic)
      if not seen then table.insert(out, topic); table.insert(out, 'j'); table.insert(out, entry) end
    else
      table.insert(out, topic); table.insert(out, 'x'); table.insert(out, entry)
    end
  end
end
return out
"""

# ARGV: prefix, topic. Returns the entry JSONs of live edges.
CLIENTS_SCRIPT = LUA_COMMON + """
local topic, now, out = ARGV[2], now_ms(), {}
for _, e in ipairs(redis.call('SMEMBERS', p .. 'te:' .. topic)) do
  local until_ms = redis.call('ZSCORE', p .. 'alive', e)
  if until_ms and tonumber(until_ms) > now then
    for _, entry in ipairs(redis.call('HVALS', hash(topic, e))) do table.insert(out, entry) end
  end
end
return out
"""

# ARGV: prefix, edge, snapshot, then ("+"|"-", "<kind>:<key>")... Returns ("<kind>:<key>", "1"|"0")...
OCCUPANCY_SCRIPT = LUA_COMMON + """
local edge, out = ARGV[2], {}
if ARGV[3] == '1' then
  local keep = {}
  for i = 4, #ARGV, 2 do
    if ARGV[i] == '+' then keep[ARGV[i + 1]] = true end
  end
  for _, hk in ipairs(redis.call('SMEMBERS', p .. 'eo:' .. edge)) do
    if not keep[hk] then release(out, edge, hk) end
  end
end
for i = 4, #ARGV, 2 do
  local hk = ARGV[i + 1]
  if ARGV[i] == '+' then
    if redis.call('SADD', p .. 'o:' .. hk, edge) == 1 then
      redis.call('SADD', p .. 'eo:' .. edge, hk)
      if redis.call('SCARD', p .. 'o:' .. hk) == 1 then table.insert(out, hk); table.insert(out, '1') end
    end
  else
    release(out, edge, hk)
  end
end
return out
"""

# ARGV: prefix, at most this many dead nodes. Returns {{topic, "l", entry}..., {hk, "0"}...}.
SWEEP_SCRIPT = LUA_COMMON + """
local events, changes = {}, {}
for _, edge in ipairs(redis.call('ZRANGEBYSCORE', p .. 'alive', '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))) do
  redis.call('ZREM', p .. 'alive', edge)
  for _, topic in ipairs(redis.call('SMEMBERS', p .. 'et:' .. edge)) do
    for _, cid in ipairs(redis.call('HKEYS', hash(topic, edge))) do remove(events, topic, edge, cid) end
  end
  for _, hk in ipairs(redis.call('SMEMBERS', p .. 'eo:' .. edge)) do release(changes, edge, hk) end
  redis.call('DEL', p .. 'et:' .. edge, p .. 'eo:' .. edge, p .. 'r:' .. edge)
end
return {events, changes}
"""

# ARGV: prefix. Returns (node, report)... of live nodes.
REPORTS_SCRIPT = LUA_COMMON + """
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', p .. 'alive', '(' .. now_ms(), '+inf')) do
  local report = redis.call('GET', p .. 'r:' .. node)
  if report then table.insert(out, node); table.insert(out, report) end
end
return out
"""

SWEEP_BATCH = 50


class RedisPresence(PresenceStore):
    def __init__(self, redis: aioredis.Redis, prefix: str, max_clients: int, events: EngineEvents) -> None:
        self._prefix = prefix
        self._max_clients = max_clients
        self._events = events
        self._beat = redis.register_script(BEAT_SCRIPT)
        self._apply = redis.register_script(APPLY_SCRIPT)
        self._clients = redis.register_script(CLIENTS_SCRIPT)
        self._occupancy = redis.register_script(OCCUPANCY_SCRIPT)
        self._sweep = redis.register_script(SWEEP_SCRIPT)
        self._reports = redis.register_script(REPORTS_SCRIPT)
        self._keys = ["{%s:pn}:alive" % prefix]  # noqa: UP031 (braces are the key's hash tag)

    async def beat(self, node: str, ttl: float, report: bytes) -> bool:
        ttl_ms = max(1, int(ttl * 1000))
        with unavailable_as("presence", self._events):
            new = await self._beat(keys=self._keys, args=[self._prefix, node, ttl_ms, report, 3 * ttl_ms + 60_000])
        return bool(int(new))

    async def apply(self, edge: str, changes: Sequence[PresenceChange], snapshot: bool = False) -> Applied:
        args: list[object] = [self._prefix, edge, self._max_clients, "1" if snapshot else "0"]
        for change in changes:
            args += [change.topic, change.client.client_id, b"" if change.leave else change.client.to_json()]
        if not snapshot and not changes:
            return Applied()
        with unavailable_as("presence", self._events):
            found = await self._apply(keys=self._keys, args=args)
        applied = Applied()
        for i in range(0, len(found), 3):
            kind = found[i + 1]
            if kind == b"x":
                applied.refused += 1
            else:
                applied.events.append(PresenceEvent(found[i].decode(), kind == b"j", ClientEntry.from_json(found[i + 2])))
        return applied

    async def clients(self, topic: str) -> list[ClientEntry]:
        with unavailable_as("presence", self._events):
            found = await self._clients(keys=self._keys, args=[self._prefix, topic])
        return first_joins(map(ClientEntry.from_json, found))

    async def occupancy(self, edge: str, holds: Sequence[tuple[str, str]], releases: Sequence[tuple[str, str]],
                        snapshot: bool = False) -> list[Occupancy]:
        if not snapshot and not holds and not releases:
            return []
        args: list[object] = [self._prefix, edge, "1" if snapshot else "0"]
        for sign, items in (("+", holds), ("-", releases)):
            for kind, key in items:
                args += [sign, f"{kind}:{key}"]
        with unavailable_as("presence", self._events):
            found = await self._occupancy(keys=self._keys, args=args)
        return [_occupancy(found[i], found[i + 1]) for i in range(0, len(found), 2)]

    async def sweep(self) -> tuple[list[PresenceEvent], list[Occupancy]]:
        with unavailable_as("presence", self._events):
            events, changes = await self._sweep(keys=self._keys, args=[self._prefix, SWEEP_BATCH])
        return ([PresenceEvent(events[i].decode(), False, ClientEntry.from_json(events[i + 2]))
                 for i in range(0, len(events), 3)],
                [_occupancy(changes[i], changes[i + 1]) for i in range(0, len(changes), 2)])

    async def reports(self) -> dict[str, bytes]:
        with unavailable_as("presence", self._events):
            found = await self._reports(keys=self._keys, args=[self._prefix])
        return {found[i].decode(): found[i + 1] for i in range(0, len(found), 2)}


def _occupancy(key: bytes, occupied: bytes) -> Occupancy:
    kind, _, name = key.decode().partition(":")
    return Occupancy(kind, name, occupied == b"1")
