"""The soak runner (issue 17.6): the compose topology as local processes under steady load for N minutes,
sampled every minute, failing on growth after a warm-up.

    .venv/bin/python -m bench.soak --minutes 30 [--rate 100] [--churn 20] [--sample-seconds 60]

Topology: docker-compose.yml's services as local processes (Redis, two push replicas on it, two edges,
the task service; tests/support/compose_local.py). Load: an idempotent stream publisher at `--rate`
messages a second over both replicas on four topics; `--steady` subscribers that stay (half on each
edge) and must receive everything; `--churn` connections a second opened and closed over both edges
in turn (each subscribes with `?topics=`, waits for `connected`, holds 0.2–1 s, closes).

Per sample and process: RSS (MiB), open descriptors, asyncio tasks (our services' `/metrics`
`*_asyncio_tasks` gauge) and CPU (% of one core over the interval); per sample also the connections
made, failed, and the messages the steady subscribers received against what was published.

The rule (printed with the verdict): the first `--warmup` minutes (default: a fifth of the run, at
least 2) are not judged. After them, for every process, the median of the last third of the samples
is compared with the median of the first third: RSS may grow by at most 10 % + 8 MiB, descriptors by
at most 32, asyncio tasks by at most 64 (a second's churn holds ~20 connections, each a descriptor and a
few tasks, so single samples move by that much). Also failing: a steady subscriber short of what was
published, or more than 1 % of the churned connections failed. Exit status 1 with one line saying
which; 0 with `SOAK PASS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect

from pushclient import PushClient
from pushclient.client import outgoing
from tests.support.compose_local import LocalCompose
from tests.support.processes import read_url
from tests.support.tokens import token

SECRET = "soak-secret-that-is-longer-than-thirty-two-bytes-for-hs256"
VARIABLES = {"PUSH_JWT_SECRET": SECRET, "PUSH_GRPC_TOKEN": "soak-grpc-token"}
TOPICS = [f"soak:{n}" for n in range(4)]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Which /metrics port and gauge tell a service's asyncio tasks.
TASK_GAUGES = {"push-1": (9101, "push_asyncio_tasks"), "push-2": (9101, "push_asyncio_tasks"),
               "edge-1": (9104, "ws_edge_asyncio_tasks"), "edge-2": (9104, "ws_edge_asyncio_tasks"),
               "task": (9102, "task_asyncio_tasks")}
RSS_GROWTH = (0.10, 8.0)  # fraction, MiB
FD_GROWTH = 32
TASK_GROWTH = 64


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Load:
    published: int = 0
    connects: int = 0
    failed: int = 0
    received: dict[str, int] = field(default_factory=dict)  # steady subscriber -> messages
    errors: list[str] = field(default_factory=list)


async def steady_subscriber(name: str, url: str, load: Load, stop: asyncio.Event) -> None:
    """Stays connected (an application ping every 20 s: the edge closes a silent client after 90 s) and
    counts what it receives; a close is a finding (it shows as messages short)."""
    load.received[name] = 0
    async with connect(url, max_size=2**22) as ws:
        pinged = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - pinged > 20:
                await ws.send(orjson.dumps({"type": "ping"}).decode())
                pinged = time.monotonic()
            try:
                raw = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            except Exception as exc:
                load.errors.insert(0, f"{name} closed: {exc!r}"[:200])
                raise
            frame = orjson.loads(raw)
            if frame.get("type") == "batch":
                load.received[name] += sum(1 for m in frame["messages"] if m.get("topic") in TOPICS)
            elif frame.get("topic") in TOPICS:
                load.received[name] += 1


async def churn_one(url: str, load: Load) -> None:
    try:
        async with connect(url, open_timeout=10) as ws:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if first.get("type") != "connected":
                raise RuntimeError(f"first frame {first.get('type')}")
            await asyncio.sleep(random.uniform(0.2, 1.0))
        load.connects += 1
    except Exception as exc:  # counted and judged: a failed connection is a finding, not a crash
        load.failed += 1
        if len(load.errors) < 20:
            load.errors.append(repr(exc)[:200])


async def churn(edges: list[str], per_second: float, load: Load, stop: asyncio.Event) -> None:
    running: set[asyncio.Task[None]] = set()
    n, started = 0, time.monotonic()
    while not stop.is_set():
        edge = edges[n % len(edges)]
        # 50 users, each always with its own chosen client id, as returning browsers are: a fresh id per
        # connection would bind one more owner key in Redis for PUSH_CLIENT_ID_HOLD (24 h) each time.
        user = n % 50
        url = f"{edge}/ws?topics={TOPICS[n % len(TOPICS)]}&client_id=soak-{user}&token={token(f'churn-{user}', secret=SECRET)}"
        task = asyncio.create_task(churn_one(url, load))
        running.add(task)
        task.add_done_callback(running.discard)
        n += 1
        await asyncio.sleep(max(0.0, started + n / per_second - time.monotonic()))
    await asyncio.gather(*running, return_exceptions=True)


async def publish(push: str, rate: float, load: Load, stop: asyncio.Event) -> None:
    async with PushClient(push, token=VARIABLES["PUSH_GRPC_TOKEN"]) as client:
        publisher = client.stream_publisher(idempotent=True)
        publisher.start()
        started = time.monotonic()
        while not stop.is_set():
            topic = TOPICS[load.published % len(TOPICS)]
            publisher.submit(outgoing(topic, "soak", {"n": load.published}))
            load.published += 1
            await asyncio.sleep(max(0.0, started + load.published / rate - time.monotonic()))
        await publisher.close(10)


def task_count(compose: LocalCompose, name: str) -> int | None:
    port, gauge = TASK_GAUGES[name]
    try:
        text = read_url(f"http://127.0.0.1:{compose.local_port(name, port)}/metrics").decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(gauge + " "):
            return int(float(line.split()[1]))
    return None


def judge(series: dict[str, list[dict[str, Any]]], warmup_samples: int) -> list[str]:
    """What grew past the rule after the warm-up (empty: nothing)."""
    failures = []
    for name, samples in series.items():
        judged = samples[warmup_samples:]
        if len(judged) < 3:
            continue
        third = max(1, len(judged) // 3)
        for key, limit in (("rss_mib", None), ("fds", FD_GROWTH), ("tasks", TASK_GROWTH)):
            first = [s[key] for s in judged[:third] if s[key] is not None]
            last = [s[key] for s in judged[-third:] if s[key] is not None]
            if not first or not last:
                continue
            before, after = statistics.median(first), statistics.median(last)
            allowed = before * RSS_GROWTH[0] + RSS_GROWTH[1] if limit is None else limit
            if after - before > allowed:
                failures.append(f"{name} {key} grew from {before:g} to {after:g} (allowed +{allowed:g})")
    return failures


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    compose = LocalCompose(workdir, VARIABLES)
    # Per-address limits: every connection comes from this one process.
    compose.overrides = {edge: {"EDGE_CONNECT_RATE_PER_IP": "1000", "EDGE_CONNECT_BURST_PER_IP": "1000"}
                         for edge in ("edge-1", "edge-2")}
    print(f"# soak: {args.minutes} min, {args.rate:g} msg/s, {args.churn:g} connects/s, {args.steady} steady "
          f"subscribers, a sample every {args.sample_seconds:g} s; logs in {workdir}", flush=True)
    await compose.up()
    edges = [f"ws://127.0.0.1:{compose.local_port(name, 8000)}" for name in ("edge-1", "edge-2")]
    push = compose.address("push", 50051)
    load, stop, stop_listening = Load(), asyncio.Event(), asyncio.Event()
    listeners = [asyncio.create_task(steady_subscriber(
        f"steady-{i}", f"{edges[i % 2]}/ws?topics={','.join(TOPICS)}&token={token(f'steady-{i}', secret=SECRET)}",
        load, stop_listening)) for i in range(args.steady)]
    while len(load.received) < args.steady:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # each has its `connected`, its subscription holds
    workers = [asyncio.create_task(publish(push, args.rate, load, stop)),
                asyncio.create_task(churn(edges, args.churn, load, stop))]
    pids = {name: p.proc.pid for name, p in compose.processes.items() if p.proc is not None}
    series: dict[str, list[dict[str, Any]]] = {name: [] for name in pids}
    samples = max(1, round(args.minutes * 60 / args.sample_seconds))
    warmup = args.warmup if args.warmup is not None else max(2.0, args.minutes / 5)
    warmup_samples = round(warmup * 60 / args.sample_seconds)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    header = "| sample | min | process | RSS MiB | fds | asyncio tasks | CPU % | connects (failed) | published | steady received (min) |"
    print(header, flush=True)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    started = time.monotonic()
    code = 0
    try:
        for n in range(1, samples + 1):
            await asyncio.sleep(max(0.0, started + n * args.sample_seconds - time.monotonic()))
            for name, pid in pids.items():
                dead = compose.processes[name].proc.poll()  # type: ignore[union-attr]
                if dead is not None:
                    print(f"SOAK FAIL: {name} exited ({dead})", flush=True)
                    return 1
                cpu = cpu_seconds(pid)
                sample = {"rss_mib": round(rss_mib(pid), 1), "fds": descriptors(pid),
                          "tasks": await asyncio.to_thread(task_count, compose, name) if name in TASK_GAUGES else None,
                          "cpu": round(100 * (cpu - cpu0[name]) / args.sample_seconds, 1)}
                cpu0[name] = cpu
                series[name].append(sample)
                print(f"| {n} | {(time.monotonic() - started) / 60:.1f} | {name} | {sample['rss_mib']} | {sample['fds']} | "
                      f"{'–' if sample['tasks'] is None else sample['tasks']} | {sample['cpu']} | {load.connects} "
                      f"({load.failed}) | {load.published} | {min(load.received.values(), default=0)} |", flush=True)
    finally:
        stop.set()
        for task in workers:  # the publisher flushes what it holds
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 15)
        await asyncio.sleep(3)  # the steady subscribers take what is still on its way
        stop_listening.set()
        for task in listeners:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
        compose.down()
    failures = judge(series, warmup_samples)
    short = {name: got for name, got in load.received.items() if got < load.published}
    if short:
        failures.append(f"steady subscribers short of the {load.published} published: {short} {load.errors[:2]}")
    attempts = load.connects + load.failed
    if attempts and load.failed > attempts / 100:
        failures.append(f"{load.failed} of {attempts} churned connections failed, e.g. {load.errors[:3]}")
    rule = (f"rule: after {warmup:g} min of warm-up, median of the last third vs the first third of the samples: "
            f"RSS ≤ +{RSS_GROWTH[0]:.0%} + {RSS_GROWTH[1]:g} MiB, descriptors ≤ +{FD_GROWTH}, asyncio tasks ≤ "
            f"+{TASK_GROWTH}; steady subscribers get everything; ≤ 1 % of connections fail")
    print(f"# {attempts} connections ({load.failed} failed), {load.published} published; {rule}", flush=True)
    if failures:
        print("SOAK FAIL: " + "; ".join(failures), flush=True)
        code = 1
    else:
        print("SOAK PASS", flush=True)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="messages a second published")
    parser.add_argument("--churn", type=float, default=20.0, help="connections opened and closed a second")
    parser.add_argument("--steady", type=int, default=4, help="subscribers that stay connected")
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, help="minutes not judged (default: a fifth, at least 2)")
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
