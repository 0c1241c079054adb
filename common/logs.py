"""Logging, configured once per process: text or JSON lines, each with the connection it concerns.

The connection id lives in a context variable: set it in the task that serves a connection (an edge's
WebSocket, a push service's edge stream) and every line logged there, or in tasks started from there,
carries it; other lines show "-".
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Literal

import orjson

LogFormat = Literal["text", "json"]
connection_id: ContextVar[str] = ContextVar("connection_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [conn=%(conn)s] %(message)s"


class ConnectionIdFilter(logging.Filter):
    """Adds `conn`: the context's connection id, unless the call named one (`extra={"conn": ...}`,
    for lines about a connection logged from elsewhere, e.g. the heartbeat sweeper)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "conn"):
            record.conn = connection_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, logger, conn, msg (and exc when there is one)."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "conn": getattr(record, "conn", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """The root logger's one handler (stderr); every library's logger (uvicorn's too) goes through it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ConnectionIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
