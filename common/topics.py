"""The topic grammar, shared by the edge (INVALID_TOPIC frames) and the push service (gRPC statuses)."""

from __future__ import annotations

import re

MAX_TOPIC_LENGTH = 128
# Letters, digits and the separators the guide uses (`task:progress`, `user:{id}`); no wildcards,
# no whitespace, nothing that needs escaping in a Redis key or a log line.
_TOPIC = re.compile(r"[A-Za-z0-9_\-.:@]+")


def topic_error(topic: object) -> str | None:
    """Why `topic` is not a valid topic name, or None when it is."""
    if not isinstance(topic, str):
        return f"a topic must be a string, not {type(topic).__name__}"
    if not topic:
        return "a topic must not be empty"
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"topic is {len(topic)} characters long; the limit is {MAX_TOPIC_LENGTH}"
    if not _TOPIC.fullmatch(topic):
        return f"topic {topic[:40]!r} may contain only letters, digits and _ - . : @"
    return None
