"""How far back indicator values reach (their Memory) and the history ComputeIndicators' extend_for_warmup reads:
the convergence bound of recursive smoothing against a direct simulation of the error it bounds, every indicator's
values on a range equal to the whole history's, SAR's history doubling until it settles, and the cumulative ones'
origin at the range's first bar."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from services.core.market_data import BarSeries
from services.core.parameters import ParamValue
from services.signal.analytics import (
    MAX_WARMUP_BARS,
    IndicatorRequest,
    compute,
    history_needed,
    paths_settled,
    prepare,
    with_warmup,
)
from services.signal.indicators.base import CONVERGED_WEIGHT, Bars, MemoryKind, bars_to_converge
from services.signal.indicators.catalogue import load_indicators
from tests.strategy_bars import daily_bars

INDICATORS = load_indicators()
NAMES = sorted(INDICATORS)


def residual_weight(poles: list[float], bars: int) -> float:
    """The largest weight a unit difference in any stage's starting state still has in the last stage's value after
    `bars` bars, by running the chain y = r·y' + (1-r)·x on the differences themselves (with every start off by 1 in
    the same direction, the worst case for these positive weights)."""
    state = [1.0] * len(poles)
    for _ in range(bars):
        feed = None
        for index, pole in enumerate(poles):
            state[index] = pole * state[index] + (0.0 if feed is None else (1.0 - pole) * feed)
            feed = state[index]
    return state[-1]


@pytest.mark.parametrize(
    "poles",
    [
        [1 - 2 / 21],  # EMA(20)
        [1 - 2 / 31] * 2,  # DEMA(30)
        [1 - 2 / 31] * 3,  # TEMA(30)
        [1 - 2 / 13, 1 - 2 / 27, 1 - 2 / 10],  # MACD(12, 26, 9)
        [13 / 14, 13 / 14],  # ADX(14)
        [1 - 2 / 201] * 3,  # TEMA(200)
    ],
)
def test_the_bound_covers_the_simulated_error_and_is_not_loose(poles: list[float]) -> None:
    bars = bars_to_converge(poles)
    assert residual_weight(poles, bars) < CONVERGED_WEIGHT
    # A bound, so not tight (poles of different sizes are bounded by the largest); but not far off either.
    actual = next(t for t in range(bars + 1) if residual_weight(poles, t) < CONVERGED_WEIGHT)
    assert actual <= bars <= 1.3 * actual + 10


def test_one_ema_needs_exactly_the_bars_where_its_seed_weighs_less_than_the_threshold() -> None:
    pole = 1 - 2 / 21
    assert bars_to_converge([pole]) == math.ceil(math.log(CONVERGED_WEIGHT) / math.log(pole))
    assert INDICATORS["ema"].memory(period=20).bars == 19 + bars_to_converge([pole])  # seed, then the recursion
    assert bars_to_converge([0.0]) == 0  # EMA(1) copies its input


def test_every_indicator_declares_its_memory() -> None:
    kinds = {name: INDICATORS[name].memory(**defaults(name)).kind for name in NAMES}
    assert {name for name, kind in kinds.items() if kind is MemoryKind.DECAYING} == {
        "adx", "atr", "dema", "ema", "keltner", "macd", "rsi", "tema",
    }  # fmt: skip
    assert {name for name, kind in kinds.items() if kind is MemoryKind.CUMULATIVE} == {"obv", "vwap"}
    assert kinds["sar"] is MemoryKind.PATH
    assert INDICATORS["vwap"].memory(period=20).kind is MemoryKind.WINDOW
    assert INDICATORS["sma"].memory(period=20).bars == 19


def defaults(name: str) -> dict[str, ParamValue]:
    return {param.name: param.default for param in INDICATORS[name].params}


def as_bars(series: BarSeries) -> Bars:
    return Bars(series.open, series.high, series.low, series.close, series.volume)


def bar_series() -> BarSeries:
    bars = daily_bars()
    times = [datetime(2015, 1, 1) + timedelta(days=index) for index in range(len(bars))]
    return BarSeries(times, bars.open, bars.high, bars.low, bars.close, bars.volume)


def reader(stored: BarSeries, start: int, reads: list[int]):  # type: ignore[no-untyped-def]
    """`earlier(count)` over the stored bars before index `start`, recording each count asked for."""

    async def earlier(count: int) -> BarSeries:
        reads.append(count)
        first = max(0, start - count)
        return _slice(stored, first, start)

    return earlier


def _slice(series: BarSeries, first: int, end: int) -> BarSeries:
    return BarSeries(
        series.times[first:end],
        *(getattr(series, name)[first:end] for name in ("open", "high", "low", "close", "volume")),
    )


async def test_values_on_a_range_equal_the_whole_historys() -> None:
    stored = bar_series()
    requests = [IndicatorRequest(name=name) for name in NAMES]
    prepared = prepare(requests)
    full = as_bars(stored)
    for start in (900, 1500):
        reads: list[int] = []
        whole, skip = await with_warmup(prepared, _slice(stored, start, len(stored)), reader(stored, start, reads))
        assert reads == [history_needed(prepared)] == [max(item.memory.bars for item in prepared)]
        for item in prepared:
            got = compute(item, as_bars(whole), skip=skip)
            expected = compute(item, full, skip=start)  # cumulative ones from the range's first bar (tested below)
            for series, reference in zip(got, expected, strict=True):
                scale = np.nanmax(np.abs(reference.values))
                np.testing.assert_allclose(
                    series.values, reference.values, rtol=1e-9, atol=1e-9 * scale, equal_nan=True, err_msg=series.name
                )


async def test_cumulative_indicators_start_at_the_ranges_first_bar_with_or_without_history() -> None:
    stored = bar_series()
    start = 1000
    prepared = prepare([IndicatorRequest(name="obv"), IndicatorRequest(name="vwap")])
    reads: list[int] = []
    whole, skip = await with_warmup(prepared, _slice(stored, start, len(stored)), reader(stored, start, reads))
    assert (reads, skip, len(whole)) == ([], 0, len(stored) - start)  # nothing to warm up: no history is read
    plain = [compute(item, as_bars(_slice(stored, start, len(stored)))) for item in prepared]
    extended = [compute(item, as_bars(stored), skip=start) for item in prepared]
    range_close, range_volume = stored.close[start:], stored.volume[start:]
    obv = np.cumsum(np.where(np.diff(range_close, prepend=range_close[0]) > 0, 1.0, 0.0) * range_volume) - np.cumsum(
        np.where(np.diff(range_close, prepend=range_close[0]) < 0, 1.0, 0.0) * range_volume
    )
    obv += range_volume[0]  # TA-Lib's OBV starts at the first bar's volume
    typical = (stored.high[start:] + stored.low[start:] + range_close) / 3.0
    vwap = np.cumsum(typical * range_volume) / np.cumsum(range_volume)
    for results in (plain, extended):  # the reference sums in another order: equal to rounding
        np.testing.assert_allclose(results[0][0].values, obv, rtol=1e-12, atol=1e-12 * np.abs(obv).max())
        np.testing.assert_allclose(results[1][0].values, vwap, rtol=1e-12)


async def test_the_sar_history_doubles_until_two_starts_agree() -> None:
    stored = bar_series()
    spec = {"acceleration": 0.005, "maximum": 0.05}  # a slow SAR: long trends between resets
    [prepared] = prepare([IndicatorRequest(name="sar", parameters=spec)])
    first_guess = prepared.memory.bars
    full = compute(prepared, as_bars(stored))[0].values
    # A range whose SAR from the first guess's start is not the whole history's.
    start = next(
        start
        for start in range(2 * first_guess, len(stored) - 10)
        if not np.array_equal(
            compute(prepared, as_bars(_slice(stored, start - first_guess, len(stored))), skip=first_guess)[0].values,
            full[start:],
            equal_nan=True,
        )
    )
    guess = _slice(stored, start - first_guess, len(stored))
    assert not paths_settled([prepared], as_bars(guess), first_guess)
    reads: list[int] = []
    whole, skip = await with_warmup([prepared], _slice(stored, start, len(stored)), reader(stored, start, reads))
    assert reads[0] == first_guess
    assert reads == [min(first_guess * 2**index, MAX_WARMUP_BARS) for index in range(len(reads))]
    assert len(reads) > 1
    np.testing.assert_array_equal(compute(prepared, as_bars(whole), skip=skip)[0].values, full[start:])
