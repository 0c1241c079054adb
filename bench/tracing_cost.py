"""What tracing costs (issue 20): the same load against the push service and edge of the code before
tracing (a checkout of `--before`, default the parent of the commit that added tracing), of this code with tracing off, and
with tracing on at a 1 % sample (publisher, push service and edge exporting to files), and (--full) at
100 % for scale. Each configuration runs `rounds` times, interleaved (this machine is shared: a round's figure
moves), and the median is reported.

    .venv/bin/python -m bench.tracing_cost [--clients 100] [--rate 2000] [--seconds 8] [--rounds 6] [--full]

Printed per configuration: delivered messages/s (the rate scenario: `--rate` messages/s to every
client; max: a closed loop), the servers' CPU (push + edge, % of one core) and CPU per 1,000
deliveries (median, min–max), its median ratio to the `before` run of the same round, and latency
p50 / p99 of the sampled clients.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.e2e import Ours, run_load
from tests.support.processes import ROOT

TRACING_ADDED = "58eae17"  # the commit that added common/tracing.py


def checkout(revision: str) -> Path:
    """`revision`'s code in a directory of its own, with its generated protobuf code."""
    dest = Path(tempfile.mkdtemp(prefix="bench-before-"))
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    protos = [str(p.relative_to(dest / "proto")) for p in (dest / "proto").rglob("*.proto")]
    (dest / "gen").mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Iproto", "--python_out=gen", "--grpc_python_out=gen",
                    *protos], cwd=dest, check=True)
    return dest


def run_from(code: Path, module: str) -> list[str]:
    """`python -m module` with `code` first on the path (before this checkout, which the .pth adds)."""
    return [sys.executable, "-c", f"import sys, runpy; sys.path[:0] = [{str(code)!r}, {str(code / 'gen')!r}]; "
                                  f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"]


class Configuration:
    def __init__(self, name: str, before: Path | None = None, ratio: float | None = None) -> None:
        self.name, self.before, self.ratio = name, before, ratio

    def start(self, workdir: Path) -> Ours:
        traced = {} if self.ratio is None else {
            "EDGE_TRACING": "file", "EDGE_TRACE_FILE": str(workdir / "edge.jsonl"),
            "EDGE_TRACE_SAMPLE_RATIO": str(self.ratio)}
        target = Ours(edge_env=traced, edge_argv=run_from(self.before, "ws_edge") if self.before else None,
                      push_env={} if self.ratio is None else {"PUSH_TRACING": "file",
                                                              "PUSH_TRACE_FILE": str(workdir / "push.jsonl")},
                      push_argv=run_from(self.before, "push_service") if self.before else None)
        return target

    def load_options(self, workdir: Path) -> list[str]:
        if self.ratio is None:
            return []
        return ["--trace-file", str(workdir / "publisher.jsonl"), "--trace-ratio", str(self.ratio)]


def measure(configuration: Configuration, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-tracing-{configuration.name}-"))
    target = configuration.start(workdir)
    try:
        result = run_load(target, args.scenario, "--clients", str(args.clients), "--seconds", str(args.seconds),
                          "--rate", str(args.rate), *configuration.load_options(workdir))
    finally:
        target.stop()
    spans = sum(len(p.read_text().splitlines()) for p in workdir.glob("*.jsonl"))
    cpu = sum(result["server_cpu_percent"][n] for n in ("push", "edge"))
    delivered = result["delivered_per_s"]
    return {"delivered_per_s": delivered, "cpu_percent": cpu, "cpu_ms_per_1000": cpu * 10 / delivered * 1000,
            "p50_ms": result.get("latency_p50_ms", float("nan")), "p99_ms": result.get("latency_p99_ms", float("nan")),
            "spans": spans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=TRACING_ADDED + "^", help="the revision before tracing (default: the "
                        "parent of the commit that added it)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="the rate scenario's messages/s")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scenario", choices=["max", "rate"], default="rate")
    parser.add_argument("--full", action="store_true", help="also sampled at 100 %%")
    args = parser.parse_args()
    before = checkout(args.before)
    configurations = [Configuration("before", before=before), Configuration("off"),
                      Configuration("sampled 1 %", ratio=0.01)]
    if args.full:
        configurations.append(Configuration("sampled 100 %", ratio=1.0))
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configurations}
    for _ in range(args.rounds):
        for configuration in configurations:
            results[configuration.name].append(measure(configuration, args))
    print(f"\n{args.scenario}, {args.clients} clients, {args.seconds:g} s, median of {args.rounds} rounds "
          f"(before = {args.before})\n")
    print("| tracing | delivered/s | push+edge CPU % | CPU ms / 1,000 deliveries (min–max) | vs before (paired) | p50 ms "
          "| p99 ms | spans |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = results["before"]
    for name, rounds in results.items():
        m = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        low, high = min(r["cpu_ms_per_1000"] for r in rounds), max(r["cpu_ms_per_1000"] for r in rounds)
        # Each round beside the `before` run next to it (the machine's load drifts; a pair shares it).
        paired = statistics.median(r["cpu_ms_per_1000"] / b["cpu_ms_per_1000"] for r, b in zip(rounds, base, strict=True))
        print(f"| {name} | {m['delivered_per_s']:,.0f} | {m['cpu_percent']:.0f} | {m['cpu_ms_per_1000']:.2f} "
              f"({low:.2f}–{high:.2f}) | {(paired - 1) * 100:+.1f} % | {m['p50_ms']:.1f} "
              f"| {m['p99_ms']:.1f} | {m['spans']:,.0f} |")


if __name__ == "__main__":
    main()
