"""Backend hooks as the session core decides them: which call goes out when, and what each answer
(allow, refuse, unavailable) does. The gRPC side is tests/integration/test_hooks.py."""

from __future__ import annotations

from dataclasses import replace

import orjson

from tests.support.asyncapi import check_server_frame
from ws_edge.core.auth import AuthError, Principal
from ws_edge.core.codes import CloseCode, ErrorCode
from ws_edge.core.hooks import Hook, HookAnswer, HookCall, HookRules, Outcome, unavailable
from ws_edge.core.session import (
    AddInterest,
    Admit,
    CallHook,
    Close,
    PublishMessage,
    Send,
    Session,
    SessionRules,
    SetPrincipal,
)

ALLOW = HookAnswer(Outcome.ALLOW)


def verify(token, wall):  # type: ignore[no-untyped-def]
    if token == "alice":
        return Principal("alice", expires_at=100.0, claims={"sub": "alice", "exp": 100})
    raise AuthError(CloseCode.UNAUTHORIZED, "bad token")


def rules(**hooks):  # type: ignore[no-untyped-def]
    return SessionRules(verify=verify, allow_anonymous=False, may_subscribe=lambda p, t: not t.startswith("secret"),
                        handles=lambda t: t == "echo", rate_limit=1000, rate_burst=1000, client_timeout=1e9,
                        may_publish=lambda p, t: t.startswith("chat:"), hooks=HookRules(**hooks))


def frames(effects):  # type: ignore[no-untyped-def]
    out = [orjson.loads(e.frame) for e in effects if isinstance(e, Send)]
    for frame in out:
        check_server_frame(frame)
    return out


def calls(effects):  # type: ignore[no-untyped-def]
    return [e for e in effects if isinstance(e, CallHook)]


def open_session(token="alice", topics=(), **hooks):  # type: ignore[no-untyped-def]
    session = Session(rules(**hooks), "c1", now=0.0, clock_ms=lambda: 7)
    session.open(token, list(topics), {}, wall=0.0)
    return session


def to_open(session):  # type: ignore[no-untyped-def]
    """Admit and apply interest; the frames that came out."""
    out = []
    session.admitted()
    effects = session.effects()
    out += effects
    for add in [e for e in effects if isinstance(e, AddInterest)]:
        session.interest_applied(add.ticket)
        out += session.effects()
    return frames(out)


def send(session, frame):  # type: ignore[no-untyped-def]
    session.receive(orjson.dumps(frame), now=1.0, wall=1.0)
    return session.effects()


# --- Connect -------------------------------------------------------------------------------------

def test_connect_hook_gets_the_token_claims_and_decides_user_topics_and_expiry():
    session = open_session(connect=True)
    [call] = calls(session.effects())
    assert call.call == HookCall(Hook.CONNECT, user="alice", claims={"sub": "alice", "exp": 100})
    assert not session.accepting  # frames wait while the backend decides
    answer = HookAnswer(Outcome.ALLOW, user="alice", info=b'{"plan":"pro"}', topics=("secret:room",), expires_at=500.0)
    session.hook_answered(call.ticket, answer, wall=1.0)
    assert session.effects() == [Admit(Principal("alice", expires_at=500.0))]
    [welcome] = to_open(session)
    # the backend's topics are subscribed without the topic rules (secret:* is forbidden to browsers)
    assert welcome["data"] == {"client_id": "c1", "topics": ["secret:room"], "user": "alice", "expires_at": 500}


def test_connect_hook_authenticates_a_connection_without_a_token():
    session = open_session(token=None, connect=True)
    [call] = calls(session.effects())
    assert call.call == HookCall(Hook.CONNECT, user=None, claims=None)
    session.hook_answered(call.ticket, HookAnswer(Outcome.ALLOW, user="cookie-user"), wall=1.0)
    assert session.effects() == [Admit(Principal("cookie-user"))]


def test_connect_refused_closes_4003_and_unavailable_closes_4503():
    session = open_session(connect=True)
    [call] = calls(session.effects())
    session.hook_answered(call.ticket, HookAnswer(Outcome.REFUSE, reason="banned"), wall=1.0)
    assert session.effects() == [Close(CloseCode.UNAUTHORIZED, "connect refused: banned")]
    session = open_session(connect=True)
    [call] = calls(session.effects())
    session.hook_answered(call.ticket, unavailable("timed out after 1 s"), wall=1.0)
    assert session.effects() == [Close(CloseCode.BACKEND_UNAVAILABLE, "connect hook unavailable: timed out after 1 s")]


def test_a_bad_token_is_refused_before_the_hook_is_asked():
    session = open_session(token="forged", connect=True)
    assert session.effects() == [Close(CloseCode.UNAUTHORIZED, "bad token")]


# --- Subscribe -----------------------------------------------------------------------------------

