"""Tokens never reach the logs: uvicorn logs each WebSocket's path with its query string."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

# A query parameter `name=value`: its name starts after `?`, `&`, a space, a quote or the line's start.
_PARAM = re.compile(r"(?:(?<=[?&\s\"'(,;])|^)([^=&\s\"'#?]+)=([^&\s\"'#]*)")
_DECODINGS = 3  # names are compared after percent-decoding, up to this many times over


def _redact_param(match: re.Match[str]) -> str:
    name = match[1]
    for _ in range(_DECODINGS):
        name = unquote_plus(name)
    return f"{match[1]}=[redacted]" if "token" in name.lower() else match[0]


def redact_query_tokens(message: str) -> str:
    """`message` with the value of every parameter whose name, percent-decoded, contains "token" (any
    case) replaced by `[redacted]`. The edge reads its parameters after decoding (`?%74oken=` is
    `token`), so the names are compared decoded too; the raw name stays, for the reader of the log."""
    if "=" not in message:
        return message
    return _PARAM.sub(_redact_param, message)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_query_tokens(message)
        if redacted != message:
            record.msg = redacted
            record.args = ()
        return True


def redact_tokens() -> None:
    """Install on uvicorn's loggers (after uvicorn configured logging) and on the root handlers."""
    redactor = RedactTokens()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "ws_edge"):
        logging.getLogger(name).addFilter(redactor)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
