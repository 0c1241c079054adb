"""Connection authentication: verifying a JWT into a Principal. No I/O; the clock is passed in.

Only the algorithms configured are accepted (never `none`, never a public key used as an HMAC
secret): HS256 with a shared secret, RS256/ES256 with a public key. `sub` is the user id; `exp`
is required and honoured, for the handshake and (by the edge's sweeper) for the session after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson

from .codes import CloseCode

MAX_TOKEN_LENGTH = 8192
MAX_INFO_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection is: a user (`sub`) until `expires_at`, or anonymous (user None). `admin`: the
    token's roles claim holds the admin role (may cancel anyone's task)."""

    user: str | None
    expires_at: float | None = None
    admin: bool = False
    # The connection's public info (JSON text), shown in presence: the Connect hook's, else the token's
    # `info` claim. Not part of its identity.
    info: bytes = field(default=b"", compare=False)
    # The verified token's claims, for the Connect hook (None: no token); not part of its identity.
    claims: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def authenticated(self) -> bool:
        return self.user is not None


ANONYMOUS = Principal(user=None)


class AuthError(Exception):
    """Why a token was refused, and the close code that tells the client what to do."""

    def __init__(self, close_code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.message = message


@dataclass(frozen=True)
class TokenVerifier:
    hs256_secret: str | None = None
    public_key: str | None = None  # PEM; RS256 or ES256 by its type
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 5.0
    # The claim that lists a user's roles (a list of strings, or one string), and the role that makes
    # an admin; an empty admin role makes no one an admin. A claim of another shape grants no role.
    roles_claim: str = "roles"
    admin_role: str = "admin"

    def __post_init__(self) -> None:
        if not self.hs256_secret and not self.public_key:
            raise ValueError("a token verifier needs an HS256 secret or a public key")

    def verify(self, token: object, now: float) -> Principal:
        """A connection token: `sub` and `exp`, and no `topic` (a subscription token is not one)."""
        claims = self._decode(token, now)
        if "topic" in claims:
            raise AuthError(CloseCode.UNAUTHORIZED, "a subscription token (with `topic`) is not a connection token")
        return Principal(user=claims["sub"], expires_at=float(claims["exp"]), admin=self._is_admin(claims),
                         info=_info(claims), claims=claims)

    def verify_subscription(self, token: object, topic: str, principal: Principal, now: float) -> float:
        """A subscription token for `topic` held by `principal`: its `exp`. The token's `topic` must
        be the topic and its `sub` the connection's user ("" for an anonymous connection): a token
        given to one user for one topic is worth nothing to anyone else, or for another topic."""
        claims = self._decode(token, now, anonymous=principal.user is None)
        if claims.get("topic") != topic:
            raise AuthError(CloseCode.UNAUTHORIZED, f"the subscription token is not for {topic}")
        if claims["sub"] != (principal.user or ""):
            raise AuthError(CloseCode.UNAUTHORIZED, "the subscription token is for another user")
        return float(claims["exp"])

    def _decode(self, token: object, now: float, anonymous: bool = False) -> dict[str, Any]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthError(CloseCode.UNAUTHORIZED, "the token must be a non-empty string")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(CloseCode.UNAUTHORIZED, "malformed token") from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.hs256_secret:
            key: object = self.hs256_secret
        elif algorithm in ("RS256", "ES256") and self.public_key:
            key = self.public_key
        else:
            raise AuthError(CloseCode.UNAUTHORIZED, f"token algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(CloseCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(CloseCode.UNAUTHORIZED, f"invalid token: {exc}") from None
        subject = claims["sub"]
        if anonymous and subject == "":
            pass  # an anonymous connection's subscription token
        elif not isinstance(subject, str) or not 0 < len(subject) <= 100 or not _printable_utf8(subject):
            raise AuthError(CloseCode.UNAUTHORIZED, "`sub` must be a user id of 1 to 100 printable characters")
        if float(claims["exp"]) + self.leeway <= now:
            raise AuthError(CloseCode.TOKEN_EXPIRED, "token expired")
        return claims

    def _is_admin(self, claims: dict[str, object]) -> bool:
        if not self.admin_role:
            return False
        roles = claims.get(self.roles_claim)
        if isinstance(roles, str):
            return roles == self.admin_role
        return isinstance(roles, list) and self.admin_role in [r for r in roles if isinstance(r, str)]


def _info(claims: dict[str, object]) -> bytes:
    """The `info` claim (a JSON object, shown to those who may see the topic's presence), as JSON text."""
    info = claims.get("info")
    if info is None:
        return b""
    encoded = orjson.dumps(info) if isinstance(info, dict) else b""
    if not encoded or len(encoded) > MAX_INFO_BYTES:
        raise AuthError(CloseCode.UNAUTHORIZED, f"`info` must be a JSON object of at most {MAX_INFO_BYTES} bytes")
    return encoded


def _printable_utf8(text: str) -> bool:
    """A user id goes into gRPC strings, topic names and logs: printable, and encodable (a lone
    surrogate from a JSON `\\ud800` escape is not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return text.isprintable()
