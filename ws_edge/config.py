"""ws_edge settings, from EDGE_* environment variables, validated at start."""

from __future__ import annotations

import ipaddress
import resource
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import LogFormat, LogLevel, TracingSettings

from .core.auth import TokenVerifier
from .core.permissions import Access, TopicPolicy


class EdgeSettings(TracingSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    push_address: str = "127.0.0.1:50051"
    task_address: str = "127.0.0.1:50052"
    # The guide's client-side limit: messages per second a client may send (token bucket).
    rate_limit: float = Field(100.0, gt=0)
    rate_burst: int = Field(100, ge=1)
    max_frame_bytes: int = Field(65536, ge=256)
    max_topics_per_connection: int = Field(100, ge=1)
    # A connection that sends nothing (not even `ping`, every 30 s in the guide's client) for this
    # long is dead: closed with 4000 and released.
    client_timeout: float = Field(90.0, gt=0)
    heartbeat_check_interval: float = Field(5.0, gt=0)
    # An HTTP stream (/sse, /stream) writes a heartbeat this often (an SSE comment, an empty line), so
    # that proxies do not time it out; a heartbeat the client's socket takes counts as its activity.
    stream_heartbeat_interval: float = Field(15.0, gt=0)
    # A slow client's queue: past `coalesce_mark` messages, a conflated topic's newer message replaces
    # the queued one with its key; past `send_queue_frames` messages or `send_queue_bytes`, close 4008.
    send_queue_frames: int = Field(1000, ge=1)
    send_queue_bytes: int = Field(1 << 20, ge=1024)
    coalesce_mark: int = Field(100, ge=1)
    # Messages per batch frame (the guide's 10): what a round of fan-out carries, and what a socket
    # that fell behind gets in each frame once it drains.
    batch_max_messages: int = Field(10, ge=1, le=1000)
    conflate_topics: str = "task:progress"  # comma-separated patterns
    # Topics a `/ws/task` connection gets when it names none.
    task_endpoint_topics: str = "task:progress,task:status,task:list"
    # How long a subscribe waits for the push service to apply it before it is acknowledged anyway.
    subscribe_confirm_timeout: float = Field(3.0, gt=0)
    push_reconnect_max: float = Field(5.0, gt=0)
    # Seconds without a word from the push replica (it sends a heartbeat each PUSH_EDGE_HEARTBEAT_INTERVAL
    # when quiet) before its stream is taken as lost and opened again on the next replica (one more such
    # time if this process did not run for part of the silence: ws_edge/push_link.py).
    push_silence_timeout: float = Field(3.0, gt=0)
    # Prometheus /metrics on a port of its own (0: off), never on the public port: the series name
    # users' activity and the edge's internals (like PUSH_METRICS_PORT, TASK_METRICS_PORT).
    metrics_port: int = Field(9104, ge=0, le=65535)
    # /docs, /redoc and /openapi.json (FastAPI's API documentation): off unless enabled (the local demo).
    api_docs: bool = False
    # Presence (issue 15; the rules are the push service's): join/leave events of a topic go one by one
    # up to this many a second (per topic, on this edge); past it, its subscribers get one
    # `presence_summary` per interval instead. The edge's report names at most so many topics (Channels).
    join_leave_rate: float = Field(10.0, gt=0)
    join_leave_summary_interval: float = Field(1.0, gt=0, le=60)
    report_max_topics: int = Field(10_000, ge=1)
    # The address the server API's Info shows for this edge (default: host:port).
    advertised_address: str = ""
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"  # or json: one object per line

    # --- security (README: Security) ---------------------------------------------------------------
    # Connections without a token. The local demo allows them; a deployment should not.
    allow_anonymous: bool = True
    jwt_hs256_secret: SecretStr | None = None
    jwt_public_key_file: Path | None = None  # PEM; RS256 or ES256
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Seconds a connection without `?token=` has to send `{"type": "auth", "data": {"token": ...}}`.
    auth_timeout: float = Field(10.0, gt=0)
    # permessage-deflate: off (CPU per client, and compression side channels) unless enabled.
    permessage_deflate: bool = False
    # Browser origins allowed; "*" allows any. Empty: only the page's own host (same Host header).
    # When set, only these count (the Host header is the sender's choice: DNS rebinding).
    allowed_origins: str = ""
    max_connections_per_user: int = Field(100, ge=1)
    max_connections_per_ip: int = Field(1000, ge=1)
    # The proxies in front of the edge whose X-Forwarded-For / X-Forwarded-Proto it believes: addresses
    # or networks, comma-separated (an Ingress's pods: its pod network), or "*". Empty: none, and every
    # per-address limit counts the TCP peer. (uvicorn's default believes 127.0.0.1: behind a proxy
    # elsewhere every browser had the proxy's address, and on the host a client chose its own.)
    trusted_proxies: str = ""
    # Before its first request is in (a WebSocket handshake, an HTTP request), a connection has this
    # many seconds (else 408 and close), and is one of at most `max_pending_per_ip` from its address
    # and `max_pending_connections` in all (else 429 / 503 and close at once). The total's default is
    # a quarter of the process's descriptor limit, at most 1024. Per address it is the connect burst's
    # order: browsers behind one NAT all reconnect at once after an edge restart (32 refused a test's 50
    # concurrent connects on a loaded machine, where handshakes take longer).
    handshake_timeout: float = Field(10.0, gt=0)
    max_pending_per_ip: int = Field(128, ge=1)
    max_pending_connections: int | None = Field(None, ge=1)
    connect_rate_per_ip: float = Field(50.0, gt=0)
    connect_burst_per_ip: int = Field(200, ge=1)
    # JSON list of {"pattern", "subscribe", "publish"}; first match wins (see core/permissions.py).
    topic_rules: str | None = None
    # Who may start and cancel tasks through the edge: public, authenticated or none. A task belongs to
    # the user who started it: only they, or a user whose token's `roles_claim` holds `admin_role`,
    # may cancel it (README: Tasks).
    task_control: Access = Access.PUBLIC
    roles_claim: str = Field("roles", min_length=1)
    admin_role: str = "admin"  # empty: no admins
    # The admin page and its JSON API at /admin (ws_edge/admin.py): off (404) unless set. A secret of
    # its own, sent as `Authorization: Bearer <token>`; no user's JWT opens it (README: Admin page).
    admin_token: SecretStr | None = None
    # GET /dev/token?sub=... mints HS256 tokens: for the local demo only, never in a deployment.
    dev_tokens: bool = False
    # gRPC to the push and task services: a bearer token, and TLS (CA to trust; client cert for mTLS).
    grpc_token: SecretStr | None = None
    grpc_tls_ca_file: Path | None = None
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    grpc_tls_server_name: str | None = None  # the name in the backends' certificates, for IP lists

    # --- token lifecycle and backend hooks (README: Refresh and backend hooks) ----------------------
    # `refresh_required` goes to a client this many seconds before its token's `exp` (once per token);
    # without a `refresh` by `exp`, the connection is closed 4001.
    token_refresh_notice: float = Field(10.0, ge=0)
    # Topic patterns (comma-separated) whose subscribe needs a subscription token (`data.tokens`).
    subscription_token_topics: str = ""
    # The application's hooks.v1.BackendHooks (host:port); every hook below needs it.
    hooks_address: str | None = None
    hooks_token: SecretStr | None = None  # sent as `authorization: Bearer` to the hooks backend
    hook_connect: bool = False
    hook_refresh: bool = False
    hook_rpc: bool = False  # the `rpc` message type
    hook_rpc_unknown_types: bool = False  # message types without a handler go to the RPC hook
    hook_subscribe_topics: str = ""  # topic patterns, comma-separated
    hook_publish_topics: str = ""
    # Each call's deadline, and calls in flight per hook beyond which a call fails at once (UNAVAILABLE).
    hook_timeout: float = Field(1.0, gt=0)
    hook_max_in_flight: int = Field(100, ge=1)
    # The handshake headers the Connect hook gets (lower case, comma-separated).
    hook_connect_headers: str = "cookie,origin,user-agent"

    @property
    def presence_options(self) -> dict[str, object]:
        return {"address": self.advertised_address or f"{self.host}:{self.port}",
                "join_leave_rate": self.join_leave_rate, "summary_interval": self.join_leave_summary_interval,
                "report_max_topics": self.report_max_topics}

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        for item in (v.strip() for v in value.split(",") if v.strip()):
            if item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an address or a network (e.g. 10.0.0.0/8)") from None
        return value

    @model_validator(mode="after")
    def _check_security(self) -> EdgeSettings:
        if not self.allow_anonymous and self.verifier is None:
            raise ValueError("EDGE_ALLOW_ANONYMOUS=false needs EDGE_JWT_HS256_SECRET or EDGE_JWT_PUBLIC_KEY_FILE")
        if self.jwt_hs256_secret is not None and len(self.jwt_hs256_secret.get_secret_value().encode()) < 32:
            raise ValueError("EDGE_JWT_HS256_SECRET must be at least 32 bytes (RFC 7518 3.2)")
        if self.dev_tokens and self.jwt_hs256_secret is None:
            raise ValueError("EDGE_DEV_TOKENS needs EDGE_JWT_HS256_SECRET")
        if self.hooks_on and not self.hooks_address:
            raise ValueError("EDGE_HOOK_* needs EDGE_HOOKS_ADDRESS (the backend implementing hooks.v1.BackendHooks)")
        if self.admin_token is not None and len(self.admin_token.get_secret_value().encode()) < 32:
            raise ValueError("EDGE_ADMIN_TOKEN must be at least 32 bytes")
        if self.task_control is Access.OWNER:
            raise ValueError("EDGE_TASK_CONTROL must be public, authenticated or none")
        self.policy  # noqa: B018 - parse the rules now, so a bad value stops the start
        return self

    @property
    def verifier(self) -> TokenVerifier | None:
        secret = self.jwt_hs256_secret.get_secret_value() if self.jwt_hs256_secret else None
        key = self.jwt_public_key_file.read_text() if self.jwt_public_key_file else None
        if not secret and not key:
            return None
        return TokenVerifier(hs256_secret=secret, public_key=key, audience=self.jwt_audience, issuer=self.jwt_issuer,
                             roles_claim=self.roles_claim, admin_role=self.admin_role)

    @property
    def policy(self) -> TopicPolicy:
        return TopicPolicy.from_json(self.topic_rules) if self.topic_rules else TopicPolicy()

    @property
    def hooks_on(self) -> bool:
        return (self.hook_connect or self.hook_refresh or self.hook_rpc or self.hook_rpc_unknown_types
                or bool(patterns(self.hook_subscribe_topics)) or bool(patterns(self.hook_publish_topics)))

    @property
    def pending_limit(self) -> int:
        if self.max_pending_connections is not None:
            return self.max_pending_connections
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return 1024 if descriptors == resource.RLIM_INFINITY else max(16, min(1024, descriptors // 4))

    @property
    def conflated(self) -> tuple[str, ...]:
        return patterns(self.conflate_topics)

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.allowed_origins.split(",") if o.strip())


def patterns(value: str) -> tuple[str, ...]:
    """A comma-separated list of topic patterns (fnmatch: `*`, `?`), blanks ignored."""
    return tuple(p.strip() for p in value.split(",") if p.strip())
