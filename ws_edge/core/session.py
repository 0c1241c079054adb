"""One connection's session: everything the browser protocol decides, with no I/O.

The model is python-websockets' sans-I/O protocol object. What happens to a connection goes in as a
method call (`open`, `receive`, `admitted`, `interest_applied`, `history_read`, `handler_done`,
`tick`, and `admit` for a live delivery); what must happen next comes out of `effects()` as small
frozen dataclasses (a frame to send, interest to add or drop, history to read, a handler to run,
close). No awaits, sockets, clocks or gRPC in here: the asyncio driver (`ws_edge/session_driver.py`)
moves bytes and runs effects, one for a WebSocket today and the same for any other transport.

The order a client sees, pinned by tests/ws_edge/test_session.py:
  auth → `connected` (only after the push service applied the connection's interest) → retained
  state → missed messages (recovery) → live; an `ack` only after the change it acknowledges was
  applied; every error frame echoes the offending message's id.

Client frames are handled one at a time, as they arrive: while one waits for the push service (a
subscribe, a handler), the session does not accept the next (`accepting` is False) and the driver
stops reading, so the socket's own buffer is the queue.

Recovery at the seam lives here, per connection: from a `subscribe` with `since` until its missed
messages are out, the topic is *guarded* (`Guard` effect): the router then passes that topic's live
deliveries for this connection through `admit`, which holds them; after the missed messages, the
held ones follow without what history already gave, and a floor drops older ones still on their way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import count
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import orjson

from common.clock import now_ms
from common.presence_rules import PresenceRules
from common.topics import topic_error

from .auth import ANONYMOUS, AuthError, Principal
from .codes import CloseCode, ErrorCode
from .deadlines import Deadlines
from .frames import (
    MAX_FRAME_MESSAGES,
    ClientMessage,
    ProtocolError,
    error_frame,
    parse_client_frame,
    publish_fields,
    rpc_fields,
    server_frame,
    topics_field,
)
from .hooks import NO_HOOKS, Hook, HookAnswer, HookCall, HookRules
from .ratelimit import TokenBucket
from .recovery import GapNotice, Position, in_frames, positions_field, recovery_report, stitch
from .sequencer import DeliveryLike


class HistoryAnswer(Protocol):
    """What the push service's History says (push.v1.HistoryResponse has these fields)."""

    recovered: bool
    offset: int
    epoch: str
    reason: str
    publications: Sequence[DeliveryLike]


@dataclass(frozen=True, slots=True)
class _Unread:
    """A recovery's answer when history was not read (see `Session._read_histories`)."""

    reason: str
    recovered: bool = False
    offset: int = 0
    epoch: str = ""  # none: the client is told to keep its own position
    publications: Sequence[DeliveryLike] = ()


_NOT_CONFIRMED = _Unread("the push service did not take the subscription in time")


# --- effects ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    """A JSON frame to the client; `error` is its code when it is an error frame (for metrics)."""

    frame: bytes
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Admit:
    """Authenticated as `principal`: check the edge-wide limits (client id, connections per user and
    address), then answer `admitted()` or `refused(code, reason)`."""

    principal: Principal


