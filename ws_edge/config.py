"""ws_edge settings, from EDGE_* environment variables, validated at start."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
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
    # Frames waiting to be written to one client before it counts as a slow consumer.
    send_queue_frames: int = Field(1000, ge=1)
    # Topics a `/ws/task` connection gets when it names none.
    task_endpoint_topics: str = "task:progress,task:status,task:list"
    # How long a subscribe waits for the push service to apply it before it is acknowledged anyway.
    subscribe_confirm_timeout: float = Field(3.0, gt=0)
    push_reconnect_max: float = Field(5.0, gt=0)
    log_level: str = "INFO"
