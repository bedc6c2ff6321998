"""The market domain: the instrument catalogue, quotes, stored bars with validated imports, backfill from feeds, and
feed health."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

from services.core.auth.identity import Identity
from services.core.bars import roll_up
from services.core.clock import WallClock
from services.core.coordination import Cache, Locks
from services.core.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.core.paging import MOMENT, NAME, Cursor, Page, PageTokens, keyset_page
from services.market.feeds.base import FeedAdapter, FeedError, HistoryNotSupported
from services.market.feeds.registry import HistorySources
from services.market.feeds.runner import FeedState, FeedStatus, feed_statuses
from services.market.imports.bar_import import ImportOutcome
from services.market.imports.rows import RawRow, RowError
from services.market.imports.rules import BarValidator, classify
from services.market.imports.service import known_instrument
from services.market.quotes import QuoteCache, mark_stale
from services.market.records import AssetClass, Bar, BarWindow, Instrument, Quote, Timeframe, TradingSession
from services.market.sessions import resolve_session
from services.market.store import MarketStore
from services.market.streaming import Subscriber, TickStreams

log = logging.getLogger("bullant.market")

SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
# Bars fetched from a feed per request during a backfill.
_BACKFILL_WINDOW_BARS = 1000
# What each list's page tokens hold.
_INSTRUMENTS_CURSOR = Cursor.of("market.ListInstruments", after=NAME)
_BARS_CURSOR = Cursor.of("market.ListBars", t=MOMENT)
_FEEDS_CURSOR = Cursor.of("market.ListFeeds", after=NAME)


def normalize_symbol(raw: str, *, field: str = "symbol") -> str:
    """The platform symbol: upper-cased; INVALID_ARGUMENT SYMBOL_INVALID when it breaks the symbol rules."""
    symbol = raw.strip().upper()
    if not SYMBOL.match(symbol):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise InvalidArgument(
            FieldViolation(field, f"{shown!r} is not a symbol: 1-32 of A-Z 0-9 . _ - starting with a letter or digit"),
            reason="SYMBOL_INVALID",
        )
    return symbol


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillProgress:
    fetched: int
    written: int
    through_time: datetime
    percent: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedView:
    """A configured feed and its leader's status (None: no replica runs it)."""

    feed_id: str
    status: FeedStatus | None