@dataclass(frozen=True, slots=True)
class AddInterest:
    """Route `topics` to this connection; answer `interest_applied(ticket, retained)` once the push
    service has applied the first interests (retained: (topic, frame) of the topics' retained state
    known locally)."""

    ticket: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DropInterest:
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Guard:
    """From now on (`on`) / no longer, pass `topic`'s live deliveries for this connection through
    `admit` (the fast path that writes one frame to every subscriber skips guarded topics)."""

    topic: str
    on: bool


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Ask the push service what `topic` holds after `since`; answer `history_read(ticket, topic, answer)`."""

    ticket: int
    topic: str
    since: Position


@dataclass(frozen=True, slots=True)
class RunHandler:
    """Run the registered handler of `message.type`; answer `handler_done` or `handler_failed`."""

    ticket: int
    message: ClientMessage


@dataclass(frozen=True, slots=True)
class JoinLeave:
    """From now on (`on`) / no longer, hand this connection the join/leave events of `topics`."""

    topics: tuple[str, ...]
    on: bool


@dataclass(frozen=True, slots=True)
class ReadPresence:
    """Ask the push service for `topic`'s presence (`stats`: its counts only); answer
    `handler_done(ticket, result)` or `handler_failed`."""

    ticket: int
    topic: str
    stats: bool


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallHook:
    """Ask the backend (core/hooks.py); answer `hook_answered(ticket, answer)`: always, an
    UNAVAILABLE answer when the call could not be made or took too long."""

    ticket: int
    call: HookCall


@dataclass(frozen=True, slots=True)
class PublishMessage:
    """A browser's `publish`, allowed: publish through the push service; answer `published(ticket,
    message_id)` or `handler_failed(ticket, code, text)`."""

    ticket: int
    topic: str
    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SetPrincipal:
    """The connection is now `principal` (a refreshed token: a new expiry, perhaps new roles)."""

    principal: Principal


Effect = (Send | Admit | AddInterest | DropInterest | Guard | ReadHistory | RunHandler | Close | CallHook
          | PublishMessage | SetPrincipal | JoinLeave | ReadPresence)


def _never(*_: object) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class SessionRules:
    """What the edge's settings decide for every session."""

    verify: Callable[[str | None, float], Principal] | None  # None: this edge takes no tokens
    allow_anonymous: bool
    may_subscribe: Callable[[Principal, str], bool]
    handles: Callable[[str], bool]  # whether a handler is registered for a message type
    max_frame_bytes: int = 65536
    max_topics: int = 100
    rate_limit: float = 100.0
    rate_burst: int = 100
    client_timeout: float = 90.0
    auth_timeout: float = 10.0
    # `refresh_required` goes out this many seconds before a token's `exp` (or the Refresh hook is asked).
    refresh_notice: float = 10.0
    may_publish: Callable[[Principal, str], bool] = _never  # a browser's `publish` (topic rules)
    needs_subscription_token: Callable[[str], bool] = _never
    # (token, topic, principal, wall) -> the token's exp; raises AuthError. None: no subscription tokens.
    verify_subscription: Callable[[object, str, Principal, float], float] | None = None
    hooks: HookRules = NO_HOOKS
    presence: Callable[[], PresenceRules] = PresenceRules  # the push service's presence rules, as known now
    batch_max_messages: int = MAX_FRAME_MESSAGES  # per `batch` frame of a recovery's release, as live ones


class Phase(Enum):
    AUTHENTICATING = "authenticating"  # waiting for an `auth` frame (no token in the URL)
    CONNECTING = "connecting"  # the Connect hook decides who this is
    ADMITTING = "admitting"  # authenticated; the edge checks its limits
    SUBSCRIBING = "subscribing"  # the URL's topics on their way to the push service
    OPEN = "open"  # `connected` sent
    CLOSED = "closed"


@dataclass(slots=True)
class _Recovery:
    """A topic of this connection that is recovering (`held` not None) or has a floor."""

    held: list[DeliveryLike] | None = field(default_factory=list)
    floor: tuple[int, str] | None = None


@dataclass(slots=True)
class _ServerSubscribe:
    """The server API's subscribe of this connection, waiting for its interest."""

    topics: list[str]  # what the client is told it is subscribed to
    new: tuple[str, ...]  # the topics new to this connection
    since: ClassVar[Mapping[str, Position]] = MappingProxyType({})  # no recovery: every new topic is held
    # New topics whose live deliveries wait for the answer, each with the hold it made (released only
    # if still its own: an unsubscribe and a newer subscribe of the topic meanwhile make their own).
    holding: dict[str, _Recovery] = field(default_factory=dict)


@dataclass(slots=True)
class _Subscribe:
    """A subscribe in progress: waiting for its interest, then for its history reads."""

    message_id: str | None
    topics: list[str]
    since: dict[str, Position]
    reads: dict[str, HistoryAnswer] = field(default_factory=dict)
    retained: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, frame)
    url: bool = False  # the URL's topics (answered with `connected`, not an `ack`)
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # recovered already, with the URL
    rejected: ProtocolError | None = None
    expiries: dict[str, float] = field(default_factory=dict)  # topics' subscription tokens' exp
    data: bytes = b"null"  # `data.data` of the subscribe, for the Subscribe hook
    asking: dict[int, str] = field(default_factory=dict)  # Subscribe hook calls in flight: ticket -> topic
    refusals: dict[str, HookAnswer] = field(default_factory=dict)
    join_leave: bool = False  # the topics' join/leave events asked for (data.join_leave)
    new: tuple[str, ...] = ()  # the topics this subscribe adds (its AddInterest)
    # Positions whose history read waits for the push service to confirm the topic's interest.
    deferred: set[str] = field(default_factory=set)
    reading: set[str] = field(default_factory=set)  # positions whose history read has gone out
    # Each position's guard: its live deliveries wait in it for the missed ones. A guard replaced meanwhile
    # (the backend unsubscribed the topic, maybe subscribed it again) voids the recovery.
    recovering: dict[str, _Recovery] = field(default_factory=dict)
    # New topics whose live deliveries wait for the answer, each with the hold it made (released only
    # if still its own: an unsubscribe and a newer subscribe of the topic meanwhile make their own).
    holding: dict[str, _Recovery] = field(default_factory=dict)


@dataclass(slots=True)
class _Publish:
    """A browser's `publish` in progress: asking the Publish hook, then publishing."""

    message_id: str | None
    topic: str
    type: str
    data: bytes


@dataclass(slots=True)
class _Rpc:
    message_id: str | None
    type: str  # `rpc`, or the unknown type sent to the RPC hook


_tickets = count(1)


class Session:
    def __init__(self, rules: SessionRules, client_id: str, now: float, clock_ms: Callable[[], int] = now_ms,
                 session_id: str | None = None) -> None:
        self.rules = rules
        self.client_id = client_id
        # An HTTP transport's session id (`connected.data.session`): what its client's
        # `POST /emulation` names. None on a WebSocket, whose frames come on the socket itself.
        self.session_id = session_id
        self.principal: Principal = ANONYMOUS
        self.phase = Phase.AUTHENTICATING
        self.topics: set[str] = set()
        self.last_seen = now
        self.bucket = TokenBucket(rules.rate_limit, rules.rate_burst, now)
        self._opened_at = now
        self._now_ms = clock_ms  # the frames' `timestamp` (Unix ms); injected so tests can pin it
        self._effects: list[Effect] = []
        self._recoveries: dict[str, _Recovery] = {}
        # Interest changes the push service has not confirmed yet (asked, or their wait timed out):
        # ticket -> topics; those past the longer wait a recovery allows (`interest_overdue`).
        self._unconfirmed: dict[int, tuple[str, ...]] = {}
        self._overdue: set[int] = set()
        self._pending: tuple[int, _Subscribe | ClientMessage | _Publish | _Rpc] | None = None  # the frame being handled
        self._deadlines = Deadlines(rules.refresh_notice)
        self._connect_ticket: int | None = None  # the Connect hook's call, while it decides
        self._refresh_ticket: int | None = None  # the Refresh hook's call, while it decides
        self._token_principal: Principal | None = None  # who the token said, while the Connect hook decides
        self._trusted_topics: tuple[str, ...] = ()  # the Connect hook's topics (no topic rules)
        self._info = b""  # the Connect hook's info about this connection, given back to every hook
        self._url_topics: list[str] = []
        self._url_since: dict[str, Position] = {}
        self._url_recovered: dict[str, dict[str, Any]] = {}  # the URL's recoveries, until a subscribe asks
        self._since_error: str | None = None
        self._server_subscribes: dict[int, _ServerSubscribe] = {}  # the server API's subscribes, by ticket

    # --- what the driver asks ---------------------------------------------------------------------

    def effects(self) -> list[Effect]:
        """What must happen now, in order; taken once."""
        effects, self._effects = self._effects, []
        return effects

    @property
    def accepting(self) -> bool:
        """Whether the driver should read the next client frame now."""
        return self.phase is Phase.AUTHENTICATING or (self.phase is Phase.OPEN and self._pending is None)

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    def auth_deadline(self) -> float | None:
        """When an unauthenticated connection is given up (the driver calls `tick` then)."""
        return self._opened_at + self.rules.auth_timeout if self.phase is Phase.AUTHENTICATING else None

    # --- the connection's life ------------------------------------------------------------------

    def open(self, token: str | None, topics: Sequence[str], since: dict[str, Position], wall: float,
             since_error: str | None = None) -> None:
        """The transport is up: `token` from the URL (or None), the URL's topics and positions (and
        why the positions could not be read, said after `connected`)."""
        self._url_topics, self._url_since = list(topics), since  # checked once the principal is known
        self._since_error = since_error
        if token is not None:
            self._authenticate(token, wall)
        elif self.rules.hooks.connect:
            self._ask_connect(None)  # the backend decides, e.g. by the session cookie in the headers
        elif self.rules.allow_anonymous:
            self._admit(ANONYMOUS)
        # else: the first frame must be `auth`

    def next_wakeup(self) -> float | None:
        """The wall time (Unix seconds) at which `tick` has a token to warn about or expire."""
        return None if self.phase is Phase.CLOSED else self._deadlines.next_due()

    def _authenticate(self, token: object, wall: float) -> None:
        if self.rules.verify is None:
            self._close(CloseCode.UNAUTHORIZED, "this edge does not accept tokens")
            return
        try:
            principal = self.rules.verify(token, wall)  # type: ignore[arg-type]
        except AuthError as exc:
            self._close(exc.close_code, exc.message)
            return
        if self.rules.hooks.connect:
            self._ask_connect(principal)
        else:
            self._admit(principal)

    def _ask_connect(self, principal: Principal | None) -> None:
        self.phase = Phase.CONNECTING
        self._token_principal = principal
        self._connect_ticket = next(_tickets)
        call = HookCall(Hook.CONNECT, user=principal.user if principal else None,
                        claims=principal.claims if principal else None)
        self._effects.append(CallHook(self._connect_ticket, call))

    def _connect_answered(self, answer: HookAnswer) -> None:
        self._connect_ticket = None
        if not answer.allowed:
            unavailable = answer.code is ErrorCode.UNAVAILABLE
            self._close(CloseCode.BACKEND_UNAVAILABLE if unavailable else CloseCode.UNAUTHORIZED,
                        f"connect {'hook unavailable' if unavailable else 'refused'}: {answer.reason}")
            return
        token = self._token_principal
        user = answer.user or (token.user if token else None)
        expires_at = answer.expires_at if answer.expires_at is not None else (token.expires_at if token else None)
        admin = token.admin if token is not None and token.user == user else False
        self._info = answer.info
        self._trusted_topics = answer.topics
        # Presence shows the Connect hook's info, else the token's `info` claim (for the same user).
        info = answer.info or (token.info if token is not None and token.user == user else b"")
        self._admit(Principal(user, expires_at, admin, info=info))

    def _admit(self, principal: Principal) -> None:
        self.principal = principal
        self.phase = Phase.ADMITTING
        self._deadlines.set(None, principal.expires_at)
        self._effects.append(Admit(principal))

    def admitted(self) -> None:
        """The edge's limits let this connection in: its URL topics go to the push service."""
        if self.phase is not Phase.ADMITTING:
            return
        self.phase = Phase.SUBSCRIBING
        asked = [t for t in self._url_topics if t not in self._trusted_topics]
        try:
            topics, rejected = self._check_topics(asked, None), None
            for topic in topics:
                if self.rules.needs_subscription_token(topic):
                    raise ProtocolError(ErrorCode.FORBIDDEN, f"{topic} needs a subscription token: subscribe "
                                        "to it with `data.tokens`")
        except ProtocolError as exc:
            topics, rejected = [], exc
        topics = list(dict.fromkeys([*self._trusted_topics, *topics]))
        since = {t: p for t, p in self._url_since.items() if t in topics}
        # Each position is a history read, as in a subscribe: charged to the client's rate.
        if len(since) > 1 and not self.bucket.allow(self.last_seen, len(since) - 1):
            self._since_error = f"{len(since)} positions are more than the rate allows at once"
            since = {}
        self._start_subscribe(_Subscribe(None, topics, since, url=True, rejected=rejected))

    def refused(self, code: int, reason: str) -> None:
        self._close(code, reason)

    def tick(self, now: float, wall: float) -> None:
        """The clock: closes a connection silent for too long, unauthenticated in time, or whose token
        expired (`wall` is Unix time, as the token's `exp`)."""
        if self.phase is Phase.AUTHENTICATING:
            if now >= self._opened_at + self.rules.auth_timeout:
                self._close(CloseCode.UNAUTHORIZED, "no auth message in time")
        elif self.phase is Phase.CLOSED:
            return
        elif now - self.last_seen > self.rules.client_timeout:
            self._close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
        else:
            self._tick_deadlines(wall)

    def _tick_deadlines(self, wall: float) -> None:
        """Tokens about to expire: `refresh_required` (or the Refresh hook asked); tokens expired: the
        connection's closes 4001, a subscription token's unsubscribes its topic (`unsubscribed`)."""
        if self.phase is not Phase.OPEN:  # nothing goes out before `connected`; an expiry still closes
            if (expires := self._deadlines.expires_at(None)) is not None and expires <= wall:
                self._close(CloseCode.TOKEN_EXPIRED, "token expired")
            return
        notices, expired = self._deadlines.due(wall)
        if None in expired:
            self._close(CloseCode.TOKEN_EXPIRED, "token expired")
            return
        dropped = tuple(t for t in expired if t is not None and t in self.topics)
        if dropped:
            for topic in dropped:
                self._send(server_frame("unsubscribed", None, self._now_ms(), {
                    "topic": topic, "code": ErrorCode.TOKEN_EXPIRED.value,
                    "reason": "the subscription token expired"}))
            self._drop_topics(dropped)
        for key in notices:
            if key is None and self.rules.hooks.refresh and self._refresh_ticket is None:
                self._refresh_ticket = next(_tickets)
                self._effects.append(CallHook(self._refresh_ticket, HookCall(
                    Hook.REFRESH, user=self.principal.user, info=self._info)))
            else:
                self._refresh_required(key)

    def _refresh_required(self, topic: str | None) -> None:
        expires_at = self._deadlines.expires_at(topic)
        if expires_at is None:
            return
        data: dict[str, Any] = {"expires_at": int(expires_at)}
        if topic is not None:
            data["topic"] = topic
        self._send(server_frame("refresh_required", None, self._now_ms(), data))

    def _refresh_answered(self, answer: HookAnswer, wall: float) -> None:
        self._refresh_ticket = None
        if answer.allowed and answer.expires_at is not None and answer.expires_at > wall:
            self.principal = replace(self.principal, expires_at=answer.expires_at)
            self._deadlines.set(None, answer.expires_at, wall)
            self._effects.append(SetPrincipal(self.principal))
        else:
            # Not extended (refused, or the backend could not say): the client may still refresh in
            # band with a token; else the connection closes 4001 at `exp`, as without the hook.
            self._refresh_required(None)

    def _close(self, code: int, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self._pending = None  # answers still on their way change nothing any more
        for topic in list(self._recoveries):
            self._unguard(topic)
        self._effects.append(Close(code, reason))

    def peer_alive(self, now: float) -> None:
        """The transport proved the client reads without a frame from it (an HTTP stream took a
        heartbeat): as good as a frame for the heartbeat timeout."""
        self.last_seen = now

    def closed_by_peer(self) -> None:
        """The transport is gone: nothing more is sent; guards are lifted."""
        for topic in list(self._recoveries):
            self._unguard(topic)
        self.phase = Phase.CLOSED
        self._pending = None

    # --- client frames ----------------------------------------------------------------------------

    def receive(self, frame: str | bytes, now: float, wall: float) -> None:
        self.last_seen = now
        if self.phase is Phase.AUTHENTICATING:
            self._receive_auth(frame, wall)
            return
        if self.phase is not Phase.OPEN:
            return
        message_id = None
        try:
            try:
                message = parse_client_frame(frame, self.rules.max_frame_bytes)
            finally:
                allowed = self.bucket.allow(now)  # malformed frames count against the rate too
            message_id = message.id
            if not allowed:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"more than {self.rules.rate_limit:g} messages per second; message dropped", message_id)
            self._dispatch(message, now, wall)
        except ProtocolError as exc:
            self._error(exc.code, exc.message, exc.message_id)

    def _receive_auth(self, frame: str | bytes, wall: float) -> None:
        try:
            message = parse_client_frame(frame, self.rules.max_frame_bytes)
        except ProtocolError as exc:
            self._close(CloseCode.UNAUTHORIZED, f"first message: {exc.message}")
            return
        if message.type != "auth":
            self._close(CloseCode.UNAUTHORIZED, "authentication required: send an `auth` message first")
            return
        self._authenticate(message.data.get("token"), wall)

    def _dispatch(self, message: ClientMessage, now: float, wall: float) -> None:
        type_ = message.type
        if type_ == "ping":
            self._send(server_frame("pong", message.id, self._now_ms()))
        elif type_ == "subscribe":
            topics = self._check_topics(topics_field(message), message.id)
            since = positions_field(message, topics)
            # Each position asks the push service for a history read: beyond the frame itself, each
            # costs one message of the client's rate (a frame of 100 positions, 100 frames a second,
            # would otherwise make one client ask for 10,000 reads a second).
            if len(since) > 1 and not self.bucket.allow(now, len(since) - 1):
                raise ProtocolError(ErrorCode.RATE_LIMITED, f"recovering {len(since)} topics costs {len(since)} "
                                    f"messages of the rate ({self.rules.rate_limit:g}/s); message dropped", message.id)
            # A topic the URL already recovered (the browser client gives its positions both ways):
            # answered with that recovery, not recovered twice.
            reported = {t: self._url_recovered.pop(t) for t in list(since)
                        if t in self._url_recovered and t in self.topics}
            since = {t: p for t, p in since.items() if t not in reported}
            expiries = self._subscription_tokens(message, topics, wall)
            self._start_subscribe(_Subscribe(message.id, topics, since, reported=reported, expiries=expiries,
                                             data=orjson.dumps(message.data.get("data")),
                                             join_leave=self._join_leave_field(message, topics)))
        elif type_ == "unsubscribe":
            self._unsubscribe(message)
        elif type_ == "refresh":
            self._refresh(message, wall)
        elif type_ == "publish":
            self._publish(message)
        elif type_ in ("presence", "presence_stats"):
            self._read_presence(message)
        elif self.rules.handles(type_):
            ticket = next(_tickets)
            self._pending = (ticket, message)
            self._effects.append(RunHandler(ticket, message))
        elif type_ == "rpc" and self.rules.hooks.rpc:
            method, data = rpc_fields(message)
            self._ask_rpc(_Rpc(message.id, type_), method, data)
        elif self.rules.hooks.rpc_unknown_types and type_ != "rpc":
            self._ask_rpc(_Rpc(message.id, type_), type_, orjson.dumps(message.data))
        else:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"Unknown message type: {type_}", message.id)

    def _join_leave_field(self, message: ClientMessage, topics: list[str]) -> bool:
        """`data.join_leave` of a subscribe: whether the connection wants the topics' join/leave events
        (each must allow them: a `joinleave` presence rule); raises ProtocolError."""
        wanted = message.data.get("join_leave", False)
        if not isinstance(wanted, bool):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.join_leave` must be true or false", message.id)
        rules = self.rules.presence()
        if wanted and (off := [t for t in topics if not rules.has_join_leave(t)]):
            raise ProtocolError(ErrorCode.PRESENCE_DISABLED, f"{off[0]} sends no join/leave events", message.id)
        return wanted

    def _read_presence(self, message: ClientMessage) -> None:
        """`presence` / `presence_stats` of `data.topic`: for those allowed to subscribe to it."""
        topic = message.data.get("topic", message.topic)
        if (why := topic_error(topic)) is not None:
            raise ProtocolError(ErrorCode.INVALID_TOPIC, why, message.id)
        assert isinstance(topic, str)
        if not self.rules.may_subscribe(self.principal, topic):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not allowed to see the presence of {topic}", message.id)
        if topic not in self.topics and (self.rules.needs_subscription_token(topic) or self.rules.hooks.subscribe(topic)):
            # Who may subscribe is decided per subscribe there (a token, the backend): the topic rules
            # alone would let anyone they allow list a private room's members.
            raise ProtocolError(ErrorCode.FORBIDDEN, f"the presence of {topic} is for its subscribers", message.id)
        if not self.rules.presence().has_presence(topic):
            raise ProtocolError(ErrorCode.PRESENCE_DISABLED, f"{topic} keeps no presence", message.id)
        ticket = next(_tickets)
        self._pending = (ticket, message)
        self._effects.append(ReadPresence(ticket, topic, message.type == "presence_stats"))

    # --- the server API's commands (issue 15) -----------------------------------------------------

    def server_subscribe(self, topics: Sequence[object]) -> None:
        """The backend subscribed this connection (no topic rule is checked: the backend decides);
        the client is told by an `ack` with `server: true`, then gets the topics' messages."""
        if self.phase is not Phase.OPEN:
            return
        valid: list[str] = [t for t in dict.fromkeys(topics) if topic_error(t) is None]  # type: ignore[misc]
        ticket = next(_tickets)
        new = tuple(t for t in valid if t not in self.topics)
        self._server_subscribes[ticket] = _ServerSubscribe(valid, new)
        self.topics.update(new)
        if new:
            self._unconfirmed[ticket] = new
            self._effects.append(AddInterest(ticket, new))
        else:
            self.interest_applied(ticket)

    def server_unsubscribe(self, topics: Sequence[object]) -> None:
        if self.phase is not Phase.OPEN:
            return
        dropped: tuple[str, ...] = tuple(t for t in dict.fromkeys(topics) if t in self.topics)  # type: ignore[misc]
        if not dropped:
            return
        self._drop_topics(dropped)
        self._ack(None, {"type": "unsubscribe", "topics": list(dropped), "server": True})

    def server_disconnect(self, code: int, reason: str) -> None:
        self._close(code, reason)

    # --- refresh, publish, rpc ------------------------------------------------------------------

    def _refresh(self, message: ClientMessage, wall: float) -> None:
        """`{"type": "refresh", "data": {"token": ...}}`: the connection's token replaced in band (same
        user, same rules); with `data.topic`, that topic's subscription token."""
        token, topic = message.data.get("token"), message.data.get("topic")
        if topic is not None:
            if not isinstance(topic, str) or self._deadlines.expires_at(topic) is None:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.topic` must be a topic subscribed with a "
                                    "subscription token", message.id)
            expires_at = self._verify_subscription(token, topic, wall, message.id)
            self._deadlines.set(topic, expires_at, wall)
            self._ack(message.id, {"type": "refresh", "topic": topic, "expires_at": int(expires_at)})
            return
        if self.rules.verify is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "this edge does not accept tokens", message.id)
        if not self.principal.authenticated:
            raise ProtocolError(ErrorCode.FORBIDDEN, "an anonymous connection has no token to refresh", message.id)
        try:
            principal = self.rules.verify(token, wall)
        except AuthError as exc:
            code = ErrorCode.TOKEN_EXPIRED if exc.close_code is CloseCode.TOKEN_EXPIRED else ErrorCode.UNAUTHORIZED
            raise ProtocolError(code, f"refresh refused: {exc.message}", message.id) from None
        if principal.user != self.principal.user:
            self._close(CloseCode.UNAUTHORIZED, "refresh: the token is for another user")
            return
        self.principal = principal
        self._deadlines.set(None, principal.expires_at, wall)
        self._refresh_ticket = None  # the Refresh hook asked before this token: its answer is stale now
        self._effects.append(SetPrincipal(principal))
        self._ack(message.id, {"type": "refresh", "expires_at": int(principal.expires_at or 0)})

    def _publish(self, message: ClientMessage) -> None:
        topic, type_, data = publish_fields(message)
        if (why := topic_error(topic)) is not None:
            raise ProtocolError(ErrorCode.INVALID_TOPIC, why, message.id)
        if not self.rules.may_publish(self.principal, topic):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not allowed to publish on {topic}", message.id)
        ticket = next(_tickets)
        op = _Publish(message.id, topic, type_, data)
        self._pending = (ticket, op)
        if self.rules.hooks.publish(topic):
            self._effects.append(CallHook(ticket, HookCall(Hook.PUBLISH, self.principal.user, topic=topic, data=data,
                                                           info=self._info)))
        else:
            self._effects.append(PublishMessage(ticket, topic, type_, data))

    def _ask_rpc(self, op: _Rpc, method: str, data: bytes) -> None:
        ticket = next(_tickets)
        self._pending = (ticket, op)
        self._effects.append(CallHook(ticket, HookCall(Hook.RPC, self.principal.user, method=method, data=data,
                                                       info=self._info)))

    def published(self, ticket: int, message_id: str) -> None:
        op = self._take_pending(ticket, _Publish)
        if op is not None:
            self._ack(op.message_id, {"type": "publish", "topic": op.topic, "message_id": message_id})

    def hook_answered(self, ticket: int, answer: HookAnswer, wall: float) -> None:
        """The backend's answer to `CallHook(ticket)` (an UNAVAILABLE one when it could not be asked)."""
        if self.phase is Phase.CLOSED:
            return
        if ticket == self._connect_ticket:
            self._connect_answered(answer)
        elif ticket == self._refresh_ticket:
            self._refresh_answered(answer, wall)
        elif self._pending is not None and isinstance(self._pending[1], _Subscribe):
            self._subscribe_answered(ticket, answer)
        elif self._pending is not None and self._pending[0] == ticket:
            self._frame_answered(ticket, answer)

    def _frame_answered(self, ticket: int, answer: HookAnswer) -> None:
        """A `publish` or `rpc` the backend decided."""
        op = self._pending[1] if self._pending is not None else None
        if not answer.allowed:
            self._pending = None
            assert isinstance(op, _Publish | _Rpc)
            self._error(answer.code, answer.reason or "refused by the backend", op.message_id)
        elif isinstance(op, _Publish):
            data = answer.data if answer.data is not None else op.data
            self._effects.append(PublishMessage(ticket, op.topic, op.type, data))
        elif isinstance(op, _Rpc):
            self._pending = None
            result = orjson.loads(answer.data) if answer.data else None
            self._ack(op.message_id, {"type": op.type, "data": result})

    def _check_topics(self, topics: Iterable[object], message_id: str | None) -> list[str]:
        """Validated, deduplicated topics this connection may add; raises ProtocolError."""
        checked: list[str] = []
        for topic in topics:
            if (why := topic_error(topic)) is not None:
                raise ProtocolError(ErrorCode.INVALID_TOPIC, why, message_id)
            assert isinstance(topic, str)
            if not self.rules.may_subscribe(self.principal, topic):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {topic}", message_id)
            checked.append(topic)
        checked = list(dict.fromkeys(checked))
        total = len(self.topics | set(checked))
        if total > self.rules.max_topics:
            raise ProtocolError(ErrorCode.TOO_MANY_TOPICS,
                                f"{total} topics; a connection may hold {self.rules.max_topics}", message_id)
        return checked

    def _subscription_tokens(self, message: ClientMessage, topics: list[str], wall: float) -> dict[str, float]:
        """Topics that need a subscription token (`data.tokens`: topic -> JWT): their expiries."""
        needed = [t for t in topics if self.rules.needs_subscription_token(t)]
        if not needed:
            return {}
        tokens = message.data.get("tokens")
        if not isinstance(tokens, dict):
            tokens = {}
        return {t: self._verify_subscription(tokens.get(t), t, wall, message.id) for t in needed}

    def _verify_subscription(self, token: object, topic: str, wall: float, message_id: str | None) -> float:
        if self.rules.verify_subscription is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{topic} needs a subscription token; this edge takes none",
                                message_id)
        if token is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{topic} needs a subscription token in `data.tokens`",
                                message_id)
        try:
            return self.rules.verify_subscription(token, topic, self.principal, wall)
        except AuthError as exc:
            code = ErrorCode.TOKEN_EXPIRED if exc.close_code is CloseCode.TOKEN_EXPIRED else ErrorCode.FORBIDDEN
            raise ProtocolError(code, f"{topic}: {exc.message}", message_id) from None

    def _unsubscribe(self, message: ClientMessage) -> None:
        topics = list(topics_field(message))
        for topic in topics:
            if (why := topic_error(topic)) is not None:
                raise ProtocolError(ErrorCode.INVALID_TOPIC, why, message.id)
        dropped = tuple(t for t in topics if t in self.topics)
        if dropped:
            self._drop_topics(dropped)
        self._ack(message.id, {"type": "unsubscribe", "topics": topics})

    def _drop_topics(self, dropped: tuple[str, ...]) -> None:
        """These topics are no longer this connection's (the client's, the backend's or an expired
        subscription token's doing): nothing held for them, no token deadline, no interest."""
        self.topics.difference_update(dropped)
        for topic in dropped:
            self._unguard(topic)
            self._deadlines.drop(topic)
            self._url_recovered.pop(topic, None)  # a later subscribe of it recovers for itself
        if self._pending is not None and isinstance(op := self._pending[1], _Subscribe):
            for topic in dropped:  # a subscribe still answered: its token must not set a deadline after this
                op.expiries.pop(topic, None)
        self._effects.append(DropInterest(dropped))

    # --- subscribe, recovery ----------------------------------------------------------------------

    def _start_subscribe(self, op: _Subscribe) -> None:
        """Topics the Subscribe hook decides are asked first (all at once); then the subscribe goes on."""
        ticket = next(_tickets)
        self._pending = (ticket, op)
        trusted = self._trusted_topics if op.url else ()
        for topic in op.topics:
            if topic not in self.topics and topic not in trusted and self.rules.hooks.subscribe(topic):
                asking = next(_tickets)
                op.asking[asking] = topic
                self._effects.append(CallHook(asking, HookCall(Hook.SUBSCRIBE, self.principal.user, topic=topic,
                                                               data=op.data, info=self._info)))
        if not op.asking:
            self._apply_subscribe(ticket, op)

    def _subscribe_answered(self, asking: int, answer: HookAnswer) -> None:
        ticket, op = self._pending  # type: ignore[misc]
        assert isinstance(op, _Subscribe)
        topic = op.asking.pop(asking, None)
        if topic is None:
            return
        if not answer.allowed:
            op.refusals[topic] = answer
        if op.asking:
            return
        if op.refusals:
            refused, first = next(iter(op.refusals.items()))
            error = ProtocolError(first.code, f"{refused}: {first.reason or 'refused by the backend'}", op.message_id)
            if not op.url:  # a subscribe frame is refused whole, as for a topic the rules forbid
                self._pending = None
                self._error(error.code, error.message, error.message_id)
                return
            op.topics = [t for t in op.topics if t not in op.refusals]  # the URL's others go on
            op.since = {t: p for t, p in op.since.items() if t not in op.refusals}
            op.rejected = error
        self._apply_subscribe(ticket, op)

    def _apply_subscribe(self, ticket: int, op: _Subscribe) -> None:
        if op.join_leave and op.topics:  # before the interest: the subscriber's own join reaches it too
            self._effects.append(JoinLeave(tuple(op.topics), True))
        for topic in op.since:
            op.recovering[topic] = self._guard(topic)  # live deliveries wait for the missed ones
        new = op.new = tuple(t for t in op.topics if t not in self.topics)
        self.topics.update(new)
        if new:
            self._unconfirmed[ticket] = new
            self._effects.append(AddInterest(ticket, new))
        else:
            self._read_histories(ticket, op)

    def interest_pending(self, ticket: int) -> None:
        """The interest of `ticket` is routed here but not yet applied by the push service: its new
        topics' live deliveries (which may come meanwhile) wait for the answer, so that they reach the
        client after its `ack` / `connected` and the retained state read now, never before."""
        if (server := self._server_subscribes.get(ticket)) is not None:
            self._hold_new_topics(server)
        elif (op := self._pending_op(ticket)) is not None:
            self._hold_new_topics(op)

    def _hold_new_topics(self, op: _Subscribe | _ServerSubscribe) -> None:
        for topic in op.new:
            if topic not in op.holding and topic not in op.since:  # (a recovering one is guarded already)
                op.holding[topic] = self._guard(topic)

    def interest_applied(self, ticket: int, retained: Sequence[tuple[str, bytes]] = (), confirmed: bool = True) -> None:
        """The push service applied the interest of `ticket` (`confirmed`), or the wait for it timed out:
        then `interest_confirmed` follows when it does, or `interest_overdue` first. `retained`: the
        (topic, frame) of each topic's retained state known at the edge."""
        if confirmed:
            self._unconfirmed.pop(ticket, None)
        if (server := self._server_subscribes.pop(ticket, None)) is not None:
            self._ack(None, {"type": "subscribe", "topics": self._still_subscribed(server.topics), "server": True})
            self._send_retained(retained)
            for topic, hold in server.holding.items():
                self._release_held(topic, hold)
            if confirmed:
                self._read_deferred()  # a client's recovery of these topics may wait for it
            return
        op = self._pending_op(ticket)
        if op is None:
            return
        op.retained = list(retained)
        if op.since:
            # The history reads take time: what comes meanwhile on the subscribe's other new topics (a
            # message, an edge's gap notice) waits for the ack and the retained state, as a recovery's does.
            self._hold_new_topics(op)
        self._read_histories(ticket, op)

    def _read_histories(self, ticket: int, op: _Subscribe) -> None:
        """A recovery's history is read once the push service has applied the topic's interest: read
        before, what is published between the read and the application would reach the edge by neither
        path. Until then (by this subscribe's change, or an earlier one of the topic still unconfirmed)
        the read waits; past the longer wait, the topic is not recovered, and the client keeps its position."""
        if not op.since:
            self._finish_subscribe(op)
            return
        op.deferred = set(op.since)
        self._read_confirmed(ticket, op)

    def _read_confirmed(self, ticket: int, op: _Subscribe) -> None:
        for topic in [t for t in op.since if t in op.deferred]:
            waits = [t for t, topics in self._unconfirmed.items() if topic in topics]
            if waits and not self._overdue.issuperset(waits):
                continue
            op.deferred.discard(topic)
            op.reading.add(topic)
            if waits:
                self.history_read(ticket, topic, _NOT_CONFIRMED)
            else:
                self._effects.append(ReadHistory(ticket, topic, op.since[topic]))

    def interest_confirmed(self, ticket: int) -> None:
        """The push service applied, late, the interest of `ticket` whose wait had timed out."""
        self._unconfirmed.pop(ticket, None)
        self._overdue.discard(ticket)
        self._read_deferred()

    def interest_overdue(self, ticket: int) -> None:
        """The push service has still not applied the interest of `ticket`, past the wait a recovery allows."""
        if ticket in self._unconfirmed:
            self._overdue.add(ticket)
            self._read_deferred()

    def _read_deferred(self) -> None:
        if self._pending is not None and isinstance(op := self._pending[1], _Subscribe) and op.deferred:
            self._read_confirmed(self._pending[0], op)

    def history_read(self, ticket: int, topic: str, answer: HistoryAnswer) -> None:
        op = self._pending_op(ticket)
        if op is None or topic not in op.since:
            return
        op.reads[topic] = answer
        if len(op.reads) == len(op.since):
            self._finish_subscribe(op)

    def _finish_subscribe(self, op: _Subscribe) -> None:
        self._pending = None
        for topic, expires_at in op.expiries.items():
            self._deadlines.set(topic, expires_at)
        if op.url:
            self.phase = Phase.OPEN
            welcome: dict[str, Any] = {"client_id": self.client_id, "topics": op.topics, "user": self.principal.user}
            if self.principal.expires_at is not None:
                welcome["expires_at"] = int(self.principal.expires_at)
            if self.session_id is not None:
                welcome["session"] = self.session_id
            if op.since:
                self._url_recovered = {t: self._answer(op, t) for t in op.since}
                welcome["recovery"] = self._url_recovered
            self._send(server_frame("connected", None, self._now_ms(), welcome))
        else:
            ack: dict[str, Any] = {"type": "subscribe", "topics": self._still_subscribed(op.topics)}
            if op.join_leave:
                ack["join_leave"] = True
            if op.since or op.reported:
                ack["recovery"] = {**op.reported, **{t: self._answer(op, t) for t in op.since}}
            self._ack(op.message_id, ack)
        self._send_retained(op.retained)
        for topic, since in op.since.items():
            self._release(topic, op.recovering[topic], since, op.reads[topic])
        for topic, hold in op.holding.items():
            self._release_held(topic, hold)
        if op.rejected is not None:
            self._error(op.rejected.code, f"?topics= rejected: {op.rejected.message}", None)
        if op.url and self._since_error is not None:
            self._error(ErrorCode.INVALID_MESSAGE, f"?since= ignored: {self._since_error}", None)

    def _still_subscribed(self, topics: list[str]) -> list[str]:
        """A topic the backend, the client or an expired token dropped while its subscribe was answered
        was told as gone already: what answers that subscribe after it names only what is left."""
        return [t for t in topics if t in self.topics]

    def _send_retained(self, retained: Sequence[tuple[str, bytes]]) -> None:
        for topic, frame in retained:
            if topic in self.topics:  # (not for a topic dropped meanwhile)
                self._send(frame)

    @staticmethod
    def _told(answer: HistoryAnswer, since: Position) -> Position:
        """The position the client is told to continue from: its own when it recovered, or when
        history could not be asked at all (it keeps its position to try again on its next reconnect
        instead of adopting an empty one); else where history says the topic is now."""
        if answer.recovered or not answer.epoch:
            return since
        return Position(answer.offset, answer.epoch)

    def _answer(self, op: _Subscribe, topic: str) -> dict[str, Any]:
        """The topic's position as history says, or the client's own when history could not be asked or
        the recovery was voided (its guard replaced: what it read would not reach the client)."""
        answer, since = op.reads[topic], op.since[topic]
        if self._recoveries.get(topic) is not op.recovering[topic]:
            return recovery_report(False, since.offset, since.epoch, "unsubscribed while it recovered")
        told = Position(answer.offset, answer.epoch) if answer.epoch else since
        return recovery_report(answer.recovered, told.offset, told.epoch, answer.reason)

    def _release(self, topic: str, recovery: _Recovery, since: Position, answer: HistoryAnswer) -> None:
        """The missed messages, then the live ones held meanwhile that come after them; then a floor
        at the newest position the client has, so that older deliveries still on their way are dropped.
        Nothing if the guard is no longer this recovery's (unsubscribed meanwhile, maybe subscribed again)."""
        if self._recoveries.get(topic) is not recovery:
            return
        missed = list(answer.publications) if answer.recovered else []
        held, recovery.held = recovery.held or [], None
        told = self._told(answer, since)
        stitched = stitch(missed, held, told, recovered=answer.recovered)
        for frame in in_frames(stitched, _notices(held), self.rules.batch_max_messages):
            self._send(frame)
        newest = max([told.offset, *(d.offset for d in (*missed, *held) if d.offset and d.epoch == told.epoch)])
        recovery.floor = (newest, told.epoch)

    def _release_held(self, topic: str, hold: _Recovery) -> None:
        """The live deliveries `hold` kept while a subscribe was answered, in their order; then no guard.
        Nothing if the topic is no longer held by it (unsubscribed meanwhile, maybe subscribed again)."""
        if self._recoveries.get(topic) is not hold or hold.held is None:
            return
        held, hold.held = hold.held, None
        for frame in in_frames([delivery.frame for delivery in held], _notices(held), self.rules.batch_max_messages):
            self._send(frame)
        self._unguard(topic)

    def _guard(self, topic: str) -> _Recovery:
        if topic not in self._recoveries:
            self._effects.append(Guard(topic, True))
        recovery = self._recoveries[topic] = _Recovery()
        return recovery

    def _unguard(self, topic: str) -> None:
        if self._recoveries.pop(topic, None) is not None:
            self._effects.append(Guard(topic, False))

    def admit(self, delivery: DeliveryLike) -> bool:
        """A live delivery on a guarded topic: True to send it now; False if held for after the
        recovery, or older than what this connection already has."""
        recovery = self._recoveries.get(delivery.topic)
        if recovery is None:
            return True
        if isinstance(delivery, GapNotice):
            return self._admit_notice(delivery, recovery)
        if recovery.held is not None:
            recovery.held.append(delivery)
            return False
        floor = recovery.floor
        if floor is not None and delivery.offset and delivery.epoch == floor[1] and delivery.offset <= floor[0]:
            return False
        self._unguard(delivery.topic)  # a newer message passed: nothing older can come any more
        return True

    def _admit_notice(self, notice: GapNotice, recovery: _Recovery) -> bool:
        """The edge could not fill a gap of a guarded topic. While a subscribe of it is answered, the
        notice follows the answer and what it releases, in order; it is dropped if that subscribe's
        history read is still to come, because that read, from the client's own position to now,
        covers the gap. Past the answer (a floor), it goes now, and the guard stays: it is no message."""
        if recovery.held is None:
            return True
        op = self._pending[1] if self._pending is not None else None
        reads_later = isinstance(op, _Subscribe) and op.recovering.get(notice.topic) is recovery \
            and notice.topic not in op.reading
        if not reads_later:
            recovery.held.append(notice)
        return False

    # --- handlers -------------------------------------------------------------------------------

    def handler_done(self, ticket: int, result: dict[str, Any] | None) -> None:
        message = self._pending_message(ticket)
        if message is not None:
            self._ack(message.id, {"type": message.type} if result is None else {"type": message.type, **result})

    def handler_failed(self, ticket: int, code: ErrorCode, text: str) -> None:
        """A handler's error, or a `publish` the push service refused."""
        if self._pending is not None and self._pending[0] == ticket and isinstance(self._pending[1], _Publish):
            op = self._pending[1]
            self._pending = None
            self._error(code, text, op.message_id)
            return
        message = self._pending_message(ticket)
        if message is not None:
            self._error(code, text, message.id)

    # --- helpers --------------------------------------------------------------------------------

    def _pending_op(self, ticket: int) -> _Subscribe | None:
        if self._pending is None or self._pending[0] != ticket or not isinstance(self._pending[1], _Subscribe):
            return None
        return self._pending[1]

    def _take_pending(self, ticket: int, kind: type[_Publish]) -> _Publish | None:
        if self._pending is None or self._pending[0] != ticket or not isinstance(self._pending[1], kind):
            return None
        op = self._pending[1]
        self._pending = None
        return op

    def _pending_message(self, ticket: int) -> ClientMessage | None:
        if self._pending is None or self._pending[0] != ticket or not isinstance(self._pending[1], ClientMessage):
            return None
        message = self._pending[1]
        self._pending = None
        return message

    def _send(self, frame: bytes) -> None:
        if self.phase is not Phase.CLOSED:
            self._effects.append(Send(frame))

    def _ack(self, message_id: str | None, data: dict[str, Any]) -> None:
        self._send(server_frame("ack", message_id, self._now_ms(), data))

    def _error(self, code: ErrorCode, text: str, message_id: str | None) -> None:
        if self.phase is not Phase.CLOSED:
            self._effects.append(Send(error_frame(code, text, message_id, self._now_ms()), error=code.value))


def url_positions(value: str | None) -> dict[str, Position]:
    """The `since` query parameter: `{"topic": {"offset": n, "epoch": "..."}}` as JSON (the browser
    client's reconnect sends it, so that a URL's topics recover before any live message goes out)."""
    if not value:
        return {}
    try:
        since = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`since` must be a JSON object of positions") from None
    message = ClientMessage(type="subscribe", id=None, data={"since": since}, topic=None)
    return positions_field(message, list(since) if isinstance(since, dict) else [])


def _notices(held: Sequence[DeliveryLike]) -> frozenset[bytes]:
    """The edge's notices among held deliveries: each goes as a frame of its own, not in a batch."""
    return frozenset(d.frame for d in held if isinstance(d, GapNotice))
