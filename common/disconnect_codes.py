"""The close codes a server API Disconnect may use (issue 15), checked by the push service and, before
asking it, by pushctl and the edge's admin API. The browser client never reconnects after them
(ws_edge/static/push-client.js)."""

from __future__ import annotations

DISCONNECTED_BY_SERVER = 4010  # the default: "disconnected by the server"
APPLICATION_CODES = range(4100, 4400)  # the application's own reasons


def disconnect_code_error(code: int) -> str | None:
    """Why `code` cannot close a connection for the server API, or None when it can."""
    if code == DISCONNECTED_BY_SERVER or code in APPLICATION_CODES:
        return None
    return (f"code {code}: use {DISCONNECTED_BY_SERVER} (the default) or an application code, "
            f"{APPLICATION_CODES[0]}-{APPLICATION_CODES[-1]}")
