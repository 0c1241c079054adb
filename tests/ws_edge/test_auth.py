import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ws_edge.core.auth import ANONYMOUS, AuthError, Principal, TokenVerifier
from ws_edge.core.codes import CloseCode
from ws_edge.core.limits import AttemptLimiter, ConnectionCounter, PendingConnections, origin_allowed
from ws_edge.core.permissions import Access, TopicPolicy, TopicRule

SECRET = "s" * 40
NOW = 1_800_000_000.0


def pem(key) -> str:  # type: ignore[no-untyped-def]
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_hs256_token_gives_its_subject():
    token = jwt.encode({"sub": "alice", "exp": NOW + 60}, SECRET, algorithm="HS256")
    assert TokenVerifier(hs256_secret=SECRET).verify(token, NOW) == Principal("alice", NOW + 60)


@pytest.mark.parametrize(
    ("claims", "verifier", "admin"),
    [
        ({"roles": ["reader", "admin"]}, TokenVerifier(hs256_secret=SECRET), True),
        ({"roles": "admin"}, TokenVerifier(hs256_secret=SECRET), True),
        ({"roles": ["reader"]}, TokenVerifier(hs256_secret=SECRET), False),
        ({}, TokenVerifier(hs256_secret=SECRET), False),
        ({"roles": {"admin": True}}, TokenVerifier(hs256_secret=SECRET), False),  # another shape: no role
        ({"roles": [["admin"]]}, TokenVerifier(hs256_secret=SECRET), False),
        ({"groups": ["ops"]}, TokenVerifier(hs256_secret=SECRET, roles_claim="groups", admin_role="ops"), True),
        ({"roles": ["admin"]}, TokenVerifier(hs256_secret=SECRET, roles_claim="groups"), False),
        ({"roles": [""]}, TokenVerifier(hs256_secret=SECRET, admin_role=""), False),  # no admin role: no admins
    ],
)
def test_admin_is_the_configured_role_in_the_configured_claim(claims, verifier, admin):
    token = jwt.encode({"sub": "alice", "exp": NOW + 60, **claims}, SECRET, algorithm="HS256")
    assert verifier.verify(token, NOW) == Principal("alice", NOW + 60, admin=admin)


@pytest.mark.parametrize(("algorithm", "key"), [("ES256", ec.generate_private_key(ec.SECP256R1())),
                                                ("RS256", rsa.generate_private_key(65537, 2048))])
def test_public_key_tokens(algorithm, key):
    verifier = TokenVerifier(public_key=pem(key))
    token = jwt.encode({"sub": "bob", "exp": time.time() + 60}, key, algorithm=algorithm)
    assert verifier.verify(token, time.time()).user == "bob"
    # The public key must not double as an HMAC secret (algorithm confusion).
    forged = jwt.encode({"sub": "bob", "exp": time.time() + 60}, "x" * 64, algorithm="HS256")
    with pytest.raises(AuthError) as refused:
        verifier.verify(forged, time.time())
    assert refused.value.close_code == CloseCode.UNAUTHORIZED


@pytest.mark.parametrize(
    ("claims", "code"),
    [({"sub": "a", "exp": NOW - 60}, CloseCode.TOKEN_EXPIRED), ({"sub": "a"}, CloseCode.UNAUTHORIZED),
     ({"exp": NOW + 60}, CloseCode.UNAUTHORIZED), ({"sub": "", "exp": NOW + 60}, CloseCode.UNAUTHORIZED)],
)
def test_claims_are_required(claims, code):
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as refused:
        TokenVerifier(hs256_secret=SECRET).verify(token, NOW)
    assert refused.value.close_code == code


def test_audience_and_issuer_are_checked_when_configured():
    verifier = TokenVerifier(hs256_secret=SECRET, audience="push", issuer="auth.example")
    good = jwt.encode({"sub": "a", "exp": NOW + 60, "aud": "push", "iss": "auth.example"}, SECRET, algorithm="HS256")
    assert verifier.verify(good, NOW).user == "a"
    other = jwt.encode({"sub": "a", "exp": NOW + 60, "aud": "other", "iss": "auth.example"}, SECRET,
                       algorithm="HS256")
    with pytest.raises(AuthError):
        verifier.verify(other, NOW)


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


def test_connection_counter_and_attempt_limiter():
    counter = ConnectionCounter()
    assert counter.acquire("u", 2) and counter.acquire("u", 2) and not counter.acquire("u", 2)
    counter.release("u")
    assert counter["u"] == 1 and counter.acquire("u", 2)
    limiter = AttemptLimiter(rate=1, burst=2, max_addresses=2)
    assert limiter.allow("a", 0) and limiter.allow("a", 0) and not limiter.allow("a", 0)
    assert limiter.allow("b", 0) and limiter.allow("c", 10)
    assert len(limiter) <= 2


def test_origin_check():
    allowed = frozenset({"https://app.example"})
    assert origin_allowed(None, "edge:8000", allowed)
    assert origin_allowed("https://app.example", "edge:8000", allowed)
    assert not origin_allowed("https://evil.example", "edge:8000", allowed)
    # With a list, only the list counts: the Host header is the attacker's own under DNS rebinding.
    assert not origin_allowed("http://edge:8000", "edge:8000", allowed)
    assert not origin_allowed("http://evil:18000", "evil:18000", allowed)
    # Without one, the page's own origin (same host) is the only one allowed.
    assert origin_allowed("http://edge:8000", "edge:8000", frozenset())
    assert not origin_allowed("https://evil.example", "edge:8000", frozenset())
    assert not origin_allowed("http://edge:8000", None, frozenset())
    assert not origin_allowed("null", "edge:8000", allowed)
    assert origin_allowed("https://evil.example", "edge:8000", frozenset({"*"}))


def test_pending_connections_are_bounded_per_address_and_in_total():
    pending = PendingConnections(per_address=2, total=3)
    assert pending.admit("a") is None and pending.admit("a") is None
    assert pending.admit("a") == "address"
    assert (pending["a"], pending.total) == (2, 2)
    assert pending.admit("b") is None
    assert pending.admit("c") == "total" and pending.admit("a") == "total"
    pending.release("a")
    assert pending.admit("c") is None
    for address in ("a", "b", "c"):
        pending.release(address)
    assert (pending.total, pending["a"], pending["b"], pending["c"]) == (0, 0, 0, 0)
    assert pending.admit("a") is None and pending.admit("a") is None
