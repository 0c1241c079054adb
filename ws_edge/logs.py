"""Tokens never reach the logs: uvicorn logs each WebSocket's path with its query string."""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg = _TOKEN.sub(r"\1[redacted]", message)
            record.args = ()
        return True


def redact_tokens() -> None:
    """Install on uvicorn's loggers (after uvicorn configured logging) and on the root handlers."""
    redactor = RedactTokens()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "ws_edge"):
        logging.getLogger(name).addFilter(redactor)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
