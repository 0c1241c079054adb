"""How a personal message finds its connection: the client_id, or the edge that assigned it.

A client_id the edge assigns (the browser asked for none) is `~<edge mark>.<random>`. The mark names
the edge process holding the connection, so the push service routes personal messages to such an id
by the mark (one channel, `c:~<mark>`, per edge) and an edge declares one interest for every id it
assigns instead of one per connection: a burst of browsers would otherwise cost one interest change
each, and on the Redis engine one channel subscription each. The edge then picks the connection by
the whole id. A client_id the browser chose is routed by itself, and may not begin with `~`.
"""

from __future__ import annotations

import os

ASSIGNED_MARK = "~"
MAX_CLIENT_ID_LENGTH = 128  # of any client_id, chosen or assigned; the edge and the push service check it


def new_edge_mark() -> str:
    """A new edge process's mark: random, so that a restarted edge never receives its former ids'."""
    return ASSIGNED_MARK + os.urandom(6).hex()


def assign_client_id(edge_mark: str) -> str:
    """An unguessable client_id (it addresses personal messages) routed to the edge of `edge_mark`."""
    return f"{edge_mark}.{os.urandom(16).hex()}"


def route_key(client_id: str) -> str:
    """What personal messages to `client_id` are routed by: the edge mark of an assigned id, else the id."""
    if client_id.startswith(ASSIGNED_MARK):
        mark, dot, _ = client_id.partition(".")
        if dot:
            return mark
    return client_id


def routed_by_itself(client_id: str) -> bool:
    """Whether personal messages to `client_id` need an interest of their own (a chosen id), rather
    than the mark of the edge that assigned it."""
    return route_key(client_id) == client_id


def chosen_client_id_error(client_id: str, max_length: int = MAX_CLIENT_ID_LENGTH) -> str | None:
    """Why a client_id the browser asked for cannot be used, or None."""
    if not 0 < len(client_id) <= max_length or not client_id.isprintable():
        return "invalid client_id"
    if client_id.startswith(ASSIGNED_MARK):
        return f"a client_id may not begin with {ASSIGNED_MARK!r} (kept for the ids the server assigns)"
    return None
