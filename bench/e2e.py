"""The end-to-end benchmark: this system beside two baseline peers, driven by one load process.

    make bench-e2e        # or: .venv/bin/python -m bench.e2e [--clients 1000] [--seconds 5] [--idle 10000]

For each target it starts the servers as processes, runs `bench.load` (a separate process) once per
scenario, samples the CPU and RSS of every server process meanwhile, and prints Markdown tables
(also written to docs/PERFORMANCE.md with --write): the scenarios, connecting (several rounds per
target: one round's figure moves by a third on this shared machine), idle connections, the guide's
own tests (`bench.guide_tests`) and each target of issue 4 with its figure. Targets:
- ours: push_service + task_service + ws_edge; publishing through gRPC (streaming and unary);
- ours-redis: the same with the Redis engine (its own redis-server), to show the engine's cost;
- ours-hook: the same with the Connect hook on (examples/hooks_backend.py as the backend), for the
  hook's cost in the connecting rounds (issue 19);
- ours-cluster: the same with the Redis Cluster engine (3 masters with a replica each, of its own);
- tutorial: the FastAPI tutorial broadcast (a set of WebSockets, send_text in a loop);
- broadcaster: FastAPI + encode/broadcaster (memory backend).
All three run under the same uvicorn settings (uvloop, httptools, websockets-sansio, no deflate).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson

from tests.support.processes import ROOT, System, free_port, wait_http_ok

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


@dataclass
class Sampler:
    """CPU share and peak RSS of named processes while a scenario runs."""

    pids: dict[str, int]
    peak_rss: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Self:
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            for name, pid in self.pids.items():
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss_bytes(pid))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._t0
        self.cpu_percent = {n: 100 * (cpu_seconds(p) - self._cpu0[n]) / wall for n, p in self.pids.items()}


def uvicorn_command(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--ws", "websockets-sansio", "--ws-per-message-deflate", "false", "--log-level", "warning",
            "--no-access-log"]


class Target:
    name: str
    pids: dict[str, int]
    ws_url: str
    publish_url: str | None = None
    push: str | None = None

    def stop(self) -> None: ...


class Ours(Target):
    name = "ours"

    def __init__(self, broker_url: str = "memory://", edge_env: dict[str, str] | None = None,
                 edge_argv: list[str] | None = None, push_env: dict[str, str] | None = None,
                 push_argv: list[str] | None = None, single_process: bool = False) -> None:
        quiet = {"PUSH_LOG_LEVEL": "WARNING", "PUSH_BROKER_URL": broker_url, **(push_env or {})}
        self.system = System(Path(tempfile.mkdtemp(prefix="bench-ours-")), push_env=quiet,
                             task_env={"TASK_LOG_LEVEL": "WARNING"},
                             # One load process is one address: lift the per-address limits, and let the
                             # closed-loop max-rate scenario queue deeply instead of cutting clients off.
                             edge_env={"EDGE_LOG_LEVEL": "WARNING", "EDGE_SEND_QUEUE_FRAMES": "100000",
                                       "EDGE_SEND_QUEUE_BYTES": str(256 << 20),
                                       "EDGE_MAX_CONNECTIONS_PER_IP": "100000",
                                       "EDGE_MAX_PENDING_PER_IP": "100000", "EDGE_MAX_PENDING_CONNECTIONS": "100000",
                                       "EDGE_CONNECT_RATE_PER_IP": "1000000", "EDGE_CONNECT_BURST_PER_IP": "100000",
                                       **(edge_env or {})}, single_process=single_process)
        self.system.edge.argv = edge_argv  # e.g. another checkout's edge, for a before/after in one run
        if not single_process:  # (then the push service is the edge's process)
            self.system.push.argv = push_argv
        try:
            asyncio.run(self.system.start())
        except BaseException:  # e.g. not serving in time on a crowded machine: leave no process behind
            self.system.stop()
            raise
        self.pids = ({"edge + push": self.system.edge.proc.pid} if single_process  # type: ignore[union-attr]
                     else {"edge": self.system.edge.proc.pid, "push": self.system.push.proc.pid})  # type: ignore[union-attr]
        self.other_pids = [self.system.tasks.proc.pid]  # type: ignore[union-attr]  # idle: pinned, not reported
        self.ws_url = self.system.ws_url + "/ws"
        self.push = self.system.push_address

    def stop(self) -> None:
        self.system.stop()


class OursWithConnectHook(Ours):
    """The system with every connection decided by the example backend's Connect hook (one gRPC call
    per connection; the bound of calls in flight lifted above the load's 500 handshakes at a time)."""

    name = "ours"

    def __init__(self) -> None:
        from tests.support.hooks_backend import hooks_backend

        self._backend = hooks_backend(Path(tempfile.mkdtemp(prefix="bench-hooks-")), EXAMPLE_ALLOW_ANONYMOUS="true")
        backend, address = self._backend.__enter__()
        try:
            super().__init__(edge_env={"EDGE_HOOKS_ADDRESS": address, "EDGE_HOOK_CONNECT": "true",
                                       "EDGE_HOOK_MAX_IN_FLIGHT": "1000", "EDGE_HOOK_TIMEOUT": "5"})
        except BaseException:
            self._backend.__exit__(None, None, None)
            raise
        self.pids["hooks"] = backend.proc.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        super().stop()
        self._backend.__exit__(None, None, None)


