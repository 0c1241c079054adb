"""The session's order and rules, without an event loop: events in, effects out."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.asyncapi import check_server_frame
from tests.support.deliveries import D, History
from ws_edge.core.auth import AuthError, Principal
from ws_edge.core.codes import CloseCode, ErrorCode
from ws_edge.core.frames import ProtocolError
from ws_edge.core.hooks import HookAnswer, HookRules, Outcome
from ws_edge.core.recovery import GapNotice, Position
from ws_edge.core.session import (
    AddInterest,
    Admit,
    Close,
    DropInterest,
    Guard,
    ReadHistory,
    RunHandler,
    Send,
    Session,
    SessionRules,
    url_positions,
)


def verify(token, wall):  # type: ignore[no-untyped-def]
    if token == "alice":
        return Principal("alice", expires_at=1000.0)
    raise AuthError(CloseCode.UNAUTHORIZED, "bad token")


def rules(**overrides):  # type: ignore[no-untyped-def]
    base = {"verify": verify, "allow_anonymous": True, "may_subscribe": lambda p, t: not t.startswith("secret"),
                "handles": lambda type_: type_ == "echo", "max_topics": 3, "rate_limit": 5, "rate_burst": 5,
                "client_timeout": 30.0, "auth_timeout": 10.0}
    base.update(overrides)
    return SessionRules(**base)


def frames(effects):  # type: ignore[no-untyped-def]
    return [orjson.loads(e.frame) for e in effects if isinstance(e, Send)]


def kinds(effects):  # type: ignore[no-untyped-def]
    return [type(e).__name__ for e in effects]


def opened(topics=(), since=None, **kw):  # type: ignore[no-untyped-def]
    """A session taken to OPEN with `topics` from the URL (interest applied, histories answered)."""
    session = Session(rules(**kw), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, list(topics), since or {}, wall=0.0)
    session.effects()
    session.admitted()
    effects = session.effects()
    add = [e for e in effects if isinstance(e, AddInterest)]
    if add:
        session.interest_applied(add[0].ticket)
        session.effects()
    return session


def subscribe(session, topics, since=None, id_="s1"):  # type: ignore[no-untyped-def]
    data = {"topics": topics} | ({"since": since} if since else {})
    session.receive(orjson.dumps({"type": "subscribe", "id": id_, "data": data}), now=1.0, wall=1.0)
    return session.effects()


def test_connected_only_after_admission_and_the_interest_is_applied():
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["a", "b"], {}, wall=0.0)
    assert session.effects() == [Admit(Principal(None))]
    assert not session.accepting
    session.admitted()
    effects = session.effects()
    assert kinds(effects) == ["AddInterest"] and effects[0].topics == ("a", "b")
    session.interest_applied(effects[0].ticket, [("a", b'{"retained":1}')])
    effects = session.effects()
    assert frames(effects)[0] == {"type": "connected", "id": frames(effects)[0]["id"], "timestamp": 7,
                                  "data": {"client_id": "c1", "topics": ["a", "b"], "user": None}}
    assert frames(effects)[1] == {"retained": 1}  # retained state after `connected`
    assert session.accepting


def test_a_token_in_the_url_is_verified_first_and_a_bad_one_closes():
    session = Session(rules(), "c1", now=0.0)
    session.open("alice", [], {}, wall=0.0)
    assert session.effects() == [Admit(Principal("alice", expires_at=1000.0))]
    session = Session(rules(), "c1", now=0.0)
    session.open("mallory", [], {}, wall=0.0)
    assert session.effects() == [Close(CloseCode.UNAUTHORIZED, "bad token")]
    assert session.closed
    session = Session(rules(verify=None), "c1", now=0.0)
    session.open("alice", [], {}, wall=0.0)
    assert session.effects() == [Close(CloseCode.UNAUTHORIZED, "this edge does not accept tokens")]


def test_without_anonymous_the_first_frame_must_authenticate():
    session = Session(rules(allow_anonymous=False), "c1", now=0.0)
    session.open(None, [], {}, wall=0.0)
    assert session.effects() == [] and session.accepting and session.auth_deadline() == 10.0
    session.receive(b'{"type":"auth","data":{"token":"alice"}}', now=1.0, wall=1.0)
    assert session.effects() == [Admit(Principal("alice", expires_at=1000.0))]
    assert session.auth_deadline() is None

    session = Session(rules(allow_anonymous=False), "c1", now=0.0)
    session.open(None, [], {}, wall=0.0)
    session.receive(b'{"type":"ping"}', now=1.0, wall=1.0)
    assert session.effects() == [Close(CloseCode.UNAUTHORIZED, "authentication required: send an `auth` message first")]

    session = Session(rules(allow_anonymous=False), "c1", now=0.0)
    session.open(None, [], {}, wall=0.0)
    session.receive(b"{", now=1.0, wall=1.0)
    assert kinds(session.effects()) == ["Close"]

    session = Session(rules(allow_anonymous=False), "c1", now=0.0)
    session.open(None, [], {}, wall=0.0)
    session.tick(9.9, 9.9)
    assert session.effects() == []
    session.tick(10.0, 10.0)
    assert session.effects() == [Close(CloseCode.UNAUTHORIZED, "no auth message in time")]


def test_refused_admission_closes_with_the_edges_code():
    session = Session(rules(), "c1", now=0.0)
    session.open(None, [], {}, wall=0.0)
    session.effects()
    session.refused(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
    assert session.effects() == [Close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")]


def test_rejected_url_topics_connect_with_none_and_say_why_after_connected():
    session = opened()
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["ok", "secret:x"], {}, wall=0.0)
    session.effects()
    session.admitted()
    effects = session.effects()
    sent = frames(effects)
    assert sent[0]["type"] == "connected" and sent[0]["data"]["topics"] == []
    assert sent[1]["error"] == {"code": "FORBIDDEN", "message": "?topics= rejected: not allowed to subscribe to secret:x"}


def test_ping_pong_echoes_the_id():
    session = opened()
    session.receive(b'{"type":"ping","id":"p1"}', now=1.0, wall=1.0)
    assert frames(session.effects()) == [{"type": "pong", "id": "p1", "timestamp": 7}]


@pytest.mark.parametrize(("frame", "code", "id_"), [
    (b"{", "INVALID_JSON", None),
    (b'{"type":"nope","id":"x1"}', "UNKNOWN_MESSAGE_TYPE", "x1"),
    (b'{"type":"subscribe","id":"x2","data":{"topics":["bad topic"]}}', "INVALID_TOPIC", "x2"),
    (b'{"type":"subscribe","id":"x3","data":{"topics":["secret:1"]}}', "FORBIDDEN", "x3"),
    (b'{"type":"subscribe","id":"x4","data":{"topics":["a","b","c","d"]}}', "TOO_MANY_TOPICS", "x4"),
    (b'{"type":"unsubscribe","id":"x5","data":{"topics":["bad topic"]}}', "INVALID_TOPIC", "x5"),
    (b'{"type":"subscribe","id":"x6","data":{"topics":["a"],"since":{"a":{"offset":-1,"epoch":"e"}}}}',
     "INVALID_MESSAGE", "x6"),
])
def test_error_frames_echo_the_id_and_keep_the_connection(frame, code, id_):  # type: ignore[no-untyped-def]
    session = opened()
    session.receive(frame, now=1.0, wall=1.0)
    effects = session.effects()
    assert len(effects) == 1 and effects[0].error == code
    sent = frames(effects)[0]
    assert sent["error"]["code"] == code and (id_ is None or sent["id"] == id_)
    assert not session.closed and session.accepting and session.topics == set()


def test_rate_limit_counts_malformed_frames_too():
    session = opened()
    for _ in range(5):
        session.receive(b"{", now=1.0, wall=1.0)
    session.receive(b'{"type":"ping","id":"p"}', now=1.0, wall=1.0)
    errors = [e.error for e in session.effects()]
    assert errors == ["INVALID_JSON"] * 5 + ["RATE_LIMITED"]


def test_subscribe_is_acked_only_after_the_interest_is_applied():
    session = opened()
    effects = subscribe(session, ["a", "b"])
    assert kinds(effects) == ["AddInterest"] and not session.accepting
    session.interest_applied(effects[0].ticket, [("a", b'{"r":1}')])
    sent = frames(session.effects())
    assert sent == [{"type": "ack", "id": "s1", "timestamp": 7, "data": {"type": "subscribe", "topics": ["a", "b"]}},
                    {"r": 1}]
    assert session.accepting and session.topics == {"a", "b"}
    # Already subscribed: nothing to add, acked at once.
    assert frames(subscribe(session, ["a"], id_="s2"))[0]["data"] == {"type": "subscribe", "topics": ["a"]}


def test_an_answer_for_another_ticket_changes_nothing():
    session = opened()
    effects = subscribe(session, ["a"])
    session.interest_applied(effects[0].ticket + 1000)
    session.history_read(effects[0].ticket, "a", History())
    session.handler_done(effects[0].ticket, None)
    assert session.effects() == [] and not session.accepting


def test_unsubscribe_drops_interest_and_acks():
    session = opened(["a", "b"])
    session.receive(b'{"type":"unsubscribe","id":"u","data":{"topics":["a","zzz"]}}', now=1.0, wall=1.0)
    effects = session.effects()
    assert effects[0] == DropInterest(("a",))
    assert frames(effects) == [{"type": "ack", "id": "u", "timestamp": 7,
                                "data": {"type": "unsubscribe", "topics": ["a", "zzz"]}}]
    assert session.topics == {"b"}


def test_recovery_order_ack_retained_missed_then_held_live_exactly_once():
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    assert kinds(effects) == ["Guard", "AddInterest"] and effects[0] == Guard("t", True)
    # Live deliveries while the interest and history are on their way are held.
    assert [session.admit(D(n)) for n in (4, 5)] == [False, False]
    session.interest_applied(effects[1].ticket, [("t", b'{"retained":true}')])
    effects = session.effects()
    assert effects == [ReadHistory(effects[0].ticket, "t", Position(2, "e"))]
    assert session.admit(D(6)) is False
    session.history_read(effects[0].ticket, "t", History(True, 5, "e", "", [D(3), D(4), D(5)]))
    sent = frames(session.effects())
    assert sent[0] == {"type": "ack", "id": "s1", "timestamp": 7, "data": {
        "type": "subscribe", "topics": ["t"], "recovery": {"t": {"recovered": True, "offset": 5, "epoch": "e"}}}}
    assert sent[1] == {"retained": True}
    assert sent[2] == {"type": "batch", "messages": [{"o": 3}, {"o": 4}, {"o": 5}, {"o": 6}]}
    assert len(sent) == 3
    # The floor: older deliveries still on their way are dropped; a newer one lifts the guard.
    assert session.admit(D(5)) is False and session.admit(D(6)) is False
    assert session.admit(D(7)) is True
    assert session.effects() == [Guard("t", False)]
    assert session.admit(D(8)) is True


def test_a_recovery_reads_history_once_the_push_service_has_applied_its_interest():
    # The wait for the push service to apply `t`'s interest timed out. Read now, history could miss
    # what is published before the push service applies it, which would not come live either.
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.interest_applied(effects[1].ticket, confirmed=False)
    assert session.effects() == []  # no read yet
    assert session.admit(D(9)) is False  # held, as during any recovery
    session.interest_confirmed(effects[1].ticket)
    [read] = session.effects()
    assert read == ReadHistory(effects[1].ticket, "t", Position(2, "e"))
    session.history_read(read.ticket, "t", History(True, 8, "e", "", [D(n) for n in range(3, 9)]))
    sent = frames(session.effects())
    assert sent[0]["data"]["recovery"] == {"t": {"recovered": True, "offset": 8, "epoch": "e"}}
    assert sent[1:] == [{"type": "batch", "messages": [{"o": n} for n in range(3, 10)]}]
    session.interest_overdue(effects[1].ticket)  # its timer, late: nothing
    assert session.effects() == []


def test_a_recovery_past_the_longer_wait_is_not_recovered_and_keeps_the_clients_position():
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.interest_applied(effects[1].ticket, confirmed=False)
    assert session.admit(D(9)) is False
    session.interest_overdue(effects[1].ticket)
    sent = frames(session.effects())
    assert sent[0]["data"]["recovery"] == {"t": {
        "recovered": False, "offset": 2, "epoch": "e", "reason": "the push service did not take the subscription in time"}}
    assert sent[1:] == [{"o": 9}]
    session.interest_confirmed(effects[1].ticket)  # later: nothing more
    assert session.effects() == []


def test_a_subscribe_for_a_topic_whose_earlier_interest_is_unconfirmed_waits_for_it_too():
    # The URL's `t` was applied unconfirmed; a subscribe{since} for it (the browser client sends one on
    # open) adds no interest of its own, yet its read must wait for the push service's all the same.
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["t"], {}, wall=0.0)
    session.effects()
    session.admitted()
    [add] = [e for e in session.effects() if isinstance(e, AddInterest)]
    session.interest_applied(add.ticket, confirmed=False)
    session.effects()
    effects = subscribe(session, ["t", "u"], {"t": {"offset": 2, "epoch": "e"}, "u": {"offset": 1, "epoch": "e"}})
    [add_u] = [e for e in effects if isinstance(e, AddInterest)]
    assert add_u.topics == ("u",)
    session.interest_applied(add_u.ticket)  # `u`'s own is confirmed: read at once; `t` waits
    assert [(e.topic, e.since) for e in session.effects()] == [("u", Position(1, "e"))]
    session.interest_confirmed(add.ticket)
    assert [(e.topic, e.since) for e in session.effects()] == [("t", Position(2, "e"))]


def test_a_recovery_of_a_topic_the_backend_just_subscribed_waits_for_that_interest():
    # The server API subscribed `t` (its change not yet applied); the client's subscribe{since} for it
    # adds no change of its own, and must not read before the push service has `t`.
    session = opened()
    session.server_subscribe(["t"])
    [add] = [e for e in session.effects() if isinstance(e, AddInterest)]
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    assert not [e for e in effects if isinstance(e, ReadHistory)]
    session.interest_applied(add.ticket)  # applied within the gate's bound
    assert [(e.topic, e.since) for e in session.effects() if isinstance(e, ReadHistory)] == [("t", Position(2, "e"))]


def test_a_recovery_waiting_for_its_interest_ends_with_the_connection():
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.interest_applied(effects[1].ticket, confirmed=False)
    session.closed_by_peer()
    session.effects()  # its guards lifted
    session.interest_confirmed(effects[1].ticket)
    assert session.effects() == []


def test_a_failed_history_read_keeps_the_clients_position_and_sets_a_floor():
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 9, "epoch": "e"}})
    session.interest_applied(effects[1].ticket)
    read = session.effects()[0]
    session.admit(D(9))
    session.admit(D(11))
    session.history_read(read.ticket, "t", History(False, 0, "", "history unavailable"))
    sent = frames(session.effects())
    assert sent[0]["data"]["recovery"] == {"t": {"recovered": False, "offset": 9, "epoch": "e",
                                                 "reason": "history unavailable"}}
    assert sent[1:] == [{"o": 11}]  # the held live one after the position; not 9 again
    assert session.admit(D(10)) is False and session.admit(D(12)) is True


def test_a_new_epoch_tells_the_new_position_and_floors_there():
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 9, "epoch": "old"}})
    session.interest_applied(effects[1].ticket)
    read = session.effects()[0]
    session.admit(D(3, epoch="new"))
    session.admit(D(4, epoch="new"))
    session.history_read(read.ticket, "t", History(False, 3, "new", "epoch changed"))
    sent = frames(session.effects())
    assert sent[0]["data"]["recovery"]["t"] == {"recovered": False, "offset": 3, "epoch": "new",
                                                "reason": "epoch changed"}
    assert sent[1:] == [{"o": 4}]


def test_url_positions_recover_before_connected_goes_live():
    """Topics in the URL with their positions: no live message can reach the client before the
    missed ones (a `subscribe{since}` after connecting would race live delivery)."""
    since = url_positions('{"t":{"offset":1,"epoch":"e"}}')
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["t"], since, wall=0.0)
    session.effects()
    session.admitted()
    effects = session.effects()
    assert kinds(effects) == ["Guard", "AddInterest"]
    assert session.admit(D(3)) is False
    session.interest_applied(effects[1].ticket)
    read = session.effects()[0]
    session.history_read(read.ticket, "t", History(True, 2, "e", "", [D(2)]))
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["connected", "batch"]
    assert sent[1]["messages"] == [{"o": 2}, {"o": 3}]


def test_url_positions_must_be_positions():
    assert url_positions(None) == {}
    with pytest.raises(ProtocolError):
        url_positions("{")
    with pytest.raises(ProtocolError):
        url_positions('{"t":{"offset":"x","epoch":"e"}}')


def test_unsubscribing_during_a_recovery_lifts_the_guard_and_sends_nothing_for_it():
    session = opened(["t"])
    effects = subscribe(session, ["t"], {"t": {"offset": 0, "epoch": "e"}})
    assert kinds(effects) == ["Guard", "ReadHistory"]
    session.closed_by_peer()
    assert session.effects() == [Guard("t", False)]


def test_handlers_run_one_at_a_time_and_answer_with_ack_or_error():
    session = opened()
    session.receive(b'{"type":"echo","id":"h1","data":{"x":1}}', now=1.0, wall=1.0)
    effects = session.effects()
    assert kinds(effects) == ["RunHandler"] and isinstance(effects[0], RunHandler)
    assert not session.accepting
    session.handler_done(effects[0].ticket, {"x": 1})
    assert frames(session.effects()) == [{"type": "ack", "id": "h1", "timestamp": 7, "data": {"type": "echo", "x": 1}}]
    session.receive(b'{"type":"echo","id":"h2"}', now=1.0, wall=1.0)
    ticket = session.effects()[0].ticket
    session.handler_failed(ticket, ErrorCode.FORBIDDEN, "no")
    effects = session.effects()
    assert effects[0].error == "FORBIDDEN" and frames(effects)[0]["id"] == "h2"


def test_heartbeat_timeout_and_token_expiry_close():
    session = opened()
    session.tick(30.0, 0.0)
    assert session.effects() == []
    session.tick(31.5, 0.0)
    assert session.effects() == [Close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")]
    session.tick(99.0, 0.0)
    assert session.effects() == []  # closed once

    session = Session(rules(), "c1", now=0.0)
    session.open("alice", [], {}, wall=0.0)
    session.admitted()
    session.interest_applied(0)
    session.effects()
    session.tick(1.0, 989.0)
    assert session.effects() == []
    session.tick(1.0, 999.0)  # within the notice (10 s): told once (tests/ws_edge/test_refresh.py)
    assert [f["type"] for f in frames(session.effects())] == ["refresh_required"]
    session.tick(1.0, 999.5)
    assert session.effects() == []
    session.tick(1.0, 1000.0)
    assert session.effects() == [Close(CloseCode.TOKEN_EXPIRED, "token expired")]


def test_frames_before_open_or_after_close_are_ignored():
    session = Session(rules(), "c1", now=0.0)
    session.open(None, [], {}, wall=0.0)
    session.effects()
    session.receive(b'{"type":"ping"}', now=1.0, wall=1.0)
    assert session.effects() == []
    session.refused(CloseCode.TOO_MANY_CONNECTIONS, "x")
    session.effects()
    session.receive(b'{"type":"ping"}', now=1.0, wall=1.0)
    session.admitted()
    assert session.effects() == []


def test_a_subscribe_after_a_url_recovery_is_answered_with_it_not_recovered_twice():
    """The browser client gives its positions in the URL and again in its first subscribe: the
    second must not send the missed messages again."""
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["t"], {"t": Position(1, "e")}, wall=0.0)
    session.effects()
    session.admitted()
    add = session.effects()[1]
    session.interest_applied(add.ticket)
    session.history_read(session.effects()[0].ticket, "t", History(True, 2, "e", "", [D(2)]))
    sent = frames(session.effects())
    report = {"recovered": True, "offset": 2, "epoch": "e"}
    assert sent[0]["data"]["recovery"] == {"t": report}
    effects = subscribe(session, ["t", "u"], {"t": {"offset": 1, "epoch": "e"}})
    assert kinds(effects) == ["AddInterest"]  # only `u`; no guard and no history read for `t`
    session.interest_applied(effects[0].ticket)
    assert frames(session.effects()) == [{"type": "ack", "id": "s1", "timestamp": 7, "data": {
        "type": "subscribe", "topics": ["t", "u"], "recovery": {"t": report}}}]
    # Asked again later, it is a recovery like any other.
    assert kinds(subscribe(session, ["t"], {"t": {"offset": 1, "epoch": "e"}}, id_="s2")) == ["ReadHistory"]  # still guarded (floor)


def test_each_position_of_a_subscribe_costs_one_message_of_the_rate():
    """A subscribe with positions makes the push service read history once per topic: charged to the
    client's rate, so one client cannot ask for thousands of reads a second (issue 16.8)."""
    session = opened(max_topics=10)  # rate 5/s, burst 5
    since = {t: {"offset": 1, "epoch": "e"} for t in ("a", "b", "c", "d")}
    effects = subscribe(session, list(since), since)  # 1 + 3 tokens of 5
    assert kinds(effects) == ["Guard", "Guard", "Guard", "Guard", "AddInterest"]
    session.interest_applied(effects[-1].ticket)
    for read in session.effects():
        session.history_read(read.ticket, read.topic, History(True, 1, "e"))
    session.effects()
    refused = subscribe(session, ["e", "f"], {"e": {"offset": 1, "epoch": "e"}, "f": {"offset": 1, "epoch": "e"}},
                        id_="s2")  # the frame takes the last token; its second position finds none
    assert [e.error for e in refused] == ["RATE_LIMITED"]
    assert frames(refused)[0]["id"] == "s2" and session.topics == {"a", "b", "c", "d"}


