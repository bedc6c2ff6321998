"""StreamTicks through a real channel: snapshot then ticks in sequence, heartbeats, conflation with drop reports and
bounded queues for slow subscribers, the strict mode that ends a slow stream, and clean ends on cancel and drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from bullant.market.v1 import market_pb2
from tests.account_platform import reason_of
from tests.market_platform import MarketPlatform, market_settings, read, running_market, tick
from tests.support import eventually


@pytest.fixture
async def platform() -> AsyncIterator[MarketPlatform]:
    async with running_market() as running:
        await running.feed_running()
        yield running


async def test_snapshot_first_then_ticks_in_sequence(platform: MarketPlatform) -> None:
    await platform.feed.push(tick("TEST-AAPL", 190.0), tick("TEST-BTC", 65000.0))
    await eventually(lambda: platform.runner().published_ticks == 2)
    # The quote reaches the cache within the flush period.
    await eventually(lambda: _quote_ready(platform), timeout=5)

    stream = platform.stub.StreamTicks(market_pb2.StreamTicksRequest(symbols=["test-aapl"]), metadata=platform.reader)
    first = await read(stream)
    assert first.WhichOneof("event") == "snapshot"
    [quote] = first.snapshot.quotes
    assert (quote.symbol, quote.last_price, quote.simulated) == ("TEST-AAPL", 190.0, True)
    await platform.subscribed()
    await platform.feed.push(tick("TEST-AAPL", 190.5), tick("TEST-BTC", 65010.0), tick("TEST-AAPL", 191.0))
    received: list[market_pb2.Tick] = []
    while len(received) < 2:
        message = await read(stream)
        assert message.WhichOneof("event") == "ticks"
        received.extend(message.ticks.ticks)
    assert [t.price for t in received] == [190.5, 191.0]
    assert {t.symbol for t in received} == {"TEST-AAPL"}
    assert [t.sequence for t in received] == [quote.sequence + 1, quote.sequence + 2]
    stream.cancel()


async def _quote_ready(platform: MarketPlatform) -> bool:
    try:
        await platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol="TEST-AAPL"), metadata=platform.reader)
    except grpc.aio.AioRpcError:
        return False
    return True


async def test_quiet_streams_get_heartbeats(platform: MarketPlatform) -> None:
    stream = platform.stub.StreamTicks(
        market_pb2.StreamTicksRequest(symbols=["TEST-BTC"], skip_snapshot=True, heartbeat_interval_seconds=1),
        metadata=platform.reader,
    )
    message = await asyncio.wait_for(read(stream), timeout=5)
    assert message.WhichOneof("event") == "heartbeat"
    assert message.heartbeat.HasField("server_time")
    stream.cancel()


async def test_a_slow_subscriber_is_conflated_with_bounded_memory_and_told_what_it_missed() -> None:
    async with running_market(market_settings(stream_queue_capacity=16)) as platform:
        await platform.feed_running()
        stream = platform.stub.StreamTicks(
            market_pb2.StreamTicksRequest(symbols=["TEST-AAPL", "TEST-BTC"], skip_snapshot=True, max_batch_size=1),
            metadata=platform.reader,
        )
        await platform.subscribed()
        subscriber = next(iter(platform.hub._subscribers))
        # The client reads nothing while 20,000 ticks are published: HTTP/2 flow control stops the server's writes,
        # and the subscriber's queue must not grow past its capacity (plus one tick per symbol).
        for round_ in range(200):
            await platform.feed.push(
                *(tick("TEST-AAPL" if i % 2 else "TEST-BTC", 100.0 + round_ + i / 1000) for i in range(100))
            )
        await eventually(lambda: platform.runner().published_ticks == 20_000, timeout=30)
        await eventually(lambda: subscriber.total_dropped > 0, timeout=10)
        assert subscriber.pending <= 16 + 2
        dropped_total = 0
        report = None
        last_prices: dict[str, float] = {}
        while True:
            message = await asyncio.wait_for(read(stream), timeout=10)
            kind = message.WhichOneof("event")
            if kind == "drops":
                report = message.drops
                dropped_total += sum(entry.dropped_count for entry in message.drops.symbols)
            elif kind == "ticks":
                for received in message.ticks.ticks:
                    last_prices[received.symbol] = received.price
            if last_prices.get("TEST-AAPL") == 299.099 and last_prices.get("TEST-BTC") == 299.098:
                break
        assert report is not None
        assert {entry.symbol for entry in report.symbols} <= {"TEST-AAPL", "TEST-BTC"}
        assert report.total_dropped_count == subscriber.total_dropped
        # The newest tick of each symbol always survives conflation.
        assert last_prices == {"TEST-AAPL": 299.099, "TEST-BTC": 299.098}
        stream.cancel()


async def test_without_conflation_a_slow_subscriber_is_cut_off() -> None:
    async with running_market(market_settings(stream_queue_capacity=16)) as platform:
        await platform.feed_running()
        stream = platform.stub.StreamTicks(
            market_pb2.StreamTicksRequest(
                symbols=["TEST-AAPL"], skip_snapshot=True, conflation=market_pb2.CONFLATION_MODE_NONE
            ),
            metadata=platform.reader,
        )
        await platform.subscribed()
        for round_ in range(100):
            await platform.feed.push(*(tick("TEST-AAPL", 100.0 + round_) for _ in range(100)))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(caught.value) == "SUBSCRIBER_TOO_SLOW"


async def test_draining_ends_streams_with_unavailable(platform: MarketPlatform) -> None:
    stream = platform.stub.StreamTicks(
        market_pb2.StreamTicksRequest(symbols=["TEST-AAPL"], skip_snapshot=True), metadata=platform.reader
    )
    await platform.subscribed()
    stopping = asyncio.create_task(platform.server.stop(grace=5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "SERVER_DRAINING"
    await stopping


async def test_bad_stream_requests(platform: MarketPlatform) -> None:
    unknown = platform.stub.StreamTicks(market_pb2.StreamTicksRequest(symbols=["NOPE"]), metadata=platform.reader)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unknown.read()
    assert (caught.value.code(), reason_of(caught.value)) == (grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND")
    for request, reason in (
        (market_pb2.StreamTicksRequest(), "INVALID_ARGUMENT"),
        (market_pb2.StreamTicksRequest(symbols=["bad symbol!"]), "SYMBOL_INVALID"),
        (market_pb2.StreamTicksRequest(symbols=[f"S{i}" for i in range(1001)]), "TOO_MANY_SYMBOLS"),
    ):
        call = platform.stub.StreamTicks(request, metadata=platform.reader)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert (caught.value.code(), reason_of(caught.value)) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
