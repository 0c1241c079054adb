"""Who may subscribe to and publish on which topic: rules by topic pattern, first match wins.

Access levels: `public` (anyone, anonymous included), `authenticated` (any user), `owner` (the user
whose id is what the pattern's single `*` matches: `user:*` and `user:alice` -> only `alice`), `none`.
The user id always comes from the verified token, never from what the client says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

import orjson

from .auth import Principal


class Access(StrEnum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    OWNER = "owner"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class TopicRule:
    pattern: str
    subscribe: Access
    publish: Access

    def __post_init__(self) -> None:
        if Access.OWNER in (self.subscribe, self.publish) and self.pattern.count("*") != 1:
            raise ValueError(f"rule {self.pattern!r}: `owner` needs a pattern with exactly one `*`")

    def owner(self, topic: str) -> str:
        prefix, suffix = self.pattern.split("*")
        return topic[len(prefix): len(topic) - len(suffix)]


DEFAULT_RULES = (
    TopicRule("user:*", subscribe=Access.OWNER, publish=Access.AUTHENTICATED),
    TopicRule("*", subscribe=Access.PUBLIC, publish=Access.NONE),
)


class TopicPolicy:
    def __init__(self, rules: tuple[TopicRule, ...] = DEFAULT_RULES) -> None:
        self.rules = rules

    @classmethod
    def from_json(cls, text: str) -> TopicPolicy:
        """`[{"pattern": "user:*", "subscribe": "owner", "publish": "authenticated"}, ...]`"""
        items = orjson.loads(text)
        if not isinstance(items, list):
            raise ValueError("topic rules must be a JSON list")
        return cls(tuple(
            TopicRule(pattern=str(i["pattern"]), subscribe=Access(i.get("subscribe", "none")),
                      publish=Access(i.get("publish", "none")))
            for i in items
        ))

    def _rule(self, topic: str) -> TopicRule | None:
        for rule in self.rules:
            if fnmatchcase(topic, rule.pattern):
                return rule
        return None

    def can_subscribe(self, principal: Principal, topic: str) -> bool:
        rule = self._rule(topic)
        return rule is not None and allowed(rule.subscribe, principal, rule, topic)

    def can_publish(self, principal: Principal, topic: str) -> bool:
        rule = self._rule(topic)
        return rule is not None and allowed(rule.publish, principal, rule, topic)


def allowed(access: Access, principal: Principal, rule: TopicRule, topic: str) -> bool:
    if access is Access.PUBLIC:
        return True
    if access is Access.AUTHENTICATED:
        return principal.authenticated
    if access is Access.OWNER:
        return principal.authenticated and rule.owner(topic) == principal.user
    return False
