"""Where a message's time goes on its way to 1,000 clients (issue 18): the publisher, the push service and
the edge trace a sample of the messages to files (common/tracing.py), and the spans of each traced message
are set against each other, stage by stage.

    .venv/bin/python -m bench.latency_stages [--clients 1000] [--rate 100] [--seconds 10] [--publisher-process]

Server processes are pinned to the first core and the load to the second, as `bench.vs_limit` does.
Tracing costs a little CPU itself (docs/PERFORMANCE.md, "Tracing's cost"): compare stages with each
other, not the total with an untraced run. Printed per stage: count, p50 / p90 / p99 / max in ms.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.e2e import Ours, run_load
from bench.load import percentile
from bench.vs_limit import pin, pinning

# (label, (span, its time), (span, its time)): the stage lasts from the first time to the second.
STAGES = [
    ("publisher submit -> push service takes it", ("pushclient.publish", "start_ns"), ("push.publish", "start_ns")),
    ("push service takes it -> routed to edges", ("push.publish", "start_ns"), ("push.fan_out", "end_ns")),
    ("routed to edges -> edge round starts", ("push.fan_out", "end_ns"), ("edge.deliver", "start_ns")),
    ("edge round: first write -> last write", ("edge.deliver", "start_ns"), ("edge.deliver", "end_ns")),
    ("publisher submit -> edge round ends", ("pushclient.publish", "start_ns"), ("edge.deliver", "end_ns")),
]


def spans_by_trace(workdir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per traced message, its spans by name. An edge round's span is the child of its first traced
    message and links the others of the round: it counts for each of them."""
    traces: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
    for path in workdir.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            span = orjson.loads(line)
            traces[span["trace_id"]].setdefault(span["name"], span)
            for link in span.get("links", []):
                traces[link["trace_id"]].setdefault(span["name"], span)
    return traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ratio", type=float, default=0.2, help="the share of messages traced")
    parser.add_argument("--publisher-process", action="store_true", help="publish from a process of its own")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-stages-"))
    target = Ours(edge_env={"EDGE_TRACING": "file", "EDGE_TRACE_FILE": str(workdir / "edge.jsonl"),
                            "EDGE_TRACE_SAMPLE_RATIO": str(args.ratio)},
                  push_env={"PUSH_TRACING": "file", "PUSH_TRACE_FILE": str(workdir / "push.jsonl")})
    try:
        prefix: tuple[str, ...] = ()
        if (cores := pinning()) is not None:
            pin(list(target.pids.values()), cores[0])
            prefix = ("taskset", "-c", cores[1])
        time.sleep(2)
        result = run_load(target, "rate", "--clients", str(args.clients), "--seconds", str(args.seconds), "--rate",
                          str(args.rate), "--trace-file", str(workdir / "publisher.jsonl"), "--trace-ratio",
                          str(args.ratio), *(["--publisher-process"] if args.publisher_process else []), prefix=prefix)
    finally:
        target.stop()  # every process has ended (and written its spans) by now
    print(f"clients: p50 {result['latency_p50_ms']:.1f} / p99 {result['latency_p99_ms']:.1f} ms; first receipt "
          f"p50 {result['first_receipt_p50_ms']:.1f} / p99 {result['first_receipt_p99_ms']:.1f} ms; lost {result['lost']}; "
          f"server CPU {', '.join(f'{n} {v:.0f} %' for n, v in result['server_cpu_percent'].items())}")
    traces = spans_by_trace(workdir)
    for label, (first, first_time), (second, second_time) in STAGES:
        values = [t[second][second_time] - t[first][first_time] for t in traces.values() if first in t and second in t]
        print(f"{label:44} n={len(values):4}  p50 {percentile(values, 0.5):6.2f}  p90 {percentile(values, 0.9):6.2f}  "
              f"p99 {percentile(values, 0.99):6.2f}  max {percentile(values, 1.0):6.2f} ms")


if __name__ == "__main__":
    main()
