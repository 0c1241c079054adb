"""Which topics keep presence, and which may send join/leave events: PUSH_PRESENCE_RULES.

Shared by the push service (it keeps presence) and the edge (it reports presence and delivers
join/leave); the push service tells its rules to every edge in the edge stream's first response, so
there is one setting. Syntax: comma-separated `<pattern>:<options>` where options are `presence` or
`presence+joinleave`, e.g. `task:*:presence,room:*:presence+joinleave`; the pattern is an fnmatch glob
over topic names; the first matching rule wins; a topic no rule matches keeps no presence.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

import orjson

_OPTIONS = {"presence": False, "presence+joinleave": True}


@dataclass(frozen=True, slots=True)
class PresenceRule:
    pattern: str
    join_leave: bool


class PresenceRules:
    def __init__(self, rules: tuple[PresenceRule, ...] = ()) -> None:
        self.rules = rules
        self._cache: dict[str, PresenceRule | None] = {}

    @classmethod
    def parse(cls, text: str | None) -> PresenceRules:
        """Raises ValueError naming the bad rule."""
        rules = []
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            pattern, _, options = item.rpartition(":")
            if not pattern or options not in _OPTIONS:
                raise ValueError(f"presence rule {item!r}: expected <pattern>:presence or <pattern>:presence+joinleave")
            rules.append(PresenceRule(pattern, _OPTIONS[options]))
        return cls(tuple(rules))

    def __str__(self) -> str:
        return ",".join(f"{r.pattern}:presence{'+joinleave' if r.join_leave else ''}" for r in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, topic: str) -> PresenceRule | None:
        if topic in self._cache:
            return self._cache[topic]
        rule = next((r for r in self.rules if fnmatchcase(topic, r.pattern)), None)
        if len(self._cache) >= 10_000:  # bounded: topics come from clients
            self._cache.clear()
        self._cache[topic] = rule
        return rule

    def has_presence(self, topic: str) -> bool:
        return self.rule_for(topic) is not None

    def has_join_leave(self, topic: str) -> bool:
        rule = self.rule_for(topic)
        return rule is not None and rule.join_leave


def public_client(client_id: str, user: str, info: bytes, joined_ms: int) -> dict[str, object]:
    """A client as browsers see it, in `presence` answers (the edge) and join/leave events (the push
    service): `info` is the connection's public JSON, as it came."""
    out: dict[str, object] = {"client_id": client_id, "user": user or None, "joined": joined_ms}
    if info:
        out["info"] = orjson.Fragment(info)
    return out
