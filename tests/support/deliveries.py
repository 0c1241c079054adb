"""A delivery as the push service sends it (the fields of push.v1.Delivery), for the edge's core tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class D:
    offset: int = 0
    epoch: str = "e"
    topic: str = "t"
    client_id: str = ""
    retained: bool = False
    replay: bool = False  # a retained state sent again because the edge declared the topic
    frame: bytes = b""
    conflation_key: str = ""
    timestamp_ms: int = 0

    def __post_init__(self) -> None:
        if not self.frame:
            self.frame = f'{{"o":{self.offset}}}'.encode() if self.offset else f'{{"t":"{self.topic}"}}'.encode()


@dataclass
class History:
    """A history read's answer as the push service gives it (the fields of push.v1.HistoryResponse)."""

    recovered: bool = True
    offset: int = 0
    epoch: str = "e"
    reason: str = ""
    publications: list = field(default_factory=list)
