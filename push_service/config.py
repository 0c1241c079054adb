"""push_service settings, from PUSH_* environment variables, validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from common.presence_rules import PresenceRules
from common.settings import LogFormat, LogLevel, TracingSettings
from common.topics import topic_error


class PushSettings(TracingSettings):
    model_config = SettingsConfigDict(env_prefix="PUSH_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    # Prometheus metrics over HTTP (/metrics) on this port; 0 turns them off.
    metrics_port: int = Field(9101, ge=0, le=65535)
    broker_url: str = "memory://"  # or redis://host:port/db, or redis+cluster://host:port,host:port
    redis_prefix: str = "push"  # every Redis key and channel starts with it
    # Deliveries per batch on an edge's stream while it is busy. The edge frames them for browsers
    # itself (EDGE_BATCH_MAX_MESSAGES, the guide's 10), so this only sets how many one gRPC write
    # and read carry: each costs ~100 µs of a core, whatever it holds (issue 18).
    batch_max_size: int = Field(100, ge=1, le=1000)
    batch_interval: float = Field(0.1, ge=0, le=60)
    max_data_bytes: int = Field(65536, ge=1, le=4 * 1024 * 1024)
    # An edge that stops reading is cut off past this many batches, deliveries, or bytes of frames
    # unsent to it (what it holds stays in memory, history's bounds aside: 100,000 deliveries of 64 KiB
    # would be 6.5 GB).
    max_pending_batches: int = Field(10_000, ge=1)
    max_pending_deliveries: int = Field(100_000, ge=1)
    max_pending_bytes: int = Field(64 * 1024 * 1024, ge=1)
    # Seconds between heartbeats on an edge's stream while nothing else is sent (0: none): the edge
    # takes a few silent intervals as a lost replica (paused, cut off) and fails over (EDGE_PUSH_SILENCE_TIMEOUT).
    edge_heartbeat_interval: float = Field(1.0, ge=0, le=60)
    # Each thread's CPU time slice, in µs (Linux 6.12+'s EEVDF; 0: the kernel's default, 1,400 µs on 2
    # cores): a short one lets gRPC's and the loop's threads run soon after they wake on a core shared
    # with a busy edge, at the same share of it (common/scheduling.py; docs/PERFORMANCE.md, issue 18).
    sched_slice_us: int = Field(100, ge=0, le=100_000)
    # Calls received and not yet taken up that gRPC queues (its default is 1,000); beyond this it
    # cancels new ones (from twice this, all of them). A burst of unary publishes queues here.
    max_queued_calls: int = Field(10_000, ge=1)
    # History per topic pattern: JSON [{"pattern", "size", "ttl"}], first match wins; size 0 keeps none.
    history_rules: str | None = None
    # Bytes of frames one topic's history keeps at most (both engines), and every topic's together
    # (the memory engine, with a per-message and per-topic overhead; Redis: its maxmemory).
    history_topic_bytes: int = Field(4 * 1024 * 1024, ge=1)
    history_total_bytes: int = Field(256 * 1024 * 1024, ge=1)
    # Seconds between sweeps of idle topics and expired keys (the memory engine).
    history_sweep_interval: float = Field(1.0, gt=0, le=3600)
    # One History answer: at most so many messages and bytes of frames (then `truncated`). Bounded so
    # that an answer always fits in gRPC's 4 MiB: 2 MiB of frames and 5,000 times a Delivery's other
    # fields (topic and conflation key up to 128 bytes each, epoch, offset, timestamp: ~310 bytes).
    history_page_max_messages: int = Field(5000, ge=1, le=5000)
    history_page_max_bytes: int = Field(1024 * 1024, ge=1, le=2 * 1024 * 1024)
    # Seconds an idempotency key is remembered, and how many keys and bytes at most (memory engine).
    idempotency_window: float = Field(300.0, gt=0)
    idempotency_max_keys: int = Field(100_000, ge=1)
    # Seconds a client_id a browser chose stays bound to its user after its last use (connected
    # connections keep it in use): another user is refused it meanwhile (README: Security).
    client_id_hold: float = Field(86_400.0, ge=1)
    # The same for ids anonymous connections chose (they have no identity to protect; a short hold
    # bounds what connecting with new ids can make the service keep, and how long one can be squatted).
    anonymous_client_id_hold: float = Field(60.0, ge=1)
    idempotency_max_bytes: int = Field(16 * 1024 * 1024, ge=1)
    # Connections to Redis at most per replica (its subscriber's among them; keep replicas × this under
    # Redis's maxclients), and seconds a call waits for a free one before UNAVAILABLE.
    redis_max_connections: int = Field(32, ge=2, le=10_000)
    redis_pool_timeout: float = Field(10.0, gt=0, le=600)
    # Presence (issue 15; README: Presence): which topics keep it and send join/leave events
    # (`task:*:presence,room:*:presence+joinleave`; empty: none), at most how many clients one topic
    # lists, and the seconds after an edge's last report (every TTL/3) when its clients leave presence.
    presence_rules: str | None = None
    presence_max_clients: int = Field(1000, ge=1, le=1_000_000)
    presence_ttl: float = Field(10.0, ge=0.3, le=600)
    # Occupancy events (a topic's first / last subscriber, a user's first / last connection) are
    # published on this topic; empty: none.
    occupancy_topic: str = ""
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"  # or json: one object per line
    # Security (README: Security): callers must send `authorization: Bearer <token>`; TLS / mTLS.
    auth_token: SecretStr | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    @field_validator("history_rules")
    @classmethod
    def _history_rules(cls, value: str | None) -> str | None:
        if value:
            from .core.history import HistoryPolicy

            HistoryPolicy.from_json(value)  # a bad rule stops the start, naming it
        return value

    @field_validator("presence_rules")
    @classmethod
    def _presence_rules(cls, value: str | None) -> str | None:
        PresenceRules.parse(value)  # a bad rule stops the start, naming it
        return value

    @field_validator("sched_slice_us")
    @classmethod
    def _a_slice_the_kernel_takes(cls, value: int) -> int:
        if 0 < value < 100:
            raise ValueError("the kernel's shortest slice is 100 µs (0: its default)")
        return value

    @field_validator("occupancy_topic")
    @classmethod
    def _occupancy_topic(cls, value: str) -> str:
        if value and (why := topic_error(value)) is not None:
            raise ValueError(why)
        return value

    @field_validator("broker_url")
    @classmethod
    def _a_known_engine(cls, url: str) -> str:
        from .broker import check_broker_url

        check_broker_url(url)  # a ValueError says what is wrong with it
        return url
