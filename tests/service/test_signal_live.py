"""Live signals end to end through real channels: ticks pushed into the market's feed become bars, the signal
engine evaluates them at each close (exactly as EvaluateStrategy decides on the stored bars), fuses with the model
service when it has a production model (technical-only, saying why, when it has none), stores and streams the
signals, fires an alert rule once per cooldown with its outbox row, and its job computes direction-aware returns
for GetSignalPerformance. Every live method refuses bad input with the contract's reason, and nobody sees another
account's alert firings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.core.clock import utc_now
from services.core.db.schema import outbox_messages
from services.core.timeframes import Timeframe
from services.signal.fusion import GRADE_AT, STRONG_AT
from tests.account_platform import reason_of, refusal
from tests.live_platform import (
    MINUTE,
    SYMBOL,
    LivePlatform,
    live_settings,
    live_start,
    minute_ticks,
    next_event,
    push,
    running_live_platform,
    store_history,
    wait_streaming,
)
from tests.market_platform import ScriptedFeed
from tests.signal_platform import stamp
from tests.support import eventually

pytestmark = pytest.mark.timeout(180)
TF = common_pb2.TIMEFRAME_1M


@pytest.fixture
async def platform() -> AsyncIterator[LivePlatform]:
    async with running_live_platform(live_settings(), feed=ScriptedFeed()) as running:
        await running.instrument_stored()
        await store_history(running.market, running.admin, Timeframe.M1.floor(utc_now()))
        yield running


def _expected_grade(side: int, confidence: float) -> int:
    """The contract's grading, written out: STRONG at 0.8, plain at 0.6, else HOLD."""
    if confidence >= STRONG_AT:
        return (
            signal_pb2.SIGNAL_GRADE_STRONG_BUY if side == common_pb2.SIDE_BUY else signal_pb2.SIGNAL_GRADE_STRONG_SELL
        )
    if confidence >= GRADE_AT:
        return signal_pb2.SIGNAL_GRADE_BUY if side == common_pb2.SIDE_BUY else signal_pb2.SIGNAL_GRADE_SELL
    return signal_pb2.SIGNAL_GRADE_HOLD


async def _train_model(platform: LivePlatform, history_end: datetime) -> str:
    """A Kalman model of the stored history (it trends, so the model passes its gate), promoted through the gate."""
    request = model_pb2.TrainModelRequest(
        algorithm=model_pb2.ALGORITHM_KALMAN,
        symbol=SYMBOL,
        timeframe=TF,
        training_range=common_pb2.TimeRange(end_time=stamp(history_end)),
    )
    reply = await platform.model.TrainModel(request, metadata=platform.admin)
    watched = platform.model.WatchTraining(model_pb2.WatchTrainingRequest(job_id=reply.job_id), metadata=platform.admin)
    last = [message async for message in watched][-1]
    assert last.WhichOneof("event") == "completed", last
    model = last.completed.model
    assert model.promotion_gate.passed, model.promotion_gate.detail
    await platform.model.PromoteModel(model_pb2.PromoteModelRequest(model_id=model.model_id), metadata=platform.admin)
    return str(model.model_id)


async def _bars(platform: LivePlatform, start: datetime) -> list[market_pb2.Bar]:
    reply = await platform.market.ListBars(
        market_pb2.ListBarsRequest(symbol=SYMBOL, timeframe=TF, start_time=stamp(start), page_size=1000),
        metadata=platform.admin,
    )
    return list(reply.bars)


async def _stored_count(platform: LivePlatform, start: datetime, count: int) -> bool:
    return len(await _bars(platform, start)) >= count


async def _outbox(platform: LivePlatform, account_id: int) -> list[dict[str, Any]]:
    async def work(connection: AsyncConnection) -> list[dict[str, Any]]:
        rows = await connection.execute(
            select(outbox_messages)
            .where(outbox_messages.c.account_id == account_id)
            .order_by(outbox_messages.c.message_id)
        )
        return [dict(row._mapping) for row in rows]

    return await platform.deps.databases.run_global(work)


