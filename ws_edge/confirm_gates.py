"""Waiting for the push service to apply an interest change, bounded in time.

While the push service is down the changes are re-declared on reconnect, and a browser need not wait
for that: after `timeout` it goes on (a WARNING says the push service was late). A burst of connections
that wait on the same change share one gate and one timer, not one each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("ws_edge")


class ConfirmGates:
    def __init__(self, timeout: float, late: str = "push service did not confirm an interest change within %.1fs",
                 remember_late: bool = True) -> None:
        self.timeout = timeout
        self._late_warning = late  # the WARNING when a gate opens on its timeout
        self._gates: dict[asyncio.Future[None], asyncio.Future[None]] = {}
        # Changes whose gate opened on its timeout, not applied yet (`timed_out`), if asked for.
        self._late: set[asyncio.Future[None]] | None = set() if remember_late else None

    def when_confirmed(self, waits: list[asyncio.Future[None]], then: Callable[[], None]) -> bool:
        """True when the push service has applied these interest changes already (`then` is not
        called); else False, and `then` runs once every one is applied or timed out (bounded: while
        the push service is down the changes are re-declared on reconnect, and the browser need not
        wait for that). Callbacks, not a task per waiting connection: a burst of connects is cheap."""
        gates = {self._gate(wait) for wait in waits if not wait.done()}
        if not gates:
            return True
        when_all_done(list(gates), then)
        return False

    async def confirmed(self, waits: list[asyncio.Future[None]]) -> None:
        """The same, awaited (for a caller with a task of its own anyway, e.g. the admin page's tail)."""
        answered = asyncio.get_running_loop().create_future()
        if not self.when_confirmed(waits, lambda: answered.done() or answered.set_result(None)):
            await answered

    def timed_out(self, applied: asyncio.Future[None]) -> bool:
        """Whether a gate opened on its timeout for this change, which is not applied yet: a connection
        waiting on it may have been answered without it (a plain subscribe acknowledged anyway)."""
        return self._late is not None and applied in self._late

    def _gate(self, applied: asyncio.Future[None]) -> asyncio.Future[None]:
        """A future done when `applied` is, or after the confirm timeout: one per interest change,
        shared by every connection of a burst that waits on it (one timer, not one each)."""
        gate = self._gates.get(applied)
        if gate is None:
            loop = asyncio.get_running_loop()
            gate = self._gates[applied] = loop.create_future()
            timeout = self.timeout

            def open_gate(late: bool) -> None:
                if not late and self._late is not None:
                    self._late.discard(applied)
                if gate.done():
                    return
                if late:
                    log.warning(self._late_warning, timeout)
                    if self._late is not None:
                        self._late.add(applied)
                gate.set_result(None)
                self._gates.pop(applied, None)
                timer.cancel()

            timer = loop.call_later(timeout, open_gate, True)
            applied.add_done_callback(lambda _: open_gate(False))
        return gate


def when_all_done(futures: list[asyncio.Future[None]], then: Callable[[], None]) -> Callable[[], None]:
    """`then()` once every one of `futures` is done (callbacks: no task). Returns what forgets it:
    a future that may stay pending for long (an outage) holds `then` and all it refers to until then."""
    remaining = len(futures)

    def done(_: asyncio.Future[None]) -> None:
        nonlocal remaining
        remaining -= 1
        if not remaining:
            then()

    for future in futures:
        future.add_done_callback(done)

    def forget() -> None:
        for future in futures:
            future.remove_done_callback(done)

    return forget
