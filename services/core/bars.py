"""OHLCV bars and their aggregation: roll-ups to longer timeframes, bars from ticks in batch (numpy) and live (O(1)
per tick); the two must agree exactly. The market builds its stored bars with it, the live signal engine its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from services.core.clock import as_naive_utc
from services.core.timeframes import EPOCH, Timeframe

_US_PER_SECOND = 1_000_000
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV candle; `open_time` naive UTC."""

    open_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int | None = None


def roll_up(bars: Sequence[Bar], target: Timeframe, *, now: datetime | None = None) -> list[Bar]:
    """Aggregates finer bars (strictly increasing open_time) into `target` bars, partial periods included unless
    `now` is given, in which case periods not ended by `now` are dropped. trade_count is None unless every input
    bar has one."""
    if not bars:
        return []
    times = np.array([_micros(b.open_time) for b in bars], dtype=np.int64)
    if np.any(np.diff(times) <= 0):
        raise ValueError("bars must be in strictly increasing open_time order")
    counts = [b.trade_count for b in bars]
    return _aggregate(
        times,
        target,
        opens=np.array([b.open for b in bars], dtype=np.float64),
        highs=np.array([b.high for b in bars], dtype=np.float64),
        lows=np.array([b.low for b in bars], dtype=np.float64),
        closes=np.array([b.close for b in bars], dtype=np.float64),
        volumes=np.array([b.volume for b in bars], dtype=np.float64),
        trade_counts=np.array([c or 0 for c in counts], dtype=np.int64),
        unknown_counts=np.array([c is None for c in counts], dtype=np.bool_),
        now=now,
    )


def bars_from_ticks(
    times: Sequence[datetime] | npt.NDArray[np.datetime64], prices: npt.ArrayLike, sizes: npt.ArrayLike
) -> list[Bar]:
    """1m bars of ticks in arrival order, exactly as BarBuilder makes them: a tick from a minute before the latest
    one seen is late and ignored; trade_count is the number of ticks."""
    stamps = np.asarray(times, dtype="datetime64[us]").astype(np.int64)
    price = np.asarray(prices, dtype=np.float64)
    size = np.asarray(sizes, dtype=np.float64)
    if stamps.size == 0:
        return []
    minutes = stamps - stamps % (60 * _US_PER_SECOND)
    on_time = minutes == np.maximum.accumulate(minutes)
    return _aggregate(
        stamps[on_time],
        Timeframe.M1,
        opens=price[on_time],
        highs=price[on_time],
        lows=price[on_time],
        closes=price[on_time],
        volumes=size[on_time],
        trade_counts=np.ones(int(on_time.sum()), dtype=np.int64),
        unknown_counts=np.zeros(int(on_time.sum()), dtype=np.bool_),
        now=None,
    )


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def _aggregate(
    times: npt.NDArray[np.int64],
    target: Timeframe,
    *,
    opens: npt.NDArray[np.float64],
    highs: npt.NDArray[np.float64],
    lows: npt.NDArray[np.float64],
    closes: npt.NDArray[np.float64],
    volumes: npt.NDArray[np.float64],
    trade_counts: npt.NDArray[np.int64],
    unknown_counts: npt.NDArray[np.bool_],
    now: datetime | None,
) -> list[Bar]:
    period = target.seconds * _US_PER_SECOND
    groups = times - times % period  # numpy's % floors, like Timeframe.floor
    starts = np.flatnonzero(np.concatenate(([True], groups[1:] != groups[:-1])))
    ends = np.append(starts[1:], times.size)
    keep = np.ones(starts.size, dtype=np.bool_)
    if now is not None:
        keep = groups[starts] + period <= _micros(as_naive_utc(now))
    # Summed left to right as BarBuilder does (float addition is not associative): np.add.reduceat on float64 sums
    # pairwise, while on Python floats it adds in order.
    volume = np.add.reduceat(volumes.astype(object), starts).astype(np.float64)
    count_known = ~np.logical_or.reduceat(unknown_counts, starts)
    columns = zip(
        groups[starts][keep].tolist(),
        opens[starts][keep].tolist(),
        np.maximum.reduceat(highs, starts)[keep].tolist(),
        np.minimum.reduceat(lows, starts)[keep].tolist(),
        closes[ends - 1][keep].tolist(),
        volume[keep].tolist(),
        np.add.reduceat(trade_counts, starts)[keep].tolist(),
        count_known[keep].tolist(),
        strict=True,
    )
    return [
        Bar(EPOCH + timedelta(microseconds=t), o, h, lo, c, v, n if known else None)
        for t, o, h, lo, c, v, n, known in columns
    ]


class BarBuilder:
    """Builds live 1m bars from ticks with O(1) state; agrees exactly with bars_from_ticks on the same ticks."""

    def __init__(self) -> None:
        self._minute: datetime | None = None
        # The current minute's end, so a tick inside it costs one comparison.
        self._minute_end: datetime | None = None
        self._last_closed: datetime | None = None
        self._open = self._high = self._low = self._close = self._volume = 0.0
        self._count = 0
        self.late_ticks = 0

    @property
    def current(self) -> Bar | None:
        """The bar still forming, if any."""
        if self._minute is None:
            return None
        return Bar(self._minute, self._open, self._high, self._low, self._close, self._volume, self._count)

    def on_tick(self, time: datetime, price: float, size: float) -> list[Bar]:
        """Returns the bar this tick closed by starting a later minute (or nothing)."""
        if self._minute is not None and self._minute <= time < self._minute_end:  # type: ignore[operator]
            if price > self._high:
                self._high = price
            elif price < self._low:
                self._low = price
            self._close = price
            self._volume += size
            self._count += 1
            return []
        minute = time.replace(second=0, microsecond=0)
        # After a flush the closed minute must not open again: it would be a second bar with the same open_time.
        if (self._minute is not None and minute < self._minute) or (
            self._last_closed is not None and minute <= self._last_closed
        ):
            self.late_ticks += 1
            return []
        if minute == self._minute:
            self._high = price if price > self._high else self._high
            self._low = price if price < self._low else self._low
            self._close = price
            self._volume += size
            self._count += 1
            return []
        closed = self._close_current()
        self._minute = minute
        self._minute_end = minute + _MINUTE
        self._open = self._high = self._low = self._close = price
        self._volume = size
        self._count = 1
        return closed

    def flush(self, now: datetime) -> list[Bar]:
        """Closes the current bar if its minute ended by `now`; call it from a timer so quiet symbols close bars."""
        if self._minute is None or self._minute + Timeframe.M1.delta > as_naive_utc(now):
            return []
        return self._close_current()

    def _close_current(self) -> list[Bar]:
        bar = self.current
        if bar is None:
            return []
        self._last_closed = self._minute
        self._minute = None
        return [bar]
