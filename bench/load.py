"""The load process: N WebSocket clients (picows on uvloop) and one publisher, one scenario per run.

    python -m bench.load --target ours --ws-url ws://127.0.0.1:8000/ws --push 127.0.0.1:50051 \
        --clients 1000 --scenario max --seconds 5

Prints one JSON object. Messages are the guide's `task_progress` (~200 B), each carrying `seq` and
`sent_ns` (the publish call's wall clock) so receipt latency is measured on this same host. Every
client counts messages (batch frames included, without parsing JSON); `--sample` clients also parse
`sent_ns` for latency. Scenarios:
- `connect`: connect the clients (at most `--connect-concurrency` handshakes at a time) and report the time per connection.
- `max`: publish as fast as the system delivers: closed loop, at most `--window` messages published but
  not yet received by every client; then wait for the stragglers and count loss.
- `rate`: publish `--rate` messages per second for `--seconds`; latency percentiles and loss.
- `idle`: hold the connections for `--seconds`, each sending an application ping every 5 s.

With `--transport sse` (ours only) the clients read `GET /sse` instead (a raw asyncio protocol that
counts `"seq":` in what arrives, parsing only the sampled clients' events); idle SSE clients send
nothing (the stream's heartbeat, taken by the socket, counts as their activity).

With `--processes K` the clients are spread over K processes (this one publishes and samples latency;
the others only count, sharing their counts through shared memory so that the closed loop and the loss
count cover every client): one process reading a million messages a second is what bounds the max-rate
scenario against our edge, and a second core's worth of client shows what the servers do.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import multiprocessing
import os
import re
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

SENT = re.compile(rb'"sent_ns":(\d+)')
SEQ = b'"seq":'
WINDOW_POLL_S = 0.001  # how often the max scenario's publisher looks at its window when it is full


class Client(WSListener):
    def __init__(self, stats: Stats, sampled: bool) -> None:
        self.stats = stats
        self.sampled = sampled
        self.received = 0
        self.frames = 0
        self.closed: int | None = None
        self.transport: WSTransport | None = None
        self.first_frame = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                self.closed = frame.get_close_code()
            return
        payload = frame.get_payload_as_bytes()
        if not self.first_frame.done():
            self.first_frame.set_result(payload)
        count = payload.count(SEQ)
        if count:
            self.frames += 1
            self.received += count
            self.stats.received += count
            if self.sampled:
                self.stats.sampled(payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.closed is None:
            self.closed = 1006


class RawClient(asyncio.Protocol):
    """A client on a plain asyncio protocol, with the WebSocket client's counters (and
    `transport.disconnect()`): it sends `request`, then counts `"seq":` in the bytes as they come."""

    def __init__(self, stats: Stats, request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.received = 0
        self.frames = 0
        self.closed: int | None = None
        self.transport: RawClient | None = None
        self.first_frame = asyncio.get_running_loop().create_future()
        self._socket: Any = None
        self._tail = b""  # the last bytes of the previous chunk: a `"seq":` split between two chunks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._socket = transport  # uvloop's, which is not an asyncio.Transport
        self.transport = self
        self._socket.write(self.request)

    def count(self, data: bytes) -> int:
        """Messages in `data` (counted, and added to this client's and the run's totals)."""
        count = (self._tail + data).count(SEQ)
        self._tail = data[-(len(SEQ) - 1):]
        self.received += count
        self.stats.received += count
        return count

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = 1006

    def disconnect(self) -> None:
        if self._socket is not None:
            self._socket.abort()


class SseClient(RawClient):
    """One `GET /sse` reader."""

    def __init__(self, stats: Stats, sampled: bool, request: bytes) -> None:
        super().__init__(stats, request)
        self.sampled = sampled
        self._pending = b""  # sampled clients: the start of an incomplete line

    def data_received(self, data: bytes) -> None:
        if not self.first_frame.done() and b'"type":"connected"' in data:
            self.first_frame.set_result(data)
        if b'"type":"close"' in data:
            self.closed = 4000
        if self.count(data):
            self.frames += data.count(b"\ndata: ") or 1
            if self.sampled:
                complete, _, self._pending = (self._pending + data).rpartition(b"\n")
                self.stats.sampled(complete)


class CountingWsClient(RawClient):
    """`--counting-clients`: a WebSocket client that only counts, for the clients that do not measure
    latency. It makes the handshake itself, then counts `"seq":` in the bytes as they arrive (a
    server's frames are not masked: each message's bytes are in the stream as they are), with no
    frame parsing and no call per frame. The picows client's cost per frame is what bounds the load
    process at the max rate (~10 messages a frame at the guide's cap against the limit's ~50); this
    one costs per read and per byte only, so that what is measured is the server. Frames are not
    counted here (`frames` stays 0): `msgs/frame` then comes from the sampled (picows) clients."""

    def __init__(self, stats: Stats, request: bytes) -> None:
        super().__init__(stats, request)
        self.upgraded = asyncio.get_running_loop().create_future()  # the server's 101 came
        self._head: bytes | None = b""  # the handshake's answer until its blank line

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            head, separator, data = self._head.partition(b"\r\n\r\n")
            if not separator:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.closed = 1002
                self._socket.abort()
                self.upgraded.set_exception(ConnectionError(f"handshake refused: {head[:80]!r}"))
                return
            self._head = None
            self.upgraded.set_result(None)
        if not self.first_frame.done() and data:
            self.first_frame.set_result(data)
        self.count(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during the handshake"))


def framed_received(clients: list[Any]) -> int:
    """Messages received by the clients that count frames (a counting client's `frames` stay 0, and
    one that counts frames has received nothing until it has counted one)."""
    return sum(c.received for c in clients if c.frames)


async def counting_ws_connect(url: str, stats: Stats) -> CountingWsClient:
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: CountingWsClient(stats, request), parts.hostname, parts.port)
    # As picows's ws_connect: connected once the server has answered the upgrade (a baseline server
    # takes a subscriber then, and nothing published before is meant for it).
    await asyncio.wait_for(client.upgraded, 30)
    return client


async def sse_connect(url: str, stats: Stats, sampled: bool) -> SseClient:
    parts = urlsplit(url)
    request = (f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Accept: text/event-stream\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: SseClient(stats, sampled, request), parts.hostname, parts.port)
    return client


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.latencies: list[int] = []
        # Per message (its `sent_ns`), the latency of the sampled client that got it first: the
        # pipeline's own latency, before the spread of writing it to every socket; and of the one
        # that got it last: a message that came while the server was busy with the one before shows
        # there, as a whole round later than the others.
        self.first: dict[bytes, int] = {}
        self.last: dict[bytes, int] = {}

    def sampled(self, payload: bytes) -> None:
        now = time.time_ns()
        first, last = self.first, self.last
        for sent in SENT.findall(payload):
            latency = now - int(sent)
            self.latencies.append(latency)
            if latency < first.get(sent, latency + 1):
                first[sent] = latency
            if latency > last.get(sent, -1):
                last[sent] = latency


def slowest_tenth(stats: Stats) -> dict[str, float]:
    """The tenth of messages whose last sampled receipt came latest, split into the wait before the
    first sampled receipt (the pipeline, and any round or rest it waited out) and the spread from the
    first to the last (its own round, and the reading): medians over those messages, in ms."""
    slowest = sorted(stats.last, key=stats.last.__getitem__)[len(stats.last) * 9 // 10:]
    return {
        "slowest_tenth_first_ms": percentile([stats.first[sent] for sent in slowest], 0.5),
        "slowest_tenth_spread_ms": percentile([stats.last[sent] - stats.first[sent] for sent in slowest], 0.5),
    }


def message_data(seq: int) -> dict[str, Any]:
    return {
        "task_id": "bench-task-000001",
        "progress": {"percentage": round(seq % 1000 / 10, 1), "current": "BTCUSDT", "total": 1000,
                     "completed": seq % 1000},
        "seq": seq,
        "sent_ns": time.time_ns(),
    }


class OursPublisher:
    """Publishes through the push service's gRPC API: the streaming publisher, or unary calls."""

    def __init__(self, address: str, unary: bool, unary_concurrency: int = 1) -> None:
        from pushclient import PushClient

        self.client = PushClient(address)
        self.unary = unary
        self.stream = None if unary else self.client.stream_publisher(max_buffer=1_000_000)
        if self.stream is not None:
            self.stream.start()
        # Unary calls in flight at once: a service publishing as fast as it can does not wait for one
        # answer before it makes the next call (1 = one call at a time).
        self.unary_slots = asyncio.Semaphore(unary_concurrency)
        self.unary_calls: set[asyncio.Task[None]] = set()
        self.failed = 0

    @property
    def requests(self) -> int:
        """PublishStream requests sent (its batching: published / requests messages each); 0 for unary."""
        return self.stream.requests if self.stream is not None else 0

    async def publish(self, seq: int) -> None:
        from pushclient.client import outgoing

        data = message_data(seq)
        if self.unary:
            await self.unary_slots.acquire()
            call = asyncio.create_task(self._unary(data, seq))
            self.unary_calls.add(call)
            call.add_done_callback(self.unary_calls.discard)
        else:
            assert self.stream is not None
            self.stream.submit(outgoing("task:progress", "task_progress", data, id=f"progress_bench_{seq}"))

    async def _unary(self, data: dict[str, Any], seq: int) -> None:
        try:
            await self.client.publish("task:progress", "task_progress", data, id=f"progress_bench_{seq}")
        except Exception:  # counted and reported: a failed publish shows as loss, not as a crash
            self.failed += 1
        finally:
            self.unary_slots.release()

    async def close(self) -> None:
        if self.unary_calls:
            await asyncio.gather(*self.unary_calls)
        if self.stream is not None:
            await self.stream.close(5)
        await self.client.close()


