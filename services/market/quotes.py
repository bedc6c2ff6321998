"""Quotes: the feed leader folds ticks into each symbol's quote and shares it through the cache, so every replica
answers GetQuote and stream snapshots without touching the feed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.core.coordination import Cache
from services.market.records import EPOCH, Instrument, Quote, Tick

QUOTE_PREFIX = "quote:"
# Quotes outlive a feed outage so GetQuote can still answer (marked stale).
QUOTE_TTL_SECONDS = 7 * 86400.0


def trading_day(moment: datetime, timezone: str) -> date:
    """The calendar day of `moment` (naive UTC) in the instrument's time zone: quotes' "day"."""
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).date()


def day_bounds(moment: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The naive-UTC [start, end) of the trading day containing `moment` in the instrument's time zone."""
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    day = moment.replace(tzinfo=UTC).astimezone(zone).date()
    start = datetime.combine(day, dtime(), zone).astimezone(UTC).replace(tzinfo=None)
    end = datetime.combine(day + timedelta(days=1), dtime(), zone).astimezone(UTC).replace(tzinfo=None)
    return start, end


@dataclass(slots=True)
class _Running:
    """One symbol's quote as plain mutable fields: a tick costs a few comparisons, not a new object."""

    instrument: Instrument
    sequence: int = 0
    has_price: bool = False
    last_price: float = 0.0
    last_time: datetime = EPOCH
    day_start: datetime = EPOCH
    day_end: datetime = EPOCH
    previous_close: float | None = None
    day_open: float | None = None
    day_high: float | None = None
    day_low: float | None = None
    day_volume: float = 0.0
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None

    def quote(self) -> Quote | None:
        if not self.has_price:
            return None
        return Quote(
            symbol=self.instrument.symbol,
            last_price=self.last_price,
            last_tick_time=self.last_time,
            sequence=self.sequence,
            day_volume=self.day_volume,
            bid=self.bid,
            ask=self.ask,
            bid_size=self.bid_size,
            ask_size=self.ask_size,
            previous_close=self.previous_close,
            day_open=self.day_open,
            day_high=self.day_high,
            day_low=self.day_low,
            simulated=self.instrument.simulated,
        )


