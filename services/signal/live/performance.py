"""Signal performance: each stored signal's return after 1, 5 and 20 bars taken in its direction (a SELL followed by
a fall is a win), filled in by the engine's job from the market's stored bars, and the per-strategy, symbol,
timeframe and horizon figures GetSignalPerformance reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from services.core.clock import WallClock, utc_now
from services.core.market_data import MarketData
from services.core.timeframes import Timeframe
from services.signal.live.outcome_store import Outcome, OutcomeStore, SignalOutcome
from services.signal.live.records import HORIZONS

# Pending signals resolved per series and round, and the most bars read for them.
_PENDING_PER_ROUND = 5_000
_MAX_BARS = 200_000


def directional_returns(
    times: npt.NDArray[np.datetime64],
    closes: npt.NDArray[np.float64],
    bar_time: datetime,
    price: float,
    side: int,
    *,
    horizons: Sequence[int] = HORIZONS,
) -> dict[int, float]:
    """The returns known so far of a signal at `bar_time` (close `price`, side +1/-1): for horizon h, the close of
    the h-th stored bar after the signal's bar over `price`, minus one, times the side."""
    first = int(np.searchsorted(times, np.datetime64(bar_time, "us"), side="right"))
    found: dict[int, float] = {}
    for horizon in horizons:
        index = first + horizon - 1
        if index < len(closes) and price > 0:
            found[horizon] = side * (float(closes[index]) / price - 1.0)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Figures of a list of directional returns in bar order (bullant.signal.v1.SignalPerformance)."""

    count: int
    wins: int
    win_rate: float | None
    average: float | None
    sharpe: float | None
    max_drawdown: float | None
    best: float | None
    worst: float | None


def summarize(returns: Sequence[float]) -> Stats:
    values = np.asarray(returns, dtype=np.float64)
    count = int(values.shape[0])
    if not count:
        return Stats(
            count=0, wins=0, win_rate=None, average=None, sharpe=None, max_drawdown=None, best=None, worst=None
        )
    wins = int(np.count_nonzero(values > 0))
    deviation = float(np.std(values, ddof=1)) if count >= 2 else 0.0
    equity = np.concatenate(([1.0], np.cumprod(1.0 + values)))
    peaks = np.maximum.accumulate(equity)
    drawdown = float(np.max(1.0 - equity / peaks))
    return Stats(
        count=count,
        wins=wins,
        win_rate=wins / count,
        average=float(np.mean(values)),
        sharpe=float(np.mean(values)) / deviation if deviation > 0 and math.isfinite(deviation) else None,
        max_drawdown=drawdown,
        best=float(np.max(values)),
        worst=float(np.min(values)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PerformanceRow:
    strategy_id: str
    symbol: str
    timeframe: Timeframe
    horizon: int
    stats: Stats
    pending: int
    first_signal_time: datetime | None
    last_signal_time: datetime | None
    compute_time: datetime | None

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.strategy_id, self.symbol, int(self.timeframe), self.horizon)


def group_rows(
    group: tuple[str, str, int], outcomes: Sequence[SignalOutcome], horizons: Sequence[int] = HORIZONS
) -> list[PerformanceRow]:
    """The rows of one (strategy, symbol, timeframe) group, one per horizon, from its signals in bar order."""
    strategy_id, symbol, timeframe = group
    computed = [outcome.outcome_time for outcome in outcomes if outcome.outcome_time is not None]
    rows = []
    for horizon in sorted(horizons):
        resolved = [
            (outcome.bar_time, value) for outcome in outcomes if (value := outcome.returns.get(horizon)) is not None
        ]
        rows.append(
            PerformanceRow(
                strategy_id=strategy_id,
                symbol=symbol,
                timeframe=Timeframe(timeframe),
                horizon=horizon,
                stats=summarize([value for _, value in resolved]),
                pending=len(outcomes) - len(resolved),
                first_signal_time=resolved[0][0] if resolved else None,
                last_signal_time=resolved[-1][0] if resolved else None,
                compute_time=max(computed) if computed else None,
            )
        )
    return rows


class PerformanceJob:
    """Fills in the returns of signals whose horizons have passed (one round per call; the engine's leader runs
    it periodically)."""

    def __init__(self, signals: OutcomeStore, market: MarketData, clock: WallClock = utc_now) -> None:
        self._signals = signals
        self._market = market
        self._clock = clock

    async def run_once(self) -> int:
        """One round over every series with pending signals; how many signals learned a new return."""
        updated = 0
        for series in await self._signals.pending_series():
            pending = await self._signals.pending(series, limit=_PENDING_PER_ROUND)
            if not pending:
                continue
            bars = await self._market.bars(
                series.symbol, int(series.timeframe), start=pending[0].bar_time, end=None, limit=_MAX_BARS
            )
            times = np.array(bars.times, dtype="datetime64[us]")
            outcomes = []
            for signal in pending:
                returns = directional_returns(times, bars.close, signal.bar_time, signal.price, signal.side)
                known = {horizon for horizon, value in signal.returns.items() if value is not None}
                if set(returns) - known:
                    outcomes.append(Outcome(signal.signal_id, returns))
            if outcomes:
                await self._signals.record_outcomes(outcomes, self._clock())
                updated += len(outcomes)
        return updated