class WebSocketPublisher:
    """For the baselines: full envelopes sent as text frames to their `/publish` endpoint."""

    failed = 0  # a send has no answer: what does not arrive shows as loss
    requests = 0  # (no PublishStream)

    def __init__(self, transport: WSTransport) -> None:
        self.transport = transport

    @classmethod
    async def open(cls, url: str) -> WebSocketPublisher:
        transport, _ = await ws_connect(WSListener, url)
        return cls(transport)

    async def publish(self, seq: int) -> None:
        envelope = {"type": "task_progress", "id": f"progress_bench_{seq}", "timestamp": int(time.time() * 1000),
                    "data": message_data(seq), "topic": "task:progress"}
        self.transport.send(WSMsgType.TEXT, orjson.dumps(envelope))  # written at once: no yield needed

    async def close(self) -> None:
        self.transport.disconnect()


async def connect_all(
    url: str, count: int, sample: int, stats: Stats, concurrency: int, counting: bool = False
) -> tuple[list[Any], list[float], float]:
    clients: list[Any] = []
    durations: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            started = time.perf_counter()
            client: Any
            if url.startswith("http"):
                client = await sse_connect(url, stats, index < sample)
            elif counting and index >= sample:
                client = await counting_ws_connect(url, stats)
            else:
                _, client = await ws_connect(lambda: Client(stats, index < sample), url, websocket_handshake_timeout=30)
            durations.append(time.perf_counter() - started)
            clients.append(client)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return clients, durations, time.perf_counter() - started