_TOPICS = st.sampled_from(["a", "b", "user:x", "secret:1", "bad topic", "", "t" * 200])
_POSITION = st.fixed_dictionaries({"offset": st.one_of(st.integers(-2, 5), st.text(max_size=2)),
                                   "epoch": st.one_of(st.just("e"), st.integers())})
_FRAME = st.one_of(
    st.builds(lambda t, i, topics, since: {"type": t, "id": i, "data": {"topics": topics, "since": since}},
              st.sampled_from(["subscribe", "unsubscribe"]), st.one_of(st.none(), st.text(max_size=3), st.integers()),
              st.one_of(st.lists(_TOPICS, max_size=4), _TOPICS, st.none()),
              st.one_of(st.none(), st.dictionaries(_TOPICS, _POSITION, max_size=3), st.text(max_size=2))),
    st.builds(lambda t, i: {"type": t, "id": i}, st.sampled_from(["ping", "echo", "auth", "nope", ""]),
              st.one_of(st.none(), st.text(max_size=3), st.booleans())),
    st.just("{"), st.just("[]"), st.just('"x"'), st.binary(max_size=8),
)


def envelope(topic: str, offset: int) -> D:
    """A delivery whose frame is a whole published envelope, as the push service makes it."""
    frame = orjson.dumps({"type": "t", "id": f"m{offset}", "timestamp": 1, "topic": topic, "offset": offset,
                          "epoch": "e"})
    return D(offset, topic=topic, frame=frame)


