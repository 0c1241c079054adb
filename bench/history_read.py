"""What reading the last few messages of a topic's history costs, by how many the topic keeps
(issue 17.5): the Redis engine against a redis-server of its own, on a free port.

    .venv/bin/python -m bench.history_read [--reads 300]

Prints, for 100 and 5,000 stored messages (data ~200 bytes), the mean time of a "last 5" read
(`history(topic, None, "", limit=5)`) and of a recovery read of the last 5 (`since = offset - 5`).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from push_service.broker.redis import RedisBroker
from push_service.core.history import HistoryPolicy, HistoryRule
from push_service.core.publication import make_publication
from tests.support.redis_server import RedisServer

POLICY = HistoryPolicy((HistoryRule("*", size=10_000, ttl=3600),))


async def measure(url: str, stored: int, reads: int) -> tuple[float, float]:
    broker = RedisBroker(url, POLICY, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    topic = "bench:history"
    data = orjson.dumps({"payload": "x" * 180})
    for n in range(stored):
        await broker.publish(make_publication(topic=topic, type_="t", data=data, id_=f"m{n}", client_id="",
                                              retain=False, now_ms=1, max_data_bytes=65536))
    latest = await broker.history(topic, None, "", limit=5)
    assert len(latest.publications) == 5, latest
    epoch, offset = latest.epoch, latest.offset
    started = time.perf_counter()
    for _ in range(reads):
        await broker.history(topic, None, "", limit=5)
    last_five = (time.perf_counter() - started) / reads
    started = time.perf_counter()
    for _ in range(reads):
        read = await broker.history(topic, offset - 5, epoch)
    recovery = (time.perf_counter() - started) / reads
    assert [p.offset for p in read.publications] == list(range(offset - 4, offset + 1)), read
    await broker.close()
    return last_five, recovery


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        try:
            for stored in (100, 5000):
                last_five, recovery = await measure(redis.url, stored, args.reads)
                print(f"{stored:>5} stored: last 5 {last_five * 1e3:.3f} ms, recovery of the last 5 "
                      f"{recovery * 1e3:.3f} ms (mean of {args.reads})")
        finally:
            redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
