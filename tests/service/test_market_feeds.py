"""Feeds through a real channel: ListFeeds health (reconnects, staleness, no leader), live bars the feed runner builds
from ticks, and BackfillBars from a feed's history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from services.core.clock import utc_now
from services.core.dependencies import Dependencies
from services.core.grpc_errors import error_reason
from services.core.timestamps import timestamp
from services.market.feeds.base import FeedError
from services.market.feeds.registry import AdapterFactory
from services.market.feeds.replay import ReplayFeed
from services.market.feeds.runner import FeedState
from services.market.records import AssetClass, Bar, Instrument, Timeframe
from services.market.store import MarketStore
from tests.account_platform import refusal
from tests.manual_time import ManualTime
from tests.market_platform import MarketPlatform, ScriptedFeed, market_settings, minutes_ago, running_market, tick
from tests.support import eventually

M1 = common_pb2.TIMEFRAME_1M
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DAY = datetime(2024, 1, 2)


@pytest.fixture
async def platform() -> AsyncIterator[MarketPlatform]:
    async with running_market() as running:
        await running.feed_running()
        yield running


async def _feeds(platform: MarketPlatform, **fields: Any) -> market_pb2.ListFeedsResponse:
    return await platform.stub.ListFeeds(market_pb2.ListFeedsRequest(**fields), metadata=platform.reader)


async def _feed(platform: MarketPlatform) -> market_pb2.Feed:
    [feed] = (await _feeds(platform)).feeds
    return feed


def _minute(count: int) -> datetime:
    return DAY + timedelta(minutes=count)


def _counts(reply: Any) -> tuple[int, int, int, int]:
    return (reply.inserted_count, reply.updated_count, reply.unchanged_count, reply.rejected_count)


async def _stored(platform: MarketPlatform, symbol: str, **fields: Any) -> list[tuple[Any, ...]]:
    request = market_pb2.ListBarsRequest(symbol=symbol, page_size=1000, **{"timeframe": M1, **fields})
    reply = await platform.stub.ListBars(request, metadata=platform.reader)
    counts = [bar.trade_count if bar.HasField("trade_count") else None for bar in reply.bars]
    return [
        (b.open_time.ToDatetime(), b.open, b.high, b.low, b.close, b.volume, n)
        for b, n in zip(reply.bars, counts, strict=True)
    ]


# -- ListFeeds --------------------------------------------------------------------------------------------------------


async def test_a_running_feed_is_healthy(platform: MarketPlatform) -> None:
    feed = await _feed(platform)
    assert (feed.feed_id, feed.adapter, feed.simulated) == ("script", "script", True)
    assert (feed.state, feed.state_reason) == (market_pb2.FEED_STATE_HEALTHY, "")
    assert (feed.transport, feed.symbol_count, feed.reconnect_count) == (market_pb2.FEED_TRANSPORT_INTERNAL, 2, 0)
    assert feed.leader
    assert feed.HasField("state_change_time")
    assert not feed.HasField("last_tick_time")
    moment = utc_now().replace(microsecond=0) - timedelta(seconds=1)
    await platform.feed.push(tick("TEST-AAPL", 190.0, at=moment), tick("TEST-BTC", 65000.0, at=moment))

    async def ticked() -> bool:
        seen = await _feed(platform)
        return seen.HasField("last_tick_time") and seen.ticks_per_second > 0

    await eventually(ticked, timeout=5)
    feed = await _feed(platform)
    assert feed.last_tick_time.ToDatetime() == moment
    assert feed.ticks_per_second == pytest.approx(2 / 60)
    call = platform.stub.ListFeeds(market_pb2.ListFeedsRequest())
    assert (await refusal(call))[0] is grpc.StatusCode.UNAUTHENTICATED


async def test_feeds_are_paged_by_id() -> None:
    euro = Instrument(symbol="TEST-EUR", venue="TEST", asset_class=AssetClass.FX, quote_currency="USD")
    alpha, script = ScriptedFeed("alpha", (euro,)), ScriptedFeed()
    async with running_market(feed=script, factories={"script": lambda: script, "alpha": lambda: alpha}) as platform:
        await platform.feed_running("alpha")
        first = await _feeds(platform, page_size=1)
        assert [feed.feed_id for feed in first.feeds] == ["alpha"]
        assert first.feeds[0].symbol_count == 1
        second = await _feeds(platform, page_size=1, page_token=first.next_page_token)
        assert [feed.feed_id for feed in second.feeds] == ["script"]
        assert second.next_page_token == ""
        assert [feed.feed_id for feed in (await _feeds(platform)).feeds] == ["alpha", "script"]
        call = platform.stub.ListFeeds(market_pb2.ListFeedsRequest(page_token="junk"), metadata=platform.reader)
        assert await refusal(call) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


async def test_a_lost_connection_is_reconnected(platform: MarketPlatform) -> None:
    await platform.feed.fail("boom")

    async def recovered() -> bool:
        feed = await _feed(platform)
        return feed.state == market_pb2.FEED_STATE_HEALTHY and feed.reconnect_count == 1

    await eventually(recovered, timeout=10)
    assert platform.feed.starts == 2
    await platform.feed.push(tick("TEST-AAPL", 190.0))
    await eventually(lambda: platform.runner().published_ticks == 1)


async def test_a_feed_that_cannot_connect_is_down_until_it_can(platform: MarketPlatform) -> None:
    platform.feed.fail_start = FeedError("exchange unreachable")
    await platform.feed.fail("boom")

    async def down() -> bool:
        feed = await _feed(platform)
        return feed.state == market_pb2.FEED_STATE_DOWN and "exchange unreachable" in feed.state_reason

    await eventually(down, timeout=10)
    feed = await _feed(platform)
    assert "reconnecting" in feed.state_reason
    assert feed.leader  # this replica leads the feed but cannot connect
    platform.feed.fail_start = None

    async def healthy() -> bool:
        return (await _feed(platform)).state == market_pb2.FEED_STATE_HEALTHY

    await eventually(healthy, timeout=15)
    assert (await _feed(platform)).reconnect_count >= 2


async def test_a_feed_down_from_the_start() -> None:
    feed = ScriptedFeed()
    feed.fail_start = FeedError("bad credentials")
    async with running_market(feed=feed) as platform:

        async def down() -> bool:
            return "bad credentials" in (await _feed(platform)).state_reason

        await eventually(down, timeout=10)
        listed = await _feed(platform)
        assert listed.state == market_pb2.FEED_STATE_DOWN
        assert listed.reconnect_count >= 1
        # The feed never stored its instruments.
        call = platform.stub.GetInstrument(
            market_pb2.GetInstrumentRequest(symbol="TEST-AAPL"), metadata=platform.reader
        )
        assert await refusal(call) == (grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND")


async def _quote(platform: MarketPlatform, symbol: str) -> market_pb2.Quote | None:
    try:
        reply = await platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol=symbol), metadata=platform.reader)
    except grpc.aio.AioRpcError:
        return None
    return reply.quote


async def _sequence_after(platform: MarketPlatform, interrupt: Callable[[], Awaitable[None]]) -> tuple[int, int, float]:
    """Two ticks, an interruption of the feed, one more tick: the sequence of the second tick, and the
    (sequence, day_volume) of the quote after the third."""
    await platform.feed.push(tick("TEST-AAPL", 190.0), tick("TEST-AAPL", 190.5))
    await eventually(lambda: platform.runner().published_ticks >= 2)
    before = platform.runner()._book.last_sequence("TEST-AAPL")
    await interrupt()
    await platform.feed_running()
    await platform.feed.push(tick("TEST-AAPL", 191.0))

    async def quoted() -> bool:
        quote = await _quote(platform, "TEST-AAPL")
        return quote is not None and quote.last_price == 191.0

    await eventually(quoted, timeout=5)
    quote = await _quote(platform, "TEST-AAPL")
    assert quote is not None
    return before, quote.sequence, quote.day_volume


async def test_a_reconnect_continues_the_sequence(platform: MarketPlatform) -> None:
    """Tick.sequence is strictly increasing per symbol: the ticks just before a disconnect were published, so their
    sequences must not be handed out again (nor their volume forgotten)."""

    async def disconnect() -> None:
        await platform.feed.fail("connection reset")
        await eventually(lambda: platform.feed.starts == 2)

    before, after, volume = await _sequence_after(platform, disconnect)
    # The same leadership: counting simply goes on.
    assert (after, volume) == (before + 1, 3.0), "published sequence numbers were reused"


async def test_a_clean_handover_continues_the_sequence(platform: MarketPlatform) -> None:
    """... also across fail-over: a leader that stops leaves its last quotes (and sequences) to the next one."""
    runner = platform.runner()

    async def hand_over() -> None:
        await runner.stop()
        await runner.start()

    before, after, volume = await _sequence_after(platform, hand_over)
    # A new leadership numbers above every earlier one (its lease's fencing token is larger), and the day's volume
    # goes on from the quote the stopping leader shared.
    assert after > before
    assert volume == 3.0


async def test_a_feed_without_a_leader_is_down(platform: MarketPlatform) -> None:
    await platform.feed.push(tick("TEST-AAPL", 190.0))

    async def quoted() -> bool:
        return await _quote(platform, "TEST-AAPL") is not None

    await eventually(quoted, timeout=5)
    await platform.runner().stop()

    async def leaderless() -> bool:
        return (await _feed(platform)).leader == ""

    # The stopped leader's last status lives until it expires (10 s).
    await eventually(leaderless, timeout=15)
    feed = await _feed(platform)
    assert (feed.feed_id, feed.state) == ("script", market_pb2.FEED_STATE_DOWN)
    assert feed.state_reason
    quote = await platform.stub.GetQuote(market_pb2.GetQuoteRequest(symbol="TEST-AAPL"), metadata=platform.reader)
    assert quote.quote.stale


async def test_quiet_symbols_degrade_the_feed_and_silence_reconnects() -> None:
    async with running_market(market_settings(feed_staleness_seconds=1)) as platform:
        await platform.feed_running()

        async def degraded() -> bool:
            await platform.feed.push(tick("TEST-AAPL", 190.0))
            feed = await _feed(platform)
            return feed.state == market_pb2.FEED_STATE_DEGRADED

        await eventually(degraded, timeout=10, interval=0.1)
        feed = await _feed(platform)
        assert list(feed.stale_symbols) == ["TEST-BTC"]
        assert "TEST-BTC" in feed.state_reason
        assert feed.reconnect_count == 0

        async def healthy_again() -> bool:
            await platform.feed.push(tick("TEST-AAPL", 190.0), tick("TEST-BTC", 65000.0))
            feed = await _feed(platform)
            return feed.state == market_pb2.FEED_STATE_HEALTHY and not feed.stale_symbols

        await eventually(healthy_again, timeout=10, interval=0.1)

        # No tick from any symbol: the connection is taken for dead and opened again.
        async def reconnected() -> bool:
            return (await _feed(platform)).reconnect_count >= 1 and platform.feed.starts >= 2

        await eventually(reconnected, timeout=10)


def test_feed_states_mirror_the_contract() -> None:
    contract = {name.removeprefix("FEED_STATE_"): number for name, number in market_pb2.FeedState.items()}
    assert {state.name: state.value for state in FeedState} == contract


# -- a replay with nothing to replay ---------------------------------------------------------------------------------


async def test_a_replay_with_no_bars_waits_while_the_server_serves_and_starts_once_bars_are_imported() -> None:
    time = ManualTime()
    script = ScriptedFeed()

    def feeds(deps: Dependencies) -> dict[str, AdapterFactory]:
        store = MarketStore(deps.databases)

        def replay() -> ReplayFeed:
            return ReplayFeed(
                "replay", store=store, symbols=["TEST-AAPL"], speed=60.0, recheck_seconds=5.0, timer=time, loop=True
            )

        return {"script": lambda: script, "replay": replay}

    async with running_market(feed=script, feeds=feeds) as platform:
        health = health_pb2_grpc.HealthStub(platform.channel)

        async def listed() -> market_pb2.Feed:
            return next(feed for feed in (await _feeds(platform)).feeds if feed.feed_id == "replay")

        async def waiting() -> bool:
            return (await listed()).state == market_pb2.FEED_STATE_WAITING

        await eventually(waiting, timeout=10)
        feed = await listed()
        assert feed.state_reason == "no stored 1m bars of TEST-AAPL to replay yet; looking again every 5s"
        reply = await health.Check(health_pb2.HealthCheckRequest(service="bullant.market.v1.MarketService"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # Waiting is not being quiet: however long it lasts, the feed is not taken for dead and reconnected.
        runner = platform.runner("replay")
        reconnects = runner.status.reconnect_count
        runner._supervise(asyncio.get_running_loop().time() + 3600)
        assert (runner.status.state, runner.status.reconnect_count) == (FeedState.WAITING, reconnects)

        bars = [_bar(_minute(index), 100.0 + index) for index in range(3)]
        imported = await platform.stub.ImportBars(
            market_pb2.ImportBarsRequest(symbol="TEST-AAPL", timeframe=M1, bars=bars), metadata=platform.admin
        )
        assert imported.inserted_count == 3
        await time.advance(5.0 + 3 * 1.0 - 0.1)  # the next look finds them; three bars at 60x take three seconds

        assert runner.published_ticks == 12

        async def healthy() -> bool:
            feed = await listed()
            return (feed.state, feed.state_reason) == (market_pb2.FEED_STATE_HEALTHY, "")

        await eventually(healthy, timeout=10)

        async def replayed() -> bool:
            return len(await _stored(platform, "TEST-AAPL.REPLAY")) == 3

        await eventually(replayed, timeout=10)  # the replayed ticks built the same bars again
        assert [row[:6] for row in await _stored(platform, "TEST-AAPL.REPLAY")] == [
            row[:6] for row in await _stored(platform, "TEST-AAPL")
        ]


def _bar(open_time: datetime, close: float) -> market_pb2.Bar:
    return market_pb2.Bar(
        open_time=timestamp(open_time), open=close - 0.5, high=close + 1.0, low=close - 1.0, close=close, volume=4.0
    )


# -- live bars --------------------------------------------------------------------------------------------------------


async def test_ticks_become_stored_one_minute_bars(platform: MarketPlatform) -> None:
    third, second = minutes_ago(3), minutes_ago(2)
    await platform.feed.push(
        tick("TEST-AAPL", 100.0, 1.0, at=third + timedelta(seconds=5)),
        tick("TEST-AAPL", 103.0, 2.0, at=third + timedelta(seconds=20)),
        tick("TEST-AAPL", 99.0, 0.5, at=third + timedelta(seconds=40)),
        tick("TEST-AAPL", 101.0, 1.5, at=third + timedelta(seconds=59)),
    )
    await platform.feed.push(
        tick("TEST-AAPL", 102.0, 3.0, at=second + timedelta(seconds=10)),
        tick("TEST-AAPL", 104.5, 1.0, at=second + timedelta(seconds=30)),
    )
    await platform.feed.push(tick("TEST-AAPL", 104.0, 1.0))
    window: dict[str, Any] = {"start_time": timestamp(third), "end_time": timestamp(second + timedelta(minutes=1))}

    async def both_stored() -> bool:
        return len(await _stored(platform, "TEST-AAPL", **window)) == 2

    await eventually(both_stored, timeout=10)
    assert await _stored(platform, "TEST-AAPL", **window) == [
        (third, 100.0, 103.0, 99.0, 101.0, 5.0, 4),
        (second, 102.0, 104.5, 102.0, 104.5, 4.0, 2),
    ]


async def test_closed_periods_roll_up_into_higher_timeframes(platform: MarketPlatform) -> None:
    period = Timeframe.M5.floor(utc_now()) - timedelta(minutes=10)
    await platform.feed.push(
        tick("TEST-BTC", 100.0, 1.0, at=period + timedelta(seconds=5)),
        tick("TEST-BTC", 105.0, 2.0, at=period + timedelta(minutes=1, seconds=10)),
        tick("TEST-BTC", 97.0, 0.5, at=period + timedelta(minutes=4, seconds=30)),
        tick("TEST-BTC", 98.0, 0.25, at=period + timedelta(minutes=4, seconds=50)),
        tick("TEST-BTC", 99.0, 1.0, at=period + timedelta(minutes=5, seconds=1)),
    )
    window = {"start_time": timestamp(period), "end_time": timestamp(period + timedelta(minutes=5))}

    async def rolled_up() -> bool:
        return bool(await _stored(platform, "TEST-BTC", timeframe=common_pb2.TIMEFRAME_5M, **window))

    await eventually(rolled_up, timeout=10)
    assert await _stored(platform, "TEST-BTC", timeframe=common_pb2.TIMEFRAME_5M, **window) == [
        (period, 100.0, 105.0, 97.0, 98.0, 3.75, 4)
    ]
    assert [bar[0] for bar in await _stored(platform, "TEST-BTC", **window)] == [
        period,
        period + timedelta(minutes=1),
        period + timedelta(minutes=4),
    ]


# -- BackfillBars -----------------------------------------------------------------------------------------------------


async def _backfill(platform: MarketPlatform, **fields: Any) -> list[market_pb2.BackfillBarsResponse]:
    metadata = fields.pop("metadata", platform.admin)
    request = market_pb2.BackfillBarsRequest(symbol=fields.pop("symbol", "TEST-AAPL"), **fields)
    return [message async for message in platform.stub.BackfillBars(request, metadata=metadata)]


async def _backfill_refusal(platform: MarketPlatform, **fields: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await _backfill(platform, **fields)
    except grpc.aio.AioRpcError as error:
        return error.code(), error_reason(error)
    raise AssertionError("the backfill succeeded")


def _history(count: int, *, close: float = 10.5) -> list[Bar]:
    return [Bar(_minute(m), 10.0, 11.0 + m, 9.0, close, 1.0 + m) for m in range(count)]


async def test_backfill_stores_the_feeds_history_once(platform: MarketPlatform) -> None:
    platform.feed.history_bars[("TEST-AAPL", Timeframe.M1)] = _history(10)
    # Three windows of 1000 minutes: a progress message after each.
    span: dict[str, Any] = {
        "timeframe": M1,
        "start_time": timestamp(DAY - timedelta(days=1)),
        "end_time": timestamp(_minute(720)),
    }
    messages = await _backfill(platform, **span)
    kinds = [message.WhichOneof("event") for message in messages]
    assert kinds == ["progress", "progress", "progress", "result"]
    progress = [message.progress for message in messages[:-1]]
    assert [p.fetched_count for p in progress] == [0, 10, 10]
    assert [p.written_count for p in progress] == [0, 10, 10]
    assert [p.percent_complete for p in progress][-1] == 100.0
    assert progress[-1].through_time.ToDatetime() == _minute(720)
    result = messages[-1].result
    assert _counts(result) == (10, 0, 0, 0)
    assert (result.first_open_time.ToDatetime(), result.last_open_time.ToDatetime()) == (_minute(0), _minute(9))
    stored = await _stored(platform, "TEST-AAPL", start_time=timestamp(DAY), end_time=timestamp(_minute(720)))
    assert stored == [(b.open_time, b.open, b.high, b.low, b.close, b.volume, None) for b in _history(10)]

    assert _counts((await _backfill(platform, **span))[-1].result) == (0, 0, 10, 0)
    platform.feed.history_bars[("TEST-AAPL", Timeframe.M1)] = _history(10, close=10.25)
    assert _counts((await _backfill(platform, **span))[-1].result) == (0, 0, 10, 0)
    assert {bar[4] for bar in await _stored(platform, "TEST-AAPL", **_range(span))} == {10.5}
    assert _counts((await _backfill(platform, overwrite=True, **span))[-1].result) == (0, 10, 0, 0)
    assert {bar[4] for bar in await _stored(platform, "TEST-AAPL", **_range(span))} == {10.25}


def _range(span: dict[str, Any]) -> dict[str, Any]:
    return {"start_time": span["start_time"], "end_time": span["end_time"]}


async def test_backfill_rolls_up_what_the_feed_lacks(platform: MarketPlatform) -> None:
    platform.feed.history_bars[("TEST-AAPL", Timeframe.M1)] = _history(10)
    span: dict[str, Any] = {"start_time": timestamp(DAY), "end_time": timestamp(_minute(60))}
    messages = await _backfill(platform, timeframe=common_pb2.TIMEFRAME_5M, **span)
    assert _counts(messages[-1].result) == (2, 0, 0, 0)
    assert await _stored(platform, "TEST-AAPL", timeframe=common_pb2.TIMEFRAME_5M, **span) == [
        (_minute(0), 10.0, 15.0, 9.0, 10.5, 15.0, None),
        (_minute(5), 10.0, 20.0, 9.0, 10.5, 40.0, None),
    ]
    # Nothing at 1m was stored by the roll-up.
    assert await _stored(platform, "TEST-AAPL", **span) == []
    # Bars from the feed that break the row rules are skipped and counted.
    good, high_too_low = Bar(_minute(0), 10, 11, 9, 10, 1), Bar(_minute(1), 10, 10.5, 9, 11, 1)
    platform.feed.history_bars[("TEST-BTC", Timeframe.M1)] = [good, high_too_low, Bar(_minute(2), 10, 11, 9, 10, -1)]
    assert _counts((await _backfill(platform, symbol="TEST-BTC", timeframe=M1, **span))[-1].result) == (1, 0, 0, 2)


async def test_a_cancelled_backfill_keeps_its_bars_and_frees_the_symbol(platform: MarketPlatform) -> None:
    platform.feed.history_bars[("TEST-AAPL", Timeframe.M1)] = _history(10)
    gate = asyncio.Event()
    unblocked = platform.feed.history

    async def slow_after_the_first_window(symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> Any:
        if start > DAY:
            await gate.wait()
        return await unblocked(symbol, timeframe, start, end)

    platform.feed.history = slow_after_the_first_window  # type: ignore[method-assign]
    span: dict[str, Any] = {"timeframe": M1, "start_time": timestamp(DAY), "end_time": timestamp(_minute(2500))}
    request = market_pb2.BackfillBarsRequest(symbol="TEST-AAPL", **span)
    running = platform.stub.BackfillBars(request, metadata=platform.admin)
    first = await running.read()
    assert isinstance(first, market_pb2.BackfillBarsResponse)
    assert first.WhichOneof("event") == "progress"
    assert first.progress.written_count == 10
    assert await _backfill_refusal(platform, **span) == (grpc.StatusCode.ABORTED, "BACKFILL_IN_PROGRESS")
    running.cancel()
    assert len(await _stored(platform, "TEST-AAPL", **_range(span))) == 10
    gate.set()

    results: list[market_pb2.BackfillResult] = []

    async def runs_again() -> bool:
        try:
            results.append((await _backfill(platform, **span))[-1].result)
        except grpc.aio.AioRpcError as error:
            if error_reason(error) != "BACKFILL_IN_PROGRESS":
                raise
        return bool(results)

    # The server notices the cancellation and releases the symbol's backfill lock.
    await eventually(runs_again, timeout=5, interval=0.1)
    assert _counts(results[0]) == (0, 0, 10, 0)


async def test_backfill_refusals(platform: MarketPlatform) -> None:
    platform.feed.history_bars[("TEST-BTC", Timeframe.H1)] = []
    span: dict[str, Any] = {"timeframe": M1, "start_time": timestamp(DAY), "end_time": timestamp(_minute(60))}
    reversed_span = {**span, "start_time": timestamp(_minute(6)), "end_time": timestamp(_minute(5))}
    cases: list[tuple[dict[str, Any], tuple[grpc.StatusCode, str]]] = [
        (
            {**span, "symbol": "TEST-BTC", "timeframe": common_pb2.TIMEFRAME_5M},  # no 5m history, no 1m to roll up
            (grpc.StatusCode.FAILED_PRECONDITION, "BACKFILL_NOT_SUPPORTED"),
        ),
        ({**span, "feed_id": "nowhere"}, (NOT_FOUND, "FEED_NOT_FOUND")),
        ({**span, "end_time": span["start_time"]}, (INVALID, "TIME_RANGE_INVALID")),
        (reversed_span, (INVALID, "TIME_RANGE_INVALID")),
        ({"timeframe": M1}, (INVALID, "INVALID_ARGUMENT")),
        ({**span, "symbol": "NOPE"}, (NOT_FOUND, "SYMBOL_NOT_FOUND")),
        ({**span, "metadata": platform.reader}, (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")),
    ]
    for fields, refused in cases:
        assert await _backfill_refusal(platform, **fields) == refused, fields