@settings(max_examples=300, deadline=None, derandomize=True)  # the same examples on every run (CI)
@given(st.lists(st.tuples(_FRAME, st.sampled_from(["answer", "fail", "late", "unconfirmed", "overdue"])),
                max_size=12))
def test_any_frames_get_documented_answers_and_never_break_the_session(steps):  # type: ignore[no-untyped-def]
    """Whatever a client sends and however the backends answer: the session never raises, never
    closes, and every frame it sends is one the protocol document describes (docs/asyncapi.yaml),
    an error echoing the offending message's id when it had a usable one."""
    session = opened(max_topics=3, rate_limit=1000, rate_burst=1000)
    for frame, outcome in steps:
        raw = frame if isinstance(frame, (str, bytes)) else json.dumps(frame)
        session.receive(raw, now=1.0, wall=1.0)
        pending = session.effects()
        while pending:
            effect = pending.pop(0)
            if isinstance(effect, Send):
                sent = orjson.loads(effect.frame)
                check_server_frame(sent)
                if effect.error and isinstance(frame, dict) and isinstance(frame.get("id"), str) and frame["id"]:
                    assert sent["id"] == frame["id"]
            elif isinstance(effect, AddInterest):
                if outcome == "late":  # not applied at once: live messages arrive before the answer
                    session.interest_pending(effect.ticket)
                    for topic in effect.topics:
                        session.admit(envelope(topic, 4))
                retained = [(t, envelope(t, 1).frame) for t in effect.topics] if outcome == "late" else []
                if outcome in ("unconfirmed", "overdue"):  # the wait timed out; the push service is late
                    session.interest_applied(effect.ticket, retained, confirmed=False)
                    pending.extend(session.effects())
                    for topic in effect.topics:
                        session.admit(envelope(topic, 4))
                    (session.interest_confirmed if outcome == "unconfirmed" else session.interest_overdue)(effect.ticket)
                else:
                    session.interest_applied(effect.ticket, retained)
            elif isinstance(effect, ReadHistory):
                answer = History(True, 3, "e", "", [envelope(effect.topic, 2), envelope(effect.topic, 3)]) \
                    if outcome in ("answer", "unconfirmed", "overdue") else History(
                    False, 0, "" if outcome == "fail" else "new", "history unavailable")
                session.history_read(effect.ticket, effect.topic, answer)
            elif isinstance(effect, RunHandler):
                if outcome == "answer":
                    session.handler_done(effect.ticket, None)
                else:
                    session.handler_failed(effect.ticket, ErrorCode.UNAVAILABLE, "down")
            else:
                assert isinstance(effect, (Guard, DropInterest)), effect
            pending.extend(session.effects())
        assert not session.closed and session.accepting


