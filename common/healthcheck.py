"""The probes of the services' healthchecks (`python -m push_service.healthcheck` and the like): exit 0
when the service that runs beside it (same environment, so the same settings) is healthy, 1 otherwise.

The containers' HEALTHCHECK and docker-compose's healthchecks run them: a gRPC server must answer the
standard health check with SERVING; the edge must answer /readyz with 200 (its push stream is up). Each
service's own module reads its settings; this one knows no service.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 3.0


def local_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def grpc_serving(host: str, port: int, tls: bool) -> bool:
    """The standard health check (exempt from the bearer token). With TLS the probe has no CA to trust
    the server's certificate with, so it only checks that the port accepts connections."""
    if tls:
        try:
            socket.create_connection((local_host(host), port), timeout=TIMEOUT).close()
        except OSError:
            return False
        return True
    with grpc.insecure_channel(f"{local_host(host)}:{port}") as channel:
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


def probe_exit_code(healthy: bool) -> int:
    """A container healthcheck's answer: 0 healthy, 1 not."""
    return 0 if healthy else 1
