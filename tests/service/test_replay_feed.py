"""The replay feed plays stored bars back as ticks that rebuild exactly those bars, under "<symbol>.REPLAY"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from services.core.bars import BarBuilder
from services.core.db.databases import DatabaseConfig, Databases
from services.market.feeds.base import FeedError, HistoryNotSupported
from services.market.feeds.replay import ReplayFeed
from services.market.models import AssetClass, Bar, Instrument, Timeframe
from services.market.store import MarketStore
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
            symbol="AAPL", venue="NASDAQ", asset_class=AssetClass.STOCK, quote_currency="USD", display_name="Apple"
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