class QuoteBook:
    """The leader's running quotes of one feed's symbols, O(1) per tick."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._states = {item.symbol: _Running(item) for item in instruments}
        self._dirty: set[str] = set()
        # Closes of the last stored day, for symbols whose first quote this leader makes.
        self._initial_closes: dict[str, float] = {}

    def restore(self, quotes: Mapping[str, Quote], previous_closes: Mapping[str, float], *, floor: int = 0) -> None:
        """Continue from the quotes a previous leader shared and the stored daily closes; sequences continue above
        both the shared ones and `floor`."""
        self._initial_closes = dict(previous_closes)
        for symbol, state in self._states.items():
            state.sequence = max(state.sequence, floor)
            quote = quotes.get(symbol)
            if quote is None:
                continue
            state.has_price = True
            state.sequence = max(quote.sequence, floor)
            state.last_price, state.last_time = quote.last_price, quote.last_tick_time
            state.day_start, state.day_end = day_bounds(quote.last_tick_time, state.instrument.timezone)
            state.previous_close = (
                quote.previous_close if quote.previous_close is not None else previous_closes.get(symbol)
            )
            state.day_open, state.day_high, state.day_low = quote.day_open, quote.day_high, quote.day_low
            state.day_volume = quote.day_volume
            state.bid, state.ask, state.bid_size, state.ask_size = quote.bid, quote.ask, quote.bid_size, quote.ask_size

    def continue_after(self, previous: QuoteBook) -> None:
        """Keep counting above the sequences `previous` handed out (a reconnect within one leadership)."""
        for symbol, state in self._states.items():
            earlier = previous._states.get(symbol)
            if earlier is not None and earlier.sequence > state.sequence:
                state.sequence = earlier.sequence
                if earlier.has_price and earlier.last_time >= state.last_time:
                    self._states[symbol] = replace(earlier, instrument=state.instrument)

    def next_sequence(self, symbol: str) -> int:
        """Number the next tick of `symbol` (strictly increasing, continuing a previous leader's numbers)."""
        state = self._states[symbol]
        state.sequence += 1
        return state.sequence

    def last_sequence(self, symbol: str) -> int:
        state = self._states.get(symbol)
        return 0 if state is None else state.sequence

    def apply(self, tick: Tick, sequence: int) -> None:
        """Fold one tick, numbered `sequence`, into its symbol's quote."""
        state = self._states[tick.symbol]
        moment, price = tick.event_time, tick.price
        if not state.day_start <= moment < state.day_end:
            state.day_start, state.day_end = day_bounds(moment, state.instrument.timezone)
            state.previous_close = (
                state.last_price if state.has_price else self._initial_closes.get(tick.symbol, state.previous_close)
            )
            state.day_open = state.day_high = state.day_low = price
            state.day_volume = 0.0
        else:
            if state.day_open is None:
                state.day_open = price
            if state.day_high is None or price > state.day_high:
                state.day_high = price
            if state.day_low is None or price < state.day_low:
                state.day_low = price
        state.has_price = True
        state.last_price, state.last_time, state.sequence = price, moment, sequence
        state.day_volume += tick.size
        if tick.bid is not None or tick.ask is not None:
            state.bid, state.ask, state.bid_size, state.ask_size = tick.bid, tick.ask, tick.bid_size, tick.ask_size
        self._dirty.add(tick.symbol)

    def take_dirty(self) -> list[Quote]:
        """Quotes changed since the previous call."""
        dirty = [quote for symbol in self._dirty if (quote := self._states[symbol].quote()) is not None]
        self._dirty.clear()
        return dirty

    def quote(self, symbol: str) -> Quote | None:
        state = self._states.get(symbol)
        return None if state is None else state.quote()


def encode_quote(quote: Quote) -> bytes:
    values: dict[str, Any] = {
        "symbol": quote.symbol,
        "last_price": quote.last_price,
        "last_tick_time": quote.last_tick_time.isoformat(),
        "sequence": quote.sequence,
        "day_volume": quote.day_volume,
        "simulated": quote.simulated,
    }
    for name in ("bid", "ask", "bid_size", "ask_size", "previous_close", "day_open", "day_high", "day_low"):
        value = getattr(quote, name)
        if value is not None:
            values[name] = value
    return json.dumps(values, separators=(",", ":")).encode()


def decode_quote(raw: bytes) -> Quote | None:
    try:
        values = json.loads(raw)

        def optional(name: str) -> float | None:
            return float(values[name]) if name in values else None

        return Quote(
            symbol=str(values["symbol"]),
            last_price=float(values["last_price"]),
            last_tick_time=datetime.fromisoformat(values["last_tick_time"]),
            sequence=int(values["sequence"]),
            day_volume=float(values.get("day_volume", 0.0)),
            simulated=bool(values.get("simulated", False)),
            bid=optional("bid"),
            ask=optional("ask"),
            bid_size=optional("bid_size"),
            ask_size=optional("ask_size"),
            previous_close=optional("previous_close"),
            day_open=optional("day_open"),
            day_high=optional("day_high"),
            day_low=optional("day_low"),
        )
    except (ValueError, KeyError, TypeError):
        return None


class QuoteCache:
    """Quotes shared through the market service's cache namespace."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def put(self, quotes: Sequence[Quote]) -> None:
        if quotes:
            await self._cache.set_many(
                {QUOTE_PREFIX + quote.symbol: encode_quote(quote) for quote in quotes}, ttl_seconds=QUOTE_TTL_SECONDS
            )

    async def get(self, symbols: Sequence[str]) -> dict[str, Quote]:
        if not symbols:
            return {}
        raw = await self._cache.get_many([QUOTE_PREFIX + symbol for symbol in symbols])
        found: dict[str, Quote] = {}
        for symbol, value in zip(symbols, raw, strict=True):
            quote = decode_quote(value) if value is not None else None
            if quote is not None:
                found[symbol] = quote
        return found


def mark_stale(quote: Quote, *, now: datetime, staleness: timedelta, feed_healthy: bool) -> Quote:
    """The quote with `stale` set when its feed is not healthy or no tick came within the staleness threshold."""
    stale = not feed_healthy or now - quote.last_tick_time > staleness
    return replace(quote, stale=stale) if stale != quote.stale else quote
