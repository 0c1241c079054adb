"""The session's presence frames and the server API's commands (issue 15), without an event loop."""

from __future__ import annotations

import orjson

from common.presence_rules import PresenceRules
from tests.support.asyncapi import check_client_frame, check_server_frame
from tests.support.deliveries import D
from tests.ws_edge.test_session import frames, kinds, opened
from ws_edge.core.hooks import HookRules
from ws_edge.core.session import AddInterest, Close, DropInterest, Guard, JoinLeave, ReadPresence, Send

RULES = PresenceRules.parse("room:*:presence+joinleave,task:*:presence")


def session(topics=()):  # type: ignore[no-untyped-def]
    return opened(topics, presence=lambda: RULES)


def send(s, frame, valid=True):  # type: ignore[no-untyped-def]
    if valid:
        check_client_frame(frame)
    s.receive(orjson.dumps(frame), now=1.0, wall=1.0)
    effects = s.effects()
    for f in frames(effects):
        check_server_frame(f)
    return effects


def test_subscribe_with_join_leave_asks_for_the_events_first_and_says_so_in_the_ack():
    s = session()
    effects = send(s, {"type": "subscribe", "id": "s1", "data": {"topics": ["room:1"], "join_leave": True}})
    assert kinds(effects) == ["JoinLeave", "AddInterest"]
    assert effects[0] == JoinLeave(("room:1",), True)
    s.interest_applied(effects[1].ticket)
    [ack] = frames(s.effects())
    assert ack["id"] == "s1" and ack["data"] == {"type": "subscribe", "topics": ["room:1"], "join_leave": True}
    check_server_frame(ack)


def test_join_leave_on_a_topic_without_it_is_refused_and_nothing_is_subscribed():
    s = session()
    for topic in ("task:1", "news"):
        effects = send(s, {"type": "subscribe", "id": "s2", "data": {"topics": ["room:1", topic], "join_leave": True}})
        [error] = frames(effects)
        assert kinds(effects) == ["Send"]
        assert error["id"] == "s2" and error["error"]["code"] == "PRESENCE_DISABLED"
        assert topic in error["error"]["message"]
    assert s.topics == set()
    s.receive(orjson.dumps({"type": "subscribe", "id": "s3", "data": {"topics": ["room:1"], "join_leave": "yes"}}),
              now=1.0, wall=1.0)  # not a valid frame (the schema says so too): not checked by send()
    assert frames(s.effects())[0]["error"]["code"] == "INVALID_MESSAGE"


def test_presence_reads_are_for_those_allowed_to_subscribe_to_topics_with_presence():
    s = session()
    cases = {"secret:room": "FORBIDDEN", "news": "PRESENCE_DISABLED", "bad topic": "INVALID_TOPIC"}
    for topic, code in cases.items():
        [error] = frames(send(s, {"type": "presence", "id": "p0", "data": {"topic": topic}}, valid=code != "INVALID_TOPIC"))
        assert (error["id"], error["error"]["code"]) == ("p0", code)
    effects = send(s, {"type": "presence_stats", "id": "p1", "data": {"topic": "task:9"}})
    assert effects == [ReadPresence(effects[0].ticket, "task:9", True)]
    assert not s.accepting  # one frame at a time: the next waits for this answer
    s.handler_done(effects[0].ticket, {"topic": "task:9", "clients": 3, "users": 2})
    [ack] = frames(s.effects())
    assert ack["id"] == "p1" and ack["data"] == {"type": "presence_stats", "topic": "task:9", "clients": 3, "users": 2}
    check_server_frame(ack)
    effects = send(s, {"type": "presence", "id": "p2", "data": {"topic": "room:1"}})
    clients = [{"client_id": "c1", "user": "alice", "joined": 5, "info": {"name": "A"}}]
    s.handler_done(effects[0].ticket, {"topic": "room:1", "clients": clients})
    [ack] = frames(s.effects())
    assert ack["data"] == {"type": "presence", "topic": "room:1", "clients": clients}
    check_server_frame(ack)


