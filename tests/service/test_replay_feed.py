"""The replay feed plays stored bars back as ticks that rebuild exactly those bars, under "<symbol>.REPLAY"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime, timedelta

import pytest

from services.core.bars import BarBuilder
from services.core.db.databases import DatabaseConfig, Databases
from services.market.feeds.base import FeedError, HistoryNotSupported
from services.market.feeds.replay import ReplayFeed
from services.market.records import AssetClass, Bar, Instrument, Tick, Timeframe, TradingSession
from services.market.store import MarketStore
from tests.manual_time import ManualTime
from tests.support import make_settings

START = datetime(2026, 1, 5, 9, 0)
BARS = [
    Bar(START + timedelta(minutes=i), 100.0 + i, 101.5 + i, 99.0 + i, 100.5 + i if i % 2 else 99.5 + i, 10.0 * (i + 1))
    for i in range(5)
]


@pytest.fixture
async def store() -> AsyncIterator[MarketStore]:
    databases = Databases(DatabaseConfig.from_settings(make_settings()))
    await databases.start()
    store = MarketStore(databases)
    await store.create_instrument(
        Instrument(
            symbol="AAPL",
            venue="NASDAQ",
            asset_class=AssetClass.STOCK,
            quote_currency="USD",
            display_name="Apple",
            timezone="America/New_York",
            trading_session=TradingSession(
                always_open=False, open_local_time="09:30", close_local_time="16:00", calendar="XNAS"
            ),
        )
    )
    await store.write_bars("AAPL", Timeframe.M1, BARS, [])
    try:
        yield store
    finally:
        await databases.stop()


async def test_replayed_ticks_rebuild_the_stored_bars(store: MarketStore) -> None:
    feed = ReplayFeed("replay", store=store, symbols=["AAPL"], speed=1_000_000.0)
    await feed.start()
    [instrument] = feed.instruments()
    assert (instrument.symbol, instrument.simulated, instrument.feed_id) == ("AAPL.REPLAY", True, "replay")
    assert instrument.display_name == "Apple (replay)"
    # The copy trades whenever the replay plays it: not on NASDAQ's hours and holidays.
    assert (instrument.trading_session.always_open, instrument.trading_session.calendar) == (True, "24/7")
    builder = BarBuilder()
    rebuilt: list[Bar] = []
    async for batch in feed.ticks(["AAPL.REPLAY"]):
        for tick in batch:
            assert tick.symbol == "AAPL.REPLAY"
            rebuilt.extend(builder.on_tick(tick.event_time, tick.price, tick.size))
    rebuilt.extend(builder.flush(datetime(2030, 1, 1)))
    assert [(b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in rebuilt] == [
        (b.open_time, b.open, b.high, b.low, b.close, b.volume) for b in BARS
    ]
    assert await feed.history("AAPL.REPLAY", Timeframe.M1, START, START + timedelta(minutes=2)) == BARS[:2]
    with pytest.raises(HistoryNotSupported):
        await feed.history("AAPL.REPLAY", Timeframe.D1, START, START + timedelta(days=1))


async def test_replaying_an_unknown_instrument_fails_the_feed(store: MarketStore) -> None:
    feed = ReplayFeed("replay", store=store, symbols=["NOPE"])
    with pytest.raises(FeedError, match="NOPE"):
        await feed.start()
    with pytest.raises(ValueError, match="speed"):
        ReplayFeed("replay", store=store, symbols=["AAPL"], speed=0)


# -- nothing to replay yet: the feed waits (sleeping on its timer), and starts once bars exist -----------------------


async def _empty_instrument(store: MarketStore, symbol: str) -> None:
    await store.create_instrument(
        Instrument(symbol=symbol, venue="NASDAQ", asset_class=AssetClass.STOCK, quote_currency="USD")
    )


async def test_a_symbol_without_bars_waits_and_is_replayed_once_bars_exist(store: MarketStore) -> None:
    await _empty_instrument(store, "MSFT")
    time = ManualTime()
    feed = ReplayFeed("replay", store=store, symbols=["MSFT"], speed=60.0, recheck_seconds=5.0, timer=time, loop=True)
    await feed.start()
    assert feed.waiting_for() == "no stored 1m bars of MSFT to replay yet; looking again every 5s"
    assert feed.degradation() == ""
    batches: list[list[Tick]] = []

    async def consume() -> None:
        async for batch in feed.ticks(["MSFT.REPLAY"]):
            batches.append(batch)

    consumer = asyncio.create_task(consume())
    try:
        await time.advance(12.0)  # looked three times (at 0, 5 and 10 s), sleeping in between
        assert batches == []
        assert time.sleeps == [5.0, 5.0, 5.0]
        assert "MSFT" in feed.waiting_for()

        await store.write_bars("MSFT", Timeframe.M1, BARS[:2], [])
        await time.advance(3.0 + 0.75)  # the next look finds them, and the first bar plays out

        assert feed.waiting_for() == ""
        # A 1m bar at 60x lasts a second, its four ticks a quarter of a second apart, one batch each.
        assert [[(tick.symbol, tick.price) for tick in batch] for batch in batches] == [
            [("MSFT.REPLAY", price)]
            for price in (100.0, 101.5, 99.0, 99.5)  # a falling bar: open, high, low, close
        ]
        assert [tick.event_time for batch in batches for tick in batch] == [
            START + timedelta(seconds=seconds) for seconds in (0, 15, 30, 45)
        ]
        assert time.sleeps[3:] == [0.25] * 4  # the last quarter runs to the next bar
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def test_a_symbol_without_bars_beside_others_degrades_the_feed_until_it_has_some(store: MarketStore) -> None:
    await _empty_instrument(store, "MSFT")
    time = ManualTime(autojump=True)
    feed = ReplayFeed("replay", store=store, symbols=["AAPL", "MSFT"], speed=60.0, timer=time, loop=True)
    await feed.start()
    assert feed.waiting_for() == ""
    assert feed.degradation() == "no stored 1m bars of MSFT to replay yet"
    stream = feed.ticks(["AAPL.REPLAY", "MSFT.REPLAY"])
    assert isinstance(stream, AsyncGenerator)
    try:
        first_pass = [await anext(stream) for _ in range(4 * len(BARS))]
        assert {tick.symbol for batch in first_pass for tick in batch} == {"AAPL.REPLAY"}
        await store.write_bars("MSFT", Timeframe.M1, BARS[:1], [])
        second_pass = await anext(stream)  # each pass reads what is stored then
        assert [tick.symbol for tick in second_pass] == ["AAPL.REPLAY", "MSFT.REPLAY"]
        assert feed.degradation() == ""
    finally:
        await stream.aclose()


async def test_nothing_to_replay_is_a_feed_error(store: MarketStore) -> None:
    with pytest.raises(FeedError, match="no symbols configured"):
        await ReplayFeed("replay", store=store, symbols=[]).start()
