"""Recovery at the seam: what a resubscribing client missed, then what arrived live meanwhile, with no
gap and no duplicate. No I/O."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .codes import ErrorCode
from .frames import MAX_FRAME_MESSAGES, ClientMessage, ProtocolError, batch_frame
from .sequencer import DeliveryLike


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class GapNotice:
    """The edge's `recovery` frame for a topic whose gap it could not fill, shaped as a delivery so
    that it passes a recovering session's `admit` like one: held in order behind the subscribe's
    answer, never before it. It has no position (offset 0), so stitching keeps it as it is."""

    topic: str
    frame: bytes
    client_id: str = ""
    retained: bool = False
    replay: bool = False
    offset: int = 0
    epoch: str = ""
    conflation_key: str = ""
    timestamp_ms: int = 0


def positions_field(message: ClientMessage, topics: Sequence[str]) -> dict[str, Position]:
    """`data.since = {topic: {"offset": n, "epoch": "..."}}` of a subscribe, for its topics only."""
    since = message.data.get("since")
    if since is None:
        return {}
    if not isinstance(since, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.since` must be an object of positions", message.id)
    positions = {}
    for topic, position in since.items():
        if topic not in topics:
            continue
        offset = position.get("offset") if isinstance(position, dict) else None
        epoch = position.get("epoch") if isinstance(position, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(epoch, str):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE,
                                f"`data.since[{topic!r}]` must be {{offset: integer >= 0, epoch: string}}", message.id)
        positions[topic] = Position(offset, epoch)
    return positions


def stitch(missed: Iterable[DeliveryLike], live: Iterable[DeliveryLike], since: Position, *,
           recovered: bool = True) -> list[bytes]:
    """The missed messages (offset > since), then the live ones held meanwhile that come after them. A
    client that did not recover (`since` is then where the topic is now) gets a replayed retained
    state whatever its offset: it is the state, which the client's own is not."""
    frames, last = [], since.offset
    for delivery in missed:
        if delivery.offset > last:
            frames.append(delivery.frame)
            last = delivery.offset
    for delivery in live:
        if delivery.epoch == since.epoch and delivery.offset and not (delivery.replay and not recovered):
            if delivery.offset <= last:
                continue  # already sent from history: the seam's duplicate
            last = delivery.offset
        frames.append(delivery.frame)
    return frames


def in_frames(envelopes: list[bytes], alone: Collection[bytes] = (), cap: int = MAX_FRAME_MESSAGES) -> list[bytes]:
    """Envelopes as frames of batches (at most `cap` each: the edge's setting, the guide's 10 by default;
    a lone one as itself). Those in `alone` (the edge's notices: not messages, so not in a batch) are
    frames of their own, in their place."""
    if not alone:
        return _batched(envelopes, cap)
    frames: list[bytes] = []
    run: list[bytes] = []
    for envelope in envelopes:
        if envelope in alone:
            frames += _batched(run, cap)
            frames.append(envelope)
            run = []
        else:
            run.append(envelope)
    return frames + _batched(run, cap)


def _batched(envelopes: list[bytes], cap: int) -> list[bytes]:
    return [batch_frame(envelopes[i:i + cap]) for i in range(0, len(envelopes), cap)]


def recovery_report(recovered: bool, offset: int, epoch: str, reason: str) -> dict[str, Any]:
    report: dict[str, Any] = {"recovered": recovered, "offset": offset, "epoch": epoch}
    if not recovered:
        report["reason"] = reason
    return report