def opened(**hooks):  # type: ignore[no-untyped-def]
    session = open_session(**hooks)
    session.effects()
    to_open(session)
    return session


def test_subscribe_hook_asks_per_hooked_topic_and_a_refusal_refuses_the_frame():
    session = opened(subscribe=lambda t: t.startswith("room:"))
    effects = send(session, {"type": "subscribe", "id": "s1", "data": {"topics": ["room:1", "room:2", "free"],
                                                                        "data": {"pw": 1}}})
    asked = calls(effects)
    assert [c.call for c in asked] == [HookCall(Hook.SUBSCRIBE, "alice", topic=t, data=b'{"pw":1}')
                                       for t in ("room:1", "room:2")]
    assert not session.accepting
    session.hook_answered(asked[0].ticket, ALLOW, wall=1.0)
    assert session.effects() == []
    session.hook_answered(asked[1].ticket, HookAnswer(Outcome.REFUSE, ErrorCode.FORBIDDEN, "members only"), wall=1.0)
    [error] = frames(session.effects())
    assert error["id"] == "s1" and error["error"] == {"code": "FORBIDDEN", "message": "room:2: members only"}
    assert session.topics == set() and session.accepting


def test_subscribe_hook_allow_goes_on_and_unavailable_is_an_unavailable_error():
    session = opened(subscribe=lambda t: t.startswith("room:"))
    [call] = calls(send(session, {"type": "subscribe", "id": "s1", "data": {"topics": ["room:1"]}}))
    session.hook_answered(call.ticket, ALLOW, wall=1.0)
    [add] = session.effects()
    assert add == AddInterest(add.ticket, ("room:1",))
    session.interest_applied(add.ticket)
    assert frames(session.effects())[0]["data"] == {"type": "subscribe", "topics": ["room:1"]}
    [call] = calls(send(session, {"type": "subscribe", "id": "s2", "data": {"topics": ["room:2"]}}))
    session.hook_answered(call.ticket, unavailable("backend down"), wall=1.0)
    [error] = frames(session.effects())
    assert error["error"] == {"code": "UNAVAILABLE", "message": "room:2: backend down"}
    # already subscribed: not asked again
    assert [type(e).__name__ for e in send(session, {"type": "subscribe", "id": "s3", "data": {"topics": ["room:1"]}})] \
        == ["Send"]


def test_url_topics_the_hook_refuses_are_dropped_and_said_after_connected():
    session = open_session(topics=["room:1", "room:2", "free"], subscribe=lambda t: t.startswith("room:"))
    session.effects()
    session.admitted()
    asked = calls(session.effects())
    assert [c.call.topic for c in asked] == ["room:1", "room:2"]
    session.hook_answered(asked[0].ticket, HookAnswer(Outcome.REFUSE, reason="no"), wall=1.0)
    session.hook_answered(asked[1].ticket, ALLOW, wall=1.0)
    [add] = session.effects()
    assert add.topics == ("room:2", "free")
    session.interest_applied(add.ticket)
    welcome, error = frames(session.effects())
    assert welcome["data"]["topics"] == ["room:2", "free"]
    assert error["error"] == {"code": "FORBIDDEN", "message": "?topics= rejected: room:1: no"}


# --- Publish -------------------------------------------------------------------------------------

def test_publish_without_hook_goes_straight_to_the_push_service():
    session = opened()
    [pub] = send(session, {"type": "publish", "id": "p1", "data": {"topic": "chat:1", "data": {"text": "hi"}}})
    assert pub == PublishMessage(pub.ticket, "chat:1", "message", b'{"text":"hi"}')
    session.published(pub.ticket, "m-1")
    assert frames(session.effects())[0]["data"] == {"type": "publish", "topic": "chat:1", "message_id": "m-1"}


def test_publish_is_refused_by_the_rules_before_any_hook():
    session = opened(publish=lambda t: True)
    [error] = frames(send(session, {"type": "publish", "id": "p1", "data": {"topic": "news", "data": 1}}))
    assert error["error"] == {"code": "FORBIDDEN", "message": "not allowed to publish on news"}
    [error] = frames(send(session, {"type": "publish", "id": "p2", "data": {"topic": "chat:1", "type": "ack"}}))
    assert error["error"]["code"] == "INVALID_MESSAGE"


