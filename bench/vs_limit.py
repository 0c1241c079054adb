"""Every figure against the physical limit (issue 18): this system beside `limit` and Node's `ws`.

    make bench-e2e     # or: .venv/bin/python -m bench.e2e --suite limit [--repeat 2] [--write]

Targets, each started as processes:
- limit: picows on uvloop, each message parsed and the batch encoded once per loop turn, the same
  bytes written to every socket (`bench/baselines/limit.py`);
- node: Node's `ws`, batched per loop turn the same way (`bench/baselines/node_ws.js`), when node and
  the `ws` package (`make bench-deps`: npm into bench/.node) are here;
- ours: push_service + task_service + ws_edge, published through the gRPC stream, at the default
  batch cap (EDGE_BATCH_MAX_MESSAGES=10); `ours, cap 100` the same edge with the cap at 100;
  `ours-single` the push service inside the edge's process (`python -m single_process`);
  `ours-kernel-slice` the push service's threads at the kernel's time slice (PUSH_SCHED_SLICE_US=0).
On a machine with 2+ cores the server processes are pinned to core 0 and the load process to core 1
(`taskset`), one load process for every scenario; every process's CPU is reported. All targets run
at once (idle while another is measured) and each scenario goes over every target in turn, so that
a scenario's rows are measured within a minute; each shows its ratio to the limit's row of the same
round; `--repeat` runs every round again (the machine is shared: compare rows of one round). The
targets' table gives each round's figure and the median of the rounds' ratios (several rounds: one
round's ratio moves with the limit's own tail).
By default every target's publisher runs in the load process, in the loop that reads the clients'
sockets (as issue 18 measured); `--publisher-process` gives it a process of its own on the load core.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.e2e import Ours, Target, fmt, idle_memory, run_load
from tests.support.processes import ROOT, free_port

NODE_MODULES = ROOT / "bench" / ".node" / "node_modules"
# (key, label, load arguments); `max` keeps at most --window messages in flight (a closed loop).
SCENARIOS = {
    "paced": ("1,000 clients × 1,000 msg/s", ["--clients", "1000", "--scenario", "rate", "--rate", "1000"]),
    "rate100": ("1,000 clients × 100 msg/s", ["--clients", "1000", "--scenario", "rate", "--rate", "100"]),
    "small": ("100 clients × 1,000 msg/s", ["--clients", "100", "--scenario", "rate", "--rate", "1000"]),
    "max": ("1,000 clients, max rate", ["--clients", "1000", "--scenario", "max"]),
}


def pinning() -> tuple[str, str] | None:
    """(server cores, load cores) for taskset, or None on a machine of one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        return None
    return str(cores[0]), str(cores[1])


def conntrack() -> str:
    """Whether the kernel tracks connections (Docker's firewall rules turn it on for loopback too, until
    the machine restarts): each packet then pays a table lookup, so rows taken with it and without it
    are not comparable (ratios within a run still are)."""
    try:
        count = int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text())
    except (OSError, ValueError):
        return "connection tracking off"
    return f"connection tracking on ({count:,} connections tracked)" if count else "connection tracking off"


def pin(pids: list[int], cores: str) -> None:
    for pid in pids:  # -a: every thread (gRPC's too), and what they start later inherits it
        subprocess.run(["taskset", "-a", "-pc", cores, str(pid)], check=True, stdout=subprocess.DEVNULL)


