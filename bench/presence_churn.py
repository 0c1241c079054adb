"""Join/leave churn on one presence topic (issue 15): do subscribers get summaries, and what does it cost?

    python -m bench.presence_churn --subscribers 2000 --churn 50 --seconds 15 [--redis] [--join-leave-rate 10]

Starts a system (push_service, task_service, ws_edge; memory engine, or Redis with --redis) whose rule
gives `room:churn` presence and join/leave. `--subscribers` clients subscribe with `join_leave: true`;
then `--churn` clients a second connect to the topic and leave about a second later (so ~churn joins
and ~churn leaves a second) for `--seconds`. Prints one JSON object: the push service's and the edge's
CPU (% of one core) during the churn, and per subscriber per second the join/leave events, the
`presence_summary` frames and the joins and leaves they stand for (what the subscribers learnt).
`--join-leave-rate` is EDGE_JOIN_LEAVE_RATE (a large value: no coalescing, the storm to compare with).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

from bench.e2e import Sampler
from tests.support.processes import System
from tests.support.redis_server import RedisServer

TOPIC = "room:churn"
ROOT = Path(__file__).resolve().parent.parent


class Subscriber:
    def __init__(self) -> None:
        self.events = 0  # join / leave frames (messages)
        self.summaries = 0
        self.summarised = 0  # joins + leaves the summaries stand for
        self.since_ms = 0  # counting what was sent from then on (0: not yet)
        self.last = time.monotonic()

    def take(self, raw: str | bytes) -> None:
        """Counts what was sent from `since_ms` on (by the envelope's timestamp): a slow reader (this
        process, beside 2,000 sockets on a loaded machine) may still be reading the subscribers' own
        joins when the churn starts."""
        self.last = time.monotonic()
        if not self.since_ms:
            return
        frame = orjson.loads(raw)
        for message in frame["messages"] if frame.get("type") == "batch" else [frame]:
            kind = message.get("type")
            if kind in ("join", "leave") and message["timestamp"] >= self.since_ms:
                self.events += 1
            elif kind == "presence_summary" and message["data"]["since"] >= self.since_ms:
                self.summaries += 1
                self.summarised += message["data"]["joins"] + message["data"]["leaves"]


async def subscribe(url: str, subscriber: Subscriber) -> websockets.ClientConnection:
    connection = await websockets.connect(url, max_size=None, ping_interval=None)
    await connection.recv()  # connected
    await connection.send(orjson.dumps({"type": "subscribe", "id": "s", "data": {"topics": [TOPIC], "join_leave": True}}))
    return connection


async def read(connection: websockets.ClientConnection, subscriber: Subscriber) -> None:
    try:
        async for raw in connection:
            subscriber.take(raw)
    except websockets.ConnectionClosed:
        pass


async def churn(url: str, per_second: int, seconds: float) -> int:
    """Clients that join the topic and leave about a second later; returns how many joined."""
    joined = 0
    tasks: set[asyncio.Task[None]] = set()

    async def visit() -> None:
        nonlocal joined
        try:
            async with websockets.connect(f"{url}?topics={TOPIC}", ping_interval=None) as connection:
                await connection.recv()
                joined += 1
                await asyncio.sleep(1.0)
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass  # counted: `churn_joined` falls short of churn x seconds

    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(int(per_second * seconds)):
        await asyncio.sleep(max(0.0, start + n / per_second - loop.time()))
        task = asyncio.create_task(visit())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)
    return joined


async def scenario(system: System, args: argparse.Namespace) -> dict[str, Any]:
    url = system.ws_url + "/ws"
    subscribers = [Subscriber() for _ in range(args.subscribers)]
    connections = []
    started = time.perf_counter()
    for index in range(0, args.subscribers, 100):  # under the edge's connect rate per address
        batch = subscribers[index:index + 100]
        connections += await asyncio.gather(*(subscribe(url, s) for s in batch))
    connect_seconds = time.perf_counter() - started
    readers = [asyncio.create_task(read(c, s)) for c, s in zip(connections, subscribers, strict=True)]
    while time.monotonic() - max(s.last for s in subscribers) < 2.0:  # the subscribers' own joins have passed
        await asyncio.sleep(0.2)
    start_ms = int(time.time() * 1000)
    for s in subscribers:
        s.since_ms = start_ms
    pids = {"push": system.push.proc.pid, "edge": system.edge.proc.pid}  # type: ignore[union-attr]
    with Sampler(pids) as sampler:
        wall = time.perf_counter()
        # The churn runs in a process of its own, so that it keeps its rate beside 2,000 readers.
        churner = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import asyncio, bench.presence_churn as b; "
            f"print(asyncio.run(b.churn({url!r}, {args.churn}, {args.seconds})))",
            stdout=asyncio.subprocess.PIPE, cwd=ROOT)
        joined = int((await churner.communicate())[0] or 0)
        await asyncio.sleep(1.5)  # the last summaries
        wall = time.perf_counter() - wall
    await asyncio.sleep(3.0)  # what was sent during the churn, read late by this busy process
    for s in subscribers:
        s.since_ms = 0  # the subscribers' own leaves, as they close, are not the churn's
    for connection in connections:
        await connection.close()
    for reader in readers:
        reader.cancel()
    per = lambda total: round(total / len(subscribers) / wall, 2)  # noqa: E731
    return {
        "subscribers": args.subscribers, "churn_per_second": args.churn, "churn_joined": joined,
        "engine": "redis" if args.redis else "memory", "join_leave_rate": args.join_leave_rate,
        "seconds": round(wall, 1), "connect_seconds": round(connect_seconds, 1),
        "cpu_percent": {k: round(v, 1) for k, v in sampler.cpu_percent.items()},
        "peak_rss_mb": {k: round(v / 2**20) for k, v in sampler.peak_rss.items()},
        "per_subscriber_per_second": {"events": per(sum(s.events for s in subscribers)),
                                      "summaries": per(sum(s.summaries for s in subscribers)),
                                      "changes_told": per(sum(s.events + s.summarised for s in subscribers))},
        "load_before": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--churn", type=int, default=50, help="clients joining (and leaving) a second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--join-leave-rate", type=float, default=10.0, help="EDGE_JOIN_LEAVE_RATE")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="presence-churn-"))
    redis = RedisServer(workdir / "redis") if args.redis else None
    push_env = {"PUSH_PRESENCE_RULES": f"{TOPIC}:presence+joinleave", "PUSH_PRESENCE_MAX_CLIENTS": "10000",
                "PUSH_METRICS_PORT": "0", "PUSH_LOG_LEVEL": "WARNING"}
    if redis is not None:
        (workdir / "redis").mkdir()
        redis.start()
        push_env["PUSH_BROKER_URL"] = redis.url
    edge_env = {"EDGE_JOIN_LEAVE_RATE": str(args.join_leave_rate), "EDGE_MAX_CONNECTIONS_PER_IP": "10000",
                "EDGE_CONNECT_RATE_PER_IP": "100000", "EDGE_CONNECT_BURST_PER_IP": "100000",
                "EDGE_MAX_PENDING_PER_IP": "10000", "EDGE_LOG_LEVEL": "WARNING", "EDGE_METRICS_PORT": "0"}
    system = System(workdir, push_env=push_env, edge_env=edge_env)
    try:
        asyncio.run(system.start())
        result = asyncio.run(scenario(system, args))
    finally:
        system.stop()
        if redis is not None:
            redis.stop()
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
