"""Counting how often an object's method runs (e.g. a timer's callback), calling it as before."""

from __future__ import annotations

from typing import Any


class CallCounter:
    """Replaces `owner.name` (a method, looked up on the instance by its callers) with one that counts
    its calls in `calls` and then calls the original."""

    def __init__(self, owner: Any, name: str) -> None:
        self.calls = 0
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)
