"""The edge's fan-out round with tracing off, on without sampled messages, and on with one sampled
message per round, beside the same round of another checkout's code (before tracing):

    .venv/bin/python bench/tracing_fanout.py --before 58eae17^   # the code before tracing, then this checkout
    .venv/bin/python bench/tracing_fanout.py --code /path/to/code    # one checkout's code only

One round: a batch of 10 deliveries (real protobuf `Delivery` messages) routed to 1,000 sockets that
all take it at once (the encode-once fast path: one frame built, the same bytes written to each).
Printed: CPU µs per round (the thread's CPU time), the best of 20 runs of 1,000 rounds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

RUNS = 20


def build(traced_every: int) -> tuple[object, list[list[object]]]:
    from push.v1 import push_service_pb2 as pb

    from ws_edge.core.routing import DeliveryRouter
    from ws_edge.delivery import DeliveryPump

    class Socket:
        direct = staticmethod(lambda wire: True)  # takes the frame at once

    router = DeliveryRouter()
    for _ in range(1000):
        router.topics.add("t", Socket())
    pump = DeliveryPump(router, read_history=None, conflated=[])  # type: ignore[arg-type]
    rounds = []
    for r in range(64):
        batch = [pb.Delivery(topic="t", frame=b'{"type":"x","id":"%d","timestamp":1,"data":{"n":1},"topic":"t"}' % n,
                             timestamp_ms=0) for n in range(10)]
        if traced_every and r % traced_every == 0:
            batch[0].traceparent = f"00-{r + 1:032x}-{r + 1:016x}-01"
        rounds.append([batch])
    return pump, rounds


def run(pump: object, rounds: list[list[object]], count: int) -> float:
    fan_out = pump.fan_out  # type: ignore[attr-defined]
    started = time.thread_time()  # CPU time: a shared machine's other processes do not count
    for i in range(count):
        fan_out(rounds[i % len(rounds)])
    return (time.thread_time() - started) / count


def measure(traced_every: int, count: int = 1000) -> float:
    """µs per round: the best of RUNS runs (the machine is shared: the best is the least disturbed)."""
    pump, rounds = build(traced_every)
    run(pump, rounds, 200)  # warm
    return min(run(pump, rounds, count) for _ in range(RUNS)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="another checkout's code (with its gen/) to measure instead")
    parser.add_argument("--trace-file", type=Path, default=Path("/tmp/tracing-fanout.jsonl"))
    parser.add_argument("--before", help="a revision: its code (checked out apart) first, then this checkout")
    args = parser.parse_args()
    if args.before:
        import subprocess

        sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
        from bench.tracing_cost import checkout

        subprocess.run([sys.executable, __file__, "--code", str(checkout(args.before))], check=True)
    if args.code:
        sys.path[:0] = [str(args.code), str(args.code / "gen")]
    else:
        sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    rows = [("off", 0)]
    label = str(args.code or "this checkout")
    for name, traced_every in rows:
        print(f"| {label} | {name} | {measure(traced_every):.1f} |")
    if args.code is None:
        from common import tracing

        tracing.configure("bench", "file", file=args.trace_file)
        for name, traced_every in (("on, nothing sampled", 0), ("on, 1 sampled message per round", 1),
                                   ("on, 1 sampled round in 64 (~0.16 % of messages)", 64)):
            print(f"| {label} | {name} | {measure(traced_every):.1f} |")


if __name__ == "__main__":
    main()
