import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ws_edge.core.auth import AuthError, Principal, TokenVerifier
from ws_edge.core.codes import CloseCode

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


@pytest.mark.parametrize("sub", ["\ud800", "line\nbreak", "tab\there"])
def test_a_sub_that_is_not_printable_utf8_is_refused(sub):  # type: ignore[no-untyped-def]
    """A `\\ud800` escape decodes to a lone surrogate that no gRPC string can carry: refused at the door."""
    token = jwt.encode({"sub": sub, "exp": NOW + 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as refused:
        TokenVerifier(hs256_secret=SECRET).verify(token, NOW)
    assert (refused.value.close_code, refused.value.message) == (
        CloseCode.UNAUTHORIZED, "`sub` must be a user id of 1 to 100 printable characters")


# --- subscription tokens (issue 19) ----------------------------------------------------------------

def sub_token(**claims) -> str:  # type: ignore[no-untyped-def]
    return jwt.encode({"sub": "alice", "exp": NOW + 60, "topic": "private:a", **claims}, SECRET, algorithm="HS256")


ALICE = Principal("alice", NOW + 600)


def test_a_subscription_token_gives_its_expiry_for_its_topic_and_user():
    assert TokenVerifier(hs256_secret=SECRET).verify_subscription(sub_token(), "private:a", ALICE, NOW) == NOW + 60


def test_an_anonymous_connections_subscription_token_has_an_empty_sub():
    token = sub_token(sub="")
    assert TokenVerifier(hs256_secret=SECRET).verify_subscription(token, "private:a", Principal(None), NOW) == NOW + 60
    with pytest.raises(AuthError, match="`sub` must be a user id"):  # a user's connection: "" is no user
        TokenVerifier(hs256_secret=SECRET).verify_subscription(token, "private:a", ALICE, NOW)


@pytest.mark.parametrize(
    ("token", "topic", "code", "message"),
    [
        (sub_token(), "private:b", CloseCode.UNAUTHORIZED, "the subscription token is not for private:b"),
        (sub_token(sub="bob"), "private:a", CloseCode.UNAUTHORIZED, "the subscription token is for another user"),
        (sub_token(exp=NOW - 10), "private:a", CloseCode.TOKEN_EXPIRED, "token expired"),
        (sub_token(sub=""), "private:a", CloseCode.UNAUTHORIZED, "`sub` must be a user id"),  # "" only when anonymous
        (jwt.encode({"sub": "alice", "exp": NOW + 60}, SECRET, algorithm="HS256"), "private:a",
         CloseCode.UNAUTHORIZED, "the subscription token is not for private:a"),  # a connection token
        ("x.y.z", "private:a", CloseCode.UNAUTHORIZED, "malformed token"),
    ],
)
def test_subscription_tokens_that_do_not_fit_are_refused(token, topic, code, message):
    with pytest.raises(AuthError) as caught:
        TokenVerifier(hs256_secret=SECRET).verify_subscription(token, topic, ALICE, NOW)
    assert caught.value.close_code is code and caught.value.message.startswith(message)


def test_a_subscription_token_is_not_a_connection_token():
    with pytest.raises(AuthError, match="is not a connection token"):
        TokenVerifier(hs256_secret=SECRET).verify(sub_token(), NOW)