def test_the_presence_of_a_topic_behind_a_token_or_the_subscribe_hook_is_for_its_subscribers():
    """The topic rules allow anyone to ask for `room:*`; who may subscribe is decided per subscribe (a
    subscription token, the backend's Subscribe hook): the rules alone let anyone list the members."""
    for gate in ({"needs_subscription_token": lambda t: t.startswith("room:")},
                 {"hooks": HookRules(subscribe=lambda t: t.startswith("room:"))}):
        s = opened(presence=lambda: RULES, **gate)
        s.server_subscribe(["room:2"])  # the backend subscribed it (no gate then)
        [add] = s.effects()
        s.interest_applied(add.ticket)
        s.effects()
        [error] = frames(send(s, {"type": "presence", "id": "p0", "data": {"topic": "room:1"}}))
        assert (error["id"], error["error"]["code"]) == ("p0", "FORBIDDEN")
        assert error["error"]["message"] == "the presence of room:1 is for its subscribers"
        effects = send(s, {"type": "presence_stats", "id": "p1", "data": {"topic": "room:2"}})
        assert effects == [ReadPresence(effects[0].ticket, "room:2", True)]


def test_a_server_subscribe_adds_interest_then_tells_the_client_with_its_retained_state():
    s = session(["task:1"])
    s.server_subscribe(["news", "task:1", "bad topic"])
    [add] = s.effects()
    assert isinstance(add, AddInterest) and add.topics == ("news",)
    s.interest_applied(add.ticket, [("news", b'{"type":"state","id":"r","timestamp":1,"topic":"news"}')])
    ack, retained = frames(s.effects())
    assert ack["data"] == {"type": "subscribe", "topics": ["news", "task:1"], "server": True}
    assert retained["type"] == "state"
    check_server_frame(ack)
    assert s.topics == {"task:1", "news"}
    s.server_subscribe(["news"])  # held already: told at once, no interest to add
    [only] = s.effects()
    assert isinstance(only, Send) and orjson.loads(only.frame)["data"]["topics"] == ["news"]


def test_live_deliveries_while_a_server_subscribe_is_pending_come_after_its_ack_and_retained_state():
    """As for the client's own subscribe: a live message of a topic the backend subscribed must not
    overtake the `ack {server: true}` and the retained state read when the interest is applied."""
    s = session()
    s.server_subscribe(["news"])
    [add] = s.effects()
    s.interest_pending(add.ticket)  # the driver: not applied yet, deliveries may come
    assert s.effects() == [Guard("news", True)]
    assert [s.admit(D(n, topic="news")) for n in (8, 9)] == [False, False]
    s.interest_applied(add.ticket, [("news", b'{"retained":7}')])
    effects = s.effects()
    ack, *after = frames(effects)
    assert ack["type"] == "ack" and ack["data"] == {"type": "subscribe", "topics": ["news"], "server": True}
    assert after == [{"retained": 7}, {"type": "batch", "messages": [{"o": 8}, {"o": 9}]}]
    assert [e for e in effects if isinstance(e, Guard)] == [Guard("news", False)]
    assert s.admit(D(10, topic="news")) is True


def test_a_server_unsubscribe_drops_what_is_held_and_says_so():
    s = session(["task:1", "news"])
    s.server_unsubscribe(["news", "other"])
    drop, sent = s.effects()
    assert drop == DropInterest(("news",))
    assert orjson.loads(sent.frame)["data"] == {"type": "unsubscribe", "topics": ["news"], "server": True}
    check_server_frame(orjson.loads(sent.frame))
    s.server_unsubscribe(["news"])
    assert s.effects() == []


def test_a_server_disconnect_closes_with_its_code():
    s = session()
    s.server_disconnect(4010, "banned")
    assert s.effects() == [Close(4010, "banned")]
    s.server_subscribe(["news"])
    assert s.effects() == []


def test_an_older_subscribes_answer_does_not_release_a_newer_hold_of_the_same_topic():
    """The backend subscribes, unsubscribes and subscribes again while the first answer is on its way:
    that answer releases only its own hold, not the newer one (whose ack has not gone out yet)."""
    s = session()
    s.server_subscribe(["news"])
    [first] = s.effects()
    s.interest_pending(first.ticket)
    s.server_unsubscribe(["news"])
    s.server_subscribe(["news"])
    second = next(e for e in s.effects() if hasattr(e, "ticket"))
    s.interest_pending(second.ticket)
    s.effects()
    s.interest_applied(first.ticket)
    s.effects()
    assert s.admit(D(8, topic="news")) is False  # still held for the second subscribe
    s.interest_applied(second.ticket)
    ack, *after = frames(s.effects())
    assert ack["data"] == {"type": "subscribe", "topics": ["news"], "server": True}
    assert after == [{"o": 8}]
