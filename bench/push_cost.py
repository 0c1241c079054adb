"""What the push service costs per message (issue 18): its CPU and its threads' context switches, with
one edge stream reading and one stream publisher paced at each rate, each in a process of its own:

    .venv/bin/python -m bench.push_cost [--rates 100,1000] [--seconds 5]

The edge is a bare gRPC client of `EdgeStream` (no browsers): what is measured is the push service
alone, the share of the core that, in `bench.vs_limit`'s scenarios, it takes from the edge beside it.
Per rate: the push service's CPU (% of a core, and µs per message), the messages each edge-stream
response carried, and the context switches per message of its threads, from /proc: the loop's, and the
others by name, summed (`python`: grpc.aio's poller thread, which hands each completion to the loop). The machine's own load moves these; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import uvloop
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from bench.e2e import cpu_seconds
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "task:progress"
DATA = {"task_id": "bench", "progress": 0.5, "note": "x" * 150}  # ~245 B envelopes, as bench.load's


def switches_by_thread(pid: int) -> dict[str, int]:
    """Context switches (voluntary and not) so far of each thread still alive, by thread id."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            name = "loop" if tid == str(pid) else Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:  # ended meanwhile
            continue
        found[f"{tid}:{name}"] = sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
    return found


def publish(address: str, rate: float, seconds: float, ready: Any, go: Any) -> None:
    """The publisher's process: `rate` messages a second for `seconds`, through one PublishStream,
    opened (one message through it) before it says it is ready."""
    async def run() -> None:
        from pushclient import PushClient
        from pushclient.client import outgoing

        client = PushClient(address)
        stream = client.stream_publisher(max_buffer=1_000_000)
        stream.start()
        stream.submit(outgoing(TOPIC, "task_progress", DATA, id="cost_opening"))
        await stream.flush()
        ready.set()
        await asyncio.to_thread(go.wait)
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            stream.submit(outgoing(TOPIC, "task_progress", DATA, id=f"cost_{n}"))
            await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))
        await stream.close(5)
        await client.close()

    uvloop.run(run())


async def measure(address: str, pid: int, rate: float, seconds: float) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 15)  # the service started
        requests: asyncio.Queue[pb.EdgeStreamRequest] = asyncio.Queue()
        requests.put_nowait(pb.EdgeStreamRequest(add_topics=[TOPIC], sequence=1, edge_id="bench"))

        async def edge_requests():  # type: ignore[no-untyped-def]
            while True:
                yield await requests.get()

        call = pb_grpc.PushServiceStub(channel).EdgeStream(edge_requests())
        while not (await call.read()).applied_sequence:
            pass
        context = multiprocessing.get_context("spawn")
        ready, go = context.Event(), context.Event()
        publisher = context.Process(target=publish, args=(address, rate, seconds, ready, go))
        publisher.start()
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the publisher did not open its stream")
        opened = False
        while not opened:  # (heartbeats may come first)
            opened = any(b"cost_opening" in d.frame for d in (await asyncio.wait_for(call.read(), 10)).deliveries)
        switches, cpu, started = switches_by_thread(pid), cpu_seconds(pid), time.perf_counter()
        go.set()
        expected, received, responses = int(rate * seconds), 0, 0
        while received < expected:
            response = await asyncio.wait_for(call.read(), 10)  # a lost message: an error, not a hang
            if response.deliveries:
                responses += 1
                received += len(response.deliveries)
        elapsed, used, after = time.perf_counter() - started, cpu_seconds(pid) - cpu, switches_by_thread(pid)
        publisher.join()
        call.cancel()
    per_thread: Counter[str] = Counter()
    for thread, count in after.items():
        per_thread[thread.split(":", 1)[1]] += count - switches.get(thread, 0)
    return {"rate": rate, "cpu_percent": 100 * used / elapsed, "cpu_us_per_message": 1e6 * used / expected,
            "messages_per_response": expected / responses,
            "switches_per_message": {name: n / expected for name, n in per_thread.most_common() if n}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,1000", help="messages a second, one row each")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "PUSH_PORT": str(port), "PUSH_METRICS_PORT": "0"}
    with open(os.devnull, "w") as quiet:
        service = subprocess.Popen([sys.executable, "-m", "push_service"], cwd=ROOT, env=env, stdout=quiet,
                                   stderr=quiet)
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            row = uvloop.run(measure(f"127.0.0.1:{port}", service.pid, rate, args.seconds))
            switches = ", ".join(f"{name} {n:.2f}" for name, n in row["switches_per_message"].items())
            print(f"{rate:6.0f} msg/s: push service {row['cpu_percent']:5.1f} % of a core, "
                  f"{row['cpu_us_per_message']:4.0f} µs a message, {row['messages_per_response']:.2f} messages a "
                  f"response; context switches a message: {sum(row['switches_per_message'].values()):.1f} "
                  f"({switches})")
    finally:
        service.terminate()
        service.wait()


if __name__ == "__main__":
    main()