class Process(Target):
    """A baseline that is one process serving `/ws` and `/publish` on a port."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        port = free_port()
        self.log = open(Path(tempfile.mkdtemp(prefix=f"bench-{name}-")) / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*command, str(port)], cwd=ROOT, stdout=self.log, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        self.pids = {"server": self.proc.pid}
        self.other_pids: list[int] = []
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.publish_url = f"ws://127.0.0.1:{port}/publish"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not start (log: {self.log.name})") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def start(name: str) -> Target:
    if name == "limit":
        return Process("limit", [sys.executable, "-m", "bench.baselines.limit", "--port"])
    if name == "node":
        return Process("node", ["node", str(ROOT / "bench" / "baselines" / "node_ws.js")],
                       {"NODE_PATH": str(NODE_MODULES)})
    if name == "ours-before":  # the edge and push service of another checkout (--before), beside this one's
        def argv(module: str) -> list[str]:
            return [sys.executable, "-c",
                    f"import sys, runpy; sys.path.insert(0, {str(BEFORE)!r}); runpy.run_module({module!r}, run_name='__main__')"]
        return Ours(edge_env={"EDGE_BATCH_MAX_MESSAGES": "10"}, edge_argv=argv("ws_edge"), push_argv=argv("push_service"))
    if name == "ours-single":  # `python -m single_process`: the push service in the edge's process
        return Ours(edge_env={"EDGE_BATCH_MAX_MESSAGES": "10"}, single_process=True)
    if name == "ours-kernel-slice":  # the push service's threads at the kernel's slice (PUSH_SCHED_SLICE_US=0)
        return Ours(edge_env={"EDGE_BATCH_MAX_MESSAGES": "10"}, push_env={"PUSH_SCHED_SLICE_US": "0"})
    cap = {"ours": "10", "ours-cap100": "100"}[name]
    return Ours(edge_env={"EDGE_BATCH_MAX_MESSAGES": cap})


BEFORE = Path()
IDLE_TARGETS = ("limit", "ours", "ours-single")  # the targets whose idle connections are measured
LABELS = {"limit": "limit (picows)", "node": "Node ws", "ours": "ours, cap 10", "ours-cap100": "ours, cap 100",
          "ours-before": "ours before (cap 10)", "ours-single": "ours, one process (cap 10)",
          "ours-kernel-slice": "ours, the kernel's slice (cap 10)"}


def run_round(names: list[str], scenarios: list[str], args: argparse.Namespace,
              cores: tuple[str, str] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """Every target started at once (idle while another is measured), then each scenario on every
    target in turn: the rows of one scenario are measured within a minute of each other, which is
    what a ratio on a shared machine needs."""
    prefix = ("taskset", "-c", cores[1]) if cores else ()
    results: dict[tuple[str, str], dict[str, Any]] = {}
    targets: dict[str, Target] = {}
    try:
        for name in names:
            target = targets[name] = start(name)
            target.name = "ours" if name.startswith("ours") else name  # what bench.load knows it as
            if cores:
                pin([*target.pids.values(), *getattr(target, "other_pids", [])], cores[0])
        for key in scenarios:
            for name, target in targets.items():
                if name == "ours-cap100" and key not in ("max", "paced"):
                    continue
                extra = [*SCENARIOS[key][1], "--seconds", str(args.seconds),
                         *(["--publisher-process"] if args.publisher_process else []),
                         *(["--counting-clients"] if args.counting_clients else [])]
                results[(key, name)] = run_load(target, extra[3], *extra[:2], *extra[4:], prefix=prefix)
        if args.idle:
            for name in IDLE_TARGETS:
                if name in targets:
                    results[("idle", name)] = idle_memory(targets[name], args.idle, hold=8.0, prefix=prefix)
    finally:
        for target in targets.values():
            target.stop()
    return results


def per_frame(r: dict[str, Any]) -> str:
    """Messages per frame, over the clients that count frames (with `--counting-clients`, the sampled ones)."""
    return fmt(r.get("framed_received", r["received"]) / r["frames"]) if r.get("frames") else "–"


def per_request(r: dict[str, Any]) -> str:
    """Ours: messages per PublishStream request (the publisher's batching); the baselines: –."""
    return fmt(r["published"] / r["publish_requests"]) if r.get("publish_requests") else "–"


def report(rounds: list[dict[tuple[str, str], dict[str, Any]]], names: list[str], args: argparse.Namespace,
           cores: tuple[str, str] | None) -> str:
    where = (f"server processes pinned to core {cores[0]}, the load process to core {cores[1]} (taskset)"
             if cores else "no pinning (one core)")
    lines = [
        f"Command: `python -m bench.e2e --suite limit --seconds {args.seconds} --idle {args.idle} "
        f"--repeat {args.repeat} --targets {args.targets}"
        f"{f' --scenarios {args.scenarios}' if args.scenarios != ','.join(SCENARIOS) else ''}"
        f"{f' --before {args.before}' if args.before else ''}"
        f"{' --publisher-process' if args.publisher_process else ''}"
        f"{' --counting-clients' if args.counting_clients else ''}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; {where}; "
        f"{conntrack()}; "
        f"one load process (picows on uvloop) per scenario"
        f"{', publishing from a process of its own beside it' if args.publisher_process else ', publishing from the clients loop'}"
        f"{'; all but the 50 sampled clients only count what arrives, with no frame parsing' if args.counting_clients else ''}"
        "; `task_progress` messages of ~245 B; ours publishes through the gRPC stream. `first p50 / p99`: "
        "the latency of the sampled client that got each message first (the pipeline, before the spread "
        "over the sockets). `last p50 / p90`: of the sampled client that got each message last (a message "
        "that came while the server was still writing the one before waits that round out: it shows here); "
        "in brackets, the slowest tenth of messages by that figure, split into the wait for their first "
        "receipt and the spread from first to last (medians).",
        "",
        "| round | scenario | target | delivered msg/s | × limit | lost | p50 ms | p99 ms | p99 × limit "
        "| first p50 / p99 ms | last p50 / p90 ms (slowest tenth: first + spread) | msgs/frame | msgs/publish request | server CPU % | load CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, results in enumerate(rounds, 1):
        for key in SCENARIOS:
            limit = results.get((key, "limit"))
            for name in names:
                r = results.get((key, name))
                if r is None:
                    continue
                ratio = f"{r['delivered_per_s'] / limit['delivered_per_s']:.2f}×" if limit else "–"
                p99_ratio = f"{r['latency_p99_ms'] / limit['latency_p99_ms']:.2f}×" if limit else "–"
                cpu = ", ".join(f"{n} {fmt(v, 0)}" for n, v in r["server_cpu_percent"].items())
                lines.append(
                    f"| {number} | {SCENARIOS[key][0]} | {LABELS[name]} | {fmt(r['delivered_per_s'], 0)} | {ratio} | "
                    f"{r['lost']} | {fmt(r['latency_p50_ms'])} | {fmt(r['latency_p99_ms'])} | {p99_ratio} | "
                    f"{fmt(r['first_receipt_p50_ms'])} / {fmt(r['first_receipt_p99_ms'])} | "
                    f"{fmt(r['last_receipt_p50_ms'])} / {fmt(r['last_receipt_p90_ms'])} "
                    f"({fmt(r['slowest_tenth_first_ms'])} + {fmt(r['slowest_tenth_spread_ms'])}) | {per_frame(r)} | {per_request(r)} | "
                    f"{cpu} | {fmt(r['load_cpu_percent'], 0)} |")
    if args.idle:
        lines += ["", f"Idle connections ({args.idle:,}, ours pinging every 5 s): RSS per connection", "",
                  "| round | target | RSS before MiB | RSS with the clients MiB | KiB per connection | still open |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for number, results in enumerate(rounds, 1):
            for name in IDLE_TARGETS:
                if (r := results.get(("idle", name))) is not None:
                    lines.append(f"| {number} | {LABELS[name]} | {fmt(r['edge_rss_before_mib'])} | "
                                 f"{fmt(r['edge_rss_with_clients_mib'])} | {fmt(r['kib_per_connection'])} | "
                                 f"{r['still_open']:,} |")
    for name in ("ours", "ours-single", "ours-kernel-slice"):
        if name in names:
            lines += ["", f"Issue 18's targets ({LABELS[name]}): each round, and the median of the rounds' ratios:", "", "| target | figure per round | met |"
                      " median of the rounds |",
                      "| --- | --- | --- | --- |"]
            lines += targets(rounds, name)
    return "\n".join(lines) + "\n"


def targets(rounds: list[dict[tuple[str, str], dict[str, Any]]], ours: str = "ours") -> list[str]:
    """The issue's targets for the target `ours` (or another of ours, e.g. `ours-single`): each round's
    figures, and the median of the rounds' ratios. One round's ratio moves with the limit's own tail (its
    p99 at 100 msg/s was 20–56 ms between rounds of one hour): the median of several rounds says more."""
    lines = []
    for check in CHECKS:
        pairs = [pair for results in rounds if (pair := _pair(results, check.scenario, ours)) is not None]
        if not pairs:
            continue
        measured = [check.ratios(*pair) for pair in pairs]
        met = sum(1 for ratios in measured if check.meets(ratios))
        verdict = "yes" if met == len(pairs) else ("**no**" if met == 0 else f"in {met} of {len(pairs)}")
        median = {key: statistics.median(_number(r[key]) for r in measured) for key in measured[0]}
        # Counts, not ratios: the worst round's (lost is negative for duplicates, which count too).
        median.update({key: max((r[key] for r in measured), key=abs) for key in LOSSES if key in median})
        lines.append(f"| {check.label} | {' / '.join(check.show(*pair) for pair in pairs)} | {verdict} | "
                     f"{_brief(median)}: {'yes' if check.meets(median) else '**no**'} |")
    return lines


Pair = tuple[dict[str, Any], dict[str, Any]]  # (ours, the limit's) results of one scenario in one round
LOSSES = ("lost", "closed")  # counts, not ratios: the median of the rounds takes the worst


@dataclass(frozen=True)
class Check:
    label: str
    scenario: str
    ratios: Callable[[dict[str, Any], dict[str, Any]], dict[str, float]]  # (ours, limit) -> what the target reads
    meets: Callable[[dict[str, float]], bool]
    show: Callable[[dict[str, Any], dict[str, Any]], str]  # one round's figure


def _delivered(ours: dict[str, Any], limit: dict[str, Any]) -> dict[str, float]:
    return {"delivered": ours["delivered_per_s"] / limit["delivered_per_s"], "lost": ours["lost"]}


def _p99(ours: dict[str, Any], limit: dict[str, Any]) -> dict[str, float]:
    return {"p99": ours["latency_p99_ms"] / limit["latency_p99_ms"]}


def _show_p99(ours: dict[str, Any], limit: dict[str, Any]) -> str:
    return f"{fmt(ours['latency_p99_ms'])} vs {fmt(limit['latency_p99_ms'])} ms ({_p99(ours, limit)['p99']:.2f}×)"


def _idle(ours: dict[str, Any], limit: dict[str, Any]) -> dict[str, float]:
    ratio = ours["kib_per_connection"] / limit["kib_per_connection"] if limit["kib_per_connection"] > 0 else math.inf
    return {"KiB per connection": ratio, "closed": ours["clients"] - ours["still_open"]}


def _number(value: float) -> float:
    """A ratio for the median: one without a figure (NaN: nothing arrived) counts as the worst."""
    return math.inf if math.isnan(value) else value


CHECKS = (
    Check("1,000 × 1,000 msg/s paced: ≥ 0.9× the limit's delivered, p99 ≤ 2× its p99, zero loss", "paced",
          lambda o, li: {**_delivered(o, li), **_p99(o, li)},
          lambda r: r["delivered"] >= 0.9 and r["p99"] <= 2 and r["lost"] == 0,
          lambda o, li: f"{_delivered(o, li)['delivered']:.2f}×, p99 {_p99(o, li)['p99']:.2f}×, {o['lost']} lost"),
    Check("1,000 × 100 msg/s: p99 ≤ 1.25× the limit's", "rate100", _p99, lambda r: r["p99"] <= 1.25, _show_p99),
    Check("100 × 1,000 msg/s: p99 ≤ 2× the limit's", "small", _p99, lambda r: r["p99"] <= 2.0, _show_p99),
    Check("1,000 clients, max rate: ≥ 0.75× the limit at cap 10", "max", _delivered,
          lambda r: r["delivered"] >= 0.75 and r["lost"] == 0,
          lambda o, li: f"{_delivered(o, li)['delivered']:.2f}×, {o['lost']} lost"),
    Check("idle: RSS per connection ≤ the limit's", "idle", _idle,
          lambda r: r["KiB per connection"] <= 1 and r["closed"] == 0,
          lambda o, li: f"{fmt(o['kib_per_connection'])} vs {fmt(li['kib_per_connection'])} KiB"),
)


def _brief(ratios: dict[str, float]) -> str:
    return ", ".join(f"{key} {int(value)}" if key in LOSSES else f"{key} {value:.2f}×" for key, value in ratios.items())


def _pair(res: dict[tuple[str, str], dict[str, Any]], key: str, name: str) -> Pair | None:
    ours, limit = res.get((key, name)), res.get((key, "limit"))
    return (ours, limit) if ours and limit else None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e --suite limit", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--idle", type=int, default=5000, help="idle connections (0 to skip)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of every scenario and target")
    parser.add_argument("--targets", default="limit,node,ours,ours-cap100")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--write", action="store_true", help="also write docs/PERFORMANCE.md's section")
    parser.add_argument("--publisher-process", action="store_true",
                        help="every target's publisher in a process of its own (bench/load.py), not in the clients' loop")
    parser.add_argument("--counting-clients", action="store_true",
                        help="the clients that do not measure latency only count what arrives, with no frame "
                        "parsing (bench/load.py): the load's cost per frame is then out of what is measured")
    parser.add_argument("--before", type=Path, help="another checkout (e.g. `git worktree add` of main): its "
                        "edge and push service run as the target `ours-before`, beside this one's, in the same rounds")
    args = parser.parse_args(argv)
    global BEFORE
    if args.before:
        BEFORE = args.before.resolve()
        if "ours-before" not in args.targets:
            args.targets += ",ours-before"
    names = [n for n in args.targets.split(",") if n != "node" or (shutil.which("node") and NODE_MODULES.exists())]
    scenarios = args.scenarios.split(",")
    cores = pinning()
    rounds = []
    for number in range(args.repeat):
        print(f"round {number + 1}", file=sys.stderr)
        rounds.append(run_round(names, scenarios, args, cores))
    text = report(rounds, names, args, cores)
    print(text)
    if args.write:
        path = ROOT / "docs" / "PERFORMANCE.md"
        start_mark, end_mark = "<!-- limit-results -->", "<!-- /limit-results -->"
        current = path.read_text()
        head, rest = current.split(start_mark)
        path.write_text(head + start_mark + "\n\n" + text + "\n" + end_mark + rest.split(end_mark, 1)[1])


if __name__ == "__main__":
    main(sys.argv[1:])
