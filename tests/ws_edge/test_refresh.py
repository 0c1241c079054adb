"""In-band refresh and subscription tokens in the session core: a clock passed in, no event loop."""

from __future__ import annotations

import orjson

from tests.support.asyncapi import check_server_frame
from tests.support.deliveries import History
from ws_edge.core.auth import AuthError, Principal
from ws_edge.core.codes import CloseCode
from ws_edge.core.deadlines import Deadlines
from ws_edge.core.session import AddInterest, Close, DropInterest, Send, Session, SessionRules, SetPrincipal

# Tokens of these tests: "<user>@<exp>" (and "<user>@<exp>#<topic>" for a subscription token).


def verify(token, wall):  # type: ignore[no-untyped-def]
    if not isinstance(token, str) or "@" not in token or "#" in token:
        raise AuthError(CloseCode.UNAUTHORIZED, "bad token")
    user, exp = token.split("@")
    if float(exp) <= wall:
        raise AuthError(CloseCode.TOKEN_EXPIRED, "token expired")
    return Principal(user, expires_at=float(exp), admin=user == "root")


def verify_subscription(token, topic, principal, wall):  # type: ignore[no-untyped-def]
    if not isinstance(token, str) or "#" not in token:
        raise AuthError(CloseCode.UNAUTHORIZED, "bad token")
    head, token_topic = token.split("#")
    user, exp = head.split("@")
    if token_topic != topic or user != (principal.user or ""):
        raise AuthError(CloseCode.UNAUTHORIZED, "not for this topic and user")
    if float(exp) <= wall:
        raise AuthError(CloseCode.TOKEN_EXPIRED, "token expired")
    return float(exp)


def rules(**overrides):  # type: ignore[no-untyped-def]
    base = {"verify": verify, "allow_anonymous": True, "may_subscribe": lambda p, t: True,
            "handles": lambda type_: False, "refresh_notice": 10.0, "rate_limit": 1000, "rate_burst": 1000,
            "client_timeout": 1e9, "needs_subscription_token": lambda t: t.startswith("private:"),
            "verify_subscription": verify_subscription}
    base.update(overrides)
    return SessionRules(**base)


def frames(effects):  # type: ignore[no-untyped-def]
    out = [orjson.loads(e.frame) for e in effects if isinstance(e, Send)]
    for frame in out:
        check_server_frame(frame)
    return out


