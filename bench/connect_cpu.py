"""Connecting, by the edge's own CPU: `rounds` × `clients` connects against a fresh system, the edge's
CPU time per connection read from /proc (robust on a shared machine, unlike wall time alone).

    .venv/bin/python -m bench.connect_cpu [--rounds 8] [--clients 1000]
    # before: from another checkout, PYTHONPATH=<it>:<it>/gen python <this checkout>/bench/connect_cpu.py

Prints one JSON line: milliseconds per connection of each round (sorted), and the edge's CPU
milliseconds per connection over all rounds (a warm-up round first, not counted)."""

from __future__ import annotations

import argparse
import json

from bench.e2e import Ours, cpu_seconds, run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    target = Ours()
    try:
        pid = target.pids["edge"]
        run_load(target, "connect", "--clients", str(args.clients))  # warm-up
        before = cpu_seconds(pid)
        rounds = [run_load(target, "connect", "--clients", str(args.clients))["connect_ms_per_connection"]
                  for _ in range(args.rounds)]
        spent = cpu_seconds(pid) - before
        print(json.dumps({"ms_per_connection": sorted(rounds),
                          "edge_cpu_ms_per_connection": round(spent * 1000 / (args.rounds * args.clients), 4)}))
    finally:
        target.stop()


if __name__ == "__main__":
    main()
