"""Setting types every service shares (validated at start, like the rest of its settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import BaseSettings

from common.logs import LogFormat  # noqa: F401 - the settings' field type, defined with the logs it formats
from common.tracing import Exporter

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")
    return level


LogLevel = Annotated[str, AfterValidator(_log_level)]


class TracingSettings(BaseSettings):
    """OpenTelemetry tracing (README: Operations → Tracing; common/tracing.py), under each service's
    prefix: `PUSH_TRACING`, `EDGE_TRACE_SAMPLE_RATIO`, ..."""

    # off (the default), otlp (to OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4317) or file (JSON lines).
    tracing: Exporter = "off"
    trace_file: Path | None = None
    # The share of traces started in this process that are sampled (the others follow their parent's).
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_tracing(self) -> Self:
        if self.tracing == "file" and self.trace_file is None:
            prefix = self.model_config.get("env_prefix", "")
            raise ValueError(f"{prefix}TRACING=file needs {prefix}TRACE_FILE (where the spans go)")
        if self.tracing == "file" and self.trace_file is not None:
            try:  # the exporter writes from a thread later: a path it cannot write stops the start instead
                self.trace_file.open("ab").close()
            except OSError as exc:
                prefix = self.model_config.get("env_prefix", "")
                raise ValueError(f"{prefix}TRACE_FILE: {exc.strerror}: {self.trace_file}") from None
        return self