async def wait_ready(clients: list[Any], target: str) -> None:
    """Our edge answers `connected` once the subscription holds; the baselines hold at accept."""
    if target == "ours":
        await asyncio.gather(*(c.first_frame for c in clients))


class Helpers:
    """The other load processes: each connects its share of the clients and counts what they receive."""

    def __init__(self, args: argparse.Namespace, shares: list[int]) -> None:
        context = multiprocessing.get_context("fork")  # before this process starts its event loop
        self.stop = context.Event()
        self.results = context.Queue()
        self.counts = [context.Value("q", 0, lock=False) for _ in shares]
        self.ready = [context.Event() for _ in shares]
        self.processes = [
            context.Process(target=_helper_main, args=(args, share, count, ready, self.stop, self.results), daemon=True)
            for share, count, ready in zip(shares, self.counts, self.ready, strict=True)
        ]
        for process in self.processes:
            process.start()

    @property
    def received(self) -> int:
        return sum(count.value for count in self.counts)

    async def wait_ready(self) -> None:
        while not all(ready.is_set() for ready in self.ready):
            await asyncio.sleep(0.01)

    async def finish(self) -> list[dict[str, Any]]:
        self.stop.set()
        results = [await asyncio.to_thread(self.results.get, True, 30) for _ in self.processes]
        for process in self.processes:
            process.join(10)
        return results


