"""FastAPI routes: the WebSocket endpoints, the task HTTP API, health, the client library and dashboard."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import prometheus_client
from fastapi import Body, FastAPI, Header, HTTPException, Query, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from common.client_ids import assign_client_id, chosen_client_id_error
from common.logs import connection_id

from . import metrics
from .config import EdgeSettings
from .connection import Connection
from .core.auth import ANONYMOUS, AuthError, Principal
from .core.codes import CloseCode
from .core.frames import ProtocolError, split_topics_param
from .core.limits import PendingConnections, origin_allowed
from .core.session import Session, url_positions
from .edge import Edge
from .handlers import HandlerRegistry
from .logs import redact_tokens
from .session_driver import SessionDriver
from .task_gateway import TaskGatewayError
from .wire import bound_close_reasons, capture_protocol, tag_frame_logs, writer_for

log = logging.getLogger("ws_edge.app")
STATIC = Path(__file__).parent / "static"
WEBSOCKET_PATHS = frozenset({"/ws", "/ws/task"})


class EdgeApp:
    """The edge's ASGI application. The two WebSocket endpoints are served here directly; everything
    else (HTTP API, health, metrics, static files, lifespan) by FastAPI. A WebSocket is held for hours,
    and through FastAPI's stack each one would keep a dozen middleware and routing frames, exit stacks
    and closures alive for its whole life and pay for them at every handshake (measured with 10,000
    idle connections: 32 KiB of RSS each through FastAPI, 22 KiB here; docs/PERFORMANCE.md)."""

    def __init__(self, api: FastAPI, edge: Edge, task_topics: list[str]) -> None:
        self.api = api
        self.state = api.state
        self._edge = edge
        self._task_topics = task_topics

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "websocket" and scope["path"] in WEBSOCKET_PATHS:
            capture_protocol(scope, send)
            websocket = WebSocket(scope, receive, bound_close_reasons(send))
            params = websocket.query_params
            topics = params.get("topics")
            if not topics and scope["path"] == "/ws/task":
                wanted = self._task_topics  # `/ws/task` without topics (or with none): the task topics
            else:
                wanted = split_topics_param(topics)
            await serve_socket(self._edge, websocket, params.get("client_id"), wanted, params.get("token"),
                               params.get("since"))
            return
        await self.api(scope, receive, send)


def create_app(settings: EdgeSettings | None = None, handlers: HandlerRegistry | None = None) -> EdgeApp:
    settings = settings or EdgeSettings()
    edge = Edge(settings, handlers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        redact_tokens()
        metrics_server = None
        if settings.metrics_port:  # its own thread, its own port: never the public one
            try:
                metrics_server, _ = prometheus_client.start_http_server(settings.metrics_port, addr=settings.host)
            except OSError as exc:
                log.error("cannot serve metrics on %s:%d (EDGE_METRICS_PORT): %s", settings.host,
                          settings.metrics_port, exc)
                raise
        await edge.start()
        # Everything made at start-up lives forever: keep it out of the collector's full passes,
        # whose pauses would otherwise show in the delivery latency's tail.
        gc.collect()
        gc.freeze()
        yield
        await edge.close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()

    # API documentation only where enabled (EDGE_API_DOCS): it maps every route for whoever asks.
    docs = settings.api_docs
    app = FastAPI(title="ws_edge", lifespan=lifespan, openapi_url="/openapi.json" if docs else None,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None)
    app.state.edge = edge
    # Connections before their first request: counted by the HTTP protocol (http_guard.py, __main__.py).
    pending = app.state.pending = PendingConnections(settings.max_pending_per_ip, settings.pending_limit)
    task_topics = split_topics_param(settings.task_endpoint_topics)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "connections": len(edge.connections),
            "fast_path_connections": sum(1 for d in edge.connections.values() if d.connection.fast_path),
            "coalesced_messages": edge.stats["coalesced"] + sum(d.connection.coalesced
                                                                for d in edge.connections.values()),
            "slow_consumer_disconnects": edge.stats["slow_consumers"],
            "push_connected": edge.push.connected.is_set(),
            "pending_handshakes": pending.total,
        }

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = edge.push.connected.is_set() and not edge.draining
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    def api_principal(authorization: str | None) -> Principal:
        """The caller of the task API: `Authorization: Bearer <token>`, checked like a WebSocket's, and
        required like one where anonymous connections are off (the task list names every task and
        its parameters)."""
        if authorization is None:
            if not settings.allow_anonymous:
                raise HTTPException(401, "authentication required: Authorization: Bearer <token>",
                                    headers={"WWW-Authenticate": "Bearer"})
            return ANONYMOUS
        if edge.verifier is None or not authorization.startswith("Bearer "):
            raise HTTPException(401, "unusable Authorization header", headers={"WWW-Authenticate": "Bearer"})
        try:
            return edge.verifier.verify(authorization.removeprefix("Bearer "), time.time())
        except AuthError as exc:
            raise HTTPException(401, exc.message, headers={"WWW-Authenticate": "Bearer"}) from None

    def task_principal(authorization: str | None) -> Principal:
        """The caller of a task API call that starts or cancels: authenticated, then allowed."""
        principal = api_principal(authorization)
        if not edge.may_control_tasks(principal):
            raise HTTPException(403, "not allowed to start or cancel tasks")
        return principal

    @app.get("/api/tasks")
    async def list_tasks(authorization: str | None = Header(None)) -> dict[str, Any]:
        api_principal(authorization)
        return {"tasks": await _tasks_call(edge.tasks.list())}

    @app.post("/api/tasks", status_code=201)
    async def start_task(
        body: dict[str, Any] = Body(default_factory=dict),  # noqa: B008
        authorization: str | None = Header(None),
    ) -> dict[str, Any]:
        principal = task_principal(authorization)
        return {"task": await _tasks_call(edge.tasks.start(body, principal))}

    @app.get("/api/tasks/{task_id}")
    async def get_task(task_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        api_principal(authorization)
        return {"task": await _tasks_call(edge.tasks.get(task_id))}

    @app.post("/api/tasks/{task_id}/cancel")
    async def cancel_task(task_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        principal = task_principal(authorization)
        return {"task": await _tasks_call(edge.tasks.cancel(task_id, principal))}

    if settings.dev_tokens:
        @app.get("/dev/token")
        async def dev_token(sub: str = Query(..., min_length=1, max_length=100)) -> dict[str, str]:
            """For the local demo only (EDGE_DEV_TOKENS): a 1-hour HS256 token for any user."""
            assert settings.jwt_hs256_secret is not None
            claims = {"sub": sub, "exp": int(time.time()) + 3600}
            return {"token": jwt.encode(claims, settings.jwt_hs256_secret.get_secret_value(), algorithm="HS256")}

    @app.get("/")
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return EdgeApp(app, edge, task_topics)


async def _tasks_call(coro):  # type: ignore[no-untyped-def]
    try:
        return await coro
    except TaskGatewayError as exc:
        raise HTTPException(exc.http_status, exc.message) from None


async def serve_socket(
    edge: Edge, websocket: WebSocket, client_id: str | None, topics: list[str], token: str | None,
    since: str | None = None,
) -> None:
    """One WebSocket: refused before the upgrade, or accepted and served by its session's driver."""
    address = websocket.client.host if websocket.client else "unknown"
    if (refusal := handshake_refusal(edge, websocket, address)) is not None:
        await websocket.send_denial_response(refusal)
        return
    await websocket.accept()
    if client_id is not None and (why := chosen_client_id_error(client_id)) is not None:
        metrics.REFUSED.labels("client_id").inc()
        await websocket.close(CloseCode.INVALID_CLIENT_ID, why)
        return
    try:
        positions = url_positions(since)
    except ProtocolError as exc:
        await websocket.close(CloseCode.INVALID_CLIENT_ID, exc.message)  # a URL to fix, not to retry
        return
    connection = Connection(websocket, client_id or assign_client_id(edge.client_id_mark), edge.new_send_queue(),
                            write=writer_for(websocket.scope), address=address)
    connection_id.set(connection.tag)  # in every line logged while serving it (and in tasks started here)
    tag_frame_logs(websocket.scope, connection.tag)
    session = Session(edge.rules, connection.client_id, asyncio.get_running_loop().time())
    await SessionDriver(edge, session, connection).serve(websocket.receive, token, topics, positions)
    log.debug("#%d = closed", connection.id)


def handshake_refusal(edge: Edge, websocket: WebSocket, address: str) -> PlainTextResponse | None:
    """Why a WebSocket is refused before the upgrade: a foreign Origin (cross-site WebSocket
    hijacking), an edge going away, too many attempts from the address; else None."""
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), edge.origins):
        log.info("handshake from %s refused: origin %r not allowed", address, origin)
        metrics.REFUSED.labels("origin").inc()
        return PlainTextResponse("origin not allowed", status_code=403)
    if edge.draining:
        metrics.REFUSED.labels("draining").inc()
        return PlainTextResponse("going away", status_code=503)
    if not edge.attempts.allow(address, asyncio.get_running_loop().time()):
        metrics.REFUSED.labels("attempt_rate").inc()
        return PlainTextResponse("too many connection attempts", status_code=429)
    return None


__all__ = ["EdgeApp", "create_app", "serve_socket"]
