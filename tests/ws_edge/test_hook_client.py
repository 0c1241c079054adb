"""The hook client's contract checks and the hook settings, without a backend (the calls themselves
are tests/integration/test_hooks.py)."""

from __future__ import annotations

import pytest
from hooks.v1 import hooks_pb2 as pb
from pydantic import ValidationError

from ws_edge.config import EdgeSettings
from ws_edge.core.codes import ErrorCode
from ws_edge.core.hooks import Hook, HookAnswer, Outcome
from ws_edge.hook_client import ContractError, _answer
from ws_edge.rules import hook_client, session_rules


def test_replies_become_answers():
    assert _answer(Hook.SUBSCRIBE, pb.SubscribeResponse(allow=pb.Allow())) == HookAnswer(Outcome.ALLOW)
    assert _answer(Hook.PUBLISH, pb.PublishResponse(allow=pb.PublishAllow())) == HookAnswer(Outcome.ALLOW, data=None)
    assert _answer(Hook.PUBLISH, pb.PublishResponse(allow=pb.PublishAllow(data=b'"x"'))).data == b'"x"'
    assert _answer(Hook.REFRESH, pb.RefreshResponse(allow=pb.RefreshAllow(expires_at=5.0))).expires_at == 5.0
    assert _answer(Hook.RPC, pb.RPCResponse(result=pb.RPCResult(data=b"[1]"))).data == b"[1]"
    connect = _answer(Hook.CONNECT, pb.ConnectResponse(allow=pb.ConnectAllow(user="u", topics=["a", "a", "b"])))
    assert connect == HookAnswer(Outcome.ALLOW, user="u", topics=("a", "b"))


def test_refusals_keep_known_codes_and_make_others_forbidden():
    refusal = _answer(Hook.RPC, pb.RPCResponse(error=pb.Refusal(code="NOT_FOUND", reason="no such method")))
    assert refusal == HookAnswer(Outcome.REFUSE, ErrorCode.NOT_FOUND, "no such method")
    odd = _answer(Hook.SUBSCRIBE, pb.SubscribeResponse(refuse=pb.Refusal(code="INTERNAL_ERROR", reason="x" * 500)))
    assert odd.code is ErrorCode.FORBIDDEN and len(odd.reason) == 200


@pytest.mark.parametrize(
    ("hook", "reply", "why"),
    [
        (Hook.SUBSCRIBE, pb.SubscribeResponse(), "neither an allow nor a refusal"),
        (Hook.PUBLISH, pb.PublishResponse(allow=pb.PublishAllow(data=b"not json")), "not JSON"),
        (Hook.RPC, pb.RPCResponse(result=pb.RPCResult(data=b"{")), "not JSON"),
        (Hook.CONNECT, pb.ConnectResponse(allow=pb.ConnectAllow(topics=["bad topic"])), "topic"),
        (Hook.CONNECT, pb.ConnectResponse(allow=pb.ConnectAllow(user="x" * 101)), "user"),
        (Hook.CONNECT, pb.ConnectResponse(allow=pb.ConnectAllow(info=b"{bad")), "not JSON"),
    ],
)
def test_a_reply_that_breaks_the_contract_is_refused(hook, reply, why):  # the client makes it UNAVAILABLE
    with pytest.raises(ContractError, match=why):
        _answer(hook, reply)


def test_hooks_need_a_backend_and_are_switched_on_by_pattern():
    with pytest.raises(ValidationError, match="EDGE_HOOKS_ADDRESS"):
        EdgeSettings(hook_subscribe_topics="room:*")
    settings = EdgeSettings(hooks_address="127.0.0.1:1", hook_subscribe_topics="room:*, chat:?",
                            hook_publish_topics="", subscription_token_topics="private:*")
    rules = session_rules(settings, settings.verifier, settings.policy, lambda t: False)
    assert [rules.hooks.subscribe(t) for t in ("room:1", "chat:1", "chat:12", "lobby")] == [True, True, False, False]
    assert not rules.hooks.publish("room:1") and not rules.hooks.connect
    assert rules.needs_subscription_token("private:x") and not rules.needs_subscription_token("public")
    assert hook_client(settings) is not None
    assert hook_client(EdgeSettings()) is None
