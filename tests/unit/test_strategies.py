"""Strategies: the catalogue, no look-ahead, warm-up, signals both ways, confidence and reasons, parameter validation
and the behaviour of the main strategies on hand-made bars."""

from __future__ import annotations

import math
import re
import statistics
from datetime import datetime, timedelta
from functools import cache

import numpy as np
import pytest

from services.core.errors import InvalidArgument
from services.core.parameters import ParamType, ParamValue
from services.core.timeframes import Timeframe
from services.signal.strategies.base import (
    SignalFrame,
    StrategyBars,
    StrategyDef,
)
from services.signal.strategies.catalogue import load_strategies
from services.signal.strategies.common import indicator, series
from tests.strategy_bars import DAY, daily_bars, generate, minute_bars, splice

STRATEGIES = load_strategies()
IDS = sorted(STRATEGIES)
TAGS = {"trend", "mean_reversion", "breakout", "momentum", "volume", "multi_timeframe"}
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


@cache
def daily() -> StrategyBars:
    return daily_bars()


@cache
def minute() -> StrategyBars:
    return minute_bars()


def bars_for(definition: StrategyDef) -> StrategyBars:
    """Intraday-only strategies run on minute bars, the others on daily bars."""
    return minute() if definition.timeframes and Timeframe.D1 not in definition.timeframes else daily()


@cache
def default_frame(strategy_id: str) -> SignalFrame:
    definition = STRATEGIES[strategy_id]
    return definition.evaluate(bars_for(definition), definition.resolve({}))


def make_bars(
    close: list[float] | np.ndarray,
    *,
    spread: float = 0.5,
    volume: list[float] | np.ndarray | None = None,
    span: timedelta = DAY,
    start: datetime = datetime(2020, 1, 1),
) -> StrategyBars:
    """Bars with the given closes, each opening at the previous close, high and low `spread` beyond them."""
    closes = np.asarray(close, dtype=np.float64)
    opens = np.concatenate((closes[:1], closes[:-1]))
    volumes = np.full(closes.shape[0], 1000.0) if volume is None else np.asarray(volume, dtype=np.float64)
    times = np.datetime64(start, "ns") + np.arange(closes.shape[0]) * np.timedelta64(span)
    return StrategyBars(
        times,
        opens,
        np.maximum(opens, closes) + spread,
        np.minimum(opens, closes) - spread,
        closes,
        volumes,
        span,
    )


def evaluate(strategy_id: str, bars: StrategyBars, **given: ParamValue) -> tuple[SignalFrame, dict[str, ParamValue]]:
    definition = STRATEGIES[strategy_id]
    params = definition.resolve(given)
    return definition.evaluate(bars, params), params


def assert_same_prefix(full: SignalFrame, part: SignalFrame, cut: int) -> None:
    end = cut + 1
    assert np.array_equal(part.side[:end], full.side[:end])
    assert np.array_equal(part.strong[:end], full.strong[:end])
    assert np.array_equal(part.confidence[:end], full.confidence[:end], equal_nan=True)
    assert part.values.keys() == full.values.keys()
    for name, values in full.values.items():
        assert np.array_equal(part.values[name][:end], values[:end], equal_nan=True), name


# --- the catalogue ----------------------------------------------------------------------------------------------


def test_catalogue_holds_the_required_strategies() -> None:
    assert len(STRATEGIES) >= 22
    assert set(STRATEGIES) >= REQUIRED


@pytest.mark.parametrize("strategy_id", IDS)
def test_definition_is_complete(strategy_id: str) -> None:
    definition = STRATEGIES[strategy_id]
    assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", strategy_id)
    assert definition.display_name
    assert len(definition.description) > 80
    assert definition.tags
    assert set(definition.tags) <= TAGS
    assert definition.resolve({}) == definition.defaults
    for param in definition.params:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", param.name)
        assert param.description
        if param.type in (ParamType.INTEGER, ParamType.NUMBER):
            assert param.minimum is not None
            assert param.maximum is not None
            assert param.minimum <= float(param.default) <= param.maximum
        if param.type is ParamType.INTEGER:
            assert param.maximum is not None
            assert param.maximum <= 1000
    assert definition.warmup(definition.defaults) > 0


