"""`python -m common.healthcheck push_service|task_service|ws_edge`: exit 0 when the service that
runs beside it (same environment, so the same settings) is healthy, 1 otherwise.

The containers' HEALTHCHECK and docker-compose's healthchecks run it: a gRPC server must answer the
standard health check with SERVING; the edge must answer /readyz with 200 (its push stream is up).
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 3.0


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def grpc_serving(host: str, port: int, tls: bool) -> bool:
    """The standard health check (exempt from the bearer token). With TLS the probe has no CA to trust
    the server's certificate with, so it only checks that the port accepts connections."""
    if tls:
        try:
            socket.create_connection((_local(host), port), timeout=TIMEOUT).close()
        except OSError:
            return False
        return True
    with grpc.insecure_channel(f"{_local(host)}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def healthy(service: str) -> bool:
    if service == "push_service":
        from push_service.config import PushSettings

        push = PushSettings()
        return grpc_serving(push.host, push.port, push.tls_cert_file is not None)
    if service == "task_service":
        from task_service.config import TaskSettings

        task = TaskSettings()
        return grpc_serving(task.host, task.port, task.tls_cert_file is not None)
    if service == "ws_edge":
        from ws_edge.config import EdgeSettings

        edge = EdgeSettings()
        return http_ok(f"http://{_local(edge.host)}:{edge.port}/readyz")
    raise SystemExit(f"healthcheck: unknown service {service!r} (push_service, task_service or ws_edge)")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m common.healthcheck push_service|task_service|ws_edge", file=sys.stderr)
        return 2
    return 0 if healthy(argv[0]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
