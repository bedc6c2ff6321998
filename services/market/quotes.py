"""Quotes: the feed leader folds ticks into each symbol's quote and shares it through the cache, so every replica
answers GetQuote and stream snapshots without touching the feed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.core.coordination import Cache
from services.market.models import Instrument, Quote, Tick

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


@dataclass(slots=True)
class _State:
    instrument: Instrument
    quote: Quote | None
    day: date | None


class QuoteBook:
    """The leader's running quotes of one feed's symbols, O(1) per tick."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._states = {item.symbol: _State(item, None, None) for item in instruments}
        self._dirty: set[str] = set()
        # Closes of the last stored day, for symbols whose first quote this leader makes.
        self._initial_closes: dict[str, float] = {}

    def restore(self, quotes: Mapping[str, Quote], previous_closes: Mapping[str, float]) -> None:
        """Continue from the quotes a previous leader shared (sequence numbers go on from theirs) and the stored
        daily closes."""
        self._initial_closes = dict(previous_closes)
        for symbol, state in self._states.items():
            quote = quotes.get(symbol)
            close = previous_closes.get(symbol)
            if quote is not None:
                state.quote = (
                    quote if quote.previous_close is not None or close is None else replace(quote, previous_close=close)
                )
                state.day = trading_day(quote.last_tick_time, state.instrument.timezone)

    def last_sequence(self, symbol: str) -> int:
        state = self._states.get(symbol)
        return 0 if state is None or state.quote is None else state.quote.sequence

    def apply(self, tick: Tick) -> Quote:
        """Fold one tick (already numbered) into its symbol's quote."""
        state = self._states[tick.symbol]
        day = trading_day(tick.event_time, state.instrument.timezone)
        quote = state.quote
        if quote is None or state.day != day:
            previous_close = quote.last_price if quote is not None else self._initial_close(tick.symbol)
            quote = Quote(
                symbol=tick.symbol,
                last_price=tick.price,
                last_tick_time=tick.event_time,
                sequence=tick.sequence,
                previous_close=previous_close,
                day_open=tick.price,
                day_high=tick.price,
                day_low=tick.price,
                day_volume=tick.size,
                simulated=state.instrument.simulated,
            )
            state.day = day
        else:
            quote = Quote(
                symbol=tick.symbol,
                last_price=tick.price,
                last_tick_time=tick.event_time,
                sequence=tick.sequence,
                previous_close=quote.previous_close,
                day_open=quote.day_open if quote.day_open is not None else tick.price,
                day_high=tick.price if quote.day_high is None else max(quote.day_high, tick.price),
                day_low=tick.price if quote.day_low is None else min(quote.day_low, tick.price),
                day_volume=quote.day_volume + tick.size,
                simulated=state.instrument.simulated,
                bid=tick.bid if tick.bid is not None else quote.bid,
                ask=tick.ask if tick.ask is not None else quote.ask,
                bid_size=tick.bid_size if tick.bid_size is not None else quote.bid_size,
                ask_size=tick.ask_size if tick.ask_size is not None else quote.ask_size,
            )
        if tick.bid is not None or tick.ask is not None:
            quote = replace(quote, bid=tick.bid, ask=tick.ask, bid_size=tick.bid_size, ask_size=tick.ask_size)
        state.quote = quote
        self._dirty.add(tick.symbol)
        return quote

    def _initial_close(self, symbol: str) -> float | None:
        return self._initial_closes.get(symbol)

    def take_dirty(self) -> list[Quote]:
        """Quotes changed since the previous call."""
        dirty = [state.quote for symbol in self._dirty if (state := self._states[symbol]).quote is not None]
        self._dirty.clear()
        return [quote for quote in dirty if quote is not None]

    def quote(self, symbol: str) -> Quote | None:
        state = self._states.get(symbol)
        return None if state is None else state.quote


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
