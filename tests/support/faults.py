"""What a fault campaign needs: a TCP proxy that black-holes a link, subscribers that churn and recover
the way the browser client does (`?since=` in the URL, or `subscribe{since}`), and their tally per
subscriber and topic: delivered, silent gaps, duplicates, reorders, told. `run_campaign` runs one
fault under an idempotent stream publisher and those subscribers, against any topology: the compose
services as local processes (tests/faults) or as containers (tests/containers).

Messages carry the publisher's own sequence per topic (`data.n`), so what a subscriber receives is
judged against what was published, not against the offsets the system itself assigns.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import websockets

from pushclient import PushClient
from pushclient.client import outgoing

from .processes import free_port
from .timing import timeout
from .tokens import token


class Blackhole:
    """A TCP proxy the test owns, in front of `target_port`, on a thread of its own (it outlives the
    tests' event loops). `cut()`: it forwards nothing more either way and accepts new connections
    without connecting them, closing nothing (no reset, no FIN: a partition that drops packets; the
    senders' windows fill and they wait). `heal()`: what was held goes through, as after a partition."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="blackhole", daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout(10))

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout(10))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout(10))
        self._loop.close()

    async def _shutdown(self) -> None:
        self._flowing.set()
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                await self._flowing.wait()  # read during a cut: held until it heals
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


@dataclass
class TopicTally:
    delivered: int = 0
    gaps: int = 0  # silent: a skipped sequence nobody was told about
    missing: int = 0  # messages in those silent gaps
    duplicates: int = 0
    reorders: int = 0
    told: int = 0  # `recovery` notices, and acks / connected frames with recovered false
    last: int = -1  # the highest sequence received
    excused: bool = False  # told since the last message: a jump is not silent
    seen: set[int] = field(default_factory=set)
    # What happened to this topic lately (connections, notices, receipts), and the events around each
    # anomaly: printed with a failing scenario, so that a rare gap can be told apart (code or test).
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=30))
    anomalies: list[str] = field(default_factory=list)

    def note(self, event: str) -> None:
        self.recent.append(event)

    def receive(self, n: int, position: str = "") -> None:
        self.note(f"rx {n} {position}")
        if n in self.seen:
            self.duplicates += 1
            self._anomaly("duplicate")
            return
        self.seen.add(n)
        self.delivered += 1
        if n < self.last:
            self.reorders += 1
            self._anomaly("reorder")
        elif self.last >= 0 and n > self.last + 1 and not self.excused:
            self.gaps += 1
            self.missing += n - self.last - 1
            self._anomaly(f"silent gap {self.last + 1}..{n - 1}")
        self.last = max(self.last, n)
        self.excused = False

    def tell(self, event: str = "told") -> None:
        self.note(event)
        self.told += 1
        self.excused = True

    def _anomaly(self, what: str) -> None:
        if len(self.anomalies) < 3:
            self.anomalies.append(f"{what}: " + " | ".join(self.recent))


