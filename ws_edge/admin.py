"""The admin page (`/admin`) and its JSON API (`/admin/api/*`), issue 20: off unless EDGE_ADMIN_TOKEN is set.

What it shows and does comes from the push service's server API (push.v1.ServerApi, cluster-wide:
nodes, topics, presence, disconnect, (un)subscribe), asked over this edge's push link, and from this
edge's own metrics. The live tail is an in-process subscriber of this edge (no presence, no connection
slot), streamed as Server-Sent Events over a `fetch` that carries the credential in its header.

The credential is a secret of its own, sent as `Authorization: Bearer <EDGE_ADMIN_TOKEN>`: never a
cookie (no CSRF: a foreign page cannot make the browser add the header) and never a user's JWT (no
token the identity provider signs, whatever its roles, opens it). The page itself (static HTML and JS,
no data) is served to anyone once enabled; every API call checks the credential first.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY
from push.v1 import server_api_pb2 as api_pb
from pydantic import BaseModel, Field, ValidationError

from common.disconnect_codes import APPLICATION_CODES
from common.topics import topic_error

from .admin_core import RateMeter, Refusal, credential_refusal, tail_events
from .http_body import BodyTooLarge, ClientDisconnect, bounded_body

if TYPE_CHECKING:
    from .edge import Edge

log = logging.getLogger("ws_edge.admin")
ADMIN_PAGE = "admin.html"
MAX_ADMIN_BODY = 16 * 1024  # a user, a client id, a topic, a reason: far less
# Counters and gauges of this edge the page shows (rates are per second between two reads).
COUNTERS = ("ws_edge_messages_received_total", "ws_edge_messages_delivered_total", "ws_edge_client_frames_total",
            "ws_edge_connections_opened_total", "ws_edge_connections_refused_total", "ws_edge_error_frames_total")
GAUGES = ("ws_edge_connections", "ws_edge_topics", "ws_edge_subscriptions", "ws_edge_send_queue_messages")
# The page may load only its own scripts and talk only to its own origin; it is never framed.
PAGE_HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                "x-frame-options": "DENY", "referrer-policy": "no-referrer", "cache-control": "no-store"}
GRPC_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 409,
               grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503,
               grpc.StatusCode.DEADLINE_EXCEEDED: 504}
TAIL_HEARTBEAT = 15.0  # an SSE comment this often when the topic is quiet (proxies)
TAIL_DRAIN_CHECK = 0.5  # how soon an open tail ends once the edge goes away


class AdminRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


def refused_response(request: Request, exc: Exception) -> JSONResponse:
    refusal = exc.refusal if isinstance(exc, AdminRefused) else Refusal(500, "internal", "unexpected")
    headers = {"cache-control": "no-store"}
    if refusal.status == 401:
        headers["www-authenticate"] = 'Bearer realm="push-admin"'
    return JSONResponse({"error": {"code": refusal.code, "message": refusal.message}}, refusal.status, headers=headers)


def require_admin(request: Request) -> None:
    """Every /admin/api call: the credential in the Authorization header, or 401 / 403."""
    secret = request.app.state.edge.settings.admin_token.get_secret_value()
    if (refusal := credential_refusal(request.headers.get("authorization"), secret, hmac.compare_digest)) is not None:
        log.warning("admin API %s refused for %s: %s", request.url.path,
                    request.client.host if request.client else "?", refusal.code)
        raise AdminRefused(refusal)


def _checked(topic: str) -> str:
    """Query parameters are checked here, after the credential (FastAPI's own checks would run first)."""
    if (error := topic_error(topic)) is not None:
        raise AdminRefused(Refusal(400, "invalid_argument", f"topic: {error}"))
    return topic


def _edge(request: Request) -> Edge:
    return request.app.state.edge


async def _server_api(edge: Edge, method: str, message: Any) -> Any:
    try:
        return await edge.push.server_api(method, message)
    except grpc.aio.AioRpcError as exc:
        status = GRPC_STATUS.get(exc.code(), 502)
        raise AdminRefused(Refusal(status, exc.code().name.lower(), exc.details() or exc.code().name)) from None


api = APIRouter(prefix="/admin/api", dependencies=[Depends(require_admin)])


@api.get("/info")
async def info(request: Request) -> dict[str, Any]:
    """Every push replica and edge (cluster-wide), and which edge answered."""
    edge = _edge(request)
    answer = await _server_api(edge, "Info", api_pb.InfoRequest())
    nodes = [{"kind": n.kind, "id": n.id, "address": n.address, "version": n.version, "uptime_ms": n.uptime_ms,
              "connections": n.connections, "subscriptions": n.subscriptions} for n in answer.nodes]
    return {"edge": edge.client_id_mark, "nodes": nodes}


@api.get("/channels")
async def channels(request: Request, pattern: str = "") -> dict[str, Any]:
    if len(pattern) > 200:
        raise AdminRefused(Refusal(400, "invalid_argument", "pattern: at most 200 characters"))
    answer = await _server_api(_edge(request), "Channels", api_pb.ChannelsRequest(pattern=pattern))
    return {"channels": [{"topic": c.topic, "subscribers": c.subscribers} for c in answer.channels],
            "truncated": answer.truncated}


@api.get("/presence")
async def presence(request: Request, topic: str = "") -> dict[str, Any]:
    """A topic's clients (join order) and counts; 409 where the topic has no presence."""
    edge, asked = _edge(request), api_pb.PresenceRequest(topic=_checked(topic))
    answer = await _server_api(edge, "Presence", asked)  # the counts follow from it: one call, not two
    clients = [{"client_id": c.client_id, "user": c.user or None, "joined_ms": c.joined_ms,
                "info": orjson.loads(c.info) if c.info else None} for c in answer.clients]
    users = len({c.user for c in answer.clients if c.user})
    return {"topic": topic, "clients": clients, "stats": {"clients": len(clients), "users": users}}


@api.get("/metrics")
async def edge_metrics(request: Request) -> dict[str, Any]:
    """This edge's counters and gauges, and the counters' rates per second since the previous read."""
    values = await asyncio.to_thread(read_metrics)
    meter: RateMeter = request.app.state.admin_rates
    rates = meter.rates(asyncio.get_running_loop().time(), {k: values[k] for k in COUNTERS})
    return {"edge": _edge(request).client_id_mark, "values": values, "rates": rates}


def read_metrics() -> dict[str, float]:
    """The series of COUNTERS and GAUGES from the process's registry, summed over their labels."""
    wanted, values = {*COUNTERS, *GAUGES}, dict.fromkeys((*COUNTERS, *GAUGES), 0.0)
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in wanted:
                values[sample.name] += sample.value
    return values


class Target(BaseModel):
    """Whose connections: exactly one of user / client_id (the server API says so when not)."""

    user: str = Field("", max_length=200)
    client_id: str = Field("", max_length=200)


BodyT = TypeVar("BodyT", bound=BaseModel)


class DisconnectBody(Target):
    code: int = Field(0, ge=0, le=APPLICATION_CODES[-1])  # 0: the default (the server API checks the rest)
    reason: str = Field("", max_length=123)


class SubscriptionBody(Target):
    topic: str = Field(..., min_length=1, max_length=200)


async def _body(request: Request, model: type[BodyT]) -> BodyT:
    """The JSON body, read only now that the credential passed (a FastAPI body parameter would be
    parsed first, and answer strangers 422 before 401), and bounded like every body the edge reads."""
    try:
        return model.model_validate_json(await bounded_body(request, MAX_ADMIN_BODY))
    except BodyTooLarge as exc:
        raise AdminRefused(Refusal(413, "body_too_large", str(exc))) from None
    except ClientDisconnect:
        raise AdminRefused(Refusal(400, "invalid_body", "the body was not sent whole")) from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise AdminRefused(Refusal(400, "invalid_body", problems)) from None


@api.post("/disconnect")
async def disconnect(request: Request) -> dict[str, bool]:
    body = await _body(request, DisconnectBody)
    message = api_pb.DisconnectRequest(user=body.user, client_id=body.client_id, code=body.code, reason=body.reason)
    answer = await _server_api(_edge(request), "Disconnect", message)
    log.warning("admin: disconnect user=%r client_id=%r code=%d", body.user, body.client_id, body.code)
    return {"delivered": answer.delivered}


def _subscription_route(method: str) -> Callable[..., Any]:
    async def route(request: Request) -> dict[str, bool]:
        body = await _body(request, SubscriptionBody)
        message = api_pb.ServerSubscriptionRequest(user=body.user, client_id=body.client_id, topic=body.topic)
        answer = await _server_api(_edge(request), method, message)
        log.warning("admin: %s user=%r client_id=%r topic=%r", method, body.user, body.client_id, body.topic)
        return {"delivered": answer.delivered}

    return route


api.add_api_route("/unsubscribe", _subscription_route("Unsubscribe"), methods=["POST"])
api.add_api_route("/subscribe", _subscription_route("Subscribe"), methods=["POST"])


@api.get("/tail")
async def tail(request: Request, topic: str = "") -> StreamingResponse:
    """A topic's messages as they reach this edge, as Server-Sent Events (`ready` once subscribed)."""
    edge, topic = _edge(request), _checked(topic)
    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(_tail_stream(edge, topic), media_type="text/event-stream", headers=headers)


class TailSubscriber:
    """A subscriber of this edge's router that is no connection: the fan-out hands it frames, which
    wait here for the SSE response (at most `limit`; past it they are counted as dropped)."""

    direct = None  # never a socket's fast path: always `send_frames`

    def __init__(self, limit: int = 1000) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(limit)
        self.dropped = 0

    def send(self, frame: bytes, wire: bytes | None = None) -> None:
        try:
            self.frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1

    def send_frames(self, frames: list[bytes], wire: bytes, deliveries: Any, conflation_key: Any) -> None:
        for frame in frames:
            self.send(frame)


async def _tail_stream(edge: Edge, topic: str) -> AsyncIterator[bytes]:
    subscriber = TailSubscriber()
    waits, _ = edge.interests.route(subscriber, [topic])  # live frames only: no retained state
    try:
        await edge.confirmed(waits)  # (inside: a caller gone while it waits leaves no subscriber behind)
        yield tail_events("ready", {"topic": topic, "edge": edge.client_id_mark})
        quiet = 0.0
        while not edge.draining:
            try:
                frame = await asyncio.wait_for(subscriber.frames.get(), TAIL_DRAIN_CHECK)
            except TimeoutError:
                quiet += TAIL_DRAIN_CHECK
                if quiet >= TAIL_HEARTBEAT:
                    quiet = 0.0
                    yield b": heartbeat\n\n"
                continue
            quiet = 0.0
            yield tail_events("frame", frame, subscriber.dropped)
        yield tail_events("end", {"reason": "going away"})  # the edge drains: the response ends with it
    finally:
        edge.drop_interest(subscriber, [topic])  # type: ignore[arg-type]


class PublicStatic(StaticFiles):
    """The static files but the admin page's HTML: that is served at /admin only, with its headers (no
    framing, its content policy, no-store), and only while the admin is on."""

    async def get_response(self, path: str, scope: Any) -> Any:
        if path == ADMIN_PAGE:  # (normalized by StaticFiles.get_path)
            raise HTTPException(404)
        return await super().get_response(path, scope)


def install_admin(app: FastAPI, edge: Edge, static: Any) -> None:
    """The admin page and API on `app` when EDGE_ADMIN_TOKEN is set; otherwise nothing (404)."""
    if edge.settings.admin_token is None:
        return
    app.state.admin_rates = RateMeter()
    app.add_exception_handler(AdminRefused, refused_response)
    app.include_router(api)
    page = static / ADMIN_PAGE
    app.add_api_route("/admin", lambda: FileResponse(page, headers=PAGE_HEADERS), include_in_schema=False)
