"""The task HTTP API (`/api/tasks`): the same tasks as the `task_start` / `task_cancel` messages, for
callers that are not browsers on a WebSocket. The caller is checked like a WebSocket's token."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Request

from .core.auth import ANONYMOUS, AuthError, Principal
from .edge import Edge
from .http_body import BodyTooLarge, ClientDisconnect, bounded_body
from .task_gateway import TaskGatewayError

log = logging.getLogger("ws_edge.task_api")
# A start's body at most: its params (TASK_MAX_PARAMS_BYTES, 16 KiB by default) and the envelope around them.
MAX_START_BODY = 64 * 1024

tasks_router = APIRouter(prefix="/api/tasks")
BEARER = {"WWW-Authenticate": "Bearer"}


def _edge(request: Request) -> Edge:
    return request.app.state.edge  # type: ignore[no-any-return]


def api_caller(request: Request, authorization: str | None = Header(None)) -> Principal:
    """`Authorization: Bearer <token>`, checked like a WebSocket's, and required like one where
    anonymous connections are off (the task list names every task and its owner)."""
    edge = _edge(request)
    if authorization is None:
        if not edge.settings.allow_anonymous:
            raise HTTPException(401, "authentication required: Authorization: Bearer <token>", headers=BEARER)
        return ANONYMOUS
    if edge.verifier is None or not authorization.startswith("Bearer "):
        raise HTTPException(401, "unusable Authorization header", headers=BEARER)
    try:
        return edge.verifier.verify(authorization.removeprefix("Bearer "), time.time())
    except AuthError as exc:
        raise HTTPException(401, exc.message, headers=BEARER) from None


def task_controller(request: Request, caller: Principal = Depends(api_caller)) -> Principal:  # noqa: B008
    """The caller of a call that starts or cancels: authenticated, then allowed."""
    if not _edge(request).may_control_tasks(caller):
        raise HTTPException(403, "not allowed to start or cancel tasks")
    return caller


async def _tasks_call(coro):  # type: ignore[no-untyped-def]
    try:
        return await coro
    except TaskGatewayError as exc:
        raise HTTPException(exc.http_status, exc.message) from None


@tasks_router.get("", dependencies=[Depends(api_caller)])
async def list_tasks(request: Request) -> dict[str, Any]:
    return {"tasks": await _tasks_call(_edge(request).tasks.list())}


@tasks_router.post("", status_code=201)
async def start_task(request: Request, caller: Principal = Depends(task_controller)) -> dict[str, Any]:  # noqa: B008
    return {"task": await _tasks_call(_edge(request).tasks.start(await _start_body(request), caller))}


async def _start_body(request: Request) -> dict[str, Any]:
    """The JSON object of a start, read only now that the caller may start tasks, and bounded: a body
    parameter was read and parsed whole first, so that anyone could make the edge hold 100 MB for a 401."""
    try:
        raw = await bounded_body(request, MAX_START_BODY)
    except BodyTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except ClientDisconnect:
        log.debug("a task start's caller went away before its body was read")
        raise HTTPException(400, "the body was not sent whole") from None
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


@tasks_router.get("/{task_id}", dependencies=[Depends(api_caller)])
async def get_task(request: Request, task_id: str) -> dict[str, Any]:
    return {"task": await _tasks_call(_edge(request).tasks.get(task_id))}


@tasks_router.post("/{task_id}/cancel")
async def cancel_task(request: Request, task_id: str,
                      caller: Principal = Depends(task_controller)) -> dict[str, Any]:  # noqa: B008
    return {"task": await _tasks_call(_edge(request).tasks.cancel(task_id, caller))}
