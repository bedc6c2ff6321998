"""Two market servers on one Redis and one MariaDB: exactly one leads the feed, and a tick it publishes reaches a
subscriber connected to the other; when the leader stops, the other takes the feed over."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from bullant.market.v1 import market_pb2
from services.core.settings import Settings
from tests.db_support import DatabaseSet, new_prefix
from tests.market_platform import MarketPlatform, ScriptedFeed, market_settings, read, running_market, tick
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(mysql_url: str, redis_url: str) -> AsyncIterator[Settings]:
    databases = DatabaseSet("mysql", mysql_url, new_prefix())
    await databases.create(2)
    try:
        yield market_settings(
            database_url=databases.url("global"),
            shard_urls=[databases.url("shard_0"), databases.url("shard_1")],
            db_auto_migrate=True,
            redis_url=redis_url,
            app_name=f"t{uuid.uuid4().hex[:12]}",
        )
    finally:
        await databases.drop()


async def test_a_tick_from_the_leader_reaches_a_subscriber_of_the_other_replica(settings: Settings) -> None:
    async with (
        running_market(settings, feed=ScriptedFeed()) as first,
        running_market(settings, feed=ScriptedFeed()) as second,
    ):
        await eventually(lambda: first.runner().is_leader or second.runner().is_leader, timeout=15)
        leader, follower = (first, second) if first.runner().is_leader else (second, first)
        assert not follower.runner().is_leader
        await leader.feed_running()

        stream = follower.stub.StreamTicks(
            market_pb2.StreamTicksRequest(symbols=["TEST-AAPL"], skip_snapshot=True), metadata=follower.reader
        )
        await follower.subscribed()
        await leader.feed.push(tick("TEST-AAPL", 123.45), tick("TEST-BTC", 1.0))
        message = await read(stream)
        assert message.WhichOneof("event") == "ticks"
        [received] = message.ticks.ticks
        assert (received.symbol, received.price) == ("TEST-AAPL", 123.45)
        # The follower answers quotes from the leader's shared state too.
        await eventually(lambda: _has_quote(follower), timeout=5)
        stream.cancel()

        # The leader steps down: the follower takes the feed over and sequences continue.
        await leader.server.stop(grace=0.5)
        await eventually(lambda: follower.runner().is_leader, timeout=20)
        await follower.feed_running()
        again = follower.stub.StreamTicks(
            market_pb2.StreamTicksRequest(symbols=["TEST-AAPL"], skip_snapshot=True), metadata=follower.reader
        )
        await follower.subscribed()
        await follower.feed.push(tick("TEST-AAPL", 124.0))
        message = await read(again)
        [after] = message.ticks.ticks
        assert after.price == 124.0
        assert after.sequence > received.sequence
        again.cancel()


async def _has_quote(platform: MarketPlatform) -> bool:
    reply = await platform.stub.BatchGetQuotes(
        market_pb2.BatchGetQuotesRequest(symbols=["TEST-AAPL"]), metadata=platform.reader
    )
    return [quote.last_price for quote in reply.quotes] == [123.45]
