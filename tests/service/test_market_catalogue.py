"""The instrument catalogue (list, search, get, create) and quotes (GetQuote, BatchGetQuotes) through a real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from services.core.clock import utc_now
from services.core.timestamps import timestamp
from services.market.feeds.base import FeedError
from services.market.feeds.runner import FeedState
from services.market.records import Timeframe
from tests.account_platform import refusal, violations_of
from tests.market_platform import MarketPlatform, running_market, tick
from tests.support import eventually

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def platform() -> AsyncIterator[MarketPlatform]:
    async with running_market() as running:
        await running.feed_running()
        yield running


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def _failure(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def _new(symbol: str = "ZZ-NEW", **fields: Any) -> market_pb2.CreateInstrumentRequest:
    values: dict[str, Any] = {
        "symbol": symbol,
        "venue": "nasdaq",
        "asset_class": market_pb2.ASSET_CLASS_STOCK,
        "quote_currency": "usd",
    }
    values.update(fields)
    return market_pb2.CreateInstrumentRequest(instrument=market_pb2.Instrument(**values))


async def _list(platform: MarketPlatform, **fields: Any) -> list[str]:
    reply = await platform.stub.ListInstruments(market_pb2.ListInstrumentsRequest(**fields), metadata=platform.reader)
    return [item.symbol for item in reply.instruments]


async def _quote(platform: MarketPlatform, symbol: str) -> market_pb2.Quote:
    reply = await platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol=symbol), metadata=platform.reader)
    return reply.quote


async def _quoted(platform: MarketPlatform, symbol: str, sequence: int = 1) -> bool:
    """Whether the symbol's quote reflects the leadership's tick number `sequence` yet (quotes are shared every
    250 ms; a leadership numbers its ticks from its sequence floor)."""
    try:
        return (await _quote(platform, symbol)).sequence >= platform.runner()._sequence_floor + sequence
    except grpc.aio.AioRpcError:
        return False


# -- instruments ------------------------------------------------------------------------------------------------------


async def test_the_feeds_instruments_are_listed_as_simulated(platform: MarketPlatform) -> None:
    reply = await platform.stub.ListInstruments(market_pb2.ListInstrumentsRequest(), metadata=platform.reader)
    by_symbol = {item.symbol: item for item in reply.instruments}
    assert list(by_symbol) == ["TEST-AAPL", "TEST-BTC"]
    assert reply.next_page_token == ""
    for item in by_symbol.values():
        assert (item.feed_id, item.simulated, item.venue) == ("script", True, "TEST")
        assert item.HasField("create_time")
    coin = by_symbol["TEST-BTC"]
    assert (coin.asset_class, coin.quote_currency, coin.base_currency) == (
        market_pb2.ASSET_CLASS_CRYPTO,
        "USDT",
        "BTC",
    )
    assert coin.venue_symbol == "TEST-BTC"


async def test_search_by_text_class_and_venue(platform: MarketPlatform) -> None:
    await platform.stub.CreateInstrument(
        _new(
            "ZZ_1",
            venue="otherx",
            venue_symbol="ZZ/ONE",
            display_name="Widget 100% Co",
            trading_session=market_pb2.TradingSession(calendar="XNYS"),
        ),
        metadata=platform.admin,
    )
    assert await _list(platform, query="test-a") == ["TEST-AAPL"]
    assert await _list(platform, query="APPLE") == ["TEST-AAPL"]  # display name, any case
    assert await _list(platform, query="bitcoin test") == ["TEST-BTC"]
    assert await _list(platform, query="zz/one") == ["ZZ_1"]  # venue symbol
    assert await _list(platform, query="  test  ") == ["TEST-AAPL", "TEST-BTC"]
    # % and _ are literal characters, not LIKE wildcards.
    assert await _list(platform, query="%") == ["ZZ_1"]
    assert await _list(platform, query="100%") == ["ZZ_1"]
    assert await _list(platform, query="t%t") == []
    assert await _list(platform, query="zz_") == ["ZZ_1"]
    assert await _list(platform, query="t_st") == []
    assert await _list(platform, query="nothing-like-it") == []
    assert await _list(platform, asset_class=market_pb2.ASSET_CLASS_CRYPTO) == ["TEST-BTC"]
    assert await _list(platform, asset_class=market_pb2.ASSET_CLASS_STOCK) == ["TEST-AAPL", "ZZ_1"]
    assert await _list(platform, asset_class=market_pb2.ASSET_CLASS_FX) == []
    assert await _list(platform, venue="otherx") == ["ZZ_1"]
    assert await _list(platform, venue="TEST") == ["TEST-AAPL", "TEST-BTC"]
    assert await _list(platform, venue="TEST", asset_class=market_pb2.ASSET_CLASS_STOCK, query="aapl") == ["TEST-AAPL"]


async def test_pages_walk_every_instrument_once_in_symbol_order(platform: MarketPlatform) -> None:
    for symbol in ("ZZ-C", "AA-1", "MM.X"):
        await platform.stub.CreateInstrument(_new(symbol), metadata=platform.admin)
    seen: list[str] = []
    token = ""
    while True:
        reply = await platform.stub.ListInstruments(
            market_pb2.ListInstrumentsRequest(page_size=1, page_token=token), metadata=platform.reader
        )
        assert len(reply.instruments) == 1
        seen.append(reply.instruments[0].symbol)
        token = reply.next_page_token
        if not token:
            break
        assert len(seen) < 10, "pagination does not end"
    assert seen == ["AA-1", "MM.X", "TEST-AAPL", "TEST-BTC", "ZZ-C"]

    first = await platform.stub.ListInstruments(
        market_pb2.ListInstrumentsRequest(page_size=2, query="test"), metadata=platform.reader
    )
    assert [item.symbol for item in first.instruments] == ["TEST-AAPL", "TEST-BTC"]
    assert first.next_page_token == ""
    page = await platform.stub.ListInstruments(market_pb2.ListInstrumentsRequest(page_size=2), metadata=platform.reader)
    assert page.next_page_token
    for changed in (
        {"query": "test"},
        {"venue": "TEST"},
        {"asset_class": market_pb2.ASSET_CLASS_STOCK},
        {"page_token": "not-a-token"},
    ):
        request = market_pb2.ListInstrumentsRequest(page_size=2, page_token=page.next_page_token)
        request.MergeFrom(market_pb2.ListInstrumentsRequest(**changed))
        if "page_token" in changed:
            request.page_token = str(changed["page_token"])
        call = platform.stub.ListInstruments(request, metadata=platform.reader)
        assert await refusal(call) == (INVALID, "PAGE_TOKEN_INVALID"), changed


async def test_get_instrument(platform: MarketPlatform) -> None:
    reply = await platform.stub.GetInstrument(
        market_pb2.GetInstrumentRequest(symbol="test-aapl"), metadata=platform.reader
    )
    assert (reply.instrument.symbol, reply.instrument.display_name) == ("TEST-AAPL", "Apple test stock")
    assert (reply.instrument.tick_size, reply.instrument.lot_size) == (0.01, 1.0)
    unknown = await _failure(platform.stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="NOPE")))
    assert unknown.code() is grpc.StatusCode.UNAUTHENTICATED
    unknown = await _failure(
        platform.stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol="nope"), metadata=platform.reader)
    )
    assert (unknown.code(), _error_info(unknown).reason) == (NOT_FOUND, "SYMBOL_NOT_FOUND")
    assert _error_info(unknown).metadata["symbol"] == "NOPE"
    longest = "A" * 32
    call = platform.stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol=longest), metadata=platform.reader)
    assert await refusal(call) == (NOT_FOUND, "SYMBOL_NOT_FOUND")
    for bad in ("a/b", "", "A" * 33, "BTC:USD", "-AB", "bad symbol"):
        call = platform.stub.GetInstrument(market_pb2.GetInstrumentRequest(symbol=bad), metadata=platform.reader)
        assert await refusal(call) == (INVALID, "SYMBOL_INVALID"), bad


async def test_create_instrument(platform: MarketPlatform) -> None:
    reader_call = platform.stub.CreateInstrument(_new("ZZ-READ"), metadata=platform.token("read", "trade"))
    assert await refusal(reader_call) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    before = utc_now() - timedelta(seconds=1)
    request = _new(
        "zz-fx.1",
        venue="otc",
        asset_class=market_pb2.ASSET_CLASS_FX,
        base_currency="eur",
        timezone="Asia/Seoul",
        display_name="Euro",
        create_time=timestamp(datetime(2001, 1, 1)),
    )
    created = (await platform.stub.CreateInstrument(request, metadata=platform.admin)).instrument
    assert (created.symbol, created.venue, created.venue_symbol) == ("ZZ-FX.1", "OTC", "ZZ-FX.1")
    assert (created.quote_currency, created.base_currency, created.timezone) == ("USD", "EUR", "Asia/Seoul")
    assert (created.feed_id, created.simulated) == ("", False)
    assert created.create_time.ToDatetime() >= before  # output-only: the client's value is ignored
    stored = await platform.stub.GetInstrument(
        market_pb2.GetInstrumentRequest(symbol="ZZ-FX.1"), metadata=platform.reader
    )
    assert stored.instrument == created
    on_feed = await platform.stub.CreateInstrument(_new("ZZ-FEED", feed_id="script"), metadata=platform.admin)
    assert on_feed.instrument.feed_id == "script"

    for taken in ("ZZ-FX.1", "test-aapl"):
        call = platform.stub.CreateInstrument(_new(taken), metadata=platform.admin)
        assert await refusal(call) == (grpc.StatusCode.ALREADY_EXISTS, "SYMBOL_TAKEN"), taken
    call = platform.stub.CreateInstrument(_new("ZZ-TZ", timezone="Mars/Olympus"), metadata=platform.admin)
    assert await refusal(call) == (INVALID, "TIMEZONE_INVALID")
    call = platform.stub.CreateInstrument(_new("ZZ-NOFEED", feed_id="nowhere"), metadata=platform.admin)
    assert await refusal(call) == (NOT_FOUND, "FEED_NOT_FOUND")
    for bad in ("", "a/b", "A" * 33):
        call = platform.stub.CreateInstrument(_new(bad), metadata=platform.admin)
        assert await refusal(call) == (INVALID, "SYMBOL_INVALID"), bad

    empty = await _failure(
        platform.stub.CreateInstrument(
            market_pb2.CreateInstrumentRequest(instrument=market_pb2.Instrument(symbol="ZZ-EMPTY")),
            metadata=platform.admin,
        )
    )
    assert (empty.code(), _error_info(empty).reason) == (INVALID, "INVALID_ARGUMENT")
    assert {"instrument.venue", "instrument.asset_class", "instrument.quote_currency"} <= set(violations_of(empty))
    missing = await _failure(
        platform.stub.CreateInstrument(market_pb2.CreateInstrumentRequest(), metadata=platform.admin)
    )
    assert missing.code() is INVALID
    assert "instrument" in violations_of(missing)
    # Nothing refused was stored.
    assert await _list(platform, query="zz-") == ["ZZ-FEED", "ZZ-FX.1"]


def _session(instrument: market_pb2.Instrument) -> tuple[str, bool, str, str, str]:
    session = instrument.trading_session
    return (
        session.calendar,
        session.always_open,
        session.open_local_time,
        session.close_local_time,
        instrument.timezone,
    )


async def test_an_instrument_without_a_session_trades_on_its_calendar(platform: MarketPlatform) -> None:
    """A stock is not always open: without a session it gets its exchange's calendar (holidays included), a
    crypto pair 24/7 and an FX pair the FX week; a stock of an unknown venue must name its calendar."""

    async def created(symbol: str, **fields: Any) -> market_pb2.Instrument:
        reply = await platform.stub.CreateInstrument(_new(symbol, **fields), metadata=platform.admin)
        stored = await platform.stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol=symbol), metadata=platform.reader
        )
        assert stored.instrument == reply.instrument
        return reply.instrument

    goog = await created("ZZ-GOOG")  # venue NASDAQ, as a CSV import's instrument would be created
    assert _session(goog) == ("XNAS", False, "09:30", "16:00", "America/New_York")
    assert goog.trading_session.description == (
        "XNAS sessions, 09:30-16:00 America/New_York, exchange holidays and early closes included"
    )
    assert _session(await created("ZZ-NYSE", venue="XNYS")) == ("XNYS", False, "09:30", "16:00", "America/New_York")
    samsung = await created("ZZ-005930", venue="krx", quote_currency="KRW", timezone="Asia/Seoul")
    assert _session(samsung) == ("XKRX", False, "09:00", "15:30", "Asia/Seoul")
    coin = await created("ZZ-COIN", venue="otc", asset_class=market_pb2.ASSET_CLASS_CRYPTO)
    assert _session(coin) == ("24/7", True, "", "", "UTC")
    euro = await created("ZZ-EUR", venue="otc", asset_class=market_pb2.ASSET_CLASS_FX, base_currency="EUR")
    assert _session(euro) == ("FX", False, "", "", "UTC")
    named = await created("ZZ-OTC", venue="otc", trading_session=market_pb2.TradingSession(calendar="nyse"))
    assert _session(named) == ("XNYS", False, "09:30", "16:00", "America/New_York")
    never_closes = await created("ZZ-ALWAYS", venue="otc", trading_session=market_pb2.TradingSession(always_open=True))
    assert _session(never_closes) == ("24/7", True, "", "", "UTC")
    # The feeds' instruments name theirs too (the script feed's are listed always open).
    listed = await platform.stub.GetInstrument(
        market_pb2.GetInstrumentRequest(symbol="TEST-AAPL"), metadata=platform.reader
    )
    assert listed.instrument.trading_session.calendar == "24/7"

    unknown_venue = await _failure(platform.stub.CreateInstrument(_new("ZZ-X1", venue="otc"), metadata=platform.admin))
    assert (unknown_venue.code(), _error_info(unknown_venue).reason) == (INVALID, "TRADING_CALENDAR_REQUIRED")
    assert "is not a known exchange" in violations_of(unknown_venue)["instrument.trading_session.calendar"]
    index = _new("ZZ-X2", venue="otc", asset_class=market_pb2.ASSET_CLASS_INDEX)
    assert await refusal(platform.stub.CreateInstrument(index, metadata=platform.admin)) == (
        INVALID,
        "TRADING_CALENDAR_REQUIRED",
    )
    moon = _new("ZZ-X3", trading_session=market_pb2.TradingSession(calendar="MOON"))
    assert await refusal(platform.stub.CreateInstrument(moon, metadata=platform.admin)) == (
        INVALID,
        "TRADING_CALENDAR_UNKNOWN",
    )
    elsewhere = _new("ZZ-X4", timezone="Asia/Seoul")
    failure = await _failure(platform.stub.CreateInstrument(elsewhere, metadata=platform.admin))
    assert (failure.code(), _error_info(failure).reason) == (INVALID, "TIMEZONE_INVALID")
    assert violations_of(failure) == {"instrument.timezone": "the XNAS calendar trades in America/New_York"}
    assert await _list(platform, query="zz-x") == []


# -- quotes -----------------------------------------------------------------------------------------------------------


async def test_quote_folds_the_days_ticks(platform: MarketPlatform) -> None:
    now = utc_now().replace(microsecond=0)
    first = now - timedelta(seconds=3)
    last = now - timedelta(seconds=1)
    await platform.feed.push(
        tick("TEST-AAPL", 100.0, 2.0, at=first),
        tick("TEST-AAPL", 102.0, 3.0, at=first + timedelta(milliseconds=500)),
        tick("TEST-AAPL", 99.5, 1.5, at=now - timedelta(seconds=2)),
        tick("TEST-AAPL", 101.0, 0.5, at=last, bid=100.9, ask=101.2, bid_size=4.0, ask_size=6.0),
    )
    await eventually(lambda: _quoted(platform, "test-aapl", 4), timeout=5)
    quote = await _quote(platform, "test-aapl")
    assert (quote.symbol, quote.simulated, quote.stale) == ("TEST-AAPL", True, False)
    assert quote.sequence == platform.runner()._sequence_floor + 4
    assert quote.last_price == 101.0
    assert (quote.day_open, quote.day_high, quote.day_low, quote.day_volume) == (100.0, 102.0, 99.5, 7.0)
    assert (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (100.9, 101.2, 4.0, 6.0)
    assert quote.last_tick_time.ToDatetime() == last
    # The instrument's first day: no previous close, so no change either.
    assert not quote.HasField("previous_close")
    assert not quote.HasField("change")
    assert not quote.HasField("change_percent")


async def test_previous_close_is_the_last_price_of_the_previous_day(platform: MarketPlatform) -> None:
    midnight = Timeframe.D1.floor(utc_now())
    await platform.feed.push(
        tick("TEST-BTC", 60000.0, 1.0, at=midnight - timedelta(hours=5)),
        tick("TEST-BTC", 64000.0, 2.0, at=midnight - timedelta(hours=1)),
        tick("TEST-BTC", 67200.0, 0.25, at=utc_now()),
    )
    await eventually(lambda: _quoted(platform, "TEST-BTC", 3), timeout=5)
    quote = await _quote(platform, "TEST-BTC")
    assert (quote.previous_close, quote.last_price) == (64000.0, 67200.0)
    assert quote.change == 3200.0
    assert quote.change_percent == pytest.approx(5.0)
    assert (quote.day_open, quote.day_high, quote.day_low, quote.day_volume) == (67200.0, 67200.0, 67200.0, 0.25)


async def test_previous_close_comes_from_the_stored_daily_bar(platform: MarketPlatform) -> None:
    yesterday = Timeframe.D1.floor(utc_now()) - timedelta(days=1)
    bar = market_pb2.Bar(open_time=timestamp(yesterday), open=100.0, high=110.0, low=95.0, close=105.0, volume=1e3)
    await platform.stub.ImportBars(
        market_pb2.ImportBarsRequest(symbol="TEST-AAPL", timeframe=common_pb2.TIMEFRAME_1D, bars=[bar]),
        metadata=platform.admin,
    )
    # The leader reads the stored closes when it (re)starts the feed.
    await platform.feed.fail()
    await eventually(lambda: platform.feed.starts >= 2 and platform.runner().status.state == FeedState.HEALTHY)
    await platform.feed.push(tick("TEST-AAPL", 115.5, 10.0))
    await eventually(lambda: _quoted(platform, "TEST-AAPL"), timeout=5)
    quote = await _quote(platform, "TEST-AAPL")
    assert (quote.previous_close, quote.last_price, quote.change) == (105.0, 115.5, 10.5)
    assert quote.change_percent == pytest.approx(10.0)


async def test_quotes_of_instruments_without_data_and_batches(platform: MarketPlatform) -> None:
    await platform.stub.CreateInstrument(_new("ZZ-QUIET"), metadata=platform.admin)
    call = platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol="zz-quiet"), metadata=platform.reader)
    assert await refusal(call) == (NOT_FOUND, "QUOTE_NOT_AVAILABLE")
    call = platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol="ZZ-NONE"), metadata=platform.reader)
    assert await refusal(call) == (NOT_FOUND, "SYMBOL_NOT_FOUND")
    call = platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol="a/b"), metadata=platform.reader)
    assert await refusal(call) == (INVALID, "SYMBOL_INVALID")

    await platform.feed.push(tick("TEST-AAPL", 190.0), tick("TEST-BTC", 65000.0))
    await eventually(lambda: _quoted(platform, "TEST-BTC"), timeout=5)
    await eventually(lambda: _quoted(platform, "TEST-AAPL"), timeout=5)
    reply = await platform.stub.BatchGetQuotes(
        market_pb2.BatchGetQuotesRequest(symbols=["test-btc", "ZZ-QUIET", "TEST-AAPL", "TEST-BTC"]),
        metadata=platform.reader,
    )
    assert [(q.symbol, q.last_price) for q in reply.quotes] == [("TEST-BTC", 65000.0), ("TEST-AAPL", 190.0)]
    assert list(reply.unavailable_symbols) == ["ZZ-QUIET"]

    unknown = await _failure(
        platform.stub.BatchGetQuotes(
            market_pb2.BatchGetQuotesRequest(symbols=["TEST-AAPL", "ZZ-NONE"]), metadata=platform.reader
        )
    )
    assert (unknown.code(), _error_info(unknown).reason) == (NOT_FOUND, "SYMBOL_NOT_FOUND")
    assert _error_info(unknown).metadata["symbol"] == "ZZ-NONE"
    many = [f"S{i}" for i in range(201)]
    for symbols, reason in ((many, "TOO_MANY_SYMBOLS"), ([], "INVALID_ARGUMENT"), (["A", "x y"], "SYMBOL_INVALID")):
        request = market_pb2.BatchGetQuotesRequest(symbols=symbols)
        assert await refusal(platform.stub.BatchGetQuotes(request, metadata=platform.reader)) == (INVALID, reason)


async def test_quotes_turn_stale_while_the_feed_is_down(platform: MarketPlatform) -> None:
    await platform.feed.push(tick("TEST-AAPL", 190.0))
    await eventually(lambda: _quoted(platform, "TEST-AAPL"), timeout=5)
    assert not (await _quote(platform, "TEST-AAPL")).stale
    platform.feed.fail_start = FeedError("exchange unreachable")
    await platform.feed.fail("connection reset")

    async def stale() -> bool:
        return (await _quote(platform, "TEST-AAPL")).stale

    await eventually(stale, timeout=5)
    reply = await platform.stub.BatchGetQuotes(
        market_pb2.BatchGetQuotesRequest(symbols=["TEST-AAPL"]), metadata=platform.reader
    )
    [quote] = reply.quotes
    assert (quote.stale, quote.last_price) == (True, 190.0)
