"""FastAPI routes: the WebSocket endpoints, the task HTTP API, health, the client library and dashboard."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from common.clock import now_ms

from .config import EdgeSettings
from .connection import Connection
from .core.codes import CloseCode, ErrorCode
from .core.frames import MAX_CLIENT_ID_LENGTH, ProtocolError, error_frame, server_frame, split_topics_param
from .core.ratelimit import TokenBucket
from .edge import Edge
from .handlers import HandlerRegistry
from .task_gateway import TaskGatewayError
from .wire import CaptureProtocol, writer_for

log = logging.getLogger("ws_edge.app")
STATIC = Path(__file__).parent / "static"


def create_app(settings: EdgeSettings | None = None, handlers: HandlerRegistry | None = None) -> FastAPI:
    settings = settings or EdgeSettings()
    edge = Edge(settings, handlers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await edge.start()
        # Everything made at start-up lives forever: keep it out of the collector's full passes,
        # whose pauses would otherwise show in the delivery latency's tail.
        gc.collect()
        gc.freeze()
        yield
        await edge.close()

    app = FastAPI(title="ws_edge", lifespan=lifespan)
    app.add_middleware(CaptureProtocol)
    app.state.edge = edge
    task_topics = split_topics_param(settings.task_endpoint_topics)

    @app.websocket("/ws")
    async def ws_main(websocket: WebSocket, client_id: str | None = Query(None), topics: str | None = Query(None)):
        await serve_socket(edge, websocket, client_id, split_topics_param(topics))

    @app.websocket("/ws/task")
    async def ws_task(websocket: WebSocket, client_id: str | None = Query(None), topics: str | None = Query(None)):
        await serve_socket(edge, websocket, client_id, split_topics_param(topics) if topics else task_topics)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "connections": len(edge.connections),
            "fast_path_connections": sum(1 for c in edge.connections.values() if c.fast_path),
            "push_connected": edge.push.connected.is_set(),
        }

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = edge.push.connected.is_set()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/api/tasks")
    async def list_tasks() -> dict[str, Any]:
        return {"tasks": await _tasks_call(edge.tasks.list())}

    @app.post("/api/tasks", status_code=201)
    async def start_task(body: dict[str, Any] = Body(default_factory=dict)) -> dict[str, Any]:  # noqa: B008
        kind = body.get("kind", "data_collection")
        params = body.get("params", {})
        if not isinstance(kind, str) or not isinstance(params, dict):
            raise HTTPException(400, "`kind` must be a string and `params` an object")
        return {"task": await _tasks_call(edge.tasks.start(kind, params))}

    @app.get("/api/tasks/{task_id}")
    async def get_task(task_id: str) -> dict[str, Any]:
        return {"task": await _tasks_call(edge.tasks.get(task_id))}

    @app.post("/api/tasks/{task_id}/cancel")
    async def cancel_task(task_id: str) -> dict[str, Any]:
        return {"task": await _tasks_call(edge.tasks.cancel(task_id))}

    @app.get("/")
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _tasks_call(coro):  # type: ignore[no-untyped-def]
    try:
        return await coro
    except TaskGatewayError as exc:
        raise HTTPException(exc.http_status, exc.message) from None


async def serve_socket(edge: Edge, websocket: WebSocket, client_id: str | None, topics: list[str]) -> None:
    settings = edge.settings
    await websocket.accept()
    if client_id is not None and not (0 < len(client_id) <= MAX_CLIENT_ID_LENGTH and client_id.isprintable()):
        await websocket.close(CloseCode.INVALID_CLIENT_ID, "invalid client_id")
        return
    loop = asyncio.get_running_loop()
    now = loop.time()
    connection = Connection(
        websocket,
        client_id or uuid.uuid4().hex,
        TokenBucket(settings.rate_limit, settings.rate_burst, now),
        settings.send_queue_frames,
        now,
        write=writer_for(websocket.scope),
    )
    waits = edge.attach(connection)  # frames routed from now on queue up until the writer starts
    try:
        try:
            topics = edge.check_topics(connection, topics, None)
            rejected: ProtocolError | None = None
        except ProtocolError as exc:
            topics, rejected = [], exc
        topic_waits, retained_frames = edge.subscribe(connection, topics)
        # `connected` means: from now on, what is published to these topics and this client_id arrives.
        await edge.confirmed(waits + topic_waits)
        connection.start_writer(
            server_frame("connected", None, now_ms(), {"client_id": connection.client_id, "topics": topics})
        )
        for frame in retained_frames:
            connection.send(frame)
        if rejected is not None:
            connection.send(error_frame(rejected.code, f"?topics= rejected: {rejected.message}", None, now_ms()))
        log.debug("#%d = open, client_id=%s topics=%s", connection.id, connection.client_id, topics)
        while True:
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                break
            frame = event.get("text")
            if frame is None:
                frame = event.get("bytes") or b""
            await edge.handle_frame(connection, frame, loop.time())
    except Exception as exc:  # a broken socket: release the connection like a normal close
        log.debug("#%d receive loop ended: %r", connection.id, exc)
    finally:
        edge.detach(connection)
        await connection.stop()
        log.debug("#%d = closed", connection.id)


__all__ = ["ErrorCode", "create_app", "serve_socket"]
