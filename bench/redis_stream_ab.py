"""A stream of one-message requests through the Redis engine alone, as PublishStream hands them over,
5,000 of them unpaced: wall-clock rate until the replica's subscriber has all, and the process's CPU
per message (publish and its delivery back). Run from a checkout of the code before pipelining (its
broker has no `lane`: each request awaited before the next) and after, on the same machine.

    .venv/bin/python -m bench.redis_stream_ab after
"""
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


async def main():
    s = RedisServer(Path(tempfile.mkdtemp())); s.start()
    b = broker_from_url(s.url, HistoryPolicy())
    got = 0
    done = asyncio.Event()
    N = 5000
    def handler(p):
        nonlocal got
        got += 1
        if got == N: done.set()
    await b.start(handler); await b.subscribe("t:task:progress")
    pubs = [make_publication(topic="task:progress", type_="t", data=orjson.dumps({"n": i, "pad": "x"*150}), id_=f"m{i}", client_id="", retain=False, now_ms=1, max_data_bytes=65536) for i in range(N)]
    w0, c0 = time.perf_counter(), time.process_time()
    if hasattr(b, "lane"):
        lane = b.lane(); window = []
        for p in pubs:
            window.append(lane.publish_many([(p, "")]))
            if len(window) >= 2000:  # the servicer's bound
                await window.pop(0)
        for w in window: await w
    else:
        for p in pubs:
            await b.publish_many([(p, "")])
    await done.wait()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    print(f"{sys.argv[1] if len(sys.argv) > 1 else 'this code'}: {N/w:,.0f} msg/s, {c/N*1e6:.0f} us CPU per message (publish + its delivery back)")
    await b.close(); s.stop()
uvloop.run(main())