def _helper_main(args: argparse.Namespace, clients: int, count: Any, ready: Any, stop: Any, results: Any) -> None:
    results.put(uvloop.run(_helper(args, clients, count, ready, stop)))


async def _helper(args: argparse.Namespace, count: int, shared: Any, ready: Any, stop: Any) -> dict[str, Any]:
    stats = Stats()
    clients, _, _ = await connect_all(clients_url(args), count, 0, stats, args.connect_concurrency,
                                      args.counting_clients)
    await wait_ready(clients, args.target)
    gc.collect()
    gc.freeze()
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    ready.set()
    while not stop.is_set():
        shared.value = stats.received  # read by the publishing process's closed loop (at most 1 ms old)
        await asyncio.sleep(0.001)
    shared.value = stats.received
    cpu_percent = cpu_percent_since(usage_start, started)
    closed = sum(1 for c in clients if c.closed is not None)
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()
    return {"received": stats.received, "frames": sum(c.frames for c in clients),
            "framed_received": framed_received(clients), "closed_by_server": closed,
            "cpu_percent": cpu_percent}


def clients_url(args: argparse.Namespace) -> str:
    """Where the clients connect: our edge with the benchmark's topic (its SSE twin with `--transport
    sse`: ws://host/ws -> http://host/sse), a baseline as it is."""
    if args.transport == "sse":
        parts = urlsplit(args.ws_url)
        return f"http://{parts.netloc}/sse{parts.path.removeprefix('/ws')}?topics=task:progress"
    return args.ws_url + ("?topics=task:progress" if args.target == "ours" else "")


