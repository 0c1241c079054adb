"""What one Redis Cluster shard carries for the push service: topics, messages/s and connections per
master, measured (docs/CAPACITY.md, "Redis Cluster").

    .venv/bin/python -m bench.cluster_shards [--topics 3000] [--seconds 5] [--replicas 2]

Starts a cluster of its own (3 masters with a replica each), then `--replicas` push replicas' engines
(RedisClusterBroker, in this process: the engine and Redis are what is measured, not gRPC) each
subscribed to every topic, and publishes to random topics (history kept: 100 messages each) with
`--in-flight` publishes outstanding, for `--seconds`. Per master: the publishes it ran (the publish
script's calls) per second, its CPU share (so: publishes per second per core of a shard), its topics,
its memory per topic, its shard channels and client connections. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import orjson
import redis

from bench.e2e import cpu_seconds
from push_service.broker import broker_from_url
from push_service.core.history import HistoryPolicy, HistoryRule
from push_service.core.publication import Publication, make_publication
from tests.support.redis_cluster import RedisCluster

POLICY = HistoryPolicy((HistoryRule("*", size=100, ttl=600),))


def node_stats(port: int) -> dict[str, int]:
    with redis.Redis(port=port) as client:
        info = client.info("all")
        topics = sum(1 for _ in client.scan_iter(match="bench:*:m2:*", count=1000))
    calls = info.get("cmdstat_evalsha", {}).get("calls", 0)
    return {"evalsha": calls, "topics": topics, "memory": info["used_memory"], "clients": info["connected_clients"],
            "shard_channels": info.get("pubsubshard_channels", 0)}


def publication(topic: str, n: int) -> Publication:
    data = orjson.dumps({"task_id": topic, "n": n, "progress": n % 100, "note": "x" * 120})
    return make_publication(topic=topic, type_="task_progress", data=data, id_=f"m{n}", client_id="", retain=False,
                            now_ms=int(time.time() * 1000), max_data_bytes=65536)


async def publish_unary(brokers: list, topics: list[str], args: argparse.Namespace) -> int:
    """Unary publishes to random topics, `--in-flight` outstanding."""
    published, n, started = 0, 0, time.perf_counter()
    pending: set[asyncio.Future] = set()
    while time.perf_counter() - started < args.seconds:
        while len(pending) < args.in_flight:
            n += 1
            pending.add(asyncio.ensure_future(brokers[n % len(brokers)].publish(publication(random.choice(topics), n))))
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        published += len(done)
    return published + len((await asyncio.wait(pending))[0])


async def publish_streams(brokers: list, topics: list[str], args: argparse.Namespace) -> int:
    """`--streams` publishing streams (lanes), each handing over requests of 100 messages to random
    topics with up to `--in-flight` messages unanswered (a stream waits at each change of partition)."""
    counts = [0] * args.streams

    async def stream(index: int) -> None:
        lane, n, started = brokers[index % len(brokers)].lane(), 0, time.perf_counter()
        pending: list[asyncio.Future] = []
        while time.perf_counter() - started < args.seconds:
            while len(pending) * 100 < args.in_flight:
                items = [(publication(random.choice(topics), n + i), "") for i in range(100)]
                n += 100
                pending.append(asyncio.ensure_future(lane.publish_many(items)))
            counts[index] += sum(1 for ack in await pending.pop(0) if not isinstance(ack, Exception))
        for outcome in pending:
            counts[index] += sum(1 for ack in await outcome if not isinstance(ack, Exception))

    await asyncio.gather(*(stream(i) for i in range(args.streams)))
    return sum(counts)


async def measure(cluster: RedisCluster, args: argparse.Namespace) -> tuple[dict[int, dict[str, float]], dict]:
    topics = [f"task:{n}" for n in range(args.topics)]
    delivered = [0]
    brokers = [broker_from_url(cluster.url, POLICY, prefix="bench") for _ in range(args.replicas)]
    for broker in brokers:
        await broker.start(lambda _: delivered.__setitem__(0, delivered[0] + 1))
        await broker.subscribe(*(f"t:{t}" for t in topics))
    masters = {cluster.node_for_slot(s).port: cluster.node_for_slot(s) for s in (0, 8000, 16383)}
    before = {port: node_stats(port) for port in masters}
    cpu0 = {port: cpu_seconds(node.proc.pid) for port, node in masters.items()}  # type: ignore[union-attr]
    started = time.perf_counter()
    published = await (publish_streams if args.streams else publish_unary)(brokers, topics, args)
    wall = time.perf_counter() - started
    await asyncio.sleep(0.5)
    after = {port: node_stats(port) for port in masters}
    per_shard = {}
    for port, node in masters.items():
        cpu = (cpu_seconds(node.proc.pid) - cpu0[port]) / wall  # type: ignore[union-attr]
        runs = (after[port]["evalsha"] - before[port]["evalsha"]) / wall
        per_shard[port] = {"publishes_per_s": runs, "cpu": cpu, "per_core": runs / cpu if cpu else 0.0,
                           "topics": after[port]["topics"], "clients": after[port]["clients"],
                           "shard_channels": after[port]["shard_channels"],
                           "bytes_per_topic": (after[port]["memory"] - before[port]["memory"])
                           / max(1, after[port]["topics"])}
    totals = {"published_per_s": published / wall, "delivered_per_s": delivered[0] / wall,
              "kept_per_topic": min(100, published / args.topics)}
    for broker in brokers:
        await broker.close()
    return per_shard, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--replicas", type=int, default=2, help="push replicas' engines, each subscribed to all")
    parser.add_argument("--in-flight", type=int, default=500, help="publishes outstanding")
    parser.add_argument("--streams", type=int, default=0, help="publish through this many streams (lanes) instead")
    args = parser.parse_args()
    with RedisCluster(Path(tempfile.mkdtemp(prefix="bench-cluster-shards-"))) as cluster:  # stopped also if it fails
        load_before = os.getloadavg()
        per_shard, totals = asyncio.run(measure(cluster, args))
    print(f"Command: `python -m bench.cluster_shards --topics {args.topics} --seconds {args.seconds} "
          f"--replicas {args.replicas} --in-flight {args.in_flight} --streams {args.streams}`; load average before: "
          f"{', '.join(f'{v:.1f}' for v in load_before)} ({os.cpu_count()} cores)\n")
    print(f"Published {totals['published_per_s']:,.0f} msg/s in all, delivered {totals['delivered_per_s']:,.0f}/s "
          f"to {args.replicas} replicas' engines (one Python process drives all of it).\n")
    print("| master | topics | publishes/s | shard CPU % | publishes/s per shard core | memory per topic "
          f"(~{totals['kept_per_topic']:.0f} messages kept) | shard channels | client connections |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for port, s in per_shard.items():
        print(f"| :{port} | {s['topics']:,} | {s['publishes_per_s']:,.0f} | {100 * s['cpu']:.0f} | "
              f"{s['per_core']:,.0f} | {s['bytes_per_topic'] / 1024:,.1f} KiB | {s['shard_channels']:,} | "
              f"{s['clients']} |")


if __name__ == "__main__":
    main()