def test_publish_hook_may_change_the_data_or_refuse():
    session = opened(publish=lambda t: t.startswith("chat:"))
    [call] = calls(send(session, {"type": "publish", "id": "p1", "data": {"topic": "chat:1", "data": "darn"}}))
    assert call.call == HookCall(Hook.PUBLISH, "alice", topic="chat:1", data=b'"darn"')
    session.hook_answered(call.ticket, HookAnswer(Outcome.ALLOW, data=b'"d**n"'), wall=1.0)
    [pub] = session.effects()
    assert pub == PublishMessage(call.ticket, "chat:1", "message", b'"d**n"')
    session.handler_failed(pub.ticket, ErrorCode.UNAVAILABLE, "push service: down")
    assert frames(session.effects())[0]["error"]["code"] == "UNAVAILABLE"
    [call] = calls(send(session, {"type": "publish", "id": "p2", "data": {"topic": "chat:1", "data": "x"}}))
    session.hook_answered(call.ticket, HookAnswer(Outcome.REFUSE, ErrorCode.FORBIDDEN, "muted"), wall=1.0)
    [error] = frames(session.effects())
    assert error["id"] == "p2" and error["error"] == {"code": "FORBIDDEN", "message": "muted"}


# --- RPC -----------------------------------------------------------------------------------------

def test_rpc_is_unknown_without_the_hook():
    session = opened()
    [error] = frames(send(session, {"type": "rpc", "id": "r1", "data": {"method": "m"}}))
    assert error["error"]["code"] == "UNKNOWN_MESSAGE_TYPE"


def test_rpc_hook_answers_rpc_frames_and_unknown_types_when_configured():
    session = opened(rpc=True, rpc_unknown_types=True)
    [call] = calls(send(session, {"type": "rpc", "id": "r1", "data": {"method": "sum", "data": [1, 2]}}))
    assert call.call == HookCall(Hook.RPC, "alice", method="sum", data=b"[1,2]")
    session.hook_answered(call.ticket, HookAnswer(Outcome.ALLOW, data=b'{"sum":3}'), wall=1.0)
    [ack] = frames(session.effects())
    assert ack == {"type": "ack", "id": "r1", "timestamp": 7, "data": {"type": "rpc", "data": {"sum": 3}}}
    [call] = calls(send(session, {"type": "whatever", "id": "w1", "data": {"a": 1}}))
    assert call.call == HookCall(Hook.RPC, "alice", method="whatever", data=b'{"a":1}')
    session.hook_answered(call.ticket, unavailable("timed out"), wall=1.0)
    [error] = frames(session.effects())
    assert error["id"] == "w1" and error["error"] == {"code": "UNAVAILABLE", "message": "timed out"}
    # registered handlers keep their types
    assert [type(e).__name__ for e in send(session, {"type": "echo", "id": "e1"})] == ["RunHandler"]


# --- Refresh -------------------------------------------------------------------------------------

def test_refresh_hook_is_asked_at_the_notice_and_extends_or_lets_it_expire():
    session = opened(refresh=True)
    session.tick(0.0, 90.0)
    [call] = calls(session.effects())
    assert call.call == HookCall(Hook.REFRESH, "alice")
    session.hook_answered(call.ticket, HookAnswer(Outcome.ALLOW, expires_at=200.0), wall=91.0)
    assert session.effects() == [SetPrincipal(Principal("alice", expires_at=200.0))]
    session.tick(0.0, 100.0)
    assert session.effects() == []
    session.tick(0.0, 190.0)
    [call] = calls(session.effects())
    session.hook_answered(call.ticket, HookAnswer(Outcome.REFUSE, reason="logged out"), wall=191.0)
    [notice] = frames(session.effects())  # the client may still refresh with a token
    assert notice["type"] == "refresh_required" and notice["data"] == {"expires_at": 200}
    session.tick(0.0, 200.0)
    assert session.effects() == [Close(CloseCode.TOKEN_EXPIRED, "token expired")]


def test_an_in_band_refresh_while_the_refresh_hook_decides_makes_the_hooks_answer_stale():
    """The client refreshed with a token (to 300) while the Refresh hook was being asked: the hook's
    later answer, shorter or a refusal, must not cut what the client was told, nor notice it again."""
    def verify_exp(token, wall):  # type: ignore[no-untyped-def]
        user, exp = token.split("@")
        return Principal(user, expires_at=float(exp))

    for answer in (HookAnswer(Outcome.ALLOW, expires_at=150.0), HookAnswer(Outcome.REFUSE, reason="logged out")):
        session = Session(replace(rules(refresh=True), verify=verify_exp), "c1", now=0.0, clock_ms=lambda: 7)
        session.open("alice@100", [], {}, wall=0.0)
        session.effects()
        to_open(session)
        session.tick(0.0, 90.0)
        [call] = calls(session.effects())
        session.receive(orjson.dumps({"type": "refresh", "id": "r", "data": {"token": "alice@300"}}), now=92.0, wall=92.0)
        [ack] = frames(session.effects())
        assert ack["data"] == {"type": "refresh", "expires_at": 300}
        session.hook_answered(call.ticket, answer, wall=93.0)
        assert session.effects() == []
        session.tick(0.0, 150.0)
        assert session.effects() == [] and not session.closed
        session.tick(0.0, 290.0)  # the new token's notice asks the hook again, once
        assert [c.call for c in calls(session.effects())] == [HookCall(Hook.REFRESH, "alice")]
