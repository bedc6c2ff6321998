"""Replays stored bars as ticks at a chosen speed, under their own symbols ("<symbol>.REPLAY"), for demos and for
running signals over history as if it were live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime

from services.market.feeds.base import FeedAdapter, FeedError, HistoryNotSupported
from services.market.models import Bar, Instrument, Tick, Timeframe
from services.market.store import MarketStore

SUFFIX = ".REPLAY"
_MAX_BARS = 200_000


def replay_symbol(symbol: str) -> str:
    return symbol + SUFFIX


def bar_ticks(symbol: str, bar: Bar, timeframe: Timeframe) -> list[Tick]:
    """Four ticks that trace a bar: open, the nearer extreme, the other extreme, close (volume split evenly), spread
    over the bar's interval, so the bar built from them equals the bar replayed."""
    up = bar.close >= bar.open
    path = (bar.open, bar.low, bar.high, bar.close) if up else (bar.open, bar.high, bar.low, bar.close)
    step = timeframe.delta / 4
    size = bar.volume / 4
    return [
        Tick(symbol, bar.open_time + step * index, price, size, aggressor_side=1 if up else 2)
        for index, price in enumerate(path)
    ]


class ReplayFeed(FeedAdapter):
    """Stored `timeframe` bars of `symbols` from `start` on, replayed at `speed` (market seconds per second)."""

    adapter = "replay"
    simulated = True

    def __init__(
        self,
        feed_id: str,
        *,
        store: MarketStore,
        symbols: Sequence[str],
        timeframe: Timeframe = Timeframe.M1,
        speed: float = 60.0,
        start: datetime | None = None,
        loop: bool = False,
    ) -> None:
        super().__init__(feed_id)
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._store = store
        self._sources = list(symbols)
        self._timeframe = timeframe
        self._speed = speed
        self._start = start
        self._loop = loop
        self._instruments: list[Instrument] = []
        self._bars: dict[str, list[Bar]] = {}

    @property
    def display_name(self) -> str:
        return f"Replay of {', '.join(self._sources)} at {self._speed:g}x"

    async def start(self) -> None:
        found = await self._store.instruments(self._sources)
        missing = [symbol for symbol in self._sources if symbol not in found]
        if missing:
            raise FeedError(f"cannot replay unknown instrument(s) {', '.join(missing)}")
        self._instruments, self._bars = [], {}
        for symbol in self._sources:
            history = await self._store.bars(symbol, self._timeframe, start=self._start, end=None, limit=_MAX_BARS)
            name = replay_symbol(symbol)
            self._bars[name] = history
            source = found[symbol]
            self._instruments.append(
                replace(
                    source,
                    symbol=name,
                    venue_symbol=source.venue_symbol or symbol,
                    display_name=f"{source.display_name or symbol} (replay)",
                    feed_id=self.feed_id,
                    simulated=True,
                    create_time=None,
                    update_time=None,
                )
            )

    async def stop(self) -> None:
        return None

    def instruments(self) -> Sequence[Instrument]:
        return list(self._instruments)

    async def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        unknown = [symbol for symbol in symbols if symbol not in self._bars]
        if unknown:
            raise ValueError(f"not replayed here: {', '.join(unknown)}")
        pause = self._timeframe.seconds / self._speed
        while True:
            timeline = sorted({bar.open_time for symbol in symbols for bar in self._bars[symbol]})
            by_time = {symbol: {bar.open_time: bar for bar in self._bars[symbol]} for symbol in symbols}
            for moment in timeline:
                batch = [
                    tick
                    for symbol in symbols
                    if (bar := by_time[symbol].get(moment)) is not None
                    for tick in bar_ticks(symbol, bar, self._timeframe)
                ]
                batch.sort(key=lambda tick: tick.event_time)
                yield batch
                await asyncio.sleep(pause)
            if not self._loop:
                return

    async def history(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        if timeframe is not self._timeframe or symbol not in self._bars:
            raise HistoryNotSupported(f"replay has no {timeframe.label} history of {symbol}")
        return [bar for bar in self._bars[symbol] if start <= bar.open_time < end]

    def history_timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return (self._timeframe,) if symbol in self._bars else ()
