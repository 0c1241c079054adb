"""Creating the task service's gRPC server (separate from running it, so tests bind port 0)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import prometheus_client
from task.v1 import task_service_pb2 as pb
from task.v1 import task_service_pb2_grpc as pb_grpc

from common.grpc_security import bind_server, server_interceptors
from common.grpc_server import add_health_and_reflection, mark_serving
from pushclient import PushClient, StreamPublisher

from .config import TaskSettings
from .core.policy import TaskLimits
from .kinds import kinds
from .metrics import RUNNERS
from .runner import TaskRunner
from .servicer import TaskServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TaskService"].full_name


@dataclass
class RunningTaskServer:
    server: grpc.aio.Server
    runner: TaskRunner
    publisher: StreamPublisher
    push: PushClient
    port: int

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.server.stop(grace)
        await self.runner.close()
        await self.publisher.close()
        await self.push.close()


async def start_task_server(settings: TaskSettings) -> RunningTaskServer:
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.host)
    push = PushClient(
        settings.push_address,
        token=settings.push_token.get_secret_value() if settings.push_token else None,
        tls_ca_file=settings.push_tls_ca_file,
        tls_cert_file=settings.push_tls_cert_file,
        tls_key_file=settings.push_tls_key_file,
        tls_server_name=settings.push_tls_server_name,
    )
    publisher = push.stream_publisher(max_buffer=settings.publish_buffer, max_buffer_bytes=settings.publish_buffer_bytes,
                                      conflate_after=settings.publish_conflate_after, idempotent=True)
    limits = TaskLimits(max_params_bytes=settings.max_params_bytes, max_active=settings.max_active_tasks,
                        max_active_per_user=settings.max_active_tasks_per_user)
    runner = TaskRunner(kinds, publisher, keep_finished=settings.keep_finished, limits=limits,
                        list_max_bytes=settings.list_max_bytes)
    # The retained list is this process's from its stream's first connection (a previous process's may
    # list tasks that can never finish now), and again on every reconnection (a restarted push service
    # has none).
    publisher.on_connect = runner.publish_list
    publisher.start()
    RUNNERS.runners.add(runner)
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 1024 * 1024)],
        interceptors=server_interceptors(settings.auth_token.get_secret_value() if settings.auth_token else None),
    )
    pb_grpc.add_TaskServiceServicer_to_server(TaskServicer(runner), server)
    health_servicer = add_health_and_reflection(server, [SERVICE_NAME])
    port = bind_server(server, f"{settings.host}:{settings.port}", cert_file=settings.tls_cert_file,
                       key_file=settings.tls_key_file, client_ca_file=settings.tls_client_ca_file)
    await server.start()
    await mark_serving(health_servicer, [SERVICE_NAME])
    return RunningTaskServer(server=server, runner=runner, publisher=publisher, push=push, port=port)
