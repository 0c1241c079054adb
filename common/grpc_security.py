"""gRPC security for every server and client: a bearer token checked by a server interceptor, and
TLS or mutual TLS. Both are off unless configured (the local demo runs on loopback without them)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

# Probes must work without credentials: health checking only (reflection needs the token).
UNAUTHENTICATED_METHODS = ("/grpc.health.v1.Health/",)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call without `authorization: Bearer <token>` with UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(UNAUTHENTICATED_METHODS):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._expected):
            return handler
        return _refusing(handler, "missing or wrong bearer token" if given else "missing bearer token")


def _refusing(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
        yield  # pragma: no cover - never reached; makes this an async generator

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(refuse_stream if handler.response_streaming else refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def server_interceptors(token: str | None) -> list[grpc.aio.ServerInterceptor]:
    return [BearerTokenInterceptor(token)] if token else []


def bind_server(server: grpc.aio.Server, address: str, *, cert_file: Path | None, key_file: Path | None,
                client_ca_file: Path | None) -> int:
    """Bind `address` (port 0 picks one), with TLS when a certificate is given and mutual TLS when a
    client CA is given too. Returns the bound port."""
    if cert_file is None:
        return server.add_insecure_port(address)
    if key_file is None:
        raise ValueError("a TLS certificate needs its private key")
    credentials = grpc.ssl_server_credentials(
        [(key_file.read_bytes(), cert_file.read_bytes())],
        root_certificates=client_ca_file.read_bytes() if client_ca_file else None,
        require_client_auth=client_ca_file is not None,
    )
    return server.add_secure_port(address, credentials)


class _BearerMetadata:
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)


# grpc.aio files each interceptor under the first kind it is an instance of: one class per kind.
class _UnaryUnaryBearer(_BearerMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _UnaryStreamBearer(_BearerMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _StreamUnaryBearer(_BearerMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request_iterator)


class _StreamStreamBearer(_BearerMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request_iterator)


def bearer_interceptors(token: str) -> list[_BearerMetadata]:
    return [kind(token) for kind in (_UnaryUnaryBearer, _UnaryStreamBearer, _StreamUnaryBearer, _StreamStreamBearer)]


def grpc_target(address: str) -> str:
    """One `host:port` (a DNS name: all its addresses), or a comma-separated list of `ip:port`
    (e.g. several push replicas). With round_robin, calls are balanced over the replicas that are up
    and a stream that breaks is opened again on another."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) <= 1:
        return address.strip()
    return ("ipv6:" if parts[0].startswith("[") else "ipv4:") + ",".join(parts)


# round_robin over the replicas; a channel's own subchannels, so that a new client does not inherit
# another's connection backoff to a server that has just come back.
BALANCING = [("grpc.lb_policy_name", "round_robin"), ("grpc.use_local_subchannel_pool", 1)]
# What a client of the push service takes in one answer (the edge's push link, PushClient; not the
# hooks client, whose answers are the application's). gRPC's default is 4 MiB, but one message may carry up to
# PUSH_MAX_DATA_BYTES' ceiling of 4 MiB of data plus its envelope, alone or at the end of a 1 MiB
# batch on an edge's stream or of a history page: past the default, the edge's stream broke on it and
# the message was lost to every subscriber.
MAX_RECEIVE = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


def secure_channel(
    address: str,
    *,
    token: str | None = None,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A client channel: TLS when a CA is given (mutual TLS with a client certificate), and the
    bearer token on every call when given. `server_name`: the name the servers' certificates carry,
    when the address does not (a list of IP addresses of replicas, say)."""
    interceptors = bearer_interceptors(token) if token else None
    target, options = grpc_target(address), [*BALANCING, *options]
    if ca_file is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(),
        private_key=key_file.read_bytes() if key_file else None,
        certificate_chain=cert_file.read_bytes() if cert_file else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