# --- no look-ahead, warm-up, signals ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy_id", IDS)
def test_no_look_ahead(strategy_id: str) -> None:
    """Decisions and values up to bar t are the same whatever follows t: other bars, or none."""
    definition = STRATEGIES[strategy_id]
    params = definition.resolve({})
    bars = bars_for(definition)
    full = default_frame(strategy_id)
    count = len(bars)
    events = full.event_indices()
    days = bars.open_time.astype("datetime64[D]")
    day_end = int(np.flatnonzero(days[1:] != days[:-1])[len(days) // 3000])  # the last bar of some day
    cuts = {
        definition.warmup(params),
        count // 3,
        count // 2,
        day_end,
        day_end + 1,
        int(events[len(events) // 2]),
        int(events[-1]) - 1,
        int(events[-1]),
        count - 2,
    }
    for number, cut in enumerate(sorted(cuts)):
        assert_same_prefix(full, definition.evaluate(splice(bars, cut, seed=100 + number), params), cut)
        assert_same_prefix(full, definition.evaluate(bars.head(cut + 1), params), cut)


@pytest.mark.parametrize("strategy_id", IDS)
def test_signals_both_ways_after_warmup(strategy_id: str) -> None:
    definition = STRATEGIES[strategy_id]
    params = definition.resolve({})
    frame = default_frame(strategy_id)
    assert (frame.side > 0).any()
    assert (frame.side < 0).any()
    events = frame.event_indices()
    assert events[0] >= definition.warmup(params)
    confidence = frame.confidence[events]
    assert ((confidence >= 0) & (confidence <= 1)).all()
    assert np.unique(confidence).size > len(events) // 2  # it varies with the data
    assert not frame.strong[frame.side == 0].any()
    assert not frame.confidence[frame.side == 0].any()
    for name, values in frame.values.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert values.shape == frame.side.shape
    assert "close" in frame.values


@pytest.mark.parametrize("strategy_id", IDS)
def test_no_event_before_warmup_on_wild_bars(strategy_id: str) -> None:
    definition = STRATEGIES[strategy_id]
    params = definition.resolve({})
    reference = bars_for(definition)
    for seed in range(3):
        bars = generate(
            min(len(reference), 3000),
            seed=seed,
            span=reference.span,
            start=datetime(2021, 1, 1),
            volatility=0.05,
            regime_bars=(2, 12),
        )
        frame = definition.evaluate(bars, params)
        assert not frame.side[: definition.warmup(params)].any()


@pytest.mark.parametrize("strategy_id", IDS)
def test_reasons_carry_the_numbers(strategy_id: str) -> None:
    definition = STRATEGIES[strategy_id]
    params = definition.resolve({})
    bars = bars_for(definition)
    frame = default_frame(strategy_id)
    strong_and_weak = {bool(frame.strong[index]) for index in frame.event_indices()}
    assert strong_and_weak == {True, False}
    events = definition.events(bars, frame, params)
    assert {event.side for event in events} == {1, -1}
    for event in events[:: max(1, len(events) // 10)]:
        assert re.search(r"\d", event.reason)
        assert event.values["close"] == event.price
        assert 0.0 <= event.confidence <= 1.0


def test_a_million_bars_evaluate_to_events_within_the_series() -> None:
    """Every strategy takes a long series whole (its speed is measured in bench/, not here)."""
    bars = generate(1_000_000, seed=5, span=timedelta(minutes=1), start=datetime(2020, 1, 1), volatility=0.001)
    for strategy_id in IDS:
        definition = STRATEGIES[strategy_id]
        frame = definition.evaluate(bars, definition.resolve({}))
        assert len(frame) == len(bars), strategy_id
        confidence = frame.confidence[frame.event_indices()]
        assert np.all((confidence >= 0.0) & (confidence <= 1.0)), strategy_id


# --- parameter validation ---------------------------------------------------------------------------------------


def rejection(strategy_id: str, given: dict[str, ParamValue], timeframe: Timeframe | None = None) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        STRATEGIES[strategy_id].resolve(given, timeframe=timeframe)
    return raised.value


def test_an_unknown_parameter_is_named() -> None:
    error = rejection("golden_cross", {"fastest": 3})
    assert error.reason == "UNKNOWN_PARAMETER"
    assert [violation.field for violation in error.violations] == ["parameters.fastest"]


@pytest.mark.parametrize("strategy_id", IDS)
def test_wrong_types_and_ranges_are_invalid(strategy_id: str) -> None:
    definition = STRATEGIES[strategy_id]
    for param in definition.params:
        bad: list[ParamValue] = ["2"]
        if param.type is ParamType.INTEGER:
            bad += [float(param.default), True]
        if param.type is ParamType.NUMBER:
            bad += [float("nan"), float("inf"), True]
        if param.type in (ParamType.INTEGER, ParamType.NUMBER):
            assert param.minimum is not None
            assert param.maximum is not None
            step = 1 if param.type is ParamType.INTEGER else 0.5
            bad += [type(param.default)(param.minimum - step), type(param.default)(param.maximum + step)]
        if param.type is ParamType.CHOICE:
            bad += ["NOT_A_CHOICE", 1]
        for value in bad:
            error = rejection(strategy_id, {param.name: value})
            assert error.reason == "INVALID_PARAMETER", (param.name, value)
            assert f"parameters.{param.name}" in {violation.field for violation in error.violations}


@pytest.mark.parametrize(
    ("strategy_id", "given", "field"),
    [
        ("golden_cross", {"fast": 200}, "parameters.fast"),
        ("golden_cross", {"fast": 250}, "parameters.fast"),
        ("ema_cross", {"fast": 30}, "parameters.fast"),
        ("macd_cross", {"fast": 26}, "parameters.fast"),
        ("sar_reversal", {"acceleration": 0.3}, "parameters.acceleration"),
        ("rsi_reversal", {"oversold": 75.0}, "parameters.oversold"),
        ("rsi_reversal", {"strong_overbought": 65.0}, "parameters.overbought"),
        ("multi_timeframe", {"fast": 21}, "parameters.fast"),
    ],
)
def test_cross_parameter_constraints(strategy_id: str, given: dict[str, ParamValue], field: str) -> None:
    error = rejection(strategy_id, given)
    assert error.reason == "INVALID_PARAMETER"
    assert field in {violation.field for violation in error.violations}


def test_multi_timeframe_refuses_daily_input_and_a_higher_span_not_above_the_input() -> None:
    daily_input = rejection("multi_timeframe", {}, Timeframe.D1)
    assert daily_input.reason == "UNSUPPORTED_TIMEFRAME"
    assert [violation.field for violation in daily_input.violations] == ["timeframe"]
    hourly = rejection("multi_timeframe", {"higher_timeframe": "TIMEFRAME_1H"}, Timeframe.H1)
    assert hourly.reason == "UNSUPPORTED_TIMEFRAME"
    assert [violation.field for violation in hourly.violations] == ["timeframe"]
    definition = STRATEGIES["multi_timeframe"]
    assert definition.resolve({"higher_timeframe": "TIMEFRAME_1H"}, timeframe=Timeframe.M5)
    assert definition.resolve({}, timeframe=Timeframe.H1)
    assert definition.history(definition.defaults) == timedelta(days=21)


# --- bollinger_breakout: the seed's rule, on hand-computed bands ------------------------------------------------

QUIET = [100.0, 102.0, 98.0, 101.0, 99.0]


def hand_bands(closes: list[float], k: float = 2.0) -> tuple[float, float, float]:
    """Bollinger bands of `closes` by hand: mean ± k population standard deviations."""
    mean = statistics.fmean(closes)
    deviation = statistics.pstdev(closes)
    return mean + k * deviation, mean, mean - k * deviation


def seed_at(closes: list[float]) -> tuple[int, bool, float, str]:
    """Side, strength, confidence and reason of bollinger_breakout (defaults) on the last of `closes`."""
    bars = make_bars(closes)
    frame, params = evaluate("bollinger_breakout", bars)
    last = len(closes) - 1
    side, strong, confidence = int(frame.side[last]), bool(frame.strong[last]), float(frame.confidence[last])
    events = STRATEGIES["bollinger_breakout"].events(bars, frame, params, start=last)
    return side, strong, confidence, events[0].reason if events else ""


def test_seed_bands_by_hand() -> None:
    # mean 100, population variance (0 + 4 + 4 + 1 + 1) / 5 = 2: bands 100 ± 2√2
    upper, middle, lower = hand_bands(QUIET)
    assert (upper, middle, lower) == pytest.approx((102.828427, 100.0, 97.171573), abs=1e-6)
    frame, _ = evaluate("bollinger_breakout", make_bars([*QUIET, 100.0]))
    assert frame.values["upper"][5] == pytest.approx(upper, rel=1e-12)  # the previous five closes' bands
    assert frame.values["lower"][5] == pytest.approx(lower, rel=1e-12)
    assert np.isnan(frame.values["upper"][:5]).all()


@pytest.mark.parametrize(
    ("close", "side", "strong"),
    [
        (103.5, -1, True),  # above the upper band 102.83: STRONG SELL
        (102.5, -1, False),  # between upper × 0.99 (101.80) and upper: WEAK SELL
        (101.9, -1, False),
        (101.7, 0, False),  # just under upper × 0.99: HOLD
        (100.5, 0, False),  # between: HOLD
        (98.2, 0, False),  # just over lower × 1.01 (98.14): HOLD
        (98.0, 1, False),  # between lower (97.17) and lower × 1.01: WEAK BUY
        (97.3, 1, False),
        (96.5, 1, True),  # below the lower band: STRONG BUY
    ],
)
def test_seed_rule_on_hand_computed_bars(close: float, side: int, strong: bool) -> None:
    upper, middle, lower = hand_bands(QUIET)
    deviation = (upper - middle) / 2.0
    expected_side = -1 if close > upper * 0.99 else 1 if close < lower * 1.01 else 0
    assert expected_side == side  # the table above is the seed's rule
    got_side, got_strong, confidence, reason = seed_at([*QUIET, close])
    assert (got_side, got_strong) == (side, strong)
    if side == 0:
        assert confidence == 0.0
        return
    if strong:
        distance = (close - upper if side < 0 else lower - close) / deviation
        assert confidence == pytest.approx(0.5 + 0.5 * (1.0 - math.exp(-distance)), rel=1e-12)
    else:
        depth = (close - upper * 0.99) / (upper * 0.01) if side < 0 else (lower * 1.01 - close) / (lower * 0.01)
        assert confidence == pytest.approx(0.2 + 0.3 * depth, rel=1e-9)
    assert f"close {close:.2f}" in reason
    assert ("SELL" if side < 0 else "BUY") in reason
    assert ("STRONG" if strong else "WEAK") in reason
    assert f"{upper if side < 0 else lower:.2f}" in reason
    assert "Bollinger(5, 2)" in reason


def test_seed_signals_every_bar_the_close_stays_beyond_the_band() -> None:
    closes = [*QUIET, 103.5, 106.0]
    upper, _, _ = hand_bands(closes[1:6])  # bar 6 reads the five closes before it: 104.68
    assert upper < 106.0
    frame, _ = evaluate("bollinger_breakout", make_bars(closes))
    assert frame.side[5:].tolist() == [-1, -1]
    assert frame.strong[5:].tolist() == [True, True]


def test_seed_has_no_atr_filter_and_warms_up_on_its_bands_alone() -> None:
    definition = STRATEGIES["bollinger_breakout"]
    assert {param.name for param in definition.params} == {"period", "k", "near_band_percent"}
    assert definition.warmup(definition.defaults) == 5
    # A small move beyond the band is a signal all the same (the trend reading's ATR filter would drop it).
    small = [*QUIET, 102.0, 102.0, 102.0, 102.0, 102.0, 102.0, 102.0, 102.0, 102.0, 102.0, 102.1]
    side, strong, _, _ = seed_at(small)
    assert (side, strong) == (-1, True)  # flat bands at 102: 102.1 is beyond them


def test_trend_breakout_is_the_opposite_reading() -> None:
    bars = quiet_then([110.0])
    seed, _ = evaluate("bollinger_breakout", bars)
    follow, _ = evaluate("bollinger_trend_breakout", bars)
    assert (seed.side[30], follow.side[30]) == (-1, 1)
    assert seed.strong[30]
    assert follow.strong[30]


# --- bollinger_trend_breakout: the trend-following reading --------------------------------------------------------


def quiet_then(last: list[float]) -> StrategyBars:
    """30 closes alternating 98 and 102 (bands about 95.7-104.3, ATR about 10), then `last`."""
    return make_bars([102.0 if i % 2 else 98.0 for i in range(30)] + last, spread=3.0)


def test_bollinger_trend_breakout_beyond_the_band_is_strong() -> None:
    frame, params = evaluate("bollinger_trend_breakout", quiet_then([110.0, 112.0]))
    assert frame.side[30] == 1
    assert frame.strong[30]
    assert frame.confidence[30] > 0.5
    assert frame.side[31] == 0  # still beyond: the event fired when the condition became true
    assert not frame.side[:30].any()
    reason = STRATEGIES["bollinger_trend_breakout"].events(quiet_then([110.0]), frame, params, start=30)[0].reason
    upper, atr = frame.values["upper"][30], frame.values["atr"][30]
    assert "close 110.00 above upper band" in reason
    assert f"{upper:.2f}" in reason
    assert f"{atr:.2f}" in reason
    assert "period 5, k 2" in reason
    assert "move 8.000 ≥ 0.5 × ATR" in reason
    sell, _ = evaluate("bollinger_trend_breakout", quiet_then([90.0]))
    assert sell.side[30] == -1
    assert sell.strong[30]


def test_bollinger_trend_breakout_near_the_band_is_weak() -> None:
    probe, _ = evaluate("bollinger_trend_breakout", quiet_then([100.0]))
    upper, lower = probe.values["upper"][30], probe.values["lower"][30]
    near_up, _ = evaluate("bollinger_trend_breakout", quiet_then([upper * 0.995]), atr_multiple=0.0)
    assert near_up.side[30] == 1
    assert not near_up.strong[30]
    assert 0.2 <= near_up.confidence[30] < 0.5
    near_down, _ = evaluate("bollinger_trend_breakout", quiet_then([lower * 1.005]), atr_multiple=0.0)
    assert near_down.side[30] == -1
    assert not near_down.strong[30]
    outside_zone, _ = evaluate("bollinger_trend_breakout", quiet_then([upper * 0.98]), atr_multiple=0.0)
    assert outside_zone.side[30] == 0


def test_bollinger_trend_breakout_atr_filter_suppresses_a_small_move() -> None:
    small = quiet_then([106.0])  # beyond the band, but a move of 4 < 0.5 × ATR
    frame, _ = evaluate("bollinger_trend_breakout", small)
    assert frame.values["close"][30] > frame.values["upper"][30]
    assert abs(frame.values["move"][30]) < 0.5 * frame.values["atr"][30]
    assert frame.side[30] == 0
    unfiltered, _ = evaluate("bollinger_trend_breakout", small, atr_multiple=0.0)
    assert unfiltered.side[30] == 1
    assert unfiltered.strong[30]


def test_bollinger_trend_breakout_confidence_grows_with_the_distance() -> None:
    confidences = [
        evaluate("bollinger_trend_breakout", quiet_then([close]))[0].confidence[30] for close in (110, 114, 120)
    ]
    assert confidences == sorted(confidences)
    assert len(set(confidences)) == 3
    assert all(0.5 < value < 1.0 for value in confidences)


# --- golden_cross, rsi_reversal, donchian_breakout --------------------------------------------------------------


def test_golden_cross_fires_once_where_the_averages_cross() -> None:
    close = np.concatenate((np.linspace(150, 100, 60), 100 + 2.0 * np.arange(1, 41)))
    frame, _ = evaluate("golden_cross", make_bars(close), fast=5, slow=20)
    fast = np.convolve(close, np.ones(5) / 5, "full")[: len(close)]
    slow = np.convolve(close, np.ones(20) / 20, "full")[: len(close)]
    above = fast > slow
    above[:19] = False
    expected = int(np.flatnonzero(above[1:] & ~above[:-1])[0]) + 1
    assert list(frame.event_indices()) == [expected]
    assert frame.side[expected] == 1
    death, _ = evaluate("golden_cross", make_bars(300.0 - close), fast=5, slow=20)
    assert list(death.event_indices()) == [expected]
    assert death.side[expected] == -1


def rsi_of(close: np.ndarray) -> np.ndarray:
    return indicator("rsi", series(close), period=14)[0]


@pytest.mark.parametrize(("drop", "strong"), [(1.5, True), (0.7, False)])
def test_rsi_reversal_buys_when_rsi_leaves_oversold(drop: float, strong: bool) -> None:
    steps = [1.0 if i % 2 else -1.0 for i in range(30)] + [-drop] * 12 + [1.2] * 10
    close = 100 + np.cumsum(steps)
    rsi = rsi_of(close)
    crossings = np.flatnonzero((rsi[1:] > 30) & (rsi[:-1] <= 30)) + 1
    frame, params = evaluate("rsi_reversal", make_bars(close))
    assert list(frame.event_indices()) == [int(crossings[0])]
    index = int(crossings[0])
    assert frame.side[index] == 1
    assert frame.strong[index] == strong
    assert bool(np.nanmin(rsi[:index]) < 20) == strong
    assert frame.values["extreme"][index] == np.nanmin(rsi[30:index])
    reason = STRATEGIES["rsi_reversal"].events(make_bars(close), frame, params)[0].reason
    assert "out of oversold 30" in reason
    assert f"{frame.values['rsi'][index]:.2f}" in reason


def test_rsi_reversal_sells_when_rsi_leaves_overbought() -> None:
    steps = [1.0 if i % 2 else -1.0 for i in range(30)] + [1.5] * 12 + [-1.2] * 10
    frame, _ = evaluate("rsi_reversal", make_bars(100 + np.cumsum(steps)))
    events = frame.event_indices()
    assert len(events) == 1
    assert frame.side[events[0]] == -1
    assert frame.strong[events[0]]


def test_donchian_breakout_uses_the_previous_bars_channel() -> None:
    close = [100.0 + (0.5 if i % 3 == 0 else -0.5 if i % 3 == 1 else 0.0) for i in range(30)] + [103, 104, 103, 95]
    frame, params = evaluate("donchian_breakout", make_bars(close, spread=0.5))
    upper, lower = frame.values["upper"], frame.values["lower"]
    assert upper[30] == 101.0  # highest high of bars 10..29
    assert frame.side[30] == 1
    assert frame.side[31] == 0  # a further high close in the same breakout fires nothing
    assert frame.side[33] == -1
    assert lower[33] == 99.0
    assert list(frame.event_indices()) == [30, 33]
    reason = STRATEGIES["donchian_breakout"].events(make_bars(close, spread=0.5), frame, params)[0].reason
    assert "103.00" in reason
    assert "101.00" in reason


# --- multi_timeframe --------------------------------------------------------------------------------------------


def test_multi_timeframe_trend_comes_from_completed_days_only() -> None:
    bars = minute()
    frame, params = evaluate("multi_timeframe", bars)
    days = bars.open_time.astype("datetime64[D]")
    unique_days, first_bar = np.unique(days, return_index=True)
    day_close = bars.close[np.append(first_bar[1:], len(bars)) - 1]
    expected_close = np.full(len(bars), np.nan)
    expected_ma = np.full(len(bars), np.nan)
    period = int(params["trend_period"])
    for day in range(1, len(unique_days)):
        bars_of_day = slice(first_bar[day], first_bar[day + 1] if day + 1 < len(unique_days) else len(bars))
        expected_close[bars_of_day] = day_close[day - 1]
        if day >= period:
            expected_ma[bars_of_day] = day_close[day - period : day].mean()
    assert np.array_equal(frame.values["higher_close"], expected_close, equal_nan=True)
    assert np.allclose(frame.values["higher_ma"], expected_ma, equal_nan=True, rtol=0, atol=1e-9)
    events = frame.event_indices()
    trend_up = expected_close[events] > expected_ma[events]
    assert np.array_equal(frame.side[events] > 0, trend_up)


def test_multi_timeframe_ignores_the_unfinished_day() -> None:
    """Hourly bars: five rising days, then a day that collapses and bounces. The EMA(2)/EMA(4) cross up within it
    buys, because the trend is that of the completed days; with the five days falling it does not."""

    def hourly(day_step: float) -> StrategyBars:
        days = [100 + day_step * day + 0.1 * np.sin(np.arange(24)) for day in range(5)]
        last_day = 100 + day_step * 5 + np.concatenate((-np.arange(1, 11) * 2.0, -20 + np.arange(1, 15) * 1.0))
        return make_bars(np.concatenate((*days, last_day)), spread=0.2, span=timedelta(hours=1))

    given: dict[str, ParamValue] = {"trend_period": 3, "fast": 2, "slow": 4}
    rising, _ = evaluate("multi_timeframe", hourly(2.0), **given)
    buys = [index for index in rising.event_indices() if rising.side[index] > 0 and index >= 120]
    assert buys
    assert rising.values["close"][buys[0]] < rising.values["higher_ma"][buys[0]]  # today is far below the SMA
    falling, _ = evaluate("multi_timeframe", hourly(-2.0), **given)
    assert not (falling.side[120:] > 0).any()
