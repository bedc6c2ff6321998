"""How much history a strategy reads before a bar, and which stored bars that is: EvaluateStrategy reads them from
the market service, the live engine selects them from its buffer with the same rule, so both decide alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from services.core.market_data import BarSeries, MarketData
from services.core.parameters import Params
from services.signal.strategies.base import StrategyBars, StrategyDef

# Most bars read before a bar for a strategy's time history (a month of minute bars).
MAX_HISTORY_BARS = 50_000


@dataclass(frozen=True, slots=True)
class History:
    """History to read before a bar: a number of bars and a span of time (for strategies that aggregate bars into
    a higher timeframe)."""

    bars: int
    span: timedelta = timedelta(0)

    @classmethod
    def of(cls, strategy: StrategyDef, parameters: Params) -> History:
        """What `strategy` needs to signal from a range's first bar: three times its warm-up (so recursive averages
        forget their seed) and its time history."""
        return cls(3 * strategy.warmup(parameters) + 10, strategy.history(parameters))

    def __or__(self, other: History) -> History:
        return History(max(self.bars, other.bars), max(self.span, other.span))

    def since(self, start: datetime) -> datetime:
        """Where the time history before `start` is read from: calendars have gaps (nights, weekends), so the span
        with room for a long weekend."""
        return start - self.span * 1.5 - timedelta(days=4)


def strategy_bars(series: BarSeries, span: timedelta) -> StrategyBars:
    """Bars read from the market service in the strategies' input form."""
    times = np.array(series.times, dtype="datetime64[us]").astype("datetime64[ns]")
    return StrategyBars(times, series.open, series.high, series.low, series.close, series.volume, span)


async def read_history(
    market: MarketData, symbol: str, timeframe: int, start: datetime | None, need: History
) -> BarSeries:
    """The stored bars before `start` (or the latest ones) that `need` asks for: at least `need.bars` of them, and
    all of those within `need.span` (at most MAX_HISTORY_BARS)."""
    earlier = await market.bars(symbol, timeframe, start=None, end=start, limit=need.bars, descending=True)
    reference = start if start is not None else (earlier.times[-1] if len(earlier) else None)
    if need.span and reference is not None and (not len(earlier) or earlier.times[0] > reference - need.span):
        by_time = await market.bars(
            symbol, timeframe, start=need.since(reference), end=start, limit=MAX_HISTORY_BARS, descending=True
        )
        earlier = by_time if len(by_time) > len(earlier) else earlier
    return earlier


def window_start(times: npt.NDArray[np.datetime64], index: int, need: History) -> int:
    """The first bar of the history `read_history` gives before bar `index` of `times` (ascending datetime64[us]),
    when `times` holds every stored bar back to there."""
    first = max(0, index - need.bars)
    if need.span:
        start = times[index]
        span = np.timedelta64(need.span)
        if first == index or times[first] > start - span:
            since = np.datetime64(need.since(start.astype(datetime)))
            by_time = max(int(np.searchsorted(times, since, side="left")), index - MAX_HISTORY_BARS)
            if index - by_time > index - first:
                first = by_time
    return first
