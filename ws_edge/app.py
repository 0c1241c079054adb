"""FastAPI routes: the WebSocket endpoints, the task HTTP API, health, the client library, dashboard and admin page."""

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
from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.requests import HTTPConnection

from common.client_ids import assign_client_id
from common.logs import connection_id

from . import metrics
from .admin import PublicStatic, install_admin
from .config import EdgeSettings
from .connection import Connection, WebSocketSink
from .core.frames import ProtocolError, split_topics_param
from .core.limits import PendingConnections, origin_allowed
from .core.session import Session, url_positions
from .door import door_refusal
from .edge import ChannelFactory, Edge
from .handlers import HandlerRegistry
from .http_stream import emulation, serve_stream
from .logs import redact_tokens
from .session_driver import SessionDriver
from .task_api import tasks_router
from .wire import bound_close_reasons

log = logging.getLogger("ws_edge.app")
STATIC = Path(__file__).parent / "static"
WEBSOCKET_PATHS = frozenset({"/ws", "/ws/task"})
# The HTTP transports: path -> (SSE, the task endpoint's default topics)
STREAM_PATHS = {"/sse": (True, False), "/sse/task": (True, True), "/stream": (False, False),
                "/stream/task": (False, True)}


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
            self._edge.frames.capture(scope, send)
            websocket = WebSocket(scope, receive, bound_close_reasons(send))
            params = websocket.query_params
            wanted = self._topics(params.get("topics"), scope["path"] == "/ws/task")
            await serve_socket(self._edge, websocket, params.get("client_id"), wanted, params.get("token"),
                               params.get("since"))
            return
        if scope["type"] == "http" and (stream := STREAM_PATHS.get(scope["path"])) is not None:
            sse, task = stream
            wanted = self._topics(HTTPConnection(scope).query_params.get("topics"), task)
            await serve_stream(self._edge, scope, receive, send, sse, wanted)
            return
        await self.api(scope, receive, send)

    def _topics(self, topics: str | None, task_endpoint: bool) -> list[str]:
        if not topics and task_endpoint:
            return self._task_topics  # a task endpoint without topics (or with none): the task topics
        return split_topics_param(topics)


def create_app(settings: EdgeSettings | None = None, handlers: HandlerRegistry | None = None,
               push_channel: ChannelFactory | None = None) -> EdgeApp:
    settings = settings or EdgeSettings()
    edge = Edge(settings, handlers, push_channel)
    # API documentation only where enabled (EDGE_API_DOCS): it maps every route for whoever asks.
    docs = settings.api_docs
    app = FastAPI(title="ws_edge", lifespan=_lifespan(edge), openapi_url="/openapi.json" if docs else None,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None)
    app.state.edge = edge
    # Connections before their first request: counted by the HTTP protocol (http_guard.py, __main__.py).
    app.state.pending = PendingConnections(settings.max_pending_per_ip, settings.pending_limit)
    app.include_router(health_router)
    app.include_router(tasks_router)
    if settings.dev_tokens:
        app.include_router(dev_router)
    app.add_api_route("/emulation", emulation, methods=["POST"], include_in_schema=False)
    app.add_api_route("/", lambda: FileResponse(STATIC / "index.html"), include_in_schema=False)
    app.mount("/static", PublicStatic(directory=STATIC), name="static")
    install_admin(app, edge, STATIC)  # /admin and /admin/api/*: only with EDGE_ADMIN_TOKEN
    return EdgeApp(app, edge, split_topics_param(settings.task_endpoint_topics))


def _lifespan(edge: Edge):  # type: ignore[no-untyped-def]
    settings = edge.settings

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

    return lifespan


health_router = APIRouter()


@health_router.get("/healthz")
async def healthz(request: Request) -> dict[str, Any]:
    edge: Edge = request.app.state.edge
    connections = [d.connection for d in edge.connections.values()]
    return {
        "status": "ok",
        "connections": len(connections),
        "fast_path_connections": sum(1 for c in connections if c.fast_path),
        "coalesced_messages": edge.stats["coalesced"] + sum(c.coalesced for c in connections),
        "slow_consumer_disconnects": edge.stats["slow_consumers"],
        "push_connected": edge.push.connected.is_set(),
        "push_replica": edge.push.replica,
        "frame_writer": edge.frames.name,
        "pending_handshakes": request.app.state.pending.total,
    }


@health_router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    edge: Edge = request.app.state.edge
    ready = edge.push.connected.is_set() and not edge.draining
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


dev_router = APIRouter()


@dev_router.get("/dev/token")
async def dev_token(request: Request, sub: str = Query(..., min_length=1, max_length=100)) -> dict[str, str]:
    """For the local demo only (EDGE_DEV_TOKENS): a 1-hour HS256 token for any user."""
    secret = request.app.state.edge.settings.jwt_hs256_secret
    assert secret is not None
    claims = {"sub": sub, "exp": int(time.time()) + 3600}
    return {"token": jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")}


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
    if (refusal := door_refusal(edge, client_id, address)) is not None:
        await websocket.close(*refusal)
        return
    try:
        await serve_accepted(edge, websocket, address, client_id, topics, token, since)
    finally:
        edge.addresses.release(address)


async def serve_accepted(edge: Edge, websocket: WebSocket, address: str, client_id: str | None, topics: list[str],
                         token: str | None, since: str | None) -> None:
    try:
        positions, since_error = url_positions(since), None
    except ProtocolError as exc:
        positions, since_error = {}, exc.message  # said after `connected`, like unusable ?topics=
    frames, scope = edge.frames, websocket.scope
    connection = Connection(WebSocketSink(websocket), client_id or assign_client_id(edge.client_id_mark),
                            edge.new_send_queue(), write=frames.writer_for(scope), address=address,
                            abort=frames.aborter_for(scope))
    connection_id.set(connection.tag)  # in every line logged while serving it (and in tasks started here)
    frames.tag_frame_logs(scope, connection.tag)
    session = Session(edge.rules, connection.client_id, asyncio.get_running_loop().time())
    driver = SessionDriver(edge, session, connection, "websocket", websocket.headers)
    await driver.serve(_frames_of(websocket), token, topics, positions, since_error)
    log.debug("#%d = closed", connection.id)


def _frames_of(websocket: WebSocket):  # type: ignore[no-untyped-def]
    """The WebSocket's client frames, as the session driver reads them (None: disconnected)."""

    async def receive() -> str | bytes | None:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return None
        frame = event.get("text")
        return frame if frame is not None else event.get("bytes") or b""

    return receive


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
