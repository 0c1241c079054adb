"""One stream's one-message requests through the Redis engine alone, as PublishStream hands them over,
5,000 of them unpaced: the wall-clock rate until the replica's subscriber has them all, and this
process's CPU per message (publish and its delivery back). Run it from a checkout of the code before
pipelining (its broker has no `lane`: each request is awaited before the next) and from this one, on
the same machine, interleaved.

    .venv/bin/python -m bench.redis_stream_ab after
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

from push_service.broker import broker_from_url
from push_service.core.history import HistoryPolicy
from push_service.core.publication import make_publication
from tests.support.redis_server import RedisServer

MESSAGES = 5000
IN_FLIGHT = 2000  # the servicer's bound per stream


async def main(label: str) -> None:
    server = RedisServer(Path(tempfile.mkdtemp()))
    server.start()
    broker = broker_from_url(server.url, HistoryPolicy())
    received = 0
    done = asyncio.Event()

    def handler(_: object) -> None:
        nonlocal received
        received += 1
        if received == MESSAGES:
            done.set()

    await broker.start(handler)
    await broker.subscribe("t:task:progress")
    publications = [make_publication(topic="task:progress", type_="t", data=orjson.dumps({"n": n, "pad": "x" * 150}),
                                     id_=f"m{n}", client_id="", retain=False, now_ms=1, max_data_bytes=65536)
                    for n in range(MESSAGES)]
    wall, cpu = time.perf_counter(), time.process_time()
    if hasattr(broker, "lane"):
        lane, window = broker.lane(), []
        for publication in publications:
            window.append(lane.publish_many([(publication, "")]))
            if len(window) >= IN_FLIGHT:
                await window.pop(0)
        for outcome in window:
            await outcome
    else:
        for publication in publications:
            await broker.publish_many([(publication, "")])
    await done.wait()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label}: {MESSAGES / wall:,.0f} msg/s, {cpu / MESSAGES * 1e6:.0f} µs CPU per message")
    await broker.close()
    server.stop()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1] if len(sys.argv) > 1 else "this code"))