def cpu_percent_since(usage_start: resource.struct_rusage, wall_start: float) -> float:
    """This process's CPU (user + system) since `usage_start`, as a share of the wall time since `wall_start`."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime - usage_start.ru_utime) + (usage.ru_stime - usage_start.ru_stime)
    return 100 * cpu / (time.perf_counter() - wall_start)


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


async def open_publisher(args: argparse.Namespace) -> Any:
    if args.target == "ours":
        return OursPublisher(args.push, unary=args.unary, unary_concurrency=args.unary_concurrency)
    return await WebSocketPublisher.open(args.publish_url)


async def publish_loop(args: argparse.Namespace, publisher: Any, received: Callable[[], int]
                       ) -> tuple[int, float, list[int]]:
    """Publish as the scenario says; (how many were published, the seconds it took, and for `rate` how
    late each publish call came after its slot, in ns: a loop busy with receipts delays the publisher's
    timer, and a late slot is made up at once, so that two messages leave close together)."""
    published = 0
    late: list[int] = []
    started = time.perf_counter()
    deadline = started + args.seconds
    n = args.clients
    if args.scenario == "max":
        while time.perf_counter() < deadline:
            if published * n - received() < args.window * n:
                await publisher.publish(published)
                published += 1
                if published % 50 == 0:
                    await asyncio.sleep(0)
            else:
                # A whole millisecond: uvloop's timers count whole milliseconds and round 0.5 ms down
                # to 0, so a shorter wait spins, and a publisher process that spins takes half of the
                # load core from the clients that it shares it with.
                await asyncio.sleep(WINDOW_POLL_S)
    else:
        interval = 1.0 / args.rate
        next_at = started
        while next_at < deadline:
            late.append(int((time.perf_counter() - next_at) * 1e9))
            await publisher.publish(published)
            published += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return published, time.perf_counter() - started, late


class PublisherProcess:
    """`--publisher-process`: the publisher in a process of its own, as an internal service is, instead
    of in the loop that also reads every client's socket (where each of its loop turns waits behind a
    burst of receipts). It sees how much was received through shared memory (the closed loop)."""

    failed = 0
    requests = 0

    def __init__(self, args: argparse.Namespace) -> None:
        context = multiprocessing.get_context("fork")  # before this process starts its event loop
        self.received = context.Value("q", 0, lock=False)
        self.go = context.Event()
        self.results = context.Queue()
        self.process = context.Process(target=_publisher_main, args=(args, self.received, self.go, self.results),
                                       daemon=True)
        self.process.start()

    async def publish(self, received: Callable[[], int]) -> tuple[int, float, list[int]]:
        self.go.set()
        while self.results.empty():
            if not self.process.is_alive() and self.results.empty():  # it failed: its traceback is on stderr
                raise RuntimeError(f"the publisher process exited with {self.process.exitcode}")
            self.received.value = received()
            await asyncio.sleep(0.001)
        published, wall, late, self.failed, self.requests = self.results.get()
        return published, wall, late

    async def close(self) -> None:
        await asyncio.to_thread(self.process.join, 10)


def _publisher_main(args: argparse.Namespace, received: Any, go: Any, results: Any) -> None:
    from common import tracing

    async def main() -> None:
        publisher = await open_publisher(args)
        await asyncio.to_thread(go.wait)
        published, wall, late = await publish_loop(args, publisher, lambda: received.value)
        await publisher.close()
        tracing.flush()  # a forked process leaves without the SDK's exit handler: its last second of spans
        results.put((published, wall, late, publisher.failed, publisher.requests))

    uvloop.run(main())


async def run(args: argparse.Namespace, helpers: Helpers | None, own: int,
              publisher_process: PublisherProcess | None = None) -> dict[str, Any]:
    stats = Stats()
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    wall_start = time.perf_counter()
    clients, durations, connect_wall = await connect_all(clients_url(args), own, args.sample, stats,
                                                         args.connect_concurrency, args.counting_clients)
    await wait_ready(clients, args.target)
    if helpers is not None:
        await helpers.wait_ready()
        connect_wall = time.perf_counter() - wall_start  # every process's clients, connected at once
    # The load process must not be what is measured: no full collections of its many long-lived objects.
    gc.collect()
    gc.freeze()
    total_clients = args.clients

    def received() -> int:
        return stats.received + (helpers.received if helpers is not None else 0)

    result: dict[str, Any] = {
        "target": args.target, "transport": args.transport, "scenario": args.scenario, "clients": total_clients, "processes": args.processes,
        "connect_ms_per_connection": connect_wall / max(1, total_clients) * 1000,
        "connect_ms_mean_handshake": sum(durations) / max(1, len(durations)) * 1000,
    }
    if args.scenario in ("max", "rate"):
        n = total_clients
        started = time.perf_counter()
        if publisher_process is not None:
            publisher = publisher_process
            published, publish_wall, late = await publisher_process.publish(received)
        else:
            publisher = await open_publisher(args)
            published, publish_wall, late = await publish_loop(args, publisher, received)
        drain_deadline = time.perf_counter() + args.drain
        while received() < published * n and time.perf_counter() < drain_deadline:
            await asyncio.sleep(0.005)
        delivered_wall = time.perf_counter() - started
        total = received()
        await publisher.close()
        helper_results = await helpers.finish() if helpers is not None else []
        result.update({
            "published": published,
            "publish_rate": published / publish_wall,
            "publish_late_p50_ms": percentile(late, 0.50),  # rate only (NaN for max)
            "publish_late_p99_ms": percentile(late, 0.99),
            "expected": published * n,
            "received": total,
            "lost": published * n - total,
            "delivered_per_s": total / delivered_wall,
            "frames": sum(c.frames for c in clients) + sum(h["frames"] for h in helper_results),
            "framed_received": framed_received(clients) + sum(h["framed_received"] for h in helper_results),
            "latency_p50_ms": percentile(stats.latencies, 0.50),
            "latency_p99_ms": percentile(stats.latencies, 0.99),
            "latency_max_ms": percentile(stats.latencies, 1.0),
            "first_receipt_p50_ms": percentile(list(stats.first.values()), 0.50),
            "first_receipt_p99_ms": percentile(list(stats.first.values()), 0.99),
            "last_receipt_p50_ms": percentile(list(stats.last.values()), 0.50),
            "last_receipt_p90_ms": percentile(list(stats.last.values()), 0.90),
            **slowest_tenth(stats),
            "closed_by_server": sum(1 for c in clients if c.closed is not None)
            + sum(h["closed_by_server"] for h in helper_results),
            "helper_cpu_percent": [h["cpu_percent"] for h in helper_results],
            "publish_failed": publisher.failed,
            "publish_requests": publisher.requests,
        })
    elif args.scenario == "idle":
        print(orjson.dumps({"event": "connected", "clients": len(clients)}).decode(), flush=True)
        until = time.perf_counter() + args.seconds
        while time.perf_counter() < until:
            if args.target == "ours" and args.transport == "websocket":
                ping = orjson.dumps({"type": "ping"})
                for client in clients:
                    if client.transport is not None and client.closed is None:
                        client.transport.send(WSMsgType.TEXT, ping)
            await asyncio.sleep(min(5.0, max(0.0, until - time.perf_counter())))
        result["still_open"] = sum(1 for c in clients if c.closed is None)
    result["load_cpu_percent"] = cpu_percent_since(usage_start, wall_start)
    for client in clients:
        if client.transport is not None:
            client.transport.disconnect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["ours", "tutorial", "broadcaster", "limit", "node"], required=True)
    parser.add_argument("--ws-url", required=True)
    parser.add_argument("--publish-url", help="baselines: their /publish WebSocket")
    parser.add_argument("--push", default="127.0.0.1:50051")
    parser.add_argument("--scenario", choices=["connect", "max", "rate", "idle"], required=True)
    parser.add_argument("--transport", choices=["websocket", "sse"], default="websocket",
                        help="ours: the clients' transport (sse: GET /sse)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=50, help="clients that measure latency")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--window", type=int, default=200, help="max messages in flight (max scenario)")
    parser.add_argument("--connect-concurrency", type=int, default=500, help="handshakes in flight at once")
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--unary", action="store_true", help="ours: unary Publish instead of streaming")
    parser.add_argument("--unary-concurrency", type=int, default=32, help="ours: unary calls in flight at once")
    parser.add_argument("--processes", type=int, default=1, help="load processes the clients are spread over "
                        "(max and rate scenarios)")
    parser.add_argument("--publisher-process", action="store_true",
                        help="publish from a process of its own (max and rate scenarios), not from the clients' loop")
    parser.add_argument("--counting-clients", action="store_true",
                        help="WebSocket: the clients that do not measure latency only count what arrives, "
                        "with no frame parsing (the load's cost per frame is then out of what is measured)")
    parser.add_argument("--trace-file", type=Path, help="ours: trace publishes (common/tracing.py), spans to this file")
    parser.add_argument("--trace-ratio", type=float, default=1.0, help="with --trace-file: the share sampled")
    args = parser.parse_args()
    if args.trace_file:
        from common import tracing

        tracing.configure("bench.load", "file", file=args.trace_file, ratio=args.trace_ratio)
    if args.transport == "sse" and args.target != "ours":
        parser.error("--transport sse: only our edge serves SSE")
    if args.counting_clients and (args.transport != "websocket" or args.scenario not in ("max", "rate")):
        parser.error("--counting-clients: WebSocket clients, max and rate scenarios only")
    if args.processes < 1 or (args.processes > 1 and args.scenario not in ("max", "rate")):
        parser.error("--processes: at least 1, and more only for the max and rate scenarios")
    share, extra = divmod(args.clients, args.processes)
    shares = [share + (1 if i < extra else 0) for i in range(args.processes)]
    helpers = Helpers(args, shares[1:]) if args.processes > 1 else None
    publisher = PublisherProcess(args) if args.publisher_process and args.scenario in ("max", "rate") else None
    print(orjson.dumps(uvloop.run(run(args, helpers, shares[0], publisher))).decode(), flush=True)


if __name__ == "__main__":
    main()