def test_answers_after_a_close_change_nothing():
    """A session closed (token expired) while its URL recovery is still reading history stays closed:
    the late answer neither opens it nor sends `connected`."""
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open("alice", ["t"], {"t": Position(1, "e")}, wall=0.0)
    session.effects()
    session.admitted()
    add = session.effects()[1]
    session.interest_applied(add.ticket)
    read = session.effects()[0]
    session.tick(1.0, 1000.0)
    assert session.effects() == [Guard("t", False), Close(CloseCode.TOKEN_EXPIRED, "token expired")]
    session.history_read(read.ticket, "t", History(True, 2, "e", "", [D(2)]))
    session.interest_applied(add.ticket)
    assert session.effects() == [] and session.closed and not session.accepting


def test_url_positions_are_charged_to_the_rate_too():
    session = Session(rules(max_topics=10), "c1", now=0.0, clock_ms=lambda: 7)  # burst 5
    since = {t: Position(1, "e") for t in ("a", "b", "c", "d", "e", "f", "g")}
    session.open(None, list(since), since, wall=0.0)
    session.effects()
    session.admitted()
    effects = session.effects()
    assert kinds(effects) == ["AddInterest"]  # seven reads cost more than the burst of 5: none asked
    session.interest_applied(effects[0].ticket)
    sent = frames(session.effects())
    assert sent[0]["type"] == "connected" and "recovery" not in sent[0]["data"]
    assert sent[1]["error"] == {"code": "INVALID_MESSAGE",
                                "message": "?since= ignored: 7 positions are more than the rate allows at once"}


