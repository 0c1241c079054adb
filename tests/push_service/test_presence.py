import asyncio

import orjson
import pytest

from common.presence_rules import PresenceRules
from push_service.broker.base import BrokerUnavailable
from push_service.broker.memory import MemoryBroker
from push_service.broker.presence import MemoryPresence
from push_service.core.presence import ClientEntry, Occupancy, PresenceChange, PresenceEvent, PresenceTable, stats
from push_service.core.publication import Publication, topic_channel
from push_service.presence import EdgeMirror, Roster


def entry(client_id: str, user: str = "alice", joined: int = 1000, info: bytes = b"") -> ClientEntry:
    return ClientEntry(client_id, user, info, joined)


def join(topic: str, e: ClientEntry) -> PresenceChange:
    return PresenceChange(topic, e)


def leave(topic: str, e: ClientEntry) -> PresenceChange:
    return PresenceChange(topic, e, leave=True)


def test_rules_parse_patterns_and_options_first_match_wins():
    rules = PresenceRules.parse("task:*:presence, room:vip:presence+joinleave,room:*:presence")
    assert rules.has_presence("task:42") and not rules.has_join_leave("task:42")
    assert rules.has_join_leave("room:vip")
    assert rules.has_presence("room:1") and not rules.has_join_leave("room:1")
    assert not rules.has_presence("news") and not PresenceRules.parse("")
    assert str(PresenceRules.parse(str(rules))) == str(rules)


@pytest.mark.parametrize("text", ["task:*", "task:*:joinleave", ":presence", "a:presence+x"])
def test_bad_rules_are_refused_by_name(text):
    with pytest.raises(ValueError, match="presence rule"):
        PresenceRules.parse(text)


def test_join_and_leave_are_events_once_per_change():
    table = PresenceTable()
    table.beat("e1", 100.0)
    a = entry("a")
    assert table.apply("e1", [join("room:1", a)]) == [PresenceEvent("room:1", True, a)]
    assert table.apply("e1", [join("room:1", a)]) == []  # a snapshot declaring it again
    assert table.clients("room:1", now=1.0) == [a]
    assert table.apply("e1", [leave("room:1", a)]) == [PresenceEvent("room:1", False, a)]
    assert table.apply("e1", [leave("room:1", a)]) == []
    assert table.clients("room:1", now=1.0) == []
    assert table.size() == {"topics": 0, "edges": 1, "holds": 0, "entries": 0}


def test_a_client_id_on_two_edges_is_one_entry_joined_by_the_first_left_by_the_last():
    table = PresenceTable()
    table.beat("e1", 100.0)
    table.beat("e2", 100.0)
    first, second = entry("a", joined=1000), entry("a", joined=2000)
    assert table.apply("e1", [join("t", first)]) == [PresenceEvent("t", True, first)]
    assert table.apply("e2", [join("t", second)]) == []
    assert table.clients("t", now=1.0) == [first]
    assert table.apply("e1", [leave("t", first)]) == []
    assert table.apply("e2", [leave("t", second)]) == [PresenceEvent("t", False, second)]


def test_clients_are_in_join_order_and_stats_count_distinct_users():
    table = PresenceTable()
    table.beat("e1", 100.0)
    entries = [entry("c", "bob", 3), entry("a", "alice", 1), entry("b", "alice", 2), entry("d", "", 4)]
    table.apply("e1", [join("t", e) for e in entries])
    listed = table.clients("t", now=1.0)
    assert [e.client_id for e in listed] == ["a", "b", "c", "d"]
    assert stats(listed) == (4, 2)


def test_a_topic_holds_at_most_max_clients_and_an_existing_client_id_still_joins_elsewhere():
    table = PresenceTable(max_clients=2)
    table.beat("e1", 100.0)
    table.beat("e2", 100.0)
    table.apply("e1", [join("t", entry("a")), join("t", entry("b"))])
    assert table.apply("e1", [join("t", entry("c"))]) == []
    assert table.refused == 1
    assert table.apply("e2", [join("t", entry("a"))]) == []  # the same client, already counted
    assert [e.client_id for e in table.clients("t", 1.0)] == ["a", "b"]


def test_a_dead_edge_is_unseen_at_once_and_swept_with_leaves_and_vacated_keys():
    table = PresenceTable()
    table.beat("e1", 10.0)
    table.beat("e2", 20.0)
    a, b = entry("a"), entry("b", "bob")
    table.apply("e1", [join("t", a)])
    table.apply("e2", [join("t", b)])
    assert table.hold("e1", "topic", "t") == Occupancy("topic", "t", True)
    assert table.hold("e2", "topic", "t") is None
    assert table.hold("e1", "user", "alice") == Occupancy("user", "alice", True)
    assert [e.client_id for e in table.clients("t", now=10.0)] == ["b"]  # e1 past its time: unseen
    events, changes = table.sweep(now=10.0)
    assert events == [PresenceEvent("t", False, a)]
    assert changes == [Occupancy("user", "alice", False)]  # the topic is still held by e2
    assert table.sweep(now=10.0) == ([], [])
    events, changes = table.sweep(now=20.0)
    assert events == [PresenceEvent("t", False, b)] and changes == [Occupancy("topic", "t", False)]
    assert table.size() == {"topics": 0, "edges": 0, "holds": 0, "entries": 0}


def test_reports_are_those_of_live_edges():
    table = PresenceTable()
    table.beat("e1", 10.0, b"r1")
    table.beat("e2", 20.0, b"r2")
    assert table.reports(now=15.0) == {"e2": b"r2"}


