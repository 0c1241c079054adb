"""The task HTTP API (`/api/tasks`): the same tasks as the `task_start` / `task_cancel` messages, for
callers that are not browsers on a WebSocket. The caller is checked like a WebSocket's token."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Request

from .core.auth import ANONYMOUS, AuthError, Principal
from .edge import Edge
from .task_gateway import TaskGatewayError

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
async def start_task(request: Request, body: dict[str, Any] = Body(default_factory=dict),  # noqa: B008
                     caller: Principal = Depends(task_controller)) -> dict[str, Any]:  # noqa: B008
    return {"task": await _tasks_call(_edge(request).tasks.start(body, caller))}


@tasks_router.get("/{task_id}", dependencies=[Depends(api_caller)])
async def get_task(request: Request, task_id: str) -> dict[str, Any]:
    return {"task": await _tasks_call(_edge(request).tasks.get(task_id))}


@tasks_router.post("/{task_id}/cancel")
async def cancel_task(request: Request, task_id: str,
                      caller: Principal = Depends(task_controller)) -> dict[str, Any]:  # noqa: B008
    return {"task": await _tasks_call(_edge(request).tasks.cancel(task_id, caller))}
