"""Creating the push service's gRPC server (separate from running it, so tests bind port 0)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import prometheus_client
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc
from push.v1 import server_api_pb2 as api_pb
from push.v1 import server_api_pb2_grpc as api_pb_grpc

from common.grpc_security import bind_server, server_interceptors
from common.grpc_server import add_health_and_reflection, mark_serving
from common.inprocess_grpc import InProcessServer
from common.presence_rules import PresenceRules

from .broker import broker_from_url
from .config import PushSettings
from .core.history import HistoryPolicy, PageLimits
from .hub import Hub
from .metrics import HUBS, RedisEvents
from .presence import Roster
from .server_api import ServerApiServicer
from .servicer import PushServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PushService"].full_name
API_SERVICE_NAME = api_pb.DESCRIPTOR.services_by_name["ServerApi"].full_name


@dataclass
class RunningPushServer:
    server: grpc.aio.Server
    hub: Hub
    port: int
    local: InProcessServer  # the same servicers, for a caller in this process (single_process: the edge)

    async def stop(self, grace: float | None = 1.0) -> None:
        """Publishes are refused from now on (UNAVAILABLE: their publishers send them again, to another
        replica or to this one restarted), those already taken are published, then every edge stream
        gets its pending batches and ends cleanly (the edges reconnect likewise); other calls get
        `grace` seconds."""
        await self.hub.stop_publishing(grace if grace is not None else 5.0)
        self.hub.drain()
        # The in-process calls too (their servicers close their sessions), in the same grace period.
        await asyncio.gather(self.server.stop(grace), self.local.stop(grace))
        if self.hub.roster is not None:
            await self.hub.roster.close()
        await self.hub.close()


async def start_push_server(settings: PushSettings) -> RunningPushServer:
    bounds = {"topic_bytes": settings.history_topic_bytes, "total_bytes": settings.history_total_bytes}
    hub = Hub(
        broker_from_url(
            settings.broker_url,
            HistoryPolicy.from_json(settings.history_rules, **bounds) if settings.history_rules
            else HistoryPolicy(**bounds),
            prefix=settings.redis_prefix,
            idempotency_window=settings.idempotency_window,
            idempotency_max_keys=settings.idempotency_max_keys,
            idempotency_max_bytes=settings.idempotency_max_bytes,
            sweep_interval=settings.history_sweep_interval,
            redis_max_connections=settings.redis_max_connections,
            redis_pool_timeout=settings.redis_pool_timeout,
            events=RedisEvents(),
            presence_max_clients=settings.presence_max_clients,
        ),
        batch_max_size=settings.batch_max_size,
        batch_interval=settings.batch_interval,
        max_pending_batches=settings.max_pending_batches,
        max_pending_deliveries=settings.max_pending_deliveries,
        max_pending_bytes=settings.max_pending_bytes,
        client_id_hold=settings.client_id_hold,
        anonymous_client_id_hold=settings.anonymous_client_id_hold,
        edge_heartbeat_interval=settings.edge_heartbeat_interval,
    )
    await hub.start()
    roster = Roster(hub.broker, PresenceRules.parse(settings.presence_rules), ttl=settings.presence_ttl,
                    occupancy_topic=settings.occupancy_topic, address=f"{settings.host}:{settings.port}",
                    figures=lambda: (hub.stats()["edge_streams"], hub.stats()["topics"]))
    hub.roster = roster
    HUBS.hubs.add(hub)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.host)  # its own thread
    # Requests are bounded: a publish request carries messages of at most max_data_bytes each.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024 + settings.max_data_bytes),
            ("grpc.server.max_pending_requests", settings.max_queued_calls),
            ("grpc.server.max_pending_requests_hard_limit", 2 * settings.max_queued_calls),
        ],
        interceptors=server_interceptors(settings.auth_token.get_secret_value() if settings.auth_token else None),
    )
    page = PageLimits(settings.history_page_max_messages, settings.history_page_max_bytes)
    servicer = PushServicer(hub, max_data_bytes=settings.max_data_bytes, history_page=page, roster=roster)
    api_servicer = ServerApiServicer(hub, roster)
    local = InProcessServer()
    for target in (server, local):
        pb_grpc.add_PushServiceServicer_to_server(servicer, target)
        api_pb_grpc.add_ServerApiServicer_to_server(api_servicer, target)
    health_servicer = add_health_and_reflection(server, [SERVICE_NAME, API_SERVICE_NAME])
    port = bind_server(server, f"{settings.host}:{settings.port}", cert_file=settings.tls_cert_file,
                       key_file=settings.tls_key_file, client_ca_file=settings.tls_client_ca_file)
    await server.start()
    await mark_serving(health_servicer, [SERVICE_NAME, API_SERVICE_NAME])
    roster.start()
    return RunningPushServer(server=server, hub=hub, port=port, local=local)