def test_entries_round_trip_and_show_info_as_json():
    e = entry("a", "alice", 5, b'{"name":"Alice"}')
    assert ClientEntry.from_json(e.to_json()) == e
    assert orjson.loads(orjson.dumps(e.public())) == {"client_id": "a", "user": "alice", "joined": 5,
                                                      "info": {"name": "Alice"}}
    assert orjson.loads(orjson.dumps(entry("x", "", 1).public())) == {"client_id": "x", "user": None, "joined": 1}


class FlakyStore(MemoryPresence):
    """The memory store, refusing while `away` (what the Redis store does while Redis is down)."""

    away = False

    async def apply(self, edge, changes, snapshot=False):  # type: ignore[no-untyped-def]
        if self.away:
            raise BrokerUnavailable("away")
        return await super().apply(edge, changes, snapshot)


def told_by(broker: MemoryBroker) -> list[Publication]:
    """The join/leave events the broker is given to tell (as they are published), in order."""
    told: list[Publication] = []

    async def signal(publication: Publication) -> bool:
        told.append(publication)
        return True

    broker.signal = signal  # type: ignore[method-assign]
    return told


def events(told: list[Publication]) -> list[tuple[str, str]]:
    return [(orjson.loads(p.frame)["type"], orjson.loads(p.frame)["data"]["client_id"]) for p in told]


async def test_a_refused_change_is_recorded_with_the_edges_whole_state_once_the_broker_answers():
    broker = MemoryBroker()
    broker.presence = store = FlakyStore()
    told = told_by(broker)
    roster = Roster(broker, PresenceRules.parse("room:*:presence+joinleave"), ttl=30)
    mirror = EdgeMirror()
    a, b = entry("a"), entry("b")
    await roster.on_edge_request(mirror, "e1", first=True, report=b"{}", presence=[join("room:1", a)])
    store.away = True
    await roster.on_edge_request(mirror, "e1", first=False, report=None,
                                 presence=[join("room:1", b), leave("room:1", a)])  # refused: no error
    assert mirror.dirty and await store.clients("room:1") == [a]
    store.away = False
    await roster.on_edge_request(mirror, "e1", first=False, report=b"{}", presence=[])
    assert not mirror.dirty and await store.clients("room:1") == [b]
    assert events(told) == [("join", "a"), ("leave", "a"), ("join", "b")]


async def test_an_edge_swept_while_it_lived_is_recorded_again_with_its_next_report():
    """Its reports came late past the TTL (a frozen process, a slow stream): the sweep told its clients'
    leaves, and its next report made it alive again with nothing listed, for good."""
    broker = MemoryBroker()
    told = told_by(broker)
    roster = Roster(broker, PresenceRules.parse("room:*:presence+joinleave"), ttl=0.3)
    mirror = EdgeMirror()
    a = entry("a")
    await roster.on_edge_request(mirror, "e1", first=True, report=b"{}", presence=[join("room:1", a)])
    await asyncio.sleep(0.5)
    await roster.sweep_once()
    assert await broker.presence.clients("room:1") == []
    await roster.on_edge_request(mirror, "e1", first=False, report=b"{}", presence=[])
    assert await broker.presence.clients("room:1") == [a]
    assert events(told) == [("join", "a"), ("leave", "a"), ("join", "a")]


async def test_an_entry_refused_at_the_cap_gets_in_with_a_report_once_there_is_room():
    """A dead edge's entries filled the topic until swept; the clients refused meanwhile (reconnected to
    another edge) were never given again: subscribed, and never listed."""
    broker = MemoryBroker(presence_max_clients=2)
    told = told_by(broker)
    roster = Roster(broker, PresenceRules.parse("room:*:presence+joinleave"), ttl=0.6)
    dies, lives = EdgeMirror(), EdgeMirror()
    a, b, c = entry("a"), entry("b"), entry("c")
    await roster.on_edge_request(dies, "e1", first=True, report=b"{}", presence=[join("room:1", a), join("room:1", b)])
    await roster.on_edge_request(lives, "e2", first=True, report=b"{}", presence=[join("room:1", c)])
    await roster.on_edge_request(lives, "e2", first=False, report=None, presence=[])
    assert lives.refused and await broker.presence.clients("room:1") == [a, b]
    await asyncio.sleep(0.8)  # e1 is dead (e2 too, unless a report came: either way it gives all again)
    await roster.sweep_once()
    await roster.on_edge_request(lives, "e2", first=False, report=b"{}", presence=[])
    assert not lives.refused and await broker.presence.clients("room:1") == [c]
    assert events(told) == [("join", "a"), ("join", "b"), ("leave", "a"), ("leave", "b"), ("join", "c")]


async def test_a_join_the_broker_refuses_to_tell_ends_nothing_and_occupancy_is_still_told():
    """The change is recorded before its events are published: a refused publish raised, which ended
    the edge's stream (every delivery to its clients interrupted) and skipped the occupancy events."""
    broker = MemoryBroker()

    async def refused(publication: Publication) -> bool:
        raise BrokerUnavailable("away")

    broker.signal = refused  # type: ignore[method-assign]
    roster = Roster(broker, PresenceRules.parse("room:*:presence+joinleave"), ttl=30, occupancy_topic="occupancy")
    await broker.subscribe(topic_channel("occupancy"))
    published: list[Publication] = []
    broker._handler = published.append
    a = entry("a")
    await roster.on_edge_request(EdgeMirror(), "e1", first=True, report=b"{}", presence=[join("room:1", a)],
                                 add_topics=["room:1"])
    assert await broker.presence.clients("room:1") == [a]
    assert [orjson.loads(p.frame)["data"] for p in published] == [
        {"kind": "topic", "key": "room:1", "state": "occupied"}]
