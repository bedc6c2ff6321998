"""Instruments and bars read from the market service through its gRPC contract (never its tables), with the
caller's credentials forwarded; used by every service that computes on bars."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import numpy as np
import numpy.typing as npt

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.calendars import ALWAYS_OPEN, TradingCalendar, default_calendar, load_calendar
from services.core.clients import ClientFactory
from services.core.errors import NotFound, Unavailable
from services.core.timeframes import Timeframe
from services.core.timestamps import naive_utc, timestamp

MARKET = market_pb2.DESCRIPTOR.services_by_name["MarketService"]
_PAGE = 1000
_COLUMNS = ("open", "high", "low", "close", "volume")
_RUNNING_OR_DONE = (market_pb2.FEED_STATE_HEALTHY, market_pb2.FEED_STATE_DEGRADED, market_pb2.FEED_STATE_STOPPED)
Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BarSeries:
    """Bars of one symbol and timeframe as float64 arrays, ascending by open time (naive UTC)."""

    times: list[datetime]
    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array

    def __len__(self) -> int:
        return len(self.times)

    def followed_by(self, later: BarSeries) -> BarSeries:
        """These bars, then `later`'s."""
        joined = [np.concatenate((getattr(self, name), getattr(later, name))) for name in _COLUMNS]
        return BarSeries(self.times + later.times, *joined)


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentInfo:
    """What computations on an instrument's bars need to know of it: its currency, lot and trading calendar (None
    only for an instrument whose market service names no calendar; `session_hours` then gives its hours a day)."""

    symbol: str
    quote_currency: str
    lot_size: float
    calendar: TradingCalendar | None
    session_hours: float = 24.0

    def periods_per_year(self, span: timedelta) -> float:
        """Bars of `span` (a timeframe's) in a year of the instrument's calendar: 252 daily bars on the NYSE, 365
        around the clock (see TradingCalendar.bars_per_year); without a calendar, 252 days of `session_hours`."""
        timeframe = next((item for item in Timeframe if item.delta == span), None)
        if timeframe is None:
            raise ValueError(f"{span} is not a timeframe's span")
        if self.calendar is not None:
            return self.calendar.bars_per_year(timeframe)
        return 252.0 * max(1.0, self.session_hours * 3600.0 / timeframe.seconds)


def _calendar(item: market_pb2.Instrument) -> str:
    """The instrument's calendar: named by the market service, else as it would default it."""
    session = item.trading_session
    if session.calendar:
        return session.calendar
    if session.always_open or item.asset_class == market_pb2.ASSET_CLASS_CRYPTO:
        return ALWAYS_OPEN
    return default_calendar(item.asset_class, item.venue) or ""


async def _load(name: str) -> TradingCalendar | None:
    """The calendar called `name`; None for none or one this platform does not know (a newer market service's)."""
    if not name:
        return None
    try:
        return await load_calendar(name)
    except ValueError:
        return None


def _session_hours(session: market_pb2.TradingSession) -> float:
    """Hours between the session's local open and close ("09:30" to "16:00" is 6.5); 24 when always open."""
    if session.always_open:
        return 24.0
    try:
        opens = [int(part) for part in session.open_local_time.split(":")[:2]]
        closes = [int(part) for part in session.close_local_time.split(":")[:2]]
        hours = (closes[0] * 60 + closes[1] - opens[0] * 60 - opens[1]) / 60.0
    except (ValueError, IndexError):
        return 6.5
    return hours if 0.0 < hours <= 24.0 else 6.5


class MarketData:
    """Pages through MarketService.ListBars with the caller's credentials (forwarded by the client factory)."""

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    async def instrument(self, symbol: str) -> InstrumentInfo:
        """The instrument's currency, lot and calendar; SYMBOL_NOT_FOUND or MARKET_UNAVAILABLE as for bars."""
        stub = self._clients.stub(market_pb2_grpc.MarketServiceStub, MARKET)
        try:
            reply = await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol=symbol))
        except grpc.aio.AioRpcError as error:
            raise _translate(error, symbol) from None
        item = reply.instrument
        name = _calendar(item)
        return InstrumentInfo(
            symbol=item.symbol,
            quote_currency=item.quote_currency,
            lot_size=item.lot_size if item.lot_size > 0.0 else 1.0,
            calendar=await _load(name),
            session_hours=_session_hours(item.trading_session),
        )

    async def history_stored(self, symbol: str) -> bool:
        """Whether the instrument's stored history is in place: it exists, and the feed that supplies it (if any)
        has started, since a feed stores its first history before it runs. False while the market service cannot
        say yet (not answering, the instrument not registered yet)."""
        stub = self._clients.stub(market_pb2_grpc.MarketServiceStub, MARKET)
        try:
            instrument = (await stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol=symbol))).instrument
            if not instrument.feed_id:
                return True
            feeds = (await stub.ListFeeds(market_pb2.ListFeedsRequest(page_size=1000))).feeds
        except grpc.aio.AioRpcError:
            return False
        state = next((feed.state for feed in feeds if feed.feed_id == instrument.feed_id), None)
        return state in _RUNNING_OR_DONE

    async def bars(
        self,
        symbol: str,
        timeframe: int,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        descending: bool = False,
    ) -> BarSeries:
        """Up to `limit` bars with start <= open_time < end, ascending (the latest `limit` when `descending`);
        NOT_FOUND SYMBOL_NOT_FOUND for an unknown symbol, UNAVAILABLE MARKET_UNAVAILABLE when the market service
        cannot answer."""
        stub = self._clients.stub(market_pb2_grpc.MarketServiceStub, MARKET)
        request = market_pb2.ListBarsRequest(
            symbol=symbol,
            timeframe=timeframe,  # type: ignore[arg-type]
            page_size=min(limit, _PAGE),
            descending=descending,
        )
        if start is not None:
            request.start_time.CopyFrom(timestamp(start))
        if end is not None:
            request.end_time.CopyFrom(timestamp(end))
        times: list[datetime] = []
        columns: list[list[float]] = [[], [], [], [], []]
        while True:
            try:
                reply = await stub.ListBars(request)
            except grpc.aio.AioRpcError as error:
                raise _translate(error, symbol) from None
            for bar in reply.bars:
                times.append(naive_utc(bar.open_time))
                for column, value in zip(columns, (bar.open, bar.high, bar.low, bar.close, bar.volume), strict=True):
                    column.append(value)
            if not reply.next_page_token or len(times) >= limit:
                break
            request.page_token = reply.next_page_token
        times, columns = times[:limit], [column[:limit] for column in columns]
        if descending:
            times.reverse()
            for column in columns:
                column.reverse()
        arrays: list[Array] = [np.asarray(column, dtype=np.float64) for column in columns]
        return BarSeries(times, *arrays)


def _translate(error: grpc.aio.AioRpcError, symbol: str) -> Exception:
    if error.code() is grpc.StatusCode.NOT_FOUND:
        return NotFound(f"no instrument {symbol}", reason="SYMBOL_NOT_FOUND", metadata={"symbol": symbol})
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
        return NotFound(f"{symbol} is not a symbol", reason="SYMBOL_NOT_FOUND", metadata={"symbol": symbol})
    return Unavailable(f"the market service did not answer ({error.code().name})", reason="MARKET_UNAVAILABLE")
