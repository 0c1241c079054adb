"""Ordered pipelining: commands go to Redis on one connection in the order they are queued, without
waiting for each other's replies (issue 17.8).

`send(*args)` queues a command at once (its place in the order is fixed by the call, not by when it is
written) and returns a future of its reply; a per-command error reply is the future's *result* (a
`ResponseError`), a broken connection its exception. One writer writes whatever is queued, at most
`max_in_flight` commands unanswered (past that it waits: a slow Redis makes callers wait, it does not
refuse them); one reader matches replies to commands in order. Redis runs one connection's commands
in the order it reads them, so when the connection breaks, what ran is a prefix of what was written:
every unanswered command fails (the caller retries it, with an idempotency key exactly once), and so
do the commands queued behind them (so nothing is published after a command that was answered with a
failure; a connection found closed while idle loses nothing).

Scripts are loaded on every new connection (and again after a NOSCRIPT reply), so EVALSHA works after
Redis restarted empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("push_service.broker.redis")

Reply = Any  # a decoded reply, or a ResponseError for a per-command error


class _ClosedWhileIdle(RedisConnectionError):
    """Nothing was written on it since its last reply: what is queued can go on the next one."""


class OrderedPipeline:
    def __init__(self, pool: ConnectionPool, scripts: Sequence[str] = (), max_in_flight: int = 4096) -> None:
        self._pool = pool
        self._scripts = list(scripts)
        self._max_in_flight = max_in_flight
        self._queued: deque[tuple[tuple[Any, ...], asyncio.Future[Reply]]] = deque()
        self._awaiting: deque[asyncio.Future[Reply]] = deque()  # written, reply not read yet
        self._work = asyncio.Event()  # something queued
        self._written = asyncio.Event()  # something awaits its reply
        self._room = asyncio.Event()  # fewer than max_in_flight unanswered
        self._room.set()
        self._reload = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def in_flight(self) -> int:
        return len(self._awaiting)

    def send(self, *args: Any) -> asyncio.Future[Reply]:
        """Queue one command (in call order); its reply, or ResponseError as the result."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(RedisConnectionError("the pipeline is closed"))
            return future
        self._queued.append((args, future))
        self._work.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="redis-pipeline")
        return future

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail(self._awaiting, RedisConnectionError("the pipeline is closed"))
        self._fail(self._queued, RedisConnectionError("the pipeline is closed"))

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            try:
                connection = await self._pool.get_connection()
            except (RedisError, OSError) as exc:  # Redis away: what is queued fails now, callers retry
                self._fail(self._queued, exc)
                self._work.clear()
                continue
            try:
                await self._load_scripts(connection)
                writer = asyncio.create_task(self._write(connection))
                reader = asyncio.create_task(self._read(connection))
                try:
                    done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (writer, reader):
                        task.cancel()
                    await asyncio.gather(writer, reader, return_exceptions=True)
                failure = next(iter(done)).exception() or RedisConnectionError("pipeline stopped")
                raise failure
            except (RedisError, OSError) as exc:
                log.warning("redis pipeline connection lost (%d unanswered and %d queued commands fail): %s",
                            len(self._awaiting), len(self._queued), exc)
                self._fail(self._awaiting, exc)
                if not isinstance(exc, _ClosedWhileIdle):
                    # What was queued behind a lost command fails too: a stream's later message must not
                    # be published after an earlier one was answered "refused" (it may have run).
                    self._fail(self._queued, exc)
                if not self._queued:
                    self._work.clear()
            finally:
                with contextlib.suppress(Exception):
                    await connection.disconnect()
                await self._pool.release(connection)

    async def _load_scripts(self, connection: AbstractConnection) -> None:
        for script in self._scripts:
            await connection.send_command("SCRIPT", "LOAD", script, check_health=False)
            await connection.read_response()
        self._reload = False

    async def _write(self, connection: AbstractConnection) -> None:
        while True:
            await self._work.wait()
            await self._room.wait()
            if not self._awaiting and await connection.can_read():
                # Idle, yet something to read: the server closed it (a restart). Nothing is lost:
                # what is queued goes on the next connection.
                raise _ClosedWhileIdle("the connection was closed while idle")
            room = self._max_in_flight - len(self._awaiting)
            commands: list[tuple[Any, ...]] = []
            if self._reload:
                self._reload = False
                for script in self._scripts:
                    commands.append(("SCRIPT", "LOAD", script))
                    loaded: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
                    loaded.add_done_callback(_ignore_outcome)
                    self._awaiting.append(loaded)
            while self._queued and len(commands) < room:
                args, future = self._queued.popleft()
                if future.done():  # its caller gave up before it was written
                    continue
                commands.append(args)
                self._awaiting.append(future)
            if not self._queued:
                self._work.clear()
            if len(self._awaiting) >= self._max_in_flight:
                self._room.clear()
            if commands:
                self._written.set()
                await connection.send_packed_command(pack(commands), check_health=False)

    async def _read(self, connection: AbstractConnection) -> None:
        while True:
            if not self._awaiting:
                self._written.clear()
                await self._written.wait()
                continue
            try:
                reply: Reply = await connection.read_response()
            except ResponseError as exc:  # this command's error; the connection is fine
                reply = exc
                if isinstance(exc, NoScriptError):
                    self._reload = True  # the script cache was flushed: load it before the next write
            future = self._awaiting.popleft()
            if not future.done():
                future.set_result(reply)
            if len(self._awaiting) < self._max_in_flight:
                self._room.set()

    def _fail(self, futures: deque[Any], exc: BaseException) -> None:
        while futures:
            item = futures.popleft()
            future = item[1] if isinstance(item, tuple) else item
            if not future.done():
                # Whatever broke the connection, the caller sees Redis away (UNAVAILABLE), never a bug.
                lost = exc if isinstance(exc, (RedisConnectionError, RedisTimeoutError)) else RedisConnectionError(str(exc))
                future.set_exception(lost)
        self._room.set()


def pack(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands in RESP, one buffer. (redis-py's packer encodes argument by argument through its
    Encoder: it was the largest single cost of a publish in the push service's profile.)"""
    out = bytearray()
    for args in commands:
        out += b"*%d\r\n" % len(args)
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = b"%d" % arg
            out += b"$%d\r\n%b\r\n" % (len(arg), arg)
    return bytes(out)


def _ignore_outcome(future: asyncio.Future[Reply]) -> None:
    if not future.cancelled():
        future.exception()  # nobody awaits a script load: its failure fails the commands after it
