"""The registry of task kinds. A kind validates its parameters, then runs against a TaskContext.

Register your own with `@kinds.register("name")` on a class with `parse(params) -> cfg` and
`async run(ctx, cfg)`; `ctx.progress(...)` reports, `ctx.sleep(...)` is where cancellation lands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .core.tasks import InvalidParams

__all__ = ["DataCollection", "InvalidParams", "KindRegistry", "TaskContext", "TaskKind", "kinds"]


class TaskContext(Protocol):
    def progress(self, *, completed: int, total: int, current: str) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class TaskKind(Protocol):
    def parse(self, params: dict[str, Any]) -> Any: ...

    async def run(self, ctx: TaskContext, config: Any) -> None: ...


class KindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[str, TaskKind] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def decorator(cls: type) -> type:
            self._kinds[name] = cls()
            return cls

        return decorator

    def get(self, name: str) -> TaskKind | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)


kinds = KindRegistry()

DEFAULT_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT"]
DEFAULT_INTERVAL = 0.5


@dataclass(frozen=True)
class DataCollectionConfig:
    symbols: list[str]
    interval: float
    fail_at: str | None


DEFAULT_KIND = "data_collection"  # what a StartTask without a kind starts


@kinds.register(DEFAULT_KIND)
class DataCollection:
    """The guide's market-data collection: walks the symbols, one step per `interval` seconds.

    params: `symbols` (list of 1..1000 symbols), `interval` (seconds per symbol, 0..60),
    `fail_at` (a symbol at which to fail: for demonstrating the `failed` status).
    """

    def parse(self, params: dict[str, Any]) -> DataCollectionConfig:
        symbols = params.get("symbols", DEFAULT_SYMBOLS)
        if (
            not isinstance(symbols, list)
            or not 0 < len(symbols) <= 1000
            or not all(isinstance(s, str) and 0 < len(s) <= 32 for s in symbols)
        ):
            raise InvalidParams("`symbols` must be a list of 1 to 1000 strings of at most 32 characters")
        interval = params.get("interval", DEFAULT_INTERVAL)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 <= interval <= 60:
            raise InvalidParams("`interval` must be a number of seconds between 0 and 60")
        fail_at = params.get("fail_at")
        if fail_at is not None and not isinstance(fail_at, str):
            raise InvalidParams("`fail_at` must be a symbol")
        return DataCollectionConfig(symbols=symbols, interval=float(interval), fail_at=fail_at)

    async def run(self, ctx: TaskContext, config: DataCollectionConfig) -> None:
        total = len(config.symbols)
        ctx.progress(completed=0, total=total, current="")
        for done, symbol in enumerate(config.symbols, start=1):
            await ctx.sleep(config.interval)  # stands in for fetching the symbol's market data
            if symbol == config.fail_at:
                raise RuntimeError(f"collecting {symbol} failed")
            ctx.progress(completed=done, total=total, current=symbol)

