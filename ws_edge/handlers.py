"""The registry of message types a browser may send (the guide's extension point).

A handler is `async def handler(ctx, message) -> dict | None`. What it returns is sent back as the
`data` of an `ack` frame with the request's id; raising `HandlerError` sends an `error` frame with
its code instead. The connection stays open either way. Register your own with

    @handlers.register("custom_action")
    async def custom_action(ctx: HandlerContext, message: ClientMessage) -> dict | None: ...

`subscribe`, `unsubscribe` and `ping` are protocol messages, handled by the edge itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from common.topics import topic_error

from .core.auth import Principal
from .core.codes import ErrorCode
from .core.frames import ClientMessage
from .task_gateway import TaskGateway, TaskGatewayError


class HandlerError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# publish(topic, type, data bytes) -> the message id; raises grpc.aio.AioRpcError
Publish = Callable[[str, str, bytes], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What a handler may know and do: the sender, publishing, tasks; given by the edge per message."""

    client_id: str
    principal: Principal
    publish: Publish
    tasks: TaskGateway
    may_publish: Callable[[Principal, str], bool]
    may_control_tasks: Callable[[Principal], bool]

    def require_publish(self, topic: str) -> None:
        """Raise FORBIDDEN unless the topic rules let this connection publish on `topic`."""
        if not self.may_publish(self.principal, topic):
            raise HandlerError(ErrorCode.FORBIDDEN, f"not allowed to publish on {topic}")

    def require_task_control(self) -> None:
        if not self.may_control_tasks(self.principal):
            raise HandlerError(ErrorCode.FORBIDDEN, "not allowed to start or cancel tasks")


Handler = Callable[[HandlerContext, ClientMessage], Awaitable[dict[str, Any] | None]]


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, type_: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            if type_ in self._handlers:
                raise ValueError(f"a handler for {type_!r} is already registered")
            self._handlers[type_] = handler
            return handler

        return decorator

    def get(self, type_: str) -> Handler | None:
        return self._handlers.get(type_)

    def types(self) -> list[str]:
        return sorted(self._handlers)


def _required_str(message: ClientMessage, field: str, max_length: int = 1024) -> str:
    value = message.data.get(field)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise HandlerError(ErrorCode.INVALID_MESSAGE, f"`data.{field}` must be a non-empty string")
    return value


async def send_message(ctx: HandlerContext, message: ClientMessage) -> dict[str, Any]:
    """The guide's `send_message`: `{recipient, content}` becomes a `notification` on `user:{recipient}`."""
    recipient = _required_str(message, "recipient", 100)
    content = message.data.get("content")
    topic = f"user:{recipient}"
    if (why := topic_error(topic)) is not None:
        raise HandlerError(ErrorCode.INVALID_TOPIC, why)
    ctx.require_publish(topic)
    # `from` is the sender's self-chosen client_id (the guide's field, kept); `from_user` is who the
    # verified token says sent it (null for an anonymous sender): the only one a recipient may trust.
    data = orjson.dumps(
        {"user_id": recipient, "message": content, "from": ctx.client_id,
         "from_user": ctx.principal.user, "read": False}
    )
    try:
        message_id = await ctx.publish(topic, "notification", data)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise HandlerError(ErrorCode.INVALID_MESSAGE, exc.details() or "rejected") from None
        raise HandlerError(ErrorCode.UNAVAILABLE, f"push service: {exc.details()}") from None
    return {"message_id": message_id, "topic": topic}


async def task_start(ctx: HandlerContext, message: ClientMessage) -> dict[str, Any]:
    """Start a task: `data = {kind?: "data_collection", params?: {symbols: [...], interval: s}}`."""
    ctx.require_task_control()
    try:
        return {"task": await ctx.tasks.start(message.data, ctx.principal)}
    except TaskGatewayError as exc:
        raise HandlerError(exc.code, exc.message) from None


async def task_cancel(ctx: HandlerContext, message: ClientMessage) -> dict[str, Any]:
    ctx.require_task_control()
    task_id = _required_str(message, "task_id", 100)
    try:
        return {"task": await ctx.tasks.cancel(task_id, ctx.principal)}
    except TaskGatewayError as exc:
        raise HandlerError(exc.code, exc.message) from None


def default_handlers() -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("send_message")(send_message)
    registry.register("task_start")(task_start)
    registry.register("task_cancel")(task_cancel)
    return registry