def connected(token="alice@100", **kw):  # type: ignore[no-untyped-def]
    session = Session(rules(**kw), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(token, [], {}, wall=0.0)
    session.effects()
    session.admitted()
    welcome = frames(session.effects())
    return session, welcome


def send(session, frame, wall):  # type: ignore[no-untyped-def]
    session.receive(orjson.dumps(frame), now=wall, wall=wall)
    return session.effects()


def test_connected_says_when_the_token_expires():
    _, welcome = connected()
    assert welcome == [{"type": "connected", "id": welcome[0]["id"], "timestamp": 7,
                        "data": {"client_id": "c1", "topics": [], "user": "alice", "expires_at": 100}}]


def test_refresh_required_comes_once_at_the_notice_and_the_wakeup_says_when():
    session, _ = connected()
    assert session.next_wakeup() == 90.0
    session.tick(0.0, 89.9)
    assert session.effects() == []
    session.tick(0.0, 90.0)
    [frame] = frames(session.effects())
    assert frame["type"] == "refresh_required" and frame["data"] == {"expires_at": 100}
    assert session.next_wakeup() == 100.0
    session.tick(0.0, 95.0)
    assert session.effects() == []  # once per token


def test_a_refresh_extends_the_session_without_a_reconnect_many_times():
    """A 30 s token kept alive for 3 minutes (the issue's case), refreshed 5 s before each expiry."""
    session, _ = connected("alice@30")
    exp = 30
    for _ in range(7):
        session.tick(0.0, exp - 10)
        assert [f["type"] for f in frames(session.effects())] == ["refresh_required"]
        new_exp = exp - 5 + 30
        effects = send(session, {"type": "refresh", "id": f"r{exp}", "data": {"token": f"alice@{new_exp}"}}, exp - 5)
        assert effects[0] == SetPrincipal(Principal("alice", expires_at=float(new_exp)))
        assert frames(effects) == [{"type": "ack", "id": f"r{exp}", "timestamp": 7,
                                    "data": {"type": "refresh", "expires_at": new_exp}}]
        session.tick(0.0, exp)  # the old exp passes: nothing
        assert session.effects() == []
        exp = new_exp
    assert exp >= 180 and not session.closed


def test_a_session_that_stops_refreshing_is_closed_4001_at_exp():
    session, _ = connected("alice@30")
    session.tick(0.0, 20.0)
    session.effects()
    session.tick(0.0, 29.9)
    assert session.effects() == []
    session.tick(0.0, 30.0)
    assert session.effects() == [Close(CloseCode.TOKEN_EXPIRED, "token expired")]


def test_a_bad_refresh_is_an_error_frame_and_the_old_token_still_runs_out():
    session, _ = connected("alice@30")
    [error] = frames(send(session, {"type": "refresh", "id": "r1", "data": {"token": "garbage"}}, 21.0))
    assert error["error"] == {"code": "UNAUTHORIZED", "message": "refresh refused: bad token"}
    [error] = frames(send(session, {"type": "refresh", "id": "r2", "data": {"token": "alice@21"}}, 22.0))
    assert error["error"]["code"] == "TOKEN_EXPIRED"
    session.tick(0.0, 30.0)
    assert session.effects()[-1] == Close(CloseCode.TOKEN_EXPIRED, "token expired")


def test_a_refresh_with_another_users_token_closes_4003():
    session, _ = connected("alice@30")
    assert send(session, {"type": "refresh", "id": "r1", "data": {"token": "mallory@90"}}, 21.0) == [
        Close(CloseCode.UNAUTHORIZED, "refresh: the token is for another user")]


def test_an_anonymous_connection_has_nothing_to_refresh():
    session, welcome = connected(None)
    assert "expires_at" not in welcome[0]["data"] and session.next_wakeup() is None
    [error] = frames(send(session, {"type": "refresh", "id": "r1", "data": {"token": "alice@90"}}, 1.0))
    assert error["error"]["code"] == "FORBIDDEN"


def test_a_refreshed_token_inside_the_notice_is_not_noticed_again_at_once():
    session, _ = connected("alice@30")
    session.tick(0.0, 20.0)
    session.effects()
    send(session, {"type": "refresh", "id": "r1", "data": {"token": "alice@35"}}, 26.0)  # 9 s left < notice
    session.tick(0.0, 27.0)
    assert session.effects() == []  # no storm of refresh_required
    session.tick(0.0, 35.0)
    assert session.effects() == [Close(CloseCode.TOKEN_EXPIRED, "token expired")]


def subscribe(session, topics, tokens=None, wall=1.0, id_="s1"):  # type: ignore[no-untyped-def]
    data = {"topics": topics} | ({"tokens": tokens} if tokens is not None else {})
    effects = send(session, {"type": "subscribe", "id": id_, "data": data}, wall)
    add = [e for e in effects if isinstance(e, AddInterest)]
    if add:
        session.interest_applied(add[0].ticket)
        effects = effects + session.effects()
    return effects


def test_a_protected_topic_needs_its_subscription_token():
    session, _ = connected("alice@1000")
    [error] = frames(subscribe(session, ["private:a", "public"]))
    assert error["id"] == "s1" and error["error"] == {
        "code": "FORBIDDEN", "message": "private:a needs a subscription token in `data.tokens`"}
    [error] = frames(subscribe(session, ["private:a"], {"private:a": "alice@100#private:b"}))
    assert error["error"]["code"] == "FORBIDDEN"  # a token for another topic
    [error] = frames(subscribe(session, ["private:a"], {"private:a": "bob@100#private:a"}))
    assert error["error"]["code"] == "FORBIDDEN"  # for another user
    [ack] = frames(subscribe(session, ["private:a", "public"], {"private:a": "alice@100#private:a"}))
    assert ack["data"] == {"type": "subscribe", "topics": ["private:a", "public"]}
    assert session.topics == {"private:a", "public"}


def test_a_subscription_token_is_noticed_refreshed_and_on_expiry_unsubscribes_only_its_topic():
    session, _ = connected("alice@1000")
    subscribe(session, ["private:a", "private:b", "public"],
              {"private:a": "alice@100#private:a", "private:b": "alice@100#private:b"})
    session.tick(0.0, 90.0)
    notices = frames(session.effects())
    assert sorted(f["data"]["topic"] for f in notices) == ["private:a", "private:b"]
    assert {f["type"] for f in notices} == {"refresh_required"}
    [ack] = frames(send(session, {"type": "refresh", "id": "r", "data": {"topic": "private:a",
                                                                       "token": "alice@200#private:a"}}, 95.0))
    assert ack["data"] == {"type": "refresh", "topic": "private:a", "expires_at": 200}
    session.tick(0.0, 100.0)
    effects = session.effects()
    assert effects[-1] == DropInterest(("private:b",))
    [gone] = frames(effects)
    assert gone["type"] == "unsubscribed" and gone["data"] == {
        "topic": "private:b", "code": "TOKEN_EXPIRED", "reason": "the subscription token expired"}
    assert session.topics == {"private:a", "public"} and not session.closed


def test_a_topic_the_server_unsubscribed_keeps_no_subscription_token_deadline():
    """The backend unsubscribes a protected topic, then subscribes it again (no token asked): the old
    token's notice and expiry must not come for it."""
    session, _ = connected("alice@1000")
    subscribe(session, ["private:a"], {"private:a": "alice@100#private:a"})
    session.server_unsubscribe(["private:a"])
    session.effects()
    session.server_subscribe(["private:a"])
    [add] = session.effects()
    session.interest_applied(add.ticket)
    session.effects()
    session.tick(0.0, 90.0)
    assert session.effects() == []  # no refresh_required for a token the topic no longer has
    session.tick(0.0, 100.0)
    assert session.effects() == [] and session.topics == {"private:a"}


def test_a_topic_the_server_unsubscribes_while_its_subscribe_is_answered_is_not_acked_and_keeps_no_deadline():
    """The backend unsubscribes `private:a` while the client's subscribe of it waits for its interest.
    The client is told so at once; the subscribe's ack, after it, lists only what is still subscribed,
    and the subscribe's token sets no deadline for a topic the connection no longer has."""
    session, _ = connected("alice@1000")
    effects = send(session, {"type": "subscribe", "id": "s1", "data": {
        "topics": ["private:a", "public"], "tokens": {"private:a": "alice@100#private:a"}}}, 1.0)
    [add] = [e for e in effects if isinstance(e, AddInterest)]
    session.server_unsubscribe(["private:a"])
    [told] = frames(session.effects())
    assert told["data"] == {"type": "unsubscribe", "topics": ["private:a"], "server": True}
    session.interest_applied(add.ticket)
    [ack] = frames(session.effects())
    assert ack["id"] == "s1" and ack["data"] == {"type": "subscribe", "topics": ["public"]}
    assert session.topics == {"public"}
    session.tick(0.0, 90.0)
    assert session.effects() == []  # no refresh_required for a topic the connection does not have
    [error] = frames(send(session, {"type": "refresh", "id": "r", "data": {"topic": "private:a",
                                                                          "token": "alice@200#private:a"}}, 95.0))
    assert error["error"]["code"] == "INVALID_MESSAGE"
    session.tick(0.0, 100.0)
    assert session.effects() == [] and session.topics == {"public"}


def test_a_topic_whose_old_token_expires_while_a_new_subscribe_of_it_is_answered_is_not_acked():
    """The old subscription token of `private:a` runs out while a subscribe of it with a new one waits
    for its history: the topic is unsubscribed (`unsubscribed`), and the ack after it does not say it is
    subscribed, nor does the new token's deadline come back for it."""
    session, _ = connected("alice@1000")
    subscribe(session, ["private:a"], {"private:a": "alice@100#private:a"})
    effects = send(session, {"type": "subscribe", "id": "s2", "data": {
        "topics": ["private:a"], "tokens": {"private:a": "alice@300#private:a"},
        "since": {"private:a": {"offset": 1, "epoch": "e"}}}}, 99.0)
    [read] = [e for e in effects if type(e).__name__ == "ReadHistory"]
    session.tick(0.0, 100.0)
    [gone] = frames(session.effects())
    assert gone["type"] == "unsubscribed" and gone["data"]["topic"] == "private:a"
    session.history_read(read.ticket, "private:a", History())
    [ack] = frames(session.effects())
    assert ack["id"] == "s2" and ack["data"]["topics"] == []
    session.tick(0.0, 290.0)
    assert session.effects() == [] and session.topics == set()


def test_protected_topics_in_the_url_are_rejected_after_connected():
    session = Session(rules(), "c1", now=0.0, clock_ms=lambda: 7)
    session.open("alice@100", ["private:a", "public"], {}, wall=0.0)
    session.effects()
    session.admitted()
    welcome, error = frames(session.effects())
    assert welcome["data"]["topics"] == []
    assert error["error"]["code"] == "FORBIDDEN" and "subscription token" in error["error"]["message"]


def test_deadlines_order():
    deadlines = Deadlines(notice=5)
    deadlines.set(None, 100.0)
    deadlines.set("t", 50.0, wall=46.0)  # given inside its notice: not noticed again
    assert deadlines.next_due() == 50.0
    assert deadlines.due(49.0) == ([], [])
    assert deadlines.due(50.0) == ([], ["t"])
    assert deadlines.due(95.0) == ([None], [])
    assert deadlines.due(100.0) == ([], [None]) and deadlines.next_due() is None
