"""The embedded market simulator ("sim"): seeded, reproducible prices, bars and ticks for demo instruments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import numpy as np

from services.core.clock import WallClock, as_naive_utc, utc_now
from services.market.feeds.base import FeedAdapter, HistoryNotSupported
from services.market.feeds.sim.paths import (
    ANCHOR,
    MAX_CATCH_UP,
    MICROS_PER_MINUTE,
    MINUTES_PER_DAY,
    MinuteTicks,
    SymbolPath,
)
from services.market.feeds.sim.symbols import DEMO_SYMBOLS, SimSymbol
from services.market.records import Bar, Instrument, Tick, Timeframe


class SimulatedFeed(FeedAdapter):
    """Seeded simulated market: every price, bar and tick is a pure function of (seed, symbol, time).

    Log prices follow geometric Brownian motion with a calm/turbulent Markov regime per day and compound-Poisson
    jumps. Daily opens come from a daily-scale process cached per chunk of days; each day's minutes are a
    Brownian bridge between its open and close, minute highs and lows are drawn from the bridge's extremes, and a
    minute's ticks are a bridge through its open, high, low and close, so history and live ticks agree exactly.
    For simplicity every symbol trades around the clock (its instrument is listed 24/7); the regular hours of the
    market it imitates only shape the volume profile.
    """

    adapter = "sim"
    simulated = True

    def __init__(
        self,
        feed_id: str = "sim",
        *,
        seed: int = 42,
        symbols: Sequence[SimSymbol] | None = None,
        tick_interval_seconds: float = 0.25,
        clock: WallClock = utc_now,
    ) -> None:
        super().__init__(feed_id)
        if tick_interval_seconds <= 0:
            raise ValueError("tick_interval_seconds must be positive")
        specs = DEMO_SYMBOLS if symbols is None else tuple(symbols)
        self._paths = {spec.symbol: SymbolPath(spec, seed) for spec in specs}
        if len(self._paths) != len(specs):
            raise ValueError("duplicate simulated symbols")
        self.seed = seed
        self._tick_interval = tick_interval_seconds
        self._clock = clock
        self._instruments = tuple(
            Instrument(
                symbol=spec.symbol,
                venue=spec.venue,
                asset_class=spec.asset_class,
                quote_currency=spec.quote_currency,
                venue_symbol=spec.symbol,
                display_name=spec.display_name,
                base_currency=spec.base_currency,
                tick_size=spec.tick_size,
                lot_size=spec.lot_size,
                timezone=spec.timezone,
                trading_session=spec.listed_session,
                feed_id=feed_id,
                simulated=True,
            )
            for spec in specs
        )

    @property
    def display_name(self) -> str:
        return f"Simulator (seed {self.seed})"

    async def start(self) -> None:
        """Nothing to connect to: the market is computed on demand."""

    async def stop(self) -> None:
        """Nothing to close."""

    def instruments(self) -> Sequence[Instrument]:
        return self._instruments

    def history_timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return tuple(Timeframe) if symbol in self._paths else ()

    async def history(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        if symbol not in self._paths:
            raise HistoryNotSupported(f"feed {self.feed_id} does not simulate {symbol!r}")
        # Years of bars take a noticeable slice of CPU: keep the event loop serving meanwhile.
        return await asyncio.to_thread(self.bars, symbol, timeframe, start, end)

    def bars(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Closed bars (open_time + timeframe <= clock()) with open_time in [start, end), oldest first."""
        path = self._path(symbol)
        start, end = as_naive_utc(start), as_naive_utc(end)
        first = timeframe.floor(start)
        if first < start:
            first += timeframe.delta
        stop = min(end, timeframe.floor(as_naive_utc(self._clock())))
        if first >= stop:
            return []
        first_day, last_day = (first - ANCHOR).days, (stop - timedelta(microseconds=1) - ANCHOR).days
        if timeframe is Timeframe.D1:
            return path.day_bars(first_day, last_day - first_day + 1)
        step = timeframe.seconds // 60
        bars: list[Bar] = []
        for day in range(first_day, last_day + 1):
            day_start = ANCHOR + timedelta(days=day)
            for index, values in enumerate(path.rolled_up(path.day(day), step)):
                open_time = day_start + timedelta(minutes=index * step)
                if first <= open_time < stop:
                    bars.append(Bar(open_time, *values))
        return bars

    def price_at(self, symbol: str, moment: datetime) -> float:
        """The last traded price at `moment`: the price of the latest tick at or before it."""
        path = self._path(symbol)
        minute, offset = _split(as_naive_utc(moment))
        day, index = divmod(minute, MINUTES_PER_DAY)
        if index == 0 and offset == 0:
            return path.open_price(day)  # the day's first tick, without generating the day's minutes
        ticks = path.minute_ticks(minute)
        return float(ticks.prices[int(np.searchsorted(ticks.offsets, offset, side="right")) - 1])

    def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        """Every tick_interval_seconds, the ticks of `symbols` that fell in the elapsed interval (intervals without
        ticks yield nothing); ValueError at once for a symbol this feed does not simulate."""
        paths = self._paths_of(symbols)  # unknown symbols fail here, not at the first iteration
        return self._stream([path.spec.symbol for path in paths])

    async def _stream(self, symbols: list[str]) -> AsyncIterator[list[Tick]]:
        last = as_naive_utc(self._clock())
        catch_up = max(MAX_CATCH_UP, timedelta(seconds=4 * self._tick_interval))
        while True:
            await asyncio.sleep(self._tick_interval)
            now = as_naive_utc(self._clock())
            if now <= last:
                continue
            # After a stall (a suspended host, a frozen loop) replay only the recent past so a batch stays small.
            batch = self.ticks_between(symbols, max(last, now - catch_up), now)
            last = now
            if batch:
                yield batch

    def ticks_between(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[Tick]:
        """Every tick of `symbols` with event_time in [start, end), in event order (ties in symbol order)."""
        paths = self._paths_of(symbols)
        first_minute, first_offset = _split(as_naive_utc(start))
        last_minute, last_offset = _split(as_naive_utc(end))
        batch: list[Tick] = []
        for path in paths:
            for minute in range(first_minute, last_minute + 1):
                low = first_offset if minute == first_minute else 0
                high = last_offset if minute == last_minute else MICROS_PER_MINUTE
                if high > low:
                    batch.extend(_ticks(path.spec.symbol, minute, path.minute_ticks(minute), low, high))
        batch.sort(key=lambda tick: tick.event_time)
        return batch

    def _path(self, symbol: str) -> SymbolPath:
        path = self._paths.get(symbol)
        if path is None:
            raise ValueError(f"feed {self.feed_id} does not simulate {symbol!r}")
        return path

    def _paths_of(self, symbols: Sequence[str]) -> list[SymbolPath]:
        if isinstance(symbols, str):
            raise TypeError("symbols must be a sequence of symbols, not one string")
        return [self._path(symbol) for symbol in dict.fromkeys(symbols)]


def _split(moment: datetime) -> tuple[int, int]:
    """(minute index since ANCHOR, microseconds into that minute)."""
    delta = moment - ANCHOR
    return divmod((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds, MICROS_PER_MINUTE)


def _ticks(symbol: str, minute: int, ticks: MinuteTicks, low: int, high: int) -> list[Tick]:
    """Tick records of the minute's ticks with offsets in [low, high)."""
    part = slice(*np.searchsorted(ticks.offsets, [low, high]).tolist())
    minute_start = ANCHOR + timedelta(minutes=minute)
    columns = (ticks.prices, ticks.sizes, ticks.bids, ticks.asks, ticks.bid_sizes, ticks.ask_sizes, ticks.sides)
    rows = zip(ticks.offsets[part].tolist(), *(column[part].tolist() for column in columns), strict=True)
    return [Tick(symbol, minute_start + timedelta(microseconds=offset), *values) for offset, *values in rows]
