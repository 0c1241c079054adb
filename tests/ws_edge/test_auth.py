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
