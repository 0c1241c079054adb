"""Setting types every service shares (validated at start, like the rest of its settings)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from common.logs import LogFormat  # noqa: F401 - the settings' field type, defined with the logs it formats

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}")
    return level


LogLevel = Annotated[str, AfterValidator(_log_level)]
