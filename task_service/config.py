"""task_service settings, from TASK_* environment variables, validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from common.settings import LogFormat, LogLevel, TracingSettings


class TaskSettings(TracingSettings):
    model_config = SettingsConfigDict(env_prefix="TASK_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(50052, ge=0, le=65535)
    push_address: str = "127.0.0.1:50051"
    # The publish buffer (messages not answered yet, e.g. while the push service is unreachable): at most
    # so many messages and bytes (a task_list may be 48 KiB: 10,000 of them would be ~500 MB). When full,
    # progress and lists go first (oldest first), a status only when nothing else can (logged, counted).
    publish_buffer: int = Field(10_000, ge=1)
    publish_buffer_bytes: int = Field(32 * 1024 * 1024, ge=1024 * 1024)
    # Past this many messages held, a task's newer progress replaces its unsent one, and a newer list
    # the unsent list (0: always). Below it every step is published: a short outage loses none.
    publish_conflate_after: int = Field(1000, ge=0)
    keep_finished: int = Field(100, ge=0)
    # Bounds on what callers can make the service hold (README: Tasks): a task's params as JSON, tasks
    # pending or running in all and per user (anonymous browsers share one allowance).
    max_params_bytes: int = Field(16384, ge=2, le=1 << 20)
    max_active_tasks: int = Field(100, ge=1)
    max_active_tasks_per_user: int = Field(10, ge=1)
    # The retained task_list's data at most (under the push service's PUSH_MAX_DATA_BYTES, 64 KiB by
    # default): past it, the oldest finished tasks are left out of the list.
    list_max_bytes: int = Field(49152, ge=4096)
    # Prometheus metrics over HTTP (/metrics) on this port; 0 turns them off.
    metrics_port: int = Field(9102, ge=0, le=65535)
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"  # or json: one object per line
    # Security (README: Security): this server's bearer token and TLS; the push service's, as a client.
    auth_token: SecretStr | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    push_token: SecretStr | None = None
    push_tls_ca_file: Path | None = None
    push_tls_cert_file: Path | None = None
    push_tls_key_file: Path | None = None
    push_tls_server_name: str | None = None  # the name in the push servers' certificates, for IP lists