async def _create_alert(platform: LivePlatform, name: str, **fields: Any) -> signal_pb2.Alert:
    reply = await platform.signal.CreateAlert(
        signal_pb2.CreateAlertRequest(
            alert=signal_pb2.Alert(display_name=name, symbol=SYMBOL, timeframe=TF, strategy_id="ema_cross", **fields)
        ),
        metadata=platform.trader,
    )
    return reply.alert


async def _collect(
    stream: Any, done: Callable[[list[signal_pb2.StreamSignalsResponse]], bool], timeout: float = 30.0
) -> list[signal_pb2.StreamSignalsResponse]:
    """StreamSignals events (no heartbeats) until `done` says the list is complete."""
    events: list[signal_pb2.StreamSignalsResponse] = []
    while not done(events):
        events.append(await next_event(stream, {"signal", "alert_triggered"}, timeout=timeout))
    return events


def _kinds(events: list[signal_pb2.StreamSignalsResponse]) -> tuple[list[signal_pb2.Signal], dict[str, list[Any]]]:
    signals = [event.signal for event in events if event.WhichOneof("event") == "signal"]
    firings: dict[str, list[Any]] = {}
    for event in events:
        if event.WhichOneof("event") == "alert_triggered":
            firings.setdefault(event.alert_triggered.alert_id, []).append(event.alert_triggered)
    return signals, firings


