"""The checks every transport makes once its connection is up (a WebSocket upgraded, an HTTP stream
started) and before its session opens: a usable chosen client_id, and a slot for its address (counted
from now on, authenticated or not yet: a connection waiting to authenticate holds a descriptor too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.client_ids import chosen_client_id_error

from . import metrics
from .core.codes import CloseCode

if TYPE_CHECKING:
    from .edge import Edge


def door_refusal(edge: Edge, client_id: str | None, address: str) -> tuple[CloseCode, str] | None:
    """Why the connection is closed at once, or None: then the address's slot is taken, for the caller
    to give back with `edge.addresses.release(address)` when the connection ends."""
    if client_id is not None and (why := chosen_client_id_error(client_id)) is not None:
        metrics.REFUSED.labels("client_id").inc()
        return CloseCode.INVALID_CLIENT_ID, why
    if not edge.addresses.acquire(address, edge.settings.max_connections_per_ip):
        metrics.REFUSED.labels("too_many_connections").inc()
        return CloseCode.TOO_MANY_CONNECTIONS, "too many connections"
    return None