class MarketService:
    """The market domain's entry point for the servicer."""

    def __init__(
        self,
        *,
        store: MarketStore,
        cache: Cache,
        locks: Locks,
        history: HistorySources,
        streams: TickStreams,
        staleness: timedelta,
        pages: PageTokens,
        clock: WallClock,
    ) -> None:
        self._store = store
        self._cache = cache
        self._quotes = QuoteCache(cache)
        self._locks = locks
        self._history = history
        self._streams = streams
        self._staleness = staleness
        self._pages = pages
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    # -- instruments ------------------------------------------------------------------------------------------------

    async def instrument(self, symbol: str) -> Instrument:
        """The instrument, NOT_FOUND SYMBOL_NOT_FOUND when the catalogue has no `symbol`."""
        return await known_instrument(self._store, symbol)

    async def instruments(self, symbols: Sequence[str]) -> dict[str, Instrument]:
        """Every one of `symbols`; NOT_FOUND SYMBOL_NOT_FOUND naming the first unknown one."""
        found = await self._store.instruments(symbols)
        for symbol in symbols:
            if symbol not in found:
                raise NotFound(f"no instrument {symbol}", reason="SYMBOL_NOT_FOUND", metadata={"symbol": symbol})
        return found

    async def list_instruments(
        self, *, query: str, asset_class: AssetClass | None, venue: str, size: int, page_token: str
    ) -> Page[Instrument]:
        """Instruments matching the filters, in symbol order, a page at a time."""
        return await keyset_page(
            self._pages,
            _INSTRUMENTS_CURSOR,
            page_token,
            query=f"{query}|{int(asset_class or 0)}|{venue}",
            size=size,
            fetch=lambda position, limit: self._store.search_instruments(
                query=query.strip(),
                asset_class=asset_class,
                venue=venue.strip().upper(),
                after=position["after"] if position else "",
                limit=limit,
            ),
            position=lambda instrument: {"after": instrument.symbol},
        )

    async def create_instrument(self, instrument: Instrument, *, session: TradingSession | None = None) -> Instrument:
        """Stores a new instrument with `session`, or its calendar's default one when None (see sessions.py)."""
        # Lengths, patterns and ranges are the contract's declared rules, checked before the request got here; the
        # time zone must be one the tz database knows.
        if instrument.timezone and instrument.timezone not in _timezones():
            raise InvalidArgument(
                FieldViolation("instrument.timezone", "must be an IANA time zone like Asia/Seoul"),
                reason="TIMEZONE_INVALID",
            )
        if instrument.feed_id and instrument.feed_id not in self._history.feed_ids:
            raise NotFound(f"no feed {instrument.feed_id}", reason="FEED_NOT_FOUND")
        instrument = await resolve_session(instrument, session)
        return await self._store.create_instrument(
            replace(
                instrument,
                venue=instrument.venue.strip().upper(),
                quote_currency=instrument.quote_currency.strip().upper(),
                base_currency=instrument.base_currency.strip().upper(),
                venue_symbol=instrument.venue_symbol or instrument.symbol,
            )
        )

    # -- quotes -----------------------------------------------------------------------------------------------------

    async def quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Latest quotes of known symbols (absent: no market data yet), marked stale where due."""
        instruments = await self.instruments(symbols)
        found = await self._quotes.get(symbols)
        statuses = await feed_statuses(self._cache, sorted({item.feed_id for item in instruments.values()}))
        now = self._clock()
        return {
            symbol: mark_stale(
                quote,
                now=now,
                staleness=self._staleness,
                feed_healthy=_healthy(statuses.get(instruments[symbol].feed_id)),
            )
            for symbol, quote in found.items()
        }

    async def quote(self, symbol: str) -> Quote:
        """The latest quote of a known symbol; NOT_FOUND QUOTE_NOT_AVAILABLE before its first market data."""
        quotes = await self.quotes([symbol])
        if symbol not in quotes:
            raise NotFound(f"{symbol} has no market data yet", reason="QUOTE_NOT_AVAILABLE")
        return quotes[symbol]

    async def snapshot(self, symbols: Sequence[str]) -> list[Quote]:
        quotes = await self.quotes(symbols)
        return [quotes[symbol] for symbol in symbols if symbol in quotes]

    def tick_stream(
        self, symbols: Iterable[str], *, identity: Identity | None, conflate: bool
    ) -> contextlib.AbstractAsyncContextManager[Subscriber]:
        """A subscription to the live ticks of `symbols` (see TickStreams.open for the per-account limit)."""
        return self._streams.open(symbols, identity=identity, conflate=conflate)

    # -- bars -------------------------------------------------------------------------------------------------------

    async def list_bars(
        self,
        symbol: str,
        timeframe: Timeframe,
        window: BarWindow,
        *,
        descending: bool,
        size: int,
        page_token: str,
    ) -> Page[Bar]:
        """Stored bars of a known symbol within `window` in the chosen order, a page at a time: each page continues
        after the open time of the previous page's last bar."""

        async def fetch(position: dict[str, Any] | None, limit: int) -> list[Bar]:
            # Checked once the token is read, as before: a token this list did not issue is refused first.
            await self.instrument(symbol)
            start, end = window.start, window.end
            if position is not None:
                if descending:
                    end = position["t"]
                else:
                    start = position["t"] + timedelta(microseconds=1)
            return await self._store.bars(symbol, timeframe, start=start, end=end, limit=limit, descending=descending)

        return await keyset_page(
            self._pages,
            _BARS_CURSOR,
            page_token,
            query=f"{symbol}|{timeframe}|{window.start}|{window.end}|{descending}",
            size=size,
            fetch=fetch,
            position=lambda bar: {"t": bar.open_time},
        )

    async def backfill(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        start: datetime,
        end: datetime | None,
        feed_id: str,
        overwrite: bool,
    ) -> AsyncIterator[BackfillProgress | ImportOutcome]:
        """Fetch missing history from a feed in windows, yielding progress after each and the outcome last."""
        instrument = await self.instrument(symbol)
        feed_id = feed_id.strip() or instrument.feed_id
        now = self._clock()
        end = min(end or now, timeframe.floor(now))
        if not start < end:
            raise InvalidArgument(
                FieldViolation("start_time", "must be before end_time and before the last closed bar"),
                reason="TIME_RANGE_INVALID",
            )
        adapter = await self._history_adapter(feed_id)
        native = adapter.history_timeframes(symbol)
        fetch_timeframe = timeframe if timeframe in native else Timeframe.M1 if Timeframe.M1 in native else None
        if fetch_timeframe is None:
            raise FailedPrecondition(
                f"feed {feed_id} has no {timeframe.label} history of {symbol}", reason="BACKFILL_NOT_SUPPORTED"
            )
        lease = await self._locks.acquire(f"backfill:{symbol}:{int(timeframe)}", ttl_seconds=600)
        if lease is None:
            raise Aborted("a backfill of this symbol and timeframe is running", reason="BACKFILL_IN_PROGRESS")
        try:
            outcome = ImportOutcome()
            validator = BarValidator(timeframe)
            fetched = written = 0
            window = timeframe.delta * _BACKFILL_WINDOW_BARS
            cursor = timeframe.floor(start) if not timeframe.aligned(start) else start
            total = (end - cursor).total_seconds()
            while cursor < end:
                upper = min(cursor + window, end)
                try:
                    raw = await adapter.history(symbol, fetch_timeframe, cursor, upper)
                except HistoryNotSupported as error:
                    raise FailedPrecondition(str(error), reason="BACKFILL_NOT_SUPPORTED") from None
                except FeedError as error:
                    log.warning("backfill of %s from feed %s failed: %s %s", symbol, feed_id, error, error.detail)
                    raise Unavailable(f"feed {feed_id}: {error}", reason="FEED_UNAVAILABLE") from None
                fetched += len(raw)
                bars = raw if fetch_timeframe is timeframe else roll_up(raw, timeframe, now=now)
                accepted: list[Bar] = []
                for bar in bars:
                    checked = validator.validate(
                        RawRow(0, bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count),
                        now,
                    )
                    if isinstance(checked, RowError):
                        outcome.rejected += 1
                    else:
                        accepted.append(checked)
                written += await self._store_window(symbol, timeframe, accepted, overwrite, outcome)
                cursor = upper
                done = 100.0 if total <= 0 else min(100.0, 100.0 * (1 - (end - cursor).total_seconds() / total))
                yield BackfillProgress(fetched=fetched, written=written, through_time=cursor, percent=done)
                await self._locks.renew(lease, 600)
            yield outcome
        finally:
            await self._locks.release(lease)

    async def _store_window(
        self, symbol: str, timeframe: Timeframe, accepted: list[Bar], overwrite: bool, outcome: ImportOutcome
    ) -> int:
        if not accepted:
            return 0
        stored = await self._store.bars_at(symbol, timeframe, [bar.open_time for bar in accepted])
        plan = classify(accepted, stored)
        updates = plan.updates if overwrite else []
        await self._store.write_bars(symbol, timeframe, plan.inserts, updates)
        outcome.inserted += len(plan.inserts)
        outcome.updated += len(updates)
        outcome.unchanged += plan.unchanged + (len(plan.updates) - len(updates))
        outcome.accept_times(accepted)
        return len(plan.inserts) + len(updates)

    async def _history_adapter(self, feed_id: str) -> FeedAdapter:
        try:
            adapter = await self._history.adapter(feed_id)
        except FeedError as error:
            log.warning("feed %s could not serve history: %s %s", feed_id, error, error.detail)
            raise Unavailable(f"feed {feed_id}: {error}", reason="FEED_UNAVAILABLE") from None
        if adapter is None:
            raise NotFound(f"no feed {feed_id!r}", reason="FEED_NOT_FOUND")
        return adapter

    # -- feeds ------------------------------------------------------------------------------------------------------

    async def feeds(self, *, size: int, page_token: str) -> Page[FeedView]:
        """The configured feeds in id order with their leaders' status, a page at a time."""

        async def fetch(position: dict[str, Any] | None, limit: int) -> list[FeedView]:
            after = position["after"] if position else ""
            ids = [feed_id for feed_id in self._history.feed_ids if feed_id > after][:limit]
            statuses = await feed_statuses(self._cache, ids)
            return [FeedView(feed_id=feed_id, status=statuses.get(feed_id)) for feed_id in ids]

        return await keyset_page(
            self._pages,
            _FEEDS_CURSOR,
            page_token,
            size=size,
            fetch=fetch,
            position=lambda view: {"after": view.feed_id},
        )


def _healthy(status: FeedStatus | None) -> bool:
    return status is not None and status.state in (FeedState.HEALTHY, FeedState.STOPPED)


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}