async def test_ticks_become_fused_signals_alerts_and_performance(platform: LivePlatform) -> None:
    assert platform.feed is not None
    began = utc_now()
    channels = [signal_pb2.ALERT_CHANNEL_IN_APP, signal_pb2.ALERT_CHANNEL_EMAIL]
    # The strategy's defaults (the platform's signal) with a long cooldown, and the trader's own parameters.
    alert = await _create_alert(platform, "BTC crossing", channels=channels, cooldown_seconds=3600)
    fast = {"fast": common_pb2.ParameterValue(int_value=5), "slow": common_pb2.ParameterValue(int_value=13)}
    own = await _create_alert(
        platform, "BTC fast crossing", channels=channels[:1], cooldown_seconds=60, parameters=fast
    )
    stream = platform.signal.StreamSignals(
        signal_pb2.StreamSignalsRequest(symbols=[SYMBOL.lower()]), metadata=platform.trader
    )
    first = await _message(stream)
    assert first.WhichOneof("event") == "heartbeat"  # sent at once: the subscription is live
    other = platform.signal.StreamSignals(
        signal_pb2.StreamSignalsRequest(alerts_only=True), metadata=platform.other_trader
    )
    assert (await _message(other)).WhichOneof("event") == "heartbeat"
    await wait_streaming(platform)

    # Rising minutes: the EMAs cross upwards. No model yet, so the signals are technical-only and say why.
    start = live_start()
    rising = [100.0 + 0.8 * n for n in range(1, 9)]
    await push(platform.feed, minute_ticks(start, rising))

    def rising_done(events: list[signal_pb2.StreamSignalsResponse]) -> bool:
        signals, firings = _kinds(events)
        return bool(signals) and alert.alert_id in firings and own.alert_id in firings

    signals, firings = _kinds(await _collect(stream, rising_done))
    [buy] = signals
    assert buy.side == common_pb2.SIDE_BUY
    assert buy.symbol == SYMBOL
    assert buy.strategy_id == "ema_cross"
    assert buy.technical_only
    assert buy.technical_only_reason == signal_pb2.TECHNICAL_ONLY_REASON_MODEL_NOT_TRAINED
    assert not buy.HasField("model_confidence")
    assert not buy.HasField("model_agrees")
    assert buy.model_id == ""
    assert buy.fused_confidence == buy.technical_confidence
    assert buy.grade == _expected_grade(buy.side, buy.fused_confidence)
    assert "technical only" in buy.reason
    [fired] = firings[alert.alert_id]
    assert (fired.alert_display_name, fired.signal) == ("BTC crossing", buy)
    assert fired.notification_id
    [own_buy] = firings[own.alert_id]
    assert own_buy.signal.side == common_pb2.SIDE_BUY
    assert own_buy.signal.signal_id != buy.signal_id
    assert own_buy.signal.parameters["fast"].int_value == 5

    # A production model: the next signals (falling minutes, the EMAs cross downwards) are fused with it.
    model_id = await _train_model(platform, start)
    falling_start = start + len(rising) * MINUTE
    falling = [rising[-1] - 0.6 * n for n in range(1, 36)]
    await push(platform.feed, minute_ticks(falling_start, falling))

    def falling_done(events: list[signal_pb2.StreamSignalsResponse]) -> bool:
        signals, firings = _kinds(events)
        return bool(signals) and own.alert_id in firings

    signals, firings = _kinds(await _collect(stream, falling_done))
    [sell] = signals
    assert sell.side == common_pb2.SIDE_SELL
    assert not sell.technical_only
    assert sell.technical_only_reason == 0
    assert sell.model_id == model_id
    assert sell.model_prediction_id
    assert sell.HasField("model_confidence")
    factor = 1.0 if not sell.HasField("model_agrees") else 1.2 if sell.model_agrees else 0.8
    fused = min(1.0, max(0.0, (0.6 * sell.technical_confidence + 0.4 * sell.model_confidence) * factor))
    assert sell.fused_confidence == pytest.approx(fused)
    assert sell.grade == _expected_grade(sell.side, fused)
    assert f"model {model_id}" in sell.reason
    [own_sell] = firings[own.alert_id]
    assert own_sell.signal.side == common_pb2.SIDE_SELL
    assert own_sell.signal.model_id == model_id

    # Every minute but the last (still open) is processed; the SELL was inside the rule's cooldown: no firing.
    last_closed = falling_start + (len(falling) - 2) * MINUTE
    await eventually(lambda: platform.processed.reached(last_closed), timeout=30)
    rule = await platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=alert.alert_id), metadata=platform.trader)
    assert rule.alert.trigger_count == 1
    again = await platform.signal.GetAlert(signal_pb2.GetAlertRequest(alert_id=own.alert_id), metadata=platform.trader)
    assert again.alert.trigger_count == 2
    rows = await _outbox(platform, 3)
    payloads = [json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"] for row in rows]
    assert sorted(payload["signal_id"] for payload in payloads) == sorted(
        [buy.signal_id, own_buy.signal.signal_id, own_sell.signal.signal_id]
    )
    row, payload = next((r, p) for r, p in zip(rows, payloads, strict=True) if p["signal_id"] == buy.signal_id)
    assert (row["channel"], row["template"], row["recipient"]) == ("alert", "alert_triggered", "account:3")
    assert payload["alert_id"] == alert.alert_id
    assert payload["channels"] == ["in_app", "email"]
    assert str(row["message_id"]) == fired.notification_id
    assert await _outbox(platform, 4) == []

    # The other account heard nothing of this account's alert.
    async with asyncio.timeout(5):
        for _ in range(3):
            assert (await _message(other)).WhichOneof("event") == "heartbeat"
    other.cancel()

    # Stored exactly as EvaluateStrategy decides on the market's stored bars, bar by bar (no repeat rule here).
    closed_count = len(rising) + len(falling) - 1
    await eventually(lambda: _stored_count(platform, start, closed_count), timeout=15)  # the market writes each second
    bars = await _bars(platform, start)
    assert len(bars) == closed_count
    expected: dict[datetime, signal_pb2.SignalEvent] = {}
    for bar in bars:
        opened = bar.open_time.ToDatetime()
        reply = await platform.signal.EvaluateStrategy(
            signal_pb2.EvaluateStrategyRequest(
                strategy_id="ema_cross",
                symbol=SYMBOL,
                timeframe=TF,
                range=common_pb2.TimeRange(start_time=stamp(opened), end_time=stamp(opened + MINUTE)),
                extend_for_warmup=True,
            ),
            metadata=platform.trader,
        )
        for event in reply.events:
            expected[opened] = event
    listed = await platform.signal.ListSignals(
        signal_pb2.ListSignalsRequest(symbols=[SYMBOL]), metadata=platform.trader
    )
    stored = {signal.bar_time.ToDatetime(): signal for signal in listed.signals}
    assert set(stored) == set(expected)
    assert len(stored) == 2
    for moment, event in expected.items():
        signal = stored[moment]
        assert (signal.side, signal.price) == (event.side, event.price)
        assert signal.technical_confidence == pytest.approx(event.confidence)
    assert [signal.signal_id for signal in listed.signals] == [sell.signal_id, buy.signal_id]  # newest bar first

    # Paging, filters, the alert's own list, one signal.
    page = await platform.signal.ListSignals(signal_pb2.ListSignalsRequest(page_size=1), metadata=platform.trader)
    assert [s.signal_id for s in page.signals] == [sell.signal_id]
    assert page.next_page_token
    rest = await platform.signal.ListSignals(
        signal_pb2.ListSignalsRequest(page_size=1, page_token=page.next_page_token), metadata=platform.trader
    )
    assert [s.signal_id for s in rest.signals] == [buy.signal_id]
    assert not rest.next_page_token
    sells = await platform.signal.ListSignals(
        signal_pb2.ListSignalsRequest(side=common_pb2.SIDE_SELL, technical_only=False), metadata=platform.trader
    )
    assert [s.signal_id for s in sells.signals] == [sell.signal_id]
    by_alert = await platform.signal.ListSignals(
        signal_pb2.ListSignalsRequest(alert_id=alert.alert_id), metadata=platform.trader
    )
    assert [s.signal_id for s in by_alert.signals] == [buy.signal_id]
    assert await refusal(
        platform.signal.ListSignals(
            signal_pb2.ListSignalsRequest(alert_id=alert.alert_id), metadata=platform.other_trader
        )
    ) == (grpc.StatusCode.NOT_FOUND, "ALERT_NOT_FOUND")
    got = await platform.signal.GetSignal(
        signal_pb2.GetSignalRequest(signal_id=sell.signal_id), metadata=platform.other_trader
    )
    assert got.signal == sell
    # A signal of the trader's own parameters is the trader's: listed under the alert, hidden from everyone else.
    owned = await platform.signal.ListSignals(
        signal_pb2.ListSignalsRequest(alert_id=own.alert_id), metadata=platform.trader
    )
    assert [s.signal_id for s in owned.signals] == [own_sell.signal.signal_id, own_buy.signal.signal_id]
    mine = signal_pb2.GetSignalRequest(signal_id=own_buy.signal.signal_id)
    assert (await platform.signal.GetSignal(mine, metadata=platform.trader)).signal == own_buy.signal
    assert await refusal(platform.signal.GetSignal(mine, metadata=platform.other_trader)) == (
        grpc.StatusCode.NOT_FOUND,
        "SIGNAL_NOT_FOUND",
    )

    # A reconnecting subscriber replays what it missed, then continues live.
    replay = platform.signal.StreamSignals(
        signal_pb2.StreamSignalsRequest(symbols=[SYMBOL], replay_since_time=stamp(began)), metadata=platform.trader
    )
    assert (await _message(replay)).WhichOneof("event") == "heartbeat"
    replayed, replayed_firings = _kinds(await _collect(replay, lambda events: len(events) >= 5))
    assert [s.signal_id for s in replayed] == [buy.signal_id, sell.signal_id]
    assert {key: [f.signal.signal_id for f in found] for key, found in replayed_firings.items()} == {
        alert.alert_id: [buy.signal_id],
        own.alert_id: [own_buy.signal.signal_id, own_sell.signal.signal_id],
    }
    replay.cancel()
    stream.cancel()

    # The performance job: returns after 1, 5 and 20 bars in each signal's direction, from the stored closes.
    closes = {bar.open_time.ToDatetime(): bar.close for bar in bars}
    times = sorted(closes)

    def directional(signal: signal_pb2.Signal, horizon: int) -> float | None:
        index = times.index(signal.bar_time.ToDatetime()) + horizon
        if index >= len(times):
            return None
        side = 1 if signal.side == common_pb2.SIDE_BUY else -1
        return side * (closes[times[index]] / signal.price - 1.0)

    sell_returns = [directional(sell, horizon) for horizon in (1, 5, 20)]
    assert all(value is not None and value > 0 for value in sell_returns)  # a SELL before a fall is a win

    async def resolved() -> bool:
        reply = await platform.signal.GetSignalPerformance(
            signal_pb2.GetSignalPerformanceRequest(strategy_id="ema_cross", symbol=SYMBOL), metadata=platform.trader
        )
        return len(reply.performances) == 3 and all(row.pending_count == 0 for row in reply.performances)

    await eventually(resolved, timeout=20)
    performance = await platform.signal.GetSignalPerformance(
        signal_pb2.GetSignalPerformanceRequest(strategy_id="ema_cross", symbol=SYMBOL), metadata=platform.trader
    )
    for line, horizon in zip(performance.performances, (1, 5, 20), strict=True):
        returns = [value for value in (directional(buy, horizon), directional(sell, horizon)) if value is not None]
        assert (line.strategy_id, line.symbol, line.timeframe, line.horizon_bars) == ("ema_cross", SYMBOL, TF, horizon)
        assert line.signal_count == 2
        assert line.pending_count == 0
        assert line.win_count == sum(1 for value in returns if value > 0)
        assert line.average_return == pytest.approx(sum(returns) / 2)
        assert line.best_return == pytest.approx(max(returns))
        assert line.worst_return == pytest.approx(min(returns))
        assert line.first_signal_time == buy.bar_time
        assert line.last_signal_time == sell.bar_time
        assert line.HasField("compute_time")
    sells_only = await platform.signal.GetSignalPerformance(
        signal_pb2.GetSignalPerformanceRequest(strategy_id="ema_cross", grades=[sell.grade], horizons=[5], page_size=1),
        metadata=platform.trader,
    )
    [only] = sells_only.performances
    assert only.signal_count == 1
    assert only.win_count == 1
    assert only.win_rate == 1.0
    assert only.average_return == pytest.approx(sell_returns[1])
    assert not sells_only.next_page_token


async def _message(stream: Any) -> signal_pb2.StreamSignalsResponse:
    message = await stream.read()
    assert isinstance(message, signal_pb2.StreamSignalsResponse), "the stream ended"
    return message


async def _stream_refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        return error.code(), reason_of(error)
    raise AssertionError("the stream started")


@pytest.mark.parametrize(
    ("request_fields", "code", "reason"),
    [
        ({"symbols": [f"S{n}" for n in range(101)]}, grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_SYMBOLS"),
        ({"symbols": ["NOPE"]}, grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND"),
        ({"symbols": ["bad symbol!"]}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"strategy_ids": ["no_such"]}, grpc.StatusCode.NOT_FOUND, "STRATEGY_NOT_FOUND"),
        ({"timeframes": [42]}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"grades": [9]}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"replay": timedelta(hours=25)}, grpc.StatusCode.INVALID_ARGUMENT, "REPLAY_WINDOW_EXCEEDED"),
    ],
)
async def test_bad_stream_requests(
    platform: LivePlatform, request_fields: dict[str, Any], code: grpc.StatusCode, reason: str
) -> None:
    fields = dict(request_fields)
    back = fields.pop("replay", None)
    request = signal_pb2.StreamSignalsRequest(**fields)
    if back is not None:
        request.replay_since_time.CopyFrom(stamp(utc_now() - back))
    assert await _stream_refusal(platform.signal.StreamSignals(request, metadata=platform.trader)) == (code, reason)