def test_an_http_transport_session_names_itself_in_connected_and_heartbeats_it_took_count_as_activity():
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7, session_id="~0123456789ab." + "1" * 32)
    session.open(None, [], {}, wall=0.0)
    session.admitted()
    welcome = frames(session.effects())[0]
    assert welcome["data"] == {"client_id": "c1", "topics": [], "user": None, "session": "~0123456789ab." + "1" * 32}
    session.peer_alive(25.0)  # the stream's heartbeat was taken: the client is there, though silent
    session.tick(50.0, 0.0)
    assert session.effects() == []
    session.tick(55.5, 0.0)
    assert session.effects() == [Close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")]


def test_live_deliveries_while_the_interest_is_pending_come_after_the_ack_and_the_retained_state():
    """A subscribe waiting for the push service (another topic is new to the edge) must not let a live
    message of a topic with known retained state overtake that older state."""
    session = opened()
    effects = subscribe(session, ["b", "a"])
    assert kinds(effects) == ["AddInterest"]
    session.interest_pending(effects[0].ticket)  # the driver: not applied yet, deliveries may come
    assert session.effects() == [Guard("b", True), Guard("a", True)]
    assert [session.admit(D(n, topic="b")) for n in (8, 9)] == [False, False]  # newer than the retained 7
    session.interest_applied(effects[0].ticket, [("a", b'{"retained":7}')])
    effects = session.effects()
    assert frames(effects) == [
        {"type": "ack", "id": "s1", "timestamp": 7, "data": {"type": "subscribe", "topics": ["b", "a"]}},
        {"retained": 7},
        {"type": "batch", "messages": [{"o": 8}, {"o": 9}]},
    ]
    assert [e for e in effects if isinstance(e, Guard)] == [Guard("b", False), Guard("a", False)]
    assert session.admit(D(10, topic="b")) is True


def test_the_connected_frame_and_retained_state_precede_live_messages_held_meanwhile():
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["a"], {}, wall=0.0)
    session.effects()
    session.admitted()
    add = session.effects()[0]
    session.interest_pending(add.ticket)
    assert session.effects() == [Guard("a", True)]
    assert session.admit(D(3, topic="a")) is False
    session.interest_applied(add.ticket, [("a", b'{"retained":2}')])
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["connected", None, None]
    assert sent[1:] == [{"retained": 2}, {"o": 3}]