class Baseline(Target):
    def __init__(self, name: str, app: str) -> None:
        self.name = name
        port = free_port()
        self.log = open(Path(tempfile.mkdtemp(prefix=f"bench-{name}-")) / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(uvicorn_command(app, port), cwd=ROOT, stdout=self.log, stderr=self.log)
        self.pids = {"server": self.proc.pid}
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.publish_url = f"ws://127.0.0.1:{port}/publish"
        wait_ok = wait_http_ok(f"http://127.0.0.1:{port}/docs", _Proc(name, self.proc))
        asyncio.run(wait_ok)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


@dataclass
class _Proc:  # what wait_http_ok needs of a process
    name: str
    proc: subprocess.Popen[bytes]

    def log_tail(self) -> str:
        return ""


class OursOnRedis(Ours):
    """The same system with the Redis engine (a redis-server of its own, nothing on disk)."""

    name = "ours"

    def __init__(self) -> None:
        from tests.support.redis_server import RedisServer

        self.redis = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-")))
        self.redis.start()
        super().__init__(self.redis.url)
        self.pids["redis"] = self.redis.proc.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        super().stop()
        self.redis.stop()


class OursOnCluster(Ours):
    """The same system with the Redis Cluster engine: 3 masters with a replica each, of its own."""

    name = "ours"

    def __init__(self) -> None:
        from tests.support.redis_cluster import RedisCluster

        self.cluster = RedisCluster(Path(tempfile.mkdtemp(prefix="bench-redis-cluster-")))
        try:  # the nodes stop also when the cluster or the system could not start
            self.cluster.start()
            super().__init__(self.cluster.url)
        except BaseException:
            self.cluster.stop()
            raise
        for n, node in enumerate(self.cluster.nodes[:3]):  # the masters (created first)
            self.pids[f"redis{n}"] = node.proc.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        super().stop()
        self.cluster.stop()


ENGINE_TARGETS = {"ours-redis": ("ours, Redis engine", OursOnRedis),
                  "ours-cluster": ("ours, Redis Cluster engine", OursOnCluster)}


def run_load(target: Target, scenario: str, *extra: str, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    command = [*prefix, sys.executable, "-m", "bench.load", "--target", target.name, "--ws-url", target.ws_url,
               "--scenario", scenario, *extra]
    if target.publish_url:
        command += ["--publish-url", target.publish_url]
    if target.push:
        command += ["--push", target.push]
    with Sampler(target.pids) as sampler:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"load process failed for {target.name}/{scenario}:\n{done.stderr[-3000:]}")
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    result["server_cpu_percent"] = sampler.cpu_percent
    result["server_peak_rss_mib"] = {n: v / 2**20 for n, v in sampler.peak_rss.items()}
    print(f"  {target.name:11} {scenario:7} {' '.join(extra)}: "
          f"{ {k: result[k] for k in ('delivered_per_s', 'lost', 'latency_p99_ms') if k in result} }", file=sys.stderr)
    return result


def idle_memory(target: Target, count: int, hold: float, prefix: tuple[str, ...] = (),
                transport: str = "websocket") -> dict[str, Any]:
    """RSS of the edge (or a baseline's server) before and after `count` idle connections that ping
    every 5 s (SSE, ours only: that take the stream's heartbeat)."""
    edge = target.pids.get("edge") or target.pids.get("edge + push") or target.pids["server"]
    before = rss_bytes(edge)
    command = [*prefix, sys.executable, "-m", "bench.load", "--target", target.name, "--ws-url", target.ws_url, "--scenario",
               "idle", "--clients", str(count), "--seconds", str(hold), "--sample", "0", "--transport", transport]
    load = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    first = orjson.loads(load.stdout.readline())
    assert first["event"] == "connected"
    time.sleep(hold / 2)
    during = rss_bytes(edge)
    result = orjson.loads(load.stdout.readline())
    load.wait()
    result.update({"transport": transport, "edge_rss_before_mib": before / 2**20, "edge_rss_with_clients_mib": during / 2**20,
                   "kib_per_connection": (during - before) / count / 1024})
    return result


def connect_rounds(target: Target, clients: int, rounds: int) -> list[float]:
    """Milliseconds per connection for `clients` connections, `rounds` times (a load process each)."""
    return [run_load(target, "connect", "--clients", str(clients))["connect_ms_per_connection"] for _ in range(rounds)]


def guide_tests() -> str:
    done = subprocess.run([sys.executable, "-m", "bench.guide_tests"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=True)
    return done.stdout.strip()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def targets_table(results: dict[str, dict[str, Any]], connects: dict[str, list[float]],
                  idle: dict[str, Any] | None, args: argparse.Namespace) -> list[str]:
    """Issue 4's targets, each with the figure of this run that decides it."""
    lines = ["| target | figure in this run | met |", "| --- | --- | --- |"]

    def row(target: str, figure: str, met: bool) -> None:
        lines.append(f"| {target} | {figure} | {'yes' if met else '**no**'} |")

    reference = results.get("broadcaster/ws/max", {}).get("delivered_per_s")
    for key, r in results.items():
        name, path, scenario = key.split("/")
        if not name.startswith("ours"):
            continue
        if scenario == "max" and reference and path == "gRPC stream":
            ratio = r["delivered_per_s"] / reference
            row(f"max rate ≥ 3× broadcaster, zero loss ({name})", f"{ratio:.1f}×, {r['lost']} lost",
                ratio >= 3 and r["lost"] == 0)
        if scenario == "rate":
            row(f"{args.clients:,} clients at {args.rate:g} msg/s: p99 ≤ 20 ms, zero loss ({name}, {path})",
                f"p99 {r['latency_p99_ms']:.1f} ms, {r['lost']} lost", r["latency_p99_ms"] <= 20 and r["lost"] == 0)
    memory = results.get("ours/gRPC stream/rate")
    for label, _ in ENGINE_TARGETS.values():  # issue 17.8 (and 20.1 for the cluster): a paced stream kept up
        redis = results.get(f"{label}/gRPC stream/rate")
        if not (memory and redis):
            continue
        expected = args.rate * args.clients
        ratio = redis["latency_p99_ms"] / memory["latency_p99_ms"]
        row(f"{label.removeprefix('ours, ')} at {args.rate:g} msg/s to {args.clients:,} clients: all kept up with "
            f"(≥ 95 % of {expected:,.0f}/s, zero loss), p99 ≤ 2× the memory engine's",
            f"{redis['delivered_per_s']:,.0f}/s, {redis['lost']} lost, p99 {redis['latency_p99_ms']:.1f} ms vs "
            f"{memory['latency_p99_ms']:.1f} ms ({ratio:.2f}×)",
            redis["lost"] == 0 and redis["delivered_per_s"] >= 0.95 * expected and ratio <= 2)
    for name, values in connects.items():
        if name.startswith("ours"):
            row(f"connecting {args.clients:,} clients ≤ 0.5 ms each ({name}, median of {len(values)})",
                f"{median(values):.2f} ms", median(values) <= 0.5)
    if idle:
        row(f"{idle['clients']:,} idle connections held, ≤ 30 KiB each",
            f"{idle['kib_per_connection']:.1f} KiB, {idle['still_open']:,} open",
            idle["kib_per_connection"] <= 30 and idle["still_open"] == idle["clients"])
    return lines


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def report(results: dict[str, dict[str, Any]], connects: dict[str, list[float]], idle: dict[str, Any] | None,
           guide: str | None, args: argparse.Namespace, idle_sse: dict[str, Any] | None = None) -> str:
    lines = [
        f"Command: `python -m bench.e2e --clients {args.clients} --seconds {args.seconds} --rate {args.rate:g} "
        f"--idle {args.idle} --connect-rounds {args.connect_rounds} --max-load-processes {args.max_load_processes} "
        f"--targets {args.targets} --scenarios {args.scenarios}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; the load "
        f"processes (picows on uvloop) run on the same machine: {args.max_load_processes} at max rate (the clients "
        "spread over them, one publishing), one otherwise.",
        "",
        f"### {args.clients} clients on one topic, `task_progress` messages (~200 B)",
        "",
        "| target | publish path | scenario | connect, ms/conn | published msg/s | delivered msg/s | ratio to "
        "broadcaster | lost | p50 ms | p99 ms | max ms | server CPU % | server peak RSS MiB | load CPU % (per process) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    reference = results.get("broadcaster/ws/max", {}).get("delivered_per_s")
    for key, r in results.items():
        target, path, scenario = key.split("/")
        ratio = f"{r['delivered_per_s'] / reference:.1f}×" if reference and scenario == "max" else "–"
        cpu = ", ".join(f"{n} {fmt(v, 0)}" for n, v in r["server_cpu_percent"].items())
        rss = ", ".join(f"{n} {fmt(v, 0)}" for n, v in r["server_peak_rss_mib"].items())
        label = "max rate" if scenario == "max" else f"{args.rate:g} msg/s"
        lines.append(
            f"| {target} | {path} | {label} | {fmt(r['connect_ms_per_connection'], 2)} | {fmt(r['publish_rate'], 0)} "
            f"| {fmt(r['delivered_per_s'], 0)} | {ratio} | {r['lost']} | {fmt(r['latency_p50_ms'])} | "
            f"{fmt(r['latency_p99_ms'])} | {fmt(r['latency_max_ms'])} | {cpu} | {rss} | "
            f"{' + '.join(fmt(v, 0) for v in [r['load_cpu_percent'], *r.get('helper_cpu_percent', [])])} |"
        )
    if connects:
        tutorial = median(connects["tutorial"]) if connects.get("tutorial") else None
        lines += [
            "",
            f"### Connecting {args.clients:,} clients ({args.connect_rounds} rounds per target, a load process each)",
            "",
            "| target | ms per connection: median | min | max | connects per second (median) | median, ratio to "
            "tutorial |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, values in connects.items():
            ratio = f"{median(values) / tutorial:.2f}×" if tutorial else "–"
            lines.append(f"| {name} | {median(values):.2f} | {min(values):.2f} | {max(values):.2f} | "
                         f"{1000 / median(values):,.0f} | {ratio} |")
    if idle:
        lines += [
            "",
            f"### {idle['clients']:,} idle connections on one edge process (application ping every 5 s)",
            "",
            "| transport | connections | edge RSS before | edge RSS with the clients | per connection | "
            "still open at the end | connect, ms/conn |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for held in [idle, *([idle_sse] if idle_sse else [])]:
            lines.append(
                f"| {held['transport']} | {held['clients']:,} | {fmt(held['edge_rss_before_mib'])} MiB | "
                f"{fmt(held['edge_rss_with_clients_mib'])} MiB | {fmt(held['kib_per_connection'])} KiB | "
                f"{held['still_open']:,} | {fmt(held['connect_ms_per_connection'], 2)} |")
    if guide:
        lines += ["", "### The guide's own tests (`make bench`, `python -m bench.guide_tests`)", "", guide]
    lines += ["", "### Issue 4's targets", "", *targets_table(results, connects, idle, args)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (0 to skip)")
    parser.add_argument("--sse", action=argparse.BooleanOptionalAction, default=True,
                        help="ours: also the SSE clients' rows (max, rate, idle)")
    parser.add_argument("--max-load-processes", type=int, default=2, help="load processes at max rate")
    parser.add_argument("--connect-rounds", type=int, default=5, help="rounds of connecting per target")
    parser.add_argument("--no-guide", action="store_true", help="skip the guide's own tests")
    parser.add_argument("--targets", default="ours,ours-hook,ours-redis,ours-cluster,tutorial,broadcaster")
    parser.add_argument("--scenarios", default="max,unary,rate",
                        help="which to run: max (max rate), unary (ours' unary Publish rows), rate (paced)")
    parser.add_argument("--write", action="store_true", help="also write docs/PERFORMANCE.md's results")
    parser.add_argument("--suite", choices=["peers", "limit"], default="peers",
                        help="peers: beside the FastAPI baselines (issue 4); limit: beside the limit and "
                        "Node's ws (issue 18, bench/vs_limit.py; its own options, see --suite limit --help)")
    if "--suite" in sys.argv and sys.argv[sys.argv.index("--suite") + 1:][:1] == ["limit"]:
        from bench import vs_limit

        i = sys.argv.index("--suite")
        vs_limit.main(sys.argv[1:i] + sys.argv[i + 2:])
        return
    args = parser.parse_args()
    common = ["--clients", str(args.clients), "--seconds", str(args.seconds)]
    # At max rate one load process reading every message is what bounds our figure (≈ 90 % of a core
    # while the edge has room): the clients are spread over several, for every target alike.
    at_max = [*common, "--processes", str(args.max_load_processes)]
    scenarios = set(args.scenarios.split(","))
    results: dict[str, dict[str, Any]] = {}
    connects: dict[str, list[float]] = {}
    idle = idle_sse = None
    for name in args.targets.split(","):
        if name == "ours":
            target: Target = Ours()
        elif name == "ours-hook":
            target = OursWithConnectHook()
        elif name in ENGINE_TARGETS:
            target = ENGINE_TARGETS[name][1]()
        else:
            target = Baseline(name, {"tutorial": "bench.baselines.tutorial:app",
                                     "broadcaster": "bench.baselines.broadcaster_app:app"}[name])
        try:
            if args.connect_rounds:
                label = "ours, Connect hook on" if name == "ours-hook" else name
                connects[ENGINE_TARGETS[name][0] if name in ENGINE_TARGETS else label] = connect_rounds(
                    target, args.clients, args.connect_rounds)
            if name == "ours":
                if "max" in scenarios:
                    results["ours/gRPC stream/max"] = run_load(target, "max", *at_max)
                if "max" in scenarios and "unary" in scenarios:
                    results["ours/gRPC unary/max"] = run_load(target, "max", *at_max, "--unary")
                if "rate" in scenarios:
                    results["ours/gRPC stream/rate"] = run_load(target, "rate", *common, "--rate", str(args.rate))
                if "rate" in scenarios and "unary" in scenarios:
                    results["ours/gRPC unary/rate"] = run_load(target, "rate", *common, "--rate", str(args.rate),
                                                               "--unary")
                if args.sse and "max" in scenarios and "rate" in scenarios:
                    sse = ["--transport", "sse"]
                    results["ours/gRPC stream, SSE clients/max"] = run_load(target, "max", *at_max, *sse)
                    results["ours/gRPC stream, SSE clients/rate"] = run_load(target, "rate", *common, "--rate",
                                                                             str(args.rate), *sse)
                if args.idle:
                    idle = idle_memory(target, args.idle, hold=12.0)  # type: ignore[arg-type]
                    if args.sse:
                        idle_sse = idle_memory(target, args.idle, hold=12.0, transport="sse")  # type: ignore[arg-type]
            elif name == "ours-hook":
                pass  # the connecting rounds only: the hook is asked once per connection, not per message
            elif name in ENGINE_TARGETS:
                label = ENGINE_TARGETS[name][0]
                if "max" in scenarios:
                    results[f"{label}/gRPC stream/max"] = run_load(target, "max", *at_max)
                if "rate" in scenarios:
                    results[f"{label}/gRPC stream/rate"] = run_load(target, "rate", *common, "--rate", str(args.rate))
            else:
                if "max" in scenarios:
                    results[f"{name}/ws/max"] = run_load(target, "max", *at_max)
                if "rate" in scenarios:
                    results[f"{name}/ws/rate"] = run_load(target, "rate", *common, "--rate", str(args.rate))
        finally:
            target.stop()
    guide = None if args.no_guide else guide_tests()
    text = report(results, connects, idle, guide, args, idle_sse)
    print(text)
    if args.write:
        path = ROOT / "docs" / "PERFORMANCE.md"
        marker = "<!-- results -->"
        current = path.read_text()
        head = current.split(marker)[0]
        path.write_text(head + marker + "\n\n" + text)


if __name__ == "__main__":
    main()
