"""The session driver carries out what the session asks, including what `admit` asks while the router
fans a round out (no event of the connection's own follows it): a hole after a recovery is read at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson

from tests.support.deliveries import D
from tests.ws_edge.test_session import History, rules
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
    once (the push service applies it later), history is read from `answers`."""

    answers: list[History]
    router: Router = field(default_factory=Router)
    reads: list[tuple[str, Position | None]] = field(default_factory=list)

    def add_interest(self, connection, topics):  # type: ignore[no-untyped-def]
        return [asyncio.get_running_loop().create_future()], []  # never applied: its wait times out

    def when_confirmed(self, waits, then) -> bool:  # type: ignore[no-untyped-def]
        asyncio.get_running_loop().call_soon(then)  # the confirm gate's timeout, made short
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


async def test_a_hole_admit_finds_in_a_fan_out_round_is_read_and_sent_without_another_event():
    edge = Edge([History(True, 5, "e", "", [D(3), D(4), D(5)]), History(True, 9, "e", "", [D(6), D(7), D(8), D(9)])])
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
    for _ in range(5):
        await asyncio.sleep(0)
    assert edge.reads == [("t", Position(2, "e"))]
    assert connection.sent[-1] == {"type": "batch", "messages": [{"o": 3}, {"o": 4}, {"o": 5}]}
    del connection.sent[:]
    # The router's round: 9 comes while history gave up to 5 (the interest was applied after the read).
    admit = edge.router.guards["t"]
    assert admit(D(9)) is False  # type: ignore[operator]
    for _ in range(5):
        await asyncio.sleep(0)
    assert edge.reads[1:] == [("t", Position(5, "e"))]
    assert connection.sent == [{"type": "batch", "messages": [{"o": 6}, {"o": 7}, {"o": 8}, {"o": 9}]}]
    assert admit(D(10)) is True  # type: ignore[operator]
    for _ in range(2):
        await asyncio.sleep(0)
    assert "t" not in edge.router.guards  # the guard lifted right after the round, too