class Subscriber:
    """An independent client: connects to the edges in turn, keeps each connection `churn` seconds,
    reconnects with its positions, and tallies every topic. Half the subscribers of a run give their
    positions in the URL, half in a `subscribe` after connecting."""

    def __init__(self, name: str, edges: list[str], topics: list[str], token: str, *, in_url: bool,
                 churn: tuple[float, float] = (0.3, 1.5), rng: random.Random | None = None) -> None:
        self.name, self.edges, self.topics, self.token, self.in_url = name, edges, topics, token, in_url
        self.churn = churn
        self.rng = rng or random.Random(name)
        self.tally = {t: TopicTally() for t in topics}
        self.positions: dict[str, dict[str, Any]] = {}
        self.connects = 0  # connections that got their `connected`
        self.failed_connects = 0
        self.last_error = ""
        self.delays: list[float] = []  # receipt minus publish time, per message
        self.sent_at: dict[tuple[str, int], float] = {}  # shared with the publisher

    async def run(self, stop: asyncio.Event) -> None:
        turn = self.rng.randrange(len(self.edges))
        while not stop.is_set():
            edge = self.edges[turn % len(self.edges)]
            turn += 1
            try:
                await self._session(edge, stop)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self.failed_connects += 1
                self.last_error = repr(exc)
            await asyncio.sleep(self.rng.uniform(0.05, 0.2))

    async def _session(self, edge: str, stop: asyncio.Event) -> None:
        params = {"token": self.token}
        since = {t: self.positions[t] for t in self.topics if t in self.positions}
        if self.in_url:
            params["topics"] = ",".join(self.topics)
            if since:
                params["since"] = orjson.dumps(since).decode()
        for topic in self.topics:
            self.tally[topic].note(f"connect {edge.rsplit(':', 1)[-1]} {'url' if self.in_url else 'sub'} "
                                   f"since {since.get(topic)}")
        async with websockets.connect(f"{edge}/ws?{urlencode(params)}", open_timeout=timeout(3), close_timeout=0.5,
                                      max_size=None, ping_interval=None) as ws:
            if not self.in_url:
                data: dict[str, Any] = {"topics": self.topics} | ({"since": since} if since else {})
                await ws.send(orjson.dumps({"type": "subscribe", "id": f"s{self.connects}", "data": data}).decode())
            until = time.monotonic() + self.rng.uniform(*self.churn)
            while not stop.is_set() and (left := until - time.monotonic()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                self._frame(orjson.loads(raw))

    def _frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "batch":
            for message in frame["messages"]:
                self._frame(message)
            return
        data = frame.get("data") or {}
        if kind == "connected":
            self.connects += 1
            self._recovery(data.get("recovery") or {})
        elif kind == "ack":
            self._recovery(data.get("recovery") or {})
        elif kind == "recovery":
            self._recovery({data["topic"]: data})
        elif kind == "tick":
            topic, n = frame["topic"], data["n"]
            self.tally[topic].receive(n, f"{frame['offset']}/{frame['epoch'][-4:]}")
            self.positions[topic] = {"offset": frame["offset"], "epoch": frame["epoch"]}
            sent = self.sent_at.get((topic, n))
            if sent is not None:
                self.delays.append(time.monotonic() - sent)

    def _recovery(self, reports: dict[str, Any]) -> None:
        for topic, report in reports.items():
            if topic in self.tally and report["recovered"]:
                self.tally[topic].note(f"recovered to {report.get('offset')}")
            if topic in self.tally and not report["recovered"]:
                self.tally[topic].tell(f"told {report.get('offset')}/{str(report.get('epoch'))[-4:]} "
                                       f"{report.get('reason', '')}")
                self.positions[topic] = {"offset": report["offset"], "epoch": report["epoch"]}


@dataclass
class Outcome:
    scenario: str
    subscribers: list[Subscriber]
    published: dict[str, int]  # per topic, how many (sequences 0 .. n-1)
    reconnects_during_fault: int

    def close_tails(self) -> None:
        """A subscriber that stopped short of the last message, untold, has a silent gap at the end."""
        for s in self.subscribers:
            for topic, tally in s.tally.items():
                if tally.last < self.published[topic] - 1 and not tally.excused:
                    tally.gaps += 1
                    tally.missing += self.published[topic] - 1 - tally.last
                    tally._anomaly(f"silent tail {tally.last + 1}..{self.published[topic] - 1}")

    def totals(self) -> dict[str, int]:
        tallies = [t for s in self.subscribers for t in s.tally.values()]
        return {key: sum(getattr(t, key) for t in tallies)
                for key in ("delivered", "gaps", "missing", "duplicates", "reorders", "told")}

    def table(self) -> str:
        head = f"{'scenario':<24} {'subscriber/topic':<18} {'delivered':>9} {'gaps':>5} {'dups':>5} {'reord':>5} {'told':>5}"
        lines = [head]
        for s in self.subscribers:
            for topic, t in s.tally.items():
                lines.append(f"{self.scenario:<24} {s.name + '/' + topic:<18} {t.delivered:>9} {t.gaps:>5} "
                             f"{t.duplicates:>5} {t.reorders:>5} {t.told:>5}")
        return "\n".join(lines)

    def summary(self) -> str:
        t = self.totals()
        delays = sorted(d for s in self.subscribers for d in s.delays)
        worst = delays[-1] if delays else 0.0
        connects = sum(s.connects for s in self.subscribers)
        failed = sum(s.failed_connects for s in self.subscribers)
        return (f"{self.scenario:<24} published {sum(self.published.values()):>6}  delivered {t['delivered']:>6}  "
                f"silent gaps {t['gaps']}  dups {t['duplicates']}  reorders {t['reorders']}  told {t['told']}  "
                f"connects {connects} ({self.reconnects_during_fault} during the fault, {failed} failed)  "
                f"max delay {worst:.2f}s"
                + "".join(f"\n  {s.name}/{topic} {anomaly}" for s in self.subscribers
                          for topic, tally in s.tally.items() for anomaly in tally.anomalies))

    def max_delay(self) -> float:
        """The longest a message took from its submission to a subscriber (while a fault held it)."""
        return max((d for s in self.subscribers for d in s.delays), default=0.0)


async def cancel_quietly(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@dataclass
class Campaign:
    """Where a fault campaign runs: the edges' ws:// URLs, the push replicas the publisher uses (a
    comma-separated list), the edges' JWT secret and the gRPC bearer token."""

    edges: list[str]
    publish_address: str
    jwt_secret: str
    grpc_token: str | None
    rate: float = 200.0  # messages a second, over all topics
    subscribers: int = 12


async def run_campaign(name: str, run: int, campaign: Campaign, fault: Callable[[], Awaitable[None]]) -> Outcome:
    """Subscribers churning over the edges on topics of this run's own, a publisher streaming to them;
    `fault()` once everyone receives; then until every subscriber has every topic's last message or
    was told it cannot have it."""
    rng = random.Random(name)
    topics = [f"fault:{run}:{n}" for n in range(4)]
    subscribers = [Subscriber(f"s{i}", campaign.edges, rng.sample(topics, 2),
                              token(f"fault-{run}-{i}", secret=campaign.jwt_secret),
                              in_url=i % 2 == 0, rng=random.Random(f"{name}/{i}")) for i in range(campaign.subscribers)]
    sent_at: dict[tuple[str, int], float] = {}
    for s in subscribers:
        s.sent_at = sent_at
    published = dict.fromkeys(topics, 0)
    stop_subscribers = asyncio.Event()
    try:
        readers = [asyncio.create_task(s.run(stop_subscribers)) for s in subscribers]
        reconnects = await _publish_through(campaign, fault, subscribers, published, sent_at)
        deadline = time.monotonic() + timeout(30)
        while time.monotonic() < deadline and not all(
                t.last == published[topic] - 1 or t.excused for s in subscribers for topic, t in s.tally.items()):
            await asyncio.sleep(0.2)
        stop_subscribers.set()
        await asyncio.wait_for(asyncio.gather(*readers), timeout(10))
    finally:
        stop_subscribers.set()
        await cancel_quietly(*[t for t in asyncio.all_tasks() if t.get_name().startswith("fault-")])
    outcome = Outcome(name, subscribers, published, reconnects)
    outcome.close_tails()
    return outcome


async def _publish_through(campaign: Campaign, fault: Callable[[], Awaitable[None]], subscribers: list[Subscriber],
                           published: dict[str, int], sent_at: dict[tuple[str, int], float]) -> int:
    """Publish at the campaign's rate, numbering each topic's messages, across the fault; every message
    accepted in the end. The subscribers' reconnections during the fault."""
    stop_publishing = asyncio.Event()
    async with PushClient(campaign.publish_address, token=campaign.grpc_token) as push:
        publisher = push.stream_publisher(idempotent=True)
        publisher.start()

        async def publish() -> None:
            started = time.monotonic()
            while not stop_publishing.is_set():
                for topic in published:
                    n = published[topic]
                    sent_at[(topic, n)] = time.monotonic()
                    publisher.submit(outgoing(topic, "tick", {"n": n}, id=f"{topic}-{n}"))
                    published[topic] = n + 1
                due = started + sum(published.values()) / campaign.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))

        publishing = asyncio.create_task(publish())
        try:
            await asyncio.sleep(timeout(1))  # everyone connected and receiving
            connects_before = sum(s.connects for s in subscribers)
            await fault()
            reconnects = sum(s.connects for s in subscribers) - connects_before
            await asyncio.sleep(timeout(2))  # churn goes on after the fault
        finally:
            stop_publishing.set()
            await publishing
        await asyncio.wait_for(publisher.flush(), timeout(60))
        assert (publisher.rejected, publisher.dropped) == (0, 0)
        await publisher.close()
    return reconnects


def summary_table(outcomes: list[Outcome]) -> str:
    """One line per scenario: what was published and delivered, and every way it could go wrong."""
    head = (f"{'scenario':<30} {'published':>9} {'delivered':>9} {'silent gaps':>11} {'duplicates':>10} "
            f"{'reorders':>8} {'told':>5} {'reconnects':>10} {'max delay':>9}")
    lines = [head, "-" * len(head)]
    for o in outcomes:
        t = o.totals()
        lines.append(f"{o.scenario:<30} {sum(o.published.values()):>9} {t['delivered']:>9} {t['gaps']:>11} "
                     f"{t['duplicates']:>10} {t['reorders']:>8} {t['told']:>5} {o.reconnects_during_fault:>10} "
                     f"{o.max_delay():>8.2f}s")
    return "\n".join(lines)
