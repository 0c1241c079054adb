"""A gRPC channel to servicers of this same process: generated stubs work on it unchanged, and a call is
a direct call of the servicer's method, with no serialization, no socket and no poller thread.

`python -m single_process` runs the push service inside the edge's process and links them with it: the
edge's stream then costs what the two sides' Python costs, not a gRPC write and read per batch, a hop
between processes and a loop turn behind gRPC's poller thread. The contract stays the proto: the same
messages and the same status codes.

What a call keeps of gRPC:
- a servicer's `context.abort(code, details)` reaches the caller as `grpc.aio.AioRpcError` with that
  code and details; any other exception as UNKNOWN, as grpc reports it; an unknown method as
  UNIMPLEMENTED;
- a unary call's `timeout` ends it with DEADLINE_EXCEEDED;
- responses are flow-controlled: a servicer's response generator waits while STREAM_WINDOW of them are
  unread, so a caller that stops reading holds the servicer back instead of queueing without bound;
- `cancel()`, or cancelling the task that reads the call, cancels the servicer's side (it sees
  CancelledError) and the caller's iteration raises CancelledError, as grpc.aio's does;
- the server's `stop()` waits for the calls in progress, then cancels what is left, as a gRPC server's.
What differs: messages go by reference (neither side may change one once sent; ours build each for one
send); the window counts responses, not bytes; a streamed call takes no timeout; server interceptors
(the token check) do not run: the caller is this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

STREAM_WINDOW = 64  # responses a call holds unread before its servicer waits (gRPC counts bytes instead)
PEER = "in-process"


class InProcessServer:
    """Takes servicers as a `grpc.aio.Server` does (`add_XServicer_to_server(servicer, this)`) and
    makes channels to them."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self.calls: set[asyncio.Task[Any]] = set()  # streamed calls in progress

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        for method, handler in handlers.items():
            self.handlers[f"/{service}/{method}"] = handler

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        self._generic.extend(generic_handlers)

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        if (handler := self.handlers.get(method)) is not None:
            return handler
        details = _CallDetails(method, ())
        return next((h for g in self._generic if (h := g.service(details)) is not None), None)

    def channel(self, address: str = PEER) -> InProcessChannel:
        """A channel to this server; `address` is taken and ignored, so that this method is a channel
        factory (`create_app(push_channel=...)`): in-process, there is one server whatever the address."""
        return InProcessChannel(self)

    async def stop(self, grace: float | None = None) -> None:
        """Wait up to `grace` seconds for the streamed calls in progress to end, then cancel the rest
        and wait for their servicers' own cleanup (an edge stream's closes its session)."""
        if self.calls and grace:
            await asyncio.wait(list(self.calls), timeout=grace)
        for task in list(self.calls):
            task.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, invocation_metadata: Any) -> None:
        self.method, self.invocation_metadata = method, invocation_metadata


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Context:
    """What our servicers ask of their `grpc.aio.ServicerContext`."""

    def __init__(self, metadata: Any) -> None:
        self._metadata = tuple(metadata or ())

    def peer(self) -> str:
        return PEER

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise _Aborted(code, details)


def _error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


def _failure(exc: Exception) -> AioRpcError:
    if isinstance(exc, _Aborted):
        return _error(exc.code, exc.details)
    if isinstance(exc, AioRpcError):  # a call the servicer made failed, and it let that through
        return exc
    return _error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


UNIMPLEMENTED = (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")


class InProcessChannel:
    """What stubs use of `grpc.aio.Channel`, over an InProcessServer's servicers."""

    def __init__(self, server: InProcessServer) -> None:
        self._server = server

    def _handler(self, method: str | bytes) -> grpc.RpcMethodHandler | None:
        return self._server.handler(method.decode() if isinstance(method, bytes) else method)

    def unary_unary(self, method: str | bytes, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        handler = self._handler(method)

        def call(request: Any = None, *, timeout: float | None = None, metadata: Any = None, **_: Any) -> Any:
            return _unary(handler, request, _Context(metadata), timeout)

        return call

    def unary_stream(self, method: str | bytes, *args: Any, **kwargs: Any) -> Callable[..., StreamCall]:
        handler = self._handler(method)

        def call(request: Any = None, *, metadata: Any = None, **_: Any) -> StreamCall:
            if handler is None:
                return StreamCall(_failing(_error(*UNIMPLEMENTED)), self._server.calls)
            serve = handler.stream_stream if handler.request_streaming else handler.unary_stream
            return StreamCall(serve(request, _Context(metadata)), self._server.calls)

        return call

    stream_unary = unary_unary  # the handler says whether it reads a stream
    stream_stream = unary_stream

    async def close(self, grace: float | None = None) -> None:
        """Nothing to close: the calls belong to the server (InProcessServer.stop)."""

    async def channel_ready(self) -> None:
        """Always ready."""


async def _unary(handler: grpc.RpcMethodHandler | None, request: Any, context: _Context,
                 timeout: float | None) -> Any:
    if handler is None:
        raise _error(*UNIMPLEMENTED)
    serve = handler.stream_unary if handler.request_streaming else handler.unary_unary
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await serve(request, context)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        raise _failure(exc) from None


async def _failing(error: AioRpcError) -> AsyncIterator[Any]:
    raise error
    yield  # an async generator


_WAKE = object()  # tells a waiting reader that the call ended


class StreamCall:
    """A call with streamed responses: iterate it for them; `cancel()` ends the servicer's side."""

    def __init__(self, responses: AsyncIterator[Any], calls: set[asyncio.Task[Any]]) -> None:
        self._responses: asyncio.Queue[Any] = asyncio.Queue(STREAM_WINDOW)
        self._end: AioRpcError | bool | None = False  # False while it runs, then None (OK) or the error
        self._cancelled = False  # by this side: its iteration raises CancelledError, as grpc.aio's does
        self._task = asyncio.create_task(self._serve(responses), name="in-process-call")
        calls.add(self._task)
        self._task.add_done_callback(calls.discard)
        self._task.add_done_callback(self._ended)

    async def _serve(self, responses: AsyncIterator[Any]) -> None:
        try:
            async for response in responses:
                await self._responses.put(response)
        except Exception as exc:
            self._end = _failure(exc)
        else:
            self._end = None
        finally:  # cancelled while it waited for the reader: the servicer's own cleanup runs now
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as exc:
                    self._end = self._end or _failure(exc)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Also when it was cancelled before it began (then its own code never ran)."""
        if self._end is False:
            self._end = _error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        if not self._responses.full():  # else the reader finds the end once it has read what is queued
            self._responses.put_nowait(_WAKE)

    async def wait_for_connection(self) -> None:
        """The servicer is in this process: nothing to wait for."""

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._read()

    async def _read(self) -> AsyncIterator[Any]:
        while True:
            if self._cancelled:
                raise asyncio.CancelledError()
            if self._end is not False and self._responses.empty():
                if self._end is not None:
                    raise self._end
                return
            try:
                response = await self._responses.get()
            except asyncio.CancelledError:  # the reader's task was cancelled: so is the call
                self.cancel()
                raise
            if response is not _WAKE and not self._cancelled:
                yield response

    def cancel(self) -> bool:
        if self._task.done():
            return False
        self._cancelled = True
        self._task.cancel()
        if not self._responses.full():  # wake a reader waiting for a response
            self._responses.put_nowait(_WAKE)
        return True

    def done(self) -> bool:
        return self._end is not False

    async def code(self) -> grpc.StatusCode:
        await asyncio.gather(self._task, return_exceptions=True)
        return self._end.code() if isinstance(self._end, AioRpcError) else grpc.StatusCode.OK
