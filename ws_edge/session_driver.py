"""Runs one connection's session (core/session.py): feeds it what happens, carries out its effects.

The session decides; this moves bytes and makes the calls it asks for. Effects that wait for the
push service (interest, history) or a handler run as tasks held here, and feed their answer back.
The transport is given as `receive` (the next client frame, None once the peer is gone) and the
connection's sink: a WebSocket (app.py) or an HTTP stream whose client frames arrive by
`POST /emulation` (http_stream.py). The loop reads a frame only when the session accepts one, so a
client's next frame waits in the socket (or the stream's inbox) while its previous one is answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from common import tracing

from . import metrics
from .confirm_gates import when_all_done
from .connection import Connection
from .connection_spans import ConnectionSpans
from .core.codes import CloseCode, ErrorCode, fit_close_reason
from .core.hooks import unavailable
from .core.recovery import Position
from .core.session import (
    AddInterest,
    Admit,
    CallHook,
    Close,
    DropInterest,
    Effect,
    Guard,
    JoinLeave,
    PublishMessage,
    ReadHistory,
    ReadPresence,
    RunHandler,
    Send,
    Session,
    SetPrincipal,
)
from .edge import Edge
from .handlers import HandlerError
from .hook_client import Caller
from .presence import read_presence

log = logging.getLogger("ws_edge.session")
Receive = Callable[[], Awaitable[str | bytes | None]]  # the next client frame; None: the peer is gone
_REFUSALS = {CloseCode.INVALID_CLIENT_ID: "client_id", CloseCode.TRY_AGAIN_LATER: "client_id",
             CloseCode.TOO_MANY_CONNECTIONS: "too_many_connections", CloseCode.BACKEND_UNAVAILABLE: "connect_hook"}


class SessionDriver:
    def __init__(self, edge: Edge, session: Session, connection: Connection, transport: str = "websocket",
                 headers: Mapping[str, str] | None = None) -> None:
        self.edge = edge
        self.session = session
        self.connection = connection
        self.transport = transport
        self._headers = headers  # the handshake's, for the Connect hook (only the allow-listed are given)
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self._wake = asyncio.Event()  # the session accepts frames again, or has closed
        # A timer for the session's next token deadline (a notice or an expiry), to the second, instead
        # of waiting for the edge's sweep (EDGE_HEARTBEAT_CHECK_INTERVAL).
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at: float | None = None
        # What forgets the callbacks on interest changes a recovery waits for past their gate: the push
        # service applies them only when it is back, and a closed connection must not be held till then.
        self._late_interests: dict[int, Callable[[], None]] = {}  # by ticket, until applied
        self.spans = ConnectionSpans.sampled(type(connection.sink).__name__) if tracing.ENABLED else None

    async def serve(self, receive: Receive, token: str | None, topics: list[str], since: dict[str, Position],
                    since_error: str | None = None) -> None:
        """The connection's whole life, from an accepted socket to its end."""
        loop = asyncio.get_running_loop()
        session = self.session
        try:
            session.open(token, topics, since, time.time(), since_error)
            self._run_effects()
            while not session.closed:
                if not session.accepting:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                deadline = session.auth_deadline()
                try:
                    frame = await asyncio.wait_for(receive(), None if deadline is None else deadline - loop.time())
                except TimeoutError:  # the deadline counts as reached (uvloop's timers run up to 1 ms early)
                    self.tick(loop.time() if deadline is None else max(loop.time(), deadline), time.time())
                    continue
                if frame is None:
                    break
                metrics.CLIENT_FRAMES.inc()
                session.receive(frame, loop.time(), time.time())
                self._run_effects()
        except Exception as exc:  # a broken socket: release the connection like a normal close
            log.debug("#%d receive loop ended: %r", self.connection.id, exc)
        finally:
            session.closed_by_peer()
            self._run_effects()
            if self._wakeup is not None:
                self._wakeup.cancel()
            for task in self._tasks:
                task.cancel()
            for forget in self._late_interests.values():
                forget()
            self.edge.detach(self)
            if self.spans is not None:
                self.spans.ended()
            await self.connection.wait_closed()
            await self.connection.stop()

    def tick(self, now: float, wall: float) -> None:
        self.session.tick(now, wall)
        self._run_effects()

    def _run_effects(self) -> None:
        # Effects carried out at once may feed the session an answer (an interest already applied):
        # what that makes comes next, in order.
        while effects := self.session.effects():
            for effect in effects:
                self._run(effect)
        if self.session.accepting or self.session.closed:
            self._wake.set()
        self._set_wakeup(self.session.next_wakeup())

    def _set_wakeup(self, at: float | None) -> None:
        if at == self._wakeup_at:
            return
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_at, self._wakeup = at, None
        if at is not None:
            loop = asyncio.get_running_loop()
            self._wakeup = loop.call_later(max(0.0, at - time.time()), self._woken, at)

    def _woken(self, at: float) -> None:
        self._wakeup_at = self._wakeup = None
        # The time it was set for counts as reached, as common/clock.py's `call_at_reached` does on the
        # loop's clock (uvloop runs a timer up to a millisecond early): told the wall clock alone, the
        # session would find nothing due, ask again, and spin until then.
        self.tick(asyncio.get_running_loop().time(), max(time.time(), at))

    def _run(self, effect: Effect) -> None:
        connection, session = self.connection, self.session
        if isinstance(effect, Send):
            self._send(effect)
        elif isinstance(effect, Guard):
            if effect.on:
                self.edge.router.guard(effect.topic, connection, session.admit)
            else:
                self.edge.router.unguard(effect.topic, connection)
        elif isinstance(effect, DropInterest):
            self.edge.drop_interest(connection, effect.topics)
        elif isinstance(effect, Admit):
            if self.edge.needs_claim(connection.client_id):
                self._spawn(self._admit(effect))
            else:
                self._admitted(self.edge.admit(self, effect.principal))
        elif isinstance(effect, AddInterest):
            waits, retained = self.edge.add_interest(connection, effect.topics)
            if self.spans is not None:
                self.spans.subscribing(effect.ticket, effect.topics)
            if not self._when_confirmed(waits, lambda: self._interest_applied(effect.ticket, retained, waits)):
                session.interest_pending(effect.ticket)  # guards now, before a delivery can come
        elif isinstance(effect, ReadHistory):
            self._spawn(self._read_history(effect))
        elif isinstance(effect, JoinLeave | ReadPresence):
            self._run_presence(effect)
        elif isinstance(effect, RunHandler):
            self._spawn(self._handle(effect))
        elif isinstance(effect, CallHook):
            self._spawn(self._call_hook(effect))
        elif isinstance(effect, PublishMessage):
            self._spawn(self._publish(effect))
        elif isinstance(effect, SetPrincipal):
            connection.principal = effect.principal  # handlers see the refreshed token (roles, expiry)
        elif isinstance(effect, Close):
            self._close(effect)

    def _send(self, effect: Send) -> None:
        connection = self.connection
        if effect.error is not None:
            metrics.ERROR_FRAMES.labels(effect.error).inc()
        if connection.started:
            connection.send(effect.frame)
            return
        connection.start_writer(effect.frame)  # the session's first frame is `connected`
        if self.spans is not None:
            self.spans.connected(connection.client_id, len(self.session.topics))
        log.debug("#%d = open, client_id=%s user=%s topics=%s", connection.id, connection.client_id,
                  connection.principal.user, sorted(self.session.topics))

    def _close(self, effect: Close) -> None:
        connection = self.connection
        if not connection.started:
            metrics.REFUSED.labels(_REFUSALS.get(effect.code, "auth")).inc()  # type: ignore[call-overload]
            if self.spans is not None:
                self.spans.refused(effect.reason)
        else:
            log.info("#%d = %s, closing", connection.id, effect.reason, extra={"conn": connection.tag})
        connection.close_soon(effect.code, effect.reason)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Awaitable[None]) -> None:
        """An effect's task never leaves its session waiting: a bug in it closes the connection (1011,
        the client reconnects) instead of leaving a ticket unanswered for ever."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            self._effect_failed()

    def _effect_failed(self) -> None:
        log.exception("#%d: an effect failed", self.connection.id, extra={"conn": self.connection.tag})
        self.session.refused(CloseCode.INTERNAL_ERROR, "internal error")
        self._run_effects()

    async def _admit(self, effect: Admit) -> None:
        refusal = await self.edge.claim(self.connection.client_id, effect.principal)
        self._admitted(refusal if refusal is not None else self.edge.admit(self, effect.principal))
        self._run_effects()

    def _admitted(self, admission: tuple[CloseCode, str] | list[asyncio.Future[None]]) -> None:
        if isinstance(admission, tuple):
            self.session.refused(*admission)
        else:
            self._when_confirmed(admission, self.session.admitted)

    def _when_confirmed(self, waits: list[asyncio.Future[None]], answer: Callable[[], None]) -> bool:
        """Feed the session `answer` once the push service has applied `waits`: at once when it has
        (most connects: the loop in _run_effects carries on; True), else from the confirm gates'
        callbacks (no task per waiting connection), guarded like an effect's task (False)."""
        if not self.edge.when_confirmed(waits, lambda: self._answer_later(answer)):
            return False
        answer()
        return True

    def _answer_later(self, answer: Callable[[], None]) -> None:
        try:
            answer()
            self._run_effects()
        except Exception:
            self._effect_failed()

    def _interest_applied(self, ticket: int, retained: list[tuple[str, bytes]], waits: list[asyncio.Future[None]]) -> None:
        if self.session.closed:  # its gate opened after the connection ended: nothing to wait for
            return
        if self.spans is not None:
            self.spans.subscribed(ticket)
        pending = [wait for wait in waits if not wait.done()]  # the wait for them timed out (the gates' bound)
        self.session.interest_applied(ticket, retained, confirmed=not pending)
        if pending:
            # A recovery's history read waits for them as long again (core/session.py `_read_histories`),
            # and is told if they are applied even later.
            def overdue() -> None:
                if not all(wait.done() for wait in pending):
                    self._answer_later(lambda: self.session.interest_overdue(ticket))

            self.edge.when_confirmed_for_recovery(pending, overdue)

            def confirmed() -> None:
                self._late_interests.pop(ticket, None)
                self._answer_later(lambda: self.session.interest_confirmed(ticket))

            self._late_interests[ticket] = when_all_done(pending, confirmed)

    async def _read_history(self, effect: ReadHistory) -> None:
        answer = await self.edge.read_history(effect.topic, effect.since)
        self.session.history_read(effect.ticket, effect.topic, answer)
        self._run_effects()

    def _run_presence(self, effect: JoinLeave | ReadPresence) -> None:
        if isinstance(effect, JoinLeave):
            self.edge.presence.want_join_leave(self.connection, effect.topics, effect.on)
        else:
            self._spawn(self._read_presence(effect))

    async def _read_presence(self, effect: ReadPresence) -> None:
        try:
            result = await read_presence(self.edge.push, effect.topic, effect.stats)
        except grpc.aio.AioRpcError as exc:
            log.warning("#%d: presence of %s not read: %s", self.connection.id, effect.topic, exc.details())
            self.session.handler_failed(effect.ticket, ErrorCode.UNAVAILABLE, "presence cannot be read now; retry")
        else:
            self.session.handler_done(effect.ticket, result)
        self._run_effects()

    def server_command(self, command: dict[str, Any]) -> None:
        """The server API's command for this connection (ws_edge/presence.py found it here)."""
        op, topics = command.get("op"), command.get("topics") or []
        if op == "disconnect":
            code = command.get("code")
            self.session.server_disconnect(code if isinstance(code, int) else CloseCode.DISCONNECTED_BY_SERVER,
                                           fit_close_reason(str(command.get("reason", ""))))
        elif op == "subscribe" and isinstance(topics, list):
            self.session.server_subscribe(topics)
        elif op == "unsubscribe" and isinstance(topics, list):
            self.session.server_unsubscribe(topics)
        self._run_effects()

    async def _handle(self, effect: RunHandler) -> None:
        message = effect.message
        handler = self.edge.handlers.get(message.type)
        assert handler is not None  # the session asked the registry
        try:
            result = await handler(self.edge.handler_context(self.connection), message)
        except HandlerError as exc:
            self.session.handler_failed(effect.ticket, exc.code, exc.message)
        except Exception:
            log.exception("#%d: handler failed", self.connection.id)
            self.session.handler_failed(effect.ticket, ErrorCode.INTERNAL_ERROR, "internal error")
        else:
            self.session.handler_done(effect.ticket, result)
        self._run_effects()

    async def _call_hook(self, effect: CallHook) -> None:
        hooks = self.edge.hooks
        if hooks is None:  # the session asks only for hooks the settings switch on, and those need a client
            answer = unavailable("no hooks backend configured")
        else:
            allowed = self.edge.settings.hook_connect_headers.lower().split(",")
            headers = {k: v for k, v in (self._headers or {}).items() if k.lower() in allowed}
            caller = Caller(self.connection.client_id, self.transport, self.connection.address, headers)
            answer = await hooks.call(effect.call, caller)
        self.session.hook_answered(effect.ticket, answer, time.time())
        self._run_effects()

    async def _publish(self, effect: PublishMessage) -> None:
        try:
            message_id = await self.edge.push.publish(effect.topic, effect.type, effect.data)
        except grpc.aio.AioRpcError as exc:
            code = ErrorCode.INVALID_MESSAGE if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else ErrorCode.UNAVAILABLE
            self.session.handler_failed(effect.ticket, code, f"push service: {exc.details()}")
        else:
            self.session.published(effect.ticket, message_id)
        self._run_effects()