def test_retained_state_is_not_overtaken_while_history_is_read_for_another_topic():
    session = opened()
    effects = subscribe(session, ["r", "t"], {"t": {"offset": 2, "epoch": "e"}})
    assert kinds(effects) == ["Guard", "AddInterest"]
    session.interest_applied(effects[1].ticket, [("r", b'{"retained":"r"}')])  # applied at once, history to read
    effects = session.effects()
    assert kinds(effects) == ["Guard", "ReadHistory"] and effects[0] == Guard("r", True)
    assert session.admit(D(5, topic="r")) is False
    session.history_read(effects[1].ticket, "t", History(True, 2, "e", "", []))
    sent = frames(session.effects())
    assert sent[0]["type"] == "ack" and sent[1:] == [{"retained": "r"}, {"o": 5}]


def test_a_topic_unsubscribed_while_held_releases_nothing():
    session = opened()
    effects = subscribe(session, ["a"])
    session.interest_pending(effects[0].ticket)
    session.effects()
    session.admit(D(4, topic="a"))
    session.closed_by_peer()
    assert session.effects() == [Guard("a", False)]
    session.interest_applied(effects[0].ticket, [])
    assert frames(session.effects()) == []


NOTICE = b'{"type":"recovery","data":{"topic":"t","recovered":false}}'


