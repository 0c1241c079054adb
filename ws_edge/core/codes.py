"""Error codes (in `error` frames) and WebSocket close codes: documented data, stable across releases."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from common import disconnect_codes


class ErrorCode(StrEnum):
    """`error.code` of an error frame. The connection always stays open after one."""

    INVALID_JSON = "INVALID_JSON"  # the frame is not UTF-8 JSON
    INVALID_MESSAGE = "INVALID_MESSAGE"  # JSON, but not an envelope: no/bad `type`, bad `id` or `data`
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"  # no handler for `type` (the guide's code)
    INVALID_TOPIC = "INVALID_TOPIC"  # a topic name outside the grammar
    RATE_LIMITED = "RATE_LIMITED"  # over the per-client message rate; the message was dropped
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"  # the frame is over the inbound size limit
    TOO_MANY_TOPICS = "TOO_MANY_TOPICS"  # over the per-connection topic limit
    FORBIDDEN = "FORBIDDEN"  # not allowed for this connection (topic rules, task control)
    UNAUTHORIZED = "UNAUTHORIZED"  # the connection has not authenticated yet
    NOT_FOUND = "NOT_FOUND"  # a handler's target does not exist (e.g. an unknown task id)
    TOO_MANY_TASKS = "TOO_MANY_TASKS"  # over the limit of tasks pending or running (per user or in all)
    PRESENCE_DISABLED = "PRESENCE_DISABLED"  # the topic keeps no presence, or sends no join/leave events
    UNAVAILABLE = "UNAVAILABLE"  # a backend (push or task service, a hook) cannot be reached or answer in time; retry later
    TOKEN_EXPIRED = "TOKEN_EXPIRED"  # a token (a refresh's, a subscription's) is past its `exp`: get a new one
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug on our side; the message may not have been handled


class CloseCode(IntEnum):
    """WebSocket close codes the edge uses, and what a client should do on each."""

    GOING_AWAY = 1001  # the edge is shutting down: reconnect (another edge or this one, restarted)
    INTERNAL_ERROR = 1011  # a bug on our side ended the connection: reconnect
    TRY_AGAIN_LATER = 1013  # a chosen client_id could not be checked (push service unreachable): reconnect
    HEARTBEAT_TIMEOUT = 4000  # nothing received within the client timeout: reconnect
    TOKEN_EXPIRED = 4001  # the token expired (at the handshake or during the session): refresh it, reconnect
    UNAUTHORIZED = 4003  # no token, or a forged / malformed / wrongly signed one: do not retry as is
    SLOW_CONSUMER = 4008  # the client did not read fast enough: reconnect
    TOO_MANY_CONNECTIONS = 4029  # over the per-user or per-address connection limit: retry later, with backoff
    BACKEND_UNAVAILABLE = 4503  # the Connect hook could not decide (timeout, backend down, too busy): retry with backoff
    INVALID_CLIENT_ID = 4400  # `client_id` query parameter unusable: fix it, do not retry as is
    # Closed by the backend (the server API's Disconnect; its default code): do not reconnect by itself.
    DISCONNECTED_BY_SERVER = disconnect_codes.DISCONNECTED_BY_SERVER


# A close frame's payload is a control frame's: at most 125 bytes, 2 of them the code (RFC 6455 5.5).
MAX_CLOSE_REASON_BYTES = 123
_ELLIPSIS = "\u2026"


def fit_close_reason(reason: str) -> str:
    """`reason` as a close frame can carry it: whole when it fits in 123 bytes of UTF-8, else cut at a
    character boundary and ended with "…" (3 bytes) within the 123. Reasons may quote what a client
    sent (a token's `alg`), so their length is the client's choice."""
    encoded = reason.encode()
    if len(encoded) <= MAX_CLOSE_REASON_BYTES:
        return reason
    room = MAX_CLOSE_REASON_BYTES - len(_ELLIPSIS.encode())
    return encoded[:room].decode(errors="ignore") + _ELLIPSIS


# Close codes after which a client must not reconnect by itself.
TERMINAL_CLOSE_CODES = frozenset({CloseCode.UNAUTHORIZED, CloseCode.INVALID_CLIENT_ID, CloseCode.DISCONNECTED_BY_SERVER})
