"""ListStrategies and EvaluateStrategy through real channels: the events equal the strategy run in-process over the
same stored bars, warm-up is reported and extended on request, and bad requests get the contract's reasons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import grpc
import pytest

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.timeframes import Timeframe
from services.signal.strategies.base import REGISTRY
from tests.account_platform import refusal
from tests.signal_platform import START, SignalPlatform, StoredSymbol, running_signal_platform, stamp

REQUIRED = {
    "bollinger_breakout",
    "bollinger_trend_breakout",
    "rsi_reversal",
    "ma_breakout",
    "golden_cross",
    "macd_cross",
    "triple_confirmation",
    "donchian_breakout",
    "bollinger_reversion",
    "stochastic_cross",
    "adx_trend",
    "multi_timeframe",
}


@pytest.fixture
async def platform() -> AsyncIterator[SignalPlatform]:
    async with running_signal_platform() as running:
        yield running


def _request(**extra: object) -> signal_pb2.EvaluateStrategyRequest:
    values: dict[str, object] = {
        "strategy_id": "golden_cross",
        "parameters": {
            "fast": common_pb2.ParameterValue(int_value=10),
            "slow": common_pb2.ParameterValue(int_value=30),
        },
        "symbol": "demo",
        "timeframe": common_pb2.TIMEFRAME_1D,
        "range": common_pb2.TimeRange(start_time=stamp(START)),
    }
    values.update(extra)
    return signal_pb2.EvaluateStrategyRequest(**values)  # type: ignore[arg-type]


async def test_the_catalogue_describes_every_strategy(platform: SignalPlatform) -> None:
    reply = await platform.signal.ListStrategies(
        signal_pb2.ListStrategiesRequest(page_size=1000), metadata=platform.reader
    )
    ids = [strategy.strategy_id for strategy in reply.strategies]
    assert len(ids) >= 20
    assert ids == sorted(ids)
    assert set(ids) >= REQUIRED
    seed = next(strategy for strategy in reply.strategies if strategy.strategy_id == "bollinger_breakout")
    defaults = {param.name: param for param in seed.parameters}
    assert defaults["period"].default_value.int_value == 5
    assert defaults["k"].default_value.double_value == 2.0
    assert defaults["period"].type == common_pb2.PARAMETER_TYPE_INTEGER
    assert seed.warmup_bars > 0
    assert seed.tags
    # The seed's rule fades band breaks; the trend-following reading has an id and a description of its own.
    assert {param.name for param in seed.parameters} == {"period", "k", "near_band_percent"}
    assert "seed" in seed.description
    assert "a SELL, STRONG when above the upper band" in seed.description
    assert "bollinger_trend_breakout" in seed.description
    trend_reading = next(item for item in reply.strategies if item.strategy_id == "bollinger_trend_breakout")
    assert "A close above the upper band is a STRONG BUY" in trend_reading.description
    assert "bollinger_breakout" in trend_reading.description
    mtf = next(strategy for strategy in reply.strategies if strategy.strategy_id == "multi_timeframe")
    assert common_pb2.TIMEFRAME_1D not in mtf.timeframes
    assert mtf.timeframes
    for strategy in reply.strategies:
        assert strategy.description
        assert strategy.display_name
        assert strategy.tags

    page = await platform.signal.ListStrategies(signal_pb2.ListStrategiesRequest(page_size=5), metadata=platform.reader)
    rest = await platform.signal.ListStrategies(
        signal_pb2.ListStrategiesRequest(page_size=1000, page_token=page.next_page_token), metadata=platform.reader
    )
    assert [s.strategy_id for s in page.strategies] + [s.strategy_id for s in rest.strategies] == ids
    trend = await platform.signal.ListStrategies(
        signal_pb2.ListStrategiesRequest(tag="trend"), metadata=platform.reader
    )
    assert trend.strategies
    assert all("trend" in strategy.tags for strategy in trend.strategies)
    assert len(trend.strategies) < len(ids)


async def test_events_equal_the_strategy_in_process(platform: SignalPlatform) -> None:
    reply = await platform.signal.EvaluateStrategy(_request(), metadata=platform.reader)
    bars = platform.bars["DEMO"]
    strategy = REGISTRY["golden_cross"]
    parameters = strategy.resolve({"fast": 10, "slow": 30})
    expected = strategy.events(bars, strategy.evaluate(bars, parameters), parameters)
    assert len(reply.events) == len(expected) > 2
    for got, event in zip(reply.events, expected, strict=True):
        assert got.bar_time.ToDatetime() == bars.open_time[event.index].astype("datetime64[us]").item()
        assert got.side == (common_pb2.SIDE_BUY if event.side > 0 else common_pb2.SIDE_SELL)
        assert got.confidence == pytest.approx(event.confidence)
        assert 0.0 <= got.confidence <= 1.0
        assert got.reason == event.reason
        assert got.price == bars.close[event.index]
        assert got.indicator_values
    assert {got.side for got in reply.events} == {common_pb2.SIDE_BUY, common_pb2.SIDE_SELL}
    assert reply.bar_count == len(bars)
    assert reply.warmup_bars == strategy.warmup(parameters)
    assert reply.parameters["fast"].int_value == 10
    assert reply.parameters["slow"].int_value == 30


async def test_warmup_extension_signals_from_the_first_bar_of_the_range(platform: SignalPlatform) -> None:
    later = START + timedelta(days=150)
    plain = await platform.signal.EvaluateStrategy(
        _request(range=common_pb2.TimeRange(start_time=stamp(later))), metadata=platform.reader
    )
    extended = await platform.signal.EvaluateStrategy(
        _request(range=common_pb2.TimeRange(start_time=stamp(later)), extend_for_warmup=True),
        metadata=platform.reader,
    )
    full = await platform.signal.EvaluateStrategy(_request(), metadata=platform.reader)
    assert plain.warmup_bars > 0
    assert extended.warmup_bars == 0
    assert extended.bar_count == plain.bar_count
    # With the history in front, the range's events are those of the whole series inside the range (recursive
    # smoothing such as ATR, used for confidence, may differ in late digits as it starts from less history).
    in_range = [event for event in full.events if event.bar_time.ToDatetime() >= later]
    assert [(event.bar_time, event.side) for event in extended.events] == [
        (event.bar_time, event.side) for event in in_range
    ]
    for got, expected in zip(extended.events, in_range, strict=True):
        assert got.indicator_values["slow_ma"] == pytest.approx(expected.indicator_values["slow_ma"], rel=1e-12)
        assert got.confidence == pytest.approx(expected.confidence, abs=0.05)
    assert all(event.bar_time.ToDatetime() >= later for event in extended.events)


async def test_the_seed_bollinger_rule_over_stored_bars(platform: SignalPlatform) -> None:
    """Every bar of the stored series classified by the seed's rule, computed here from the closes: the bands of
    the five closes before the bar (mean ± 2 population deviations); above upper × 0.99 SELL (STRONG above upper),
    else below lower × 1.01 BUY (STRONG below lower), else HOLD."""
    reply = await platform.signal.EvaluateStrategy(
        _request(strategy_id="bollinger_breakout", parameters={}), metadata=platform.reader
    )
    bars = platform.bars["DEMO"]
    expected = []
    for index in range(5, len(bars)):
        window = bars.close[index - 5 : index]
        upper, lower = window.mean() + 2 * window.std(), window.mean() - 2 * window.std()
        close = bars.close[index]
        if close > upper * 0.99:
            expected.append((index, common_pb2.SIDE_SELL, close > upper))
        elif close < lower * 1.01:
            expected.append((index, common_pb2.SIDE_BUY, close < lower))
    times = bars.open_time.astype("datetime64[us]")
    got = [
        (event.bar_time.ToDatetime(), event.side, event.strength == signal_pb2.SIGNAL_STRENGTH_STRONG)
        for event in reply.events
    ]
    assert got == [(times[index].item(), side, bool(strong)) for index, side, strong in expected]
    assert {side for _, side, _ in got} == {common_pb2.SIDE_BUY, common_pb2.SIDE_SELL}
    assert {strong for _, _, strong in got} == {True, False}


async def test_every_strategy_evaluates_over_stored_bars(platform: SignalPlatform) -> None:
    for strategy_id in sorted(REGISTRY):
        if REGISTRY[strategy_id].timeframes and 5 not in REGISTRY[strategy_id].timeframes:
            continue  # intraday-only strategies need minute bars
        reply = await platform.signal.EvaluateStrategy(
            _request(strategy_id=strategy_id, parameters={}), metadata=platform.reader
        )
        assert reply.bar_count > 0, strategy_id
        for event in reply.events:
            assert event.reason, strategy_id
            assert 0.0 <= event.confidence <= 1.0, strategy_id


@pytest.mark.parametrize(
    ("extra", "code", "reason"),
    [
        ({"strategy_id": "nope"}, grpc.StatusCode.NOT_FOUND, "STRATEGY_NOT_FOUND"),
        ({"strategy_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {"parameters": {"speed": common_pb2.ParameterValue(int_value=3)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_PARAMETER",
        ),
        (
            {"parameters": {"fast": common_pb2.ParameterValue(double_value=10.5)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {"parameters": {"fast": common_pb2.ParameterValue()}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {"parameters": {"fast": common_pb2.ParameterValue(int_value=100_000_000)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {"strategy_id": "multi_timeframe", "parameters": {}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_TIMEFRAME",
        ),
        ({"symbol": "no such"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"symbol": "NOPE"}, grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND"),
        ({"timeframe": common_pb2.TIMEFRAME_UNSPECIFIED}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {"range": common_pb2.TimeRange(start_time=stamp(START), end_time=stamp(START))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RANGE",
        ),
        (
            {"range": common_pb2.TimeRange(start_time=stamp(START), end_time=stamp(START - timedelta(days=1)))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RANGE",
        ),
        ({"range": common_pb2.TimeRange()}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {
                "range": common_pb2.TimeRange(
                    start_time=stamp(datetime(2010, 1, 1)), end_time=stamp(datetime(2011, 1, 1))
                )
            },
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_BARS",
        ),
    ],
)
async def test_bad_requests(
    platform: SignalPlatform, extra: dict[str, object], code: grpc.StatusCode, reason: str
) -> None:
    call = platform.signal.EvaluateStrategy(_request(**extra), metadata=platform.reader)
    assert await refusal(call) == (code, reason)


async def test_a_multi_timeframe_strategy_reads_its_higher_timeframe_history() -> None:
    minute = StoredSymbol("MINUTE", "SIM-BTC-USDT", timeframe=Timeframe.M1)
    async with running_signal_platform((minute,), days=3) as platform:
        later = START + timedelta(days=2)
        request = _request(
            strategy_id="multi_timeframe",
            parameters={
                "higher_timeframe": common_pb2.ParameterValue(string_value="TIMEFRAME_1H"),
                "trend_period": common_pb2.ParameterValue(int_value=5),
            },
            symbol="MINUTE",
            timeframe=common_pb2.TIMEFRAME_1M,
            range=common_pb2.TimeRange(start_time=stamp(later)),
        )
        plain = await platform.signal.EvaluateStrategy(request, metadata=platform.reader)
        request.extend_for_warmup = True
        extended = await platform.signal.EvaluateStrategy(request, metadata=platform.reader)
        request.extend_for_warmup = False
        request.range.start_time.CopyFrom(stamp(START))
        full = await platform.signal.EvaluateStrategy(request, metadata=platform.reader)
    # Without history the range's first hours cannot know the hourly trend; with it (six hours, more than the 73
    # bars the bar count alone would read) the events are those of the whole series inside the range.
    in_range = [(event.bar_time, event.side) for event in full.events if event.bar_time.ToDatetime() >= later]
    assert in_range
    assert [(event.bar_time, event.side) for event in extended.events] == in_range
    assert [(event.bar_time, event.side) for event in plain.events] != in_range