def test_the_edges_gap_notice_follows_a_subscribes_answer_in_order_once_its_read_is_out():
    """The edge could not fill a gap of `t` after this subscribe's history read went out: that read may end
    before the gap, so the client is told, after the ack and the missed messages, in the order it came."""
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.interest_applied(effects[1].ticket)
    [read] = session.effects()
    assert session.admit(D(6)) is False
    assert session.admit(GapNotice("t", NOTICE)) is False  # held behind the answer, not sent before it
    assert session.admit(D(9)) is False  # after the gap: the edge's stream goes on unchecked
    session.history_read(read.ticket, "t", History(True, 5, "e", "", [D(3), D(4), D(5)]))
    sent = frames(session.effects())
    assert sent[1:] == [{"type": "batch", "messages": [{"o": 3}, {"o": 4}, {"o": 5}, {"o": 6}]},
                        orjson.loads(NOTICE), {"o": 9}]
    assert sent[0]["type"] == "ack"
    # Past the answer, a notice goes at once and keeps the guard: it is not a newer message.
    assert session.admit(GapNotice("t", NOTICE)) is True
    assert session.effects() == []
    assert session.admit(D(8)) is False and session.admit(D(10)) is True


def test_the_edges_gap_notice_is_dropped_while_the_subscribes_own_read_is_still_to_come():
    """That read, from the client's position to now, covers the gap the edge could not fill."""
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    assert session.admit(GapNotice("t", NOTICE)) is False  # the interest is not applied yet
    session.interest_applied(effects[1].ticket)
    [read] = session.effects()
    session.history_read(read.ticket, "t", History(True, 6, "e", "", [D(n) for n in range(3, 7)]))
    sent = frames(session.effects())
    assert sent[1:] == [{"type": "batch", "messages": [{"o": n} for n in range(3, 7)]}]
    assert sent[0]["data"]["recovery"] == {"t": {"recovered": True, "offset": 6, "epoch": "e"}}


def test_a_gap_notice_dropped_while_the_read_waits_for_its_interest_is_covered_by_the_answer_not_recovered():
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.interest_applied(effects[1].ticket, confirmed=False)  # the read waits for the push service
    assert session.admit(GapNotice("t", NOTICE)) is False
    session.interest_overdue(effects[1].ticket)  # no read at all: the answer says so, and keeps the position
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["ack"]
    assert sent[0]["data"]["recovery"]["t"] == {"recovered": False, "offset": 2, "epoch": "e",
                                                "reason": "the push service did not take the subscription in time"}


def test_the_edges_gap_notice_for_a_topic_held_for_a_pending_interest_follows_the_ack():
    session = opened()
    effects = subscribe(session, ["t"])
    session.interest_pending(effects[0].ticket)
    session.effects()
    assert [session.admit(d) for d in (D(3), GapNotice("t", NOTICE), D(7))] == [False, False, False]
    session.interest_applied(effects[0].ticket)
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["ack", None, "recovery", None]
    assert sent[1] == {"o": 3} and sent[3] == {"o": 7}


def test_a_gap_notice_on_the_backends_hold_is_kept_though_a_subscribe_asking_its_hook_names_the_topic():
    """The client's subscribe{since} of `t` waits for its Subscribe hook; the backend subscribes `t`
    meanwhile. The notice lands in the backend's hold, which no read of the client's covers: it is kept,
    and follows the backend's ack, even when the hook then refuses the client's subscribe."""
    session = opened(hooks=HookRules(subscribe=lambda topic: True))
    [ask] = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.server_subscribe(["t"])
    [add] = session.effects()
    session.interest_pending(add.ticket)
    session.effects()
    assert session.admit(GapNotice("t", NOTICE)) is False
    session.hook_answered(ask.ticket, HookAnswer(Outcome.REFUSE, ErrorCode.FORBIDDEN, "no"), wall=1.0)
    assert [f.get("type") for f in frames(session.effects())] == ["error"]
    session.interest_applied(add.ticket)
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["ack", "recovery"] and sent[0]["data"]["server"] is True


def test_a_recovery_whose_topic_the_backend_unsubscribed_and_subscribed_again_meanwhile_is_not_recovered():
    """Its guard went with the unsubscribe: what its read gave would not reach the client, and the backend's
    new subscription is live only from its own ack. The client keeps its position, and is told to re-sync."""
    session = opened()
    effects = subscribe(session, ["t"], {"t": {"offset": 2, "epoch": "e"}})
    session.interest_applied(effects[1].ticket)
    [read] = session.effects()
    session.server_unsubscribe(["t"])
    session.server_subscribe(["t"])
    [add] = [e for e in session.effects() if isinstance(e, AddInterest)]
    session.interest_pending(add.ticket)
    session.effects()
    assert session.admit(D(6)) is False
    session.interest_applied(add.ticket)
    assert [f.get("type") for f in frames(session.effects())] == ["ack", None]  # the backend's, then 6
    session.history_read(read.ticket, "t", History(True, 5, "e", "", [D(3), D(4), D(5)]))
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["ack"]
    assert sent[0]["data"]["recovery"] == {"t": {"recovered": False, "offset": 2, "epoch": "e",
                                                 "reason": "unsubscribed while it recovered"}}


