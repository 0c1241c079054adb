"""JWTs for tests: the secret the test systems' edges are configured with (an external deployment's,
from PUSHTEST_JWT_SECRET, when the tests target one)."""

from __future__ import annotations

import os
import time

import jwt

SECRET = os.environ.get("PUSHTEST_JWT_SECRET") or "test-secret-for-hs256-and-hs512-which-is-at-least-sixty-four-bytes-long"


def token(sub: str, *, ttl: float = 3600, secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, secret, algorithm="HS256")


def exp_of(encoded: str) -> int:
    """A token's `exp` (what `connected.data.expires_at` says for a connection with it)."""
    return int(jwt.decode(encoded, options={"verify_signature": False})["exp"])
