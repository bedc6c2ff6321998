"""Replays stored bars as ticks at a chosen speed, under their own symbols ("<symbol>.REPLAY"), for demos and for
running signals over history as if it were live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import groupby

from services.core.calendars import ALWAYS_OPEN
from services.core.clock import SYSTEM_TIMER, Timer
from services.market.feeds.base import FeedAdapter, FeedError, HistoryNotSupported
from services.market.records import Bar, Instrument, Tick, Timeframe, TradingSession
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
    """Stored `timeframe` bars of `symbols` from `start` on, replayed at `speed` (market seconds per second), once
    or over and over (`loop`), each pass reading what is stored then.

    A symbol with no stored bars has nothing to replay: while none of the symbols has any, the feed waits (and
    says so through waiting_for()), looking again every `recheck_seconds`, and starts once bars exist (imported,
    or stored by another feed); a symbol without bars beside others that have some is reported by degradation()
    and joins at the next pass. Every wait is a sleep on `timer`: nothing here runs without suspending.
    """

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
        recheck_seconds: float = 5.0,
        timer: Timer = SYSTEM_TIMER,
    ) -> None:
        super().__init__(feed_id)
        if speed <= 0:
            raise ValueError("speed must be positive")
        if recheck_seconds <= 0:
            raise ValueError("recheck_seconds must be positive")
        self._store = store
        self._sources = list(dict.fromkeys(symbols))
        # Replayed symbol → stored symbol.
        self._names = {replay_symbol(symbol): symbol for symbol in self._sources}
        self._timeframe = timeframe
        self._speed = speed
        self._start = start
        self._loop = loop
        self._recheck = recheck_seconds
        self._timer = timer
        self._instruments: list[Instrument] = []
        # Stored symbols with no bars to replay at the last look.
        self._missing: list[str] = []
        self._waiting = False

    @property
    def display_name(self) -> str:
        return f"Replay of {', '.join(self._sources)} at {self._speed:g}x"

    async def start(self) -> None:
        if not self._sources:
            raise FeedError("no symbols configured to replay (BULLANT_REPLAY_SYMBOLS)")
        found = await self._store.instruments(self._sources)
        missing = [symbol for symbol in self._sources if symbol not in found]
        if missing:
            raise FeedError(f"cannot replay unknown instrument(s) {', '.join(missing)}")
        self._instruments = []
        for symbol in self._sources:
            source = found[symbol]
            self._instruments.append(
                replace(
                    source,
                    symbol=replay_symbol(symbol),
                    venue_symbol=source.venue_symbol or symbol,
                    display_name=f"{source.display_name or symbol} (replay)",
                    feed_id=self.feed_id,
                    simulated=True,
                    # Replayed bars arrive whenever the replay plays them, at its speed: the source's exchange hours
                    # and holidays do not apply to the copy (forecast dates and annualisation follow its bars).
                    trading_session=TradingSession(
                        always_open=True, description="replayed around the clock", calendar=ALWAYS_OPEN
                    ),
                    create_time=None,
                    update_time=None,
                )
            )
        # Known before the first tick is asked for, so the feed's first reported state is already true.
        self._missing = [
            symbol for symbol in self._sources if await self._store.last_bar(symbol, self._timeframe) is None
        ]
        self._waiting = len(self._missing) == len(self._sources)

    async def stop(self) -> None:
        return None

    def instruments(self) -> Sequence[Instrument]:
        return list(self._instruments)

    def waiting_for(self) -> str:
        if not self._waiting:
            return ""
        return (
            f"no stored {self._timeframe.label} bars of {', '.join(self._missing)} to replay yet; "
            f"looking again every {self._recheck:g}s"
        )

    def degradation(self) -> str:
        if self._waiting or not self._missing:
            return ""
        return f"no stored {self._timeframe.label} bars of {', '.join(self._missing)} to replay yet"

    async def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        unknown = [symbol for symbol in symbols if symbol not in self._names]
        if unknown or not symbols:
            raise ValueError(f"not replayed here: {', '.join(unknown) or 'no symbols'}")
        # A bar is traced by four ticks a quarter of its interval apart, each quarter a batch.
        pause = self._timeframe.seconds / self._speed / 4
        while True:
            history = {symbol: await self._stored(self._names[symbol]) for symbol in symbols}
            self._missing = [self._names[symbol] for symbol, bars in history.items() if not bars]
            self._waiting = len(self._missing) == len(symbols)
            if self._waiting:
                await self._timer.sleep(self._recheck)
                continue
            for batch in _batches(history, self._timeframe):
                yield batch
                await self._timer.sleep(pause)
            if not self._loop:
                return

    async def _stored(self, symbol: str) -> list[Bar]:
        return await self._store.bars(symbol, self._timeframe, start=self._start, end=None, limit=_MAX_BARS)

    async def history(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        source = self._names.get(symbol)
        if timeframe is not self._timeframe or source is None:
            raise HistoryNotSupported(f"replay has no {timeframe.label} history of {symbol}")
        if self._start is not None:
            start = max(start, self._start)
        return await self._store.bars(source, timeframe, start=start, end=end, limit=_MAX_BARS)

    def history_timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return (self._timeframe,) if symbol in self._names else ()


def _batches(history: dict[str, list[Bar]], timeframe: Timeframe) -> Iterator[list[Tick]]:
    """The ticks of every symbol's bars in time order, one batch per event time (bars of the same open time
    across symbols share their four tick times)."""
    timeline = sorted({bar.open_time for bars in history.values() for bar in bars})
    by_time = {symbol: {bar.open_time: bar for bar in bars} for symbol, bars in history.items()}
    for moment in timeline:
        ticks = [
            tick
            for symbol, bars in by_time.items()
            if (bar := bars.get(moment)) is not None
            for tick in bar_ticks(symbol, bar, timeframe)
        ]
        ticks.sort(key=lambda tick: tick.event_time)
        for _, batch in groupby(ticks, key=lambda tick: tick.event_time):
            yield list(batch)