def test_a_subscribes_other_new_topic_waits_for_the_ack_while_a_recovery_reads_its_history():
    """`u` is new to the connection and routed here already: its interest is applied at once (no pending
    wait), and while `t`'s history is read a message and a gap notice of `u` come. Both follow the ack."""
    session = opened()
    effects = subscribe(session, ["t", "u"], {"t": {"offset": 2, "epoch": "e"}})
    [add] = [e for e in effects if isinstance(e, AddInterest)]
    session.interest_applied(add.ticket)
    effects = session.effects()
    assert [type(e).__name__ for e in effects] == ["Guard", "ReadHistory"] and effects[0] == Guard("u", True)
    notice = GapNotice("u", NOTICE.replace(b'"t"', b'"u"'))
    assert [session.admit(D(4, topic="u")), session.admit(notice)] == [False, False]
    session.history_read(effects[1].ticket, "t", History(True, 2, "e", "", []))
    sent = frames(session.effects())
    assert [f.get("type") for f in sent] == ["ack", None, "recovery"]
    assert sent[1] == {"o": 4} and sent[2]["data"]["topic"] == "u"


def test_a_server_subscribes_ack_leaves_out_a_topic_dropped_before_its_interest_was_applied():
    """The backend subscribes `a` and `b`, then unsubscribes `a` before the push service applied the
    interest: the client is told of the unsubscribe at once; the ack after it names `b` alone, and
    only `b`'s retained state follows."""
    session = opened()
    session.server_subscribe(["a", "b"])
    [add] = session.effects()
    session.server_unsubscribe(["a"])
    [told] = frames(session.effects())
    assert told["data"] == {"type": "unsubscribe", "topics": ["a"], "server": True}
    session.interest_applied(add.ticket, [("a", b'{"retained":"a"}'), ("b", b'{"retained":"b"}')])
    ack, retained = frames(session.effects())
    assert ack["data"] == {"type": "subscribe", "topics": ["b"], "server": True}
    assert retained == {"retained": "b"}
    assert session.topics == {"b"}


def test_a_subscribes_ack_and_retained_state_leave_out_a_topic_the_backend_dropped_meanwhile():
    session = opened()
    [add] = [e for e in subscribe(session, ["a", "b"]) if isinstance(e, AddInterest)]
    session.server_unsubscribe(["a"])
    [told] = frames(session.effects())
    assert told["data"] == {"type": "unsubscribe", "topics": ["a"], "server": True}
    session.interest_applied(add.ticket, [("a", b'{"retained":"a"}'), ("b", b'{"retained":"b"}')])
    assert frames(session.effects()) == [
        {"type": "ack", "id": "s1", "timestamp": 7, "data": {"type": "subscribe", "topics": ["b"]}},
        {"retained": "b"}]


def test_a_url_recovery_is_not_repeated_for_a_topic_dropped_and_subscribed_again_since():
    """The URL recovered `t`; the backend then unsubscribed and subscribed it again. A subscribe of `t`
    with a position is a recovery of its own (a history read), not the URL's answer told again: what
    was published while `t` was unsubscribed would be in neither."""
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(None, ["t"], {"t": Position(1, "e")}, wall=0.0)
    session.effects()
    session.admitted()
    session.interest_applied(session.effects()[1].ticket)
    session.history_read(session.effects()[0].ticket, "t", History(True, 2, "e", "", [D(2)]))
    session.effects()
    session.server_unsubscribe(["t"])
    session.server_subscribe(["t"])
    [add] = [e for e in session.effects() if isinstance(e, AddInterest)]
    session.interest_applied(add.ticket)
    session.effects()
    effects = subscribe(session, ["t"], {"t": {"offset": 9, "epoch": "e"}})
    [read] = [e for e in effects if isinstance(e, ReadHistory)]
    assert read.topic == "t" and read.since == Position(9, "e")
    session.history_read(read.ticket, "t", History(True, 11, "e", "", [D(10), D(11)]))
    sent = frames(session.effects())
    assert sent[0]["data"]["recovery"] == {"t": {"recovered": True, "offset": 11, "epoch": "e"}}
    assert sent[1:] == [{"type": "batch", "messages": [{"o": 10}, {"o": 11}]}]


def test_a_recoverys_missed_messages_go_in_frames_of_the_edges_batch_cap():
    session = opened(batch_max_messages=3)
    [add] = [e for e in subscribe(session, ["t"], {"t": {"offset": 0, "epoch": "e"}}) if isinstance(e, AddInterest)]
    session.interest_applied(add.ticket)
    [read] = [e for e in session.effects() if isinstance(e, ReadHistory)]
    session.history_read(read.ticket, "t", History(True, 5, "e", "", [D(n) for n in range(1, 6)]))
    ack, *batches = frames(session.effects())
    assert ack["type"] == "ack" and batches == [
        {"type": "batch", "messages": [{"o": 1}, {"o": 2}, {"o": 3}]},
        {"type": "batch", "messages": [{"o": 4}, {"o": 5}]}]
