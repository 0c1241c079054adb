import pytest

from ws_edge.core.auth import ANONYMOUS, Principal
from ws_edge.core.permissions import Access, TopicPolicy, TopicRule


def test_default_topic_rules():
    policy = TopicPolicy()
    alice = Principal("alice")
    assert policy.can_subscribe(alice, "user:alice") and not policy.can_subscribe(alice, "user:bob")
    assert not policy.can_subscribe(ANONYMOUS, "user:alice")
    assert policy.can_subscribe(ANONYMOUS, "task:progress")
    assert policy.can_publish(alice, "user:bob") and not policy.can_publish(ANONYMOUS, "user:bob")
    assert not policy.can_publish(alice, "task:progress")


def test_rules_from_json_first_match_wins_and_owner_needs_one_star():
    policy = TopicPolicy.from_json('[{"pattern": "news:*", "subscribe": "authenticated"}, '
                                   '{"pattern": "*", "subscribe": "public"}]')
    assert not policy.can_subscribe(ANONYMOUS, "news:eu") and policy.can_subscribe(ANONYMOUS, "other")
    narrow = TopicPolicy.from_json('[{"pattern": "a:*", "subscribe": "public"}]')
    assert not narrow.can_subscribe(Principal("x"), "b:1"), "no rule matches: refused"
    with pytest.raises(ValueError, match="exactly one"):
        TopicRule("user:*:*", subscribe=Access.OWNER, publish=Access.NONE)
