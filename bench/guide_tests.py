"""The guide's own two tests, reproduced against this system (a benchmark, not a test).

    make bench            # or: .venv/bin/python -m bench.guide_tests [--clients 20] [--messages 100]

Starts push_service, task_service and ws_edge as processes on free ports, then from this (separate)
load process: (1) opens N concurrent WebSocket connections and times each until the edge's
`connected` frame; (2) publishes a burst of M messages through the gRPC API (streaming publish,
then unary calls one at a time, then unary calls all made at once) and times it until a subscribed client has received all of them. Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

import orjson
import uvloop
import websockets

from pushclient import PushClient
from pushclient.client import outgoing
from tests.support.processes import System

GUIDE = {"conn_seconds": 0.299, "conn_total": 5.97, "msgs_per_second": 5860, "burst_seconds": 0.02}


async def connect_one(url: str) -> tuple[float, websockets.ClientConnection]:
    started = time.perf_counter()
    connection = await websockets.connect(url)
    frame = orjson.loads(await connection.recv())
    assert frame["type"] == "connected"
    return time.perf_counter() - started, connection


async def concurrent_connections(system: System, clients: int) -> dict[str, float]:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(connect_one(system.ws_url + "/ws/task") for _ in range(clients)), return_exceptions=True
    )
    total = time.perf_counter() - started
    ok = [r for r in results if not isinstance(r, BaseException)]
    for _, connection in ok:
        await connection.close()
    per = [seconds for seconds, _ in ok]
    return {"clients": clients, "success": len(ok) / clients, "mean": sum(per) / len(per), "max": max(per),
            "total": total}


async def count_messages(connection: websockets.ClientConnection, expected: int) -> None:
    seen = 0
    while seen < expected:
        frame = orjson.loads(await connection.recv())
        seen += len(frame["messages"]) if frame["type"] == "batch" else 1


async def burst(system: System, messages: int, streaming: bool, concurrent: bool = False) -> dict[str, float]:
    _, connection = await connect_one(system.ws_url + "/ws?topics=task:progress")
    data = {"task_id": "bench", "progress": {"percentage": 50, "current": "BTCUSDT", "total": 100, "completed": 50}}
    async with PushClient(system.push_address) as push:
        receiving = asyncio.create_task(count_messages(connection, messages))
        started = time.perf_counter()
        if streaming:
            publisher = push.stream_publisher()
            publisher.start()
            for i in range(messages):
                publisher.submit(outgoing("task:progress", "task_progress", data, id=f"progress_bench_{i}"))
            await publisher.flush()
            await publisher.close()
            accepted = publisher.accepted
        elif concurrent:  # every call made before any answer is awaited (PushClient keeps 256 in flight)
            await asyncio.gather(*(push.publish("task:progress", "task_progress", data, id=f"progress_bench_{i}")
                                   for i in range(messages)))
            accepted = messages
        else:  # one call at a time: each waits for the previous answer
            for i in range(messages):
                await push.publish("task:progress", "task_progress", data, id=f"progress_bench_{i}")
            accepted = messages
        await asyncio.wait_for(receiving, 30)
        elapsed = time.perf_counter() - started
    await connection.close()
    return {"messages": messages, "seconds": elapsed, "rate": messages / elapsed, "success": accepted / messages}


async def main(args: argparse.Namespace) -> None:
    system = System(Path(tempfile.mkdtemp(prefix="bench-")), push_env={"PUSH_LOG_LEVEL": "WARNING"},
                    task_env={"TASK_LOG_LEVEL": "WARNING"}, edge_env={"EDGE_LOG_LEVEL": "WARNING"})
    await system.start()
    try:
        await concurrent_connections(system, 5)  # warm up
        conns = await concurrent_connections(system, args.clients)
        stream = await burst(system, args.messages, streaming=True)
        unary = await burst(system, args.messages, streaming=False)
        unary_at_once = await burst(system, args.messages, streaming=False, concurrent=True)
        big = await burst(system, args.messages * 100, streaming=True)
    finally:
        system.stop()
    print(f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"load process on the same host\n")
    print("| test | guide | this system |")
    print("| --- | --- | --- |")
    print(f"| {conns['clients']} concurrent connections: success | 100 % | {conns['success']:.0%} |")
    print(f"| ... time per connection (mean / max) | {GUIDE['conn_seconds']} s | "
          f"{conns['mean'] * 1000:.1f} ms / {conns['max'] * 1000:.1f} ms |")
    print(f"| ... all connections | {GUIDE['conn_total']} s | {conns['total'] * 1000:.1f} ms |")
    for name, result in (("streaming publish", stream), ("unary Publish, one call at a time", unary),
                         ("unary Publish, all calls at once", unary_at_once), ("streaming publish", big)):
        print(f"| {result['messages']} messages, {name}, publish to last receipt | "
              f"{'0.02 s, 5,860 msg/s' if result['messages'] == 100 else '-'} | "
              f"{result['seconds'] * 1000:.1f} ms, {result['rate']:,.0f} msg/s, {result['success']:.0%} |")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=100)
    uvloop.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
