"""The session driver carries out what the session asks, and tells it what the push service did: here,
that an interest whose wait timed out was applied after all, or is overdue."""

from __future__ import annotations

import asyncio
import gc
import weakref
from dataclasses import dataclass, field

import orjson

from tests.support.deliveries import D
from tests.support.timing import timeout
from tests.ws_edge.test_delivery import turns
from tests.ws_edge.test_session import History, rules
from ws_edge.config import EdgeSettings
from ws_edge.core.auth import ANONYMOUS, Principal
from ws_edge.core.recovery import Position
from ws_edge.core.session import Session
from ws_edge.session_driver import SessionDriver


class Router:
    def __init__(self) -> None:
        self.guards: dict[str, object] = {}

    def guard(self, topic, connection, admit) -> None:  # type: ignore[no-untyped-def]
        self.guards[topic] = admit

    def unguard(self, topic, connection) -> None:  # type: ignore[no-untyped-def]
        self.guards.pop(topic, None)


@dataclass
class Edge:
    """The edge as the driver sees it: the wait for the push service to apply an interest times out at
    once, and `applied` is resolved when the test says; history is read from `answers`."""

    answers: list[History]
    router: Router = field(default_factory=Router)
    reads: list[tuple[str, Position | None]] = field(default_factory=list)
    applied: list[asyncio.Future[None]] = field(default_factory=list)
    settings: EdgeSettings = field(default_factory=lambda: EdgeSettings(subscribe_confirm_timeout=0.2))

    def add_interest(self, connection, topics):  # type: ignore[no-untyped-def]
        self.applied.append(asyncio.get_running_loop().create_future())
        return [self.applied[-1]], []

    def when_confirmed(self, waits, then) -> bool:  # type: ignore[no-untyped-def]
        asyncio.get_running_loop().call_soon(then)  # the confirm gate's timeout, made short
        return False

    def when_confirmed_for_recovery(self, waits, then) -> bool:  # type: ignore[no-untyped-def]
        asyncio.get_running_loop().call_later(self.settings.subscribe_confirm_timeout, then)  # its timeout
        return False

    async def read_history(self, topic: str, since: Position | None, latest: int = 0) -> History:
        self.reads.append((topic, since))
        return self.answers.pop(0)


@dataclass
class Connection:
    id: int = 1
    tag: str = "#1"
    started: bool = True
    sent: list[dict] = field(default_factory=list)

    def send(self, frame: bytes) -> None:
        self.sent.append(orjson.loads(frame))


def connected(edge: Edge) -> SessionDriver:
    """A driven session that subscribed `t` from position 2."""
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    connection = Connection()
    driver = SessionDriver(edge, session, connection)  # type: ignore[arg-type]
    session.open(None, [], {}, wall=0.0)
    session.effects()  # admission: not this test's
    session.admitted()
    session.effects()
    session.receive(orjson.dumps({"type": "subscribe", "id": "s1", "data": {
        "topics": ["t"], "since": {"t": {"offset": 2, "epoch": "e"}}}}), now=1.0, wall=1.0)
    driver._run_effects()
    return driver


async def test_a_recovery_reads_history_when_the_push_service_applies_its_interest_after_the_gate_opened():
    edge = Edge([History(True, 8, "e", "", [D(n) for n in range(3, 9)])],
                settings=EdgeSettings(subscribe_confirm_timeout=60))  # never overdue here
    driver = connected(edge)
    connection = driver.connection
    await turns()
    assert edge.reads == [] and connection.sent == []  # the gate opened, the interest is not applied
    assert list(driver._late_interests) != []
    edge.applied[0].set_result(None)  # the push service applied it, late
    await turns()
    assert edge.reads == [("t", Position(2, "e"))] and driver._late_interests == {}  # nothing left to forget
    assert connection.sent[0]["data"]["recovery"] == {"t": {"recovered": True, "offset": 8, "epoch": "e"}}
    assert connection.sent[1:] == [{"type": "batch", "messages": [{"o": n} for n in range(3, 9)]}]


async def test_a_recovery_whose_interest_is_not_applied_within_the_recovery_gate_is_not_recovered():
    edge = Edge([])
    connection = connected(edge).connection
    async with asyncio.timeout(timeout(10)):
        while not connection.sent:
            await asyncio.sleep(0.05)
    assert edge.reads == []
    assert connection.sent[0]["data"]["recovery"] == {"t": {
        "recovered": False, "offset": 2, "epoch": "e", "reason": "the push service did not take the subscription in time"}}


async def test_a_connection_closed_while_its_recovery_waits_for_an_interest_is_not_held_by_that_wait():
    """The push service is down: the interest a recovery waits for is applied only when it is back
    (the outage's length). The connection's driver and session go with the connection, not then."""
    edge = ServedEdge([])
    frames: asyncio.Queue[bytes | None] = asyncio.Queue()
    driver = SessionDriver(edge, Session(rules(), "c1", now=0.0, clock_ms=lambda: 7), ServedConnection())  # type: ignore[arg-type]
    serving = asyncio.create_task(driver.serve(frames.get, None, [], {}))
    await frames.put(orjson.dumps({"type": "subscribe", "id": "s1", "data": {
        "topics": ["t"], "since": {"t": {"offset": 2, "epoch": "e"}}}}))
    await frames.put(None)  # the peer is gone (read once the recovery is answered: overdue)
    await asyncio.wait_for(serving, timeout(10))
    sent = driver.connection.sent
    assert sent[0]["type"] == "connected" and sent[1]["id"] == "s1"
    assert sent[1]["data"]["recovery"]["t"]["reason"] == "the push service did not take the subscription in time"
    assert edge.detached == [driver]
    waiting_on_it = len(edge.applied[0]._callbacks or ())  # type: ignore[attr-defined]
    driver._interest_applied(0, [], [edge.applied[0]])  # a gate that opens after the connection ended
    assert len(edge.applied[0]._callbacks or ()) == waiting_on_it  # type: ignore[attr-defined]  # nothing new holds it
    gone = weakref.ref(driver)
    del driver, serving, sent
    edge.detached.clear()
    gc.collect()
    assert gone() is None
    assert not edge.applied[0].done()  # still waiting for the push service


@dataclass
class ServedEdge(Edge):
    """The edge as a served connection's driver sees it: no claim, admitted at once."""

    detached: list[SessionDriver] = field(default_factory=list)

    def needs_claim(self, client_id: str) -> bool:
        return False

    def admit(self, driver, principal):  # type: ignore[no-untyped-def]
        return []

    def drop_interest(self, connection, topics) -> None:  # type: ignore[no-untyped-def]
        pass

    def detach(self, driver: SessionDriver) -> None:
        self.detached.append(driver)


@dataclass
class ServedConnection(Connection):
    started: bool = False
    client_id: str = "c1"
    principal: Principal = ANONYMOUS
    closed: list[tuple[int, str]] = field(default_factory=list)

    def start_writer(self, frame: bytes) -> None:
        self.started = True
        self.send(frame)

    def close_soon(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    async def wait_closed(self) -> None:
        pass

    async def stop(self) -> None:
        pass
