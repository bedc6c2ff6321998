"""The engine's bars: 1-minute bars built from ticks (the market's own builder, so they equal the stored ones),
rolled up into each watched timeframe as periods complete, and a bounded buffer of closed bars per series."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from services.core.bars import Bar, BarBuilder, roll_up
from services.core.market_data import BarSeries
from services.core.timeframes import Timeframe
from services.signal.strategies.base import StrategyBars

_MINUTE = timedelta(minutes=1)
_COLUMNS = ("open", "high", "low", "close", "volume")


class BarBuffer:
    """The newest closed bars of one series (at most `keep`), ascending, as arrays the strategies read."""

    def __init__(self, timeframe: Timeframe, keep: int) -> None:
        self.timeframe = timeframe
        self.keep = max(1, keep)
        self._capacity = 2 * self.keep
        self.times: npt.NDArray[np.datetime64] = np.empty(self._capacity, dtype="datetime64[us]")
        self._values = np.empty((5, self._capacity), dtype=np.float64)
        self._length = 0

    def __len__(self) -> int:
        return self._length

    @property
    def last_time(self) -> datetime | None:
        return self.times[self._length - 1].astype(datetime) if self._length else None

    def extend(self, series: BarSeries) -> None:
        """Append stored bars newer than the last one held."""
        last = self.last_time
        for index, moment in enumerate(series.times):
            if last is None or moment > last:
                self.append(
                    Bar(
                        moment,
                        float(series.open[index]),
                        float(series.high[index]),
                        float(series.low[index]),
                        float(series.close[index]),
                        float(series.volume[index]),
                    )
                )

    def append(self, bar: Bar) -> bool:
        """Add a closed bar after the last one (False, and nothing added, when it is not newer)."""
        last = self.last_time
        if last is not None and bar.open_time <= last:
            return False
        if self._length == self._capacity:
            # Drop the oldest bars beyond `keep` in one move, so appends stay O(1) amortised.
            drop = self._length - self.keep + 1
            self.times[: self._length - drop] = self.times[drop : self._length]
            self._values[:, : self._length - drop] = self._values[:, drop : self._length]
            self._length -= drop
        self.times[self._length] = np.datetime64(bar.open_time, "us")
        self._values[:, self._length] = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        self._length += 1
        return True

    def index_of(self, moment: datetime) -> int | None:
        held = self.times[: self._length]
        index = int(np.searchsorted(held, np.datetime64(moment, "us")))
        return index if index < self._length and held[index] == np.datetime64(moment, "us") else None

    def after(self, moment: datetime | None) -> list[int]:
        """Indices of the bars newer than `moment` (all when None)."""
        if moment is None:
            return list(range(self._length))
        first = int(np.searchsorted(self.times[: self._length], np.datetime64(moment, "us"), side="right"))
        return list(range(first, self._length))

    def window(self, first: int, last: int) -> StrategyBars:
        """Bars first..last inclusive, in the strategies' input form (copies: evaluation runs in a thread)."""
        stop = last + 1
        values = self._values[:, first:stop].copy()
        return StrategyBars(
            self.times[first:stop].astype("datetime64[ns]"),
            values[0],
            values[1],
            values[2],
            values[3],
            values[4],
            span=self.timeframe.delta,
        )


class PeriodBuilder:
    """Rolls closed 1-minute bars up into one timeframe's bars, closing a period when its last minute closes, when a
    minute of a later period arrives, or (quiet symbols) when `flush` finds the period over."""

    def __init__(self, timeframe: Timeframe) -> None:
        self.timeframe = timeframe
        self._period: datetime | None = None
        self._minutes: list[Bar] = []

    @property
    def period(self) -> datetime | None:
        return self._period

    def add(self, minute: Bar) -> list[Bar]:
        if self.timeframe is Timeframe.M1:
            return [minute]
        period = self.timeframe.floor(minute.open_time)
        closed: list[Bar] = []
        if self._period is not None and period != self._period:
            if period < self._period:
                return []  # a late minute of a period already closed
            closed = self._close()
        self._period = period
        self._minutes.append(minute)
        if minute.open_time + _MINUTE >= period + self.timeframe.delta:
            closed += self._close()
        return closed

    def flush(self, now: datetime) -> list[Bar]:
        if self._period is None or self._period + self.timeframe.delta > now:
            return []
        return self._close()

    def _close(self) -> list[Bar]:
        minutes, self._minutes, self._period = self._minutes, [], None
        return roll_up(minutes, self.timeframe) if minutes else []


@dataclass(slots=True)
class ClosedBar:
    """A bar the engine closed from ticks: `trusted` is False when ticks before the subscription (or a reconnect)
    may be missing from it, so the market's stored bar must be used instead."""

    timeframe: Timeframe
    bar: Bar
    trusted: bool


class SymbolBars:
    """One symbol's live bars: ticks → 1-minute bars → each watched timeframe. Bars that began before `synced`
    (the first whole minute after the tick subscription started) are not trusted."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._minutes = BarBuilder()
        self._periods: dict[Timeframe, PeriodBuilder] = {}
        self.synced: datetime | None = None
        self.last_sequence = 0

    @property
    def timeframes(self) -> tuple[Timeframe, ...]:
        return tuple(self._periods)

    def watch(self, timeframe: Timeframe) -> None:
        self._periods.setdefault(timeframe, PeriodBuilder(timeframe))

    def unwatch(self, timeframe: Timeframe) -> None:
        self._periods.pop(timeframe, None)

    def resync(self) -> None:
        """Ticks may have been missed (a new or broken subscription): distrust bars until the next whole minute."""
        self.synced = None

    def on_tick(self, time: datetime, price: float, size: float, sequence: int) -> list[ClosedBar]:
        if sequence and sequence <= self.last_sequence:
            return []  # seen on the other subscription while switching streams
        self.last_sequence = max(self.last_sequence, sequence)
        if self.synced is None:
            self.synced = time.replace(second=0, microsecond=0) + _MINUTE
        return self._roll(self._minutes.on_tick(time, price, size))

    def flush(self, now: datetime) -> list[ClosedBar]:
        closed = self._roll(self._minutes.flush(now))
        for timeframe, builder in self._periods.items():
            current = self._minutes.current
            if current is None or timeframe.floor(current.open_time) != builder.period:
                closed += [self._closed(timeframe, bar) for bar in builder.flush(now)]
        return closed

    def _roll(self, minutes: list[Bar]) -> list[ClosedBar]:
        closed: list[ClosedBar] = []
        for minute in minutes:
            for timeframe, builder in self._periods.items():
                closed += [self._closed(timeframe, bar) for bar in builder.add(minute)]
        return closed

    def _closed(self, timeframe: Timeframe, bar: Bar) -> ClosedBar:
        return ClosedBar(timeframe, bar, trusted=self.synced is not None and bar.open_time >= self.synced)