async def test_bad_list_get_and_performance_requests(platform: LivePlatform) -> None:
    signal, trader = platform.signal, platform.trader
    now = utc_now()
    backwards = common_pb2.TimeRange(start_time=stamp(now), end_time=stamp(now - MINUTE))
    cases: list[tuple[Any, grpc.StatusCode, str]] = [
        (signal.ListSignals(signal_pb2.ListSignalsRequest(range=backwards), metadata=trader),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RANGE"),
        (signal.ListSignals(signal_pb2.ListSignalsRequest(page_token="garbage"), metadata=trader),
         grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID"),
        (signal.ListSignals(signal_pb2.ListSignalsRequest(side=7), metadata=trader),  # type: ignore[arg-type]
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (signal.ListSignals(signal_pb2.ListSignalsRequest(timeframes=[9]), metadata=trader),  # type: ignore[list-item]
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (signal.ListSignals(signal_pb2.ListSignalsRequest(alert_id="alr_0123456789abcdef01234567"), metadata=trader),
         grpc.StatusCode.NOT_FOUND, "ALERT_NOT_FOUND"),
        (signal.GetSignal(signal_pb2.GetSignalRequest(), metadata=trader),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (signal.GetSignal(signal_pb2.GetSignalRequest(signal_id="sig_" + "0" * 28), metadata=trader),
         grpc.StatusCode.NOT_FOUND, "SIGNAL_NOT_FOUND"),
        (signal.GetSignal(signal_pb2.GetSignalRequest(signal_id="../etc/passwd"), metadata=trader),
         grpc.StatusCode.NOT_FOUND, "SIGNAL_NOT_FOUND"),
        (signal.GetSignalPerformance(signal_pb2.GetSignalPerformanceRequest(horizons=[1, 2]), metadata=trader),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_HORIZON"),
        (signal.GetSignalPerformance(signal_pb2.GetSignalPerformanceRequest(strategy_id="nope"), metadata=trader),
         grpc.StatusCode.NOT_FOUND, "STRATEGY_NOT_FOUND"),
        (signal.GetSignalPerformance(signal_pb2.GetSignalPerformanceRequest(range=backwards), metadata=trader),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RANGE"),
        (signal.GetSignalPerformance(signal_pb2.GetSignalPerformanceRequest(page_token="x"), metadata=trader),
         grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID"),
        (signal.GetSignalPerformance(signal_pb2.GetSignalPerformanceRequest(timeframe=12), metadata=trader),  # type: ignore[arg-type]
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ]  # fmt: skip
    for call, code, reason in cases:
        assert await refusal(call) == (code, reason)
    # Without a token, nothing.
    assert (await refusal(signal.ListSignals(signal_pb2.ListSignalsRequest())))[0] == grpc.StatusCode.UNAUTHENTICATED


async def test_a_series_watched_before_its_history_was_stored_starts_once_it_is() -> None:
    """A configured symbol whose history a backfill stores after the engine began: the engine reads it at the next
    close and evaluates from there; the history itself is not news."""
    feed = ScriptedFeed()
    async with running_live_platform(live_settings(signal_symbols=[SYMBOL]), feed=feed) as platform:
        await platform.instrument_stored()
        await wait_streaming_without_history(platform)
        await store_history(platform.market, platform.admin, Timeframe.M1.floor(utc_now()))
        stream = platform.signal.StreamSignals(
            signal_pb2.StreamSignalsRequest(symbols=[SYMBOL]), metadata=platform.trader
        )
        assert (await _message(stream)).WhichOneof("event") == "heartbeat"
        start = live_start()
        await push(feed, minute_ticks(start, [100.0 + 0.8 * n for n in range(1, 9)]))
        buy = (await next_event(stream, {"signal"})).signal
        assert buy.side == common_pb2.SIDE_BUY
        assert buy.bar_time.ToDatetime() >= start
        listed = await platform.signal.ListSignals(signal_pb2.ListSignalsRequest(), metadata=platform.trader)
        assert [signal.signal_id for signal in listed.signals] == [buy.signal_id]
        stream.cancel()


async def wait_streaming_without_history(platform: LivePlatform) -> None:
    def ready() -> bool:
        engine = platform.engine
        return engine.is_leader and SYMBOL in engine.streaming

    await eventually(ready, timeout=20)


async def test_streams_per_account_are_limited() -> None:
    async with running_live_platform(live_settings(max_streams_per_account=1), feed=ScriptedFeed()) as platform:
        first = platform.signal.StreamSignals(signal_pb2.StreamSignalsRequest(), metadata=platform.trader)
        assert (await _message(first)).WhichOneof("event") == "heartbeat"
        second = platform.signal.StreamSignals(signal_pb2.StreamSignalsRequest(), metadata=platform.trader)
        assert await _stream_refusal(second) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
        other = platform.signal.StreamSignals(signal_pb2.StreamSignalsRequest(), metadata=platform.other_trader)
        assert (await _message(other)).WhichOneof("event") == "heartbeat"  # per account
        first.cancel()

        async def reopened() -> bool:
            again = platform.signal.StreamSignals(signal_pb2.StreamSignalsRequest(), metadata=platform.trader)
            try:
                return (await _message(again)).WhichOneof("event") == "heartbeat"
            except grpc.aio.AioRpcError:
                return False
            finally:
                again.cancel()

        await eventually(reopened, timeout=10)
        other.cancel()
