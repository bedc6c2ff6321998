"""Moving averages, bands and trend indicators: against TA-Lib, live form against batch, no look-ahead, validation."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from functools import cache
from typing import Any

import numpy as np
import pytest
import talib

from services.core.errors import InvalidArgument
from services.market.feeds.sim import SimulatedFeed
from services.market.records import Timeframe
from services.signal.indicators import averages, bands, trend
from services.signal.indicators.base import REGISTRY, Array, Bars, IndicatorDef
from services.signal.indicators.kernels_trend import fused_multiply_add

MODULES = (averages, bands, trend)
SYMBOLS = ("SIM-AAPL", "SIM-BTC-USDT", "SIM-EUR-USD")  # hundreds, tens of thousands, ~1
FIELDS = ("open", "high", "low", "close", "volume")
OUTPUTS = {
    "sma": ("value",),
    "ema": ("value",),
    "wma": ("value",),
    "dema": ("value",),
    "tema": ("value",),
    "macd": ("macd", "signal", "histogram"),
    "bbands": ("upper", "middle", "lower"),
    "keltner": ("upper", "middle", "lower"),
    "atr": ("value",),
    "adx": ("adx", "plus_di", "minus_di"),
    "sar": ("value",),
}

Reference = Callable[[Bars, dict[str, Any]], tuple[Array, ...]]


def _keltner(bars: Bars, p: dict[str, Any]) -> tuple[Array, ...]:
    middle = talib.EMA(bars.close, p["period"])
    width = p["multiplier"] * talib.ATR(bars.high, bars.low, bars.close, p["period"])
    return middle + width, middle, middle - width


TALIB: dict[str, Reference] = {
    "sma": lambda b, p: (talib.SMA(b.close, p["period"]),),
    "ema": lambda b, p: (talib.EMA(b.close, p["period"]),),
    "wma": lambda b, p: (talib.WMA(b.close, p["period"]),),
    "dema": lambda b, p: (talib.DEMA(b.close, p["period"]),),
    "tema": lambda b, p: (talib.TEMA(b.close, p["period"]),),
    "macd": lambda b, p: tuple(talib.MACD(b.close, p["fast"], p["slow"], p["signal"])),
    "bbands": lambda b, p: tuple(talib.BBANDS(b.close, p["period"], p["k"], p["k"])),
    "keltner": _keltner,
    "atr": lambda b, p: (talib.ATR(b.high, b.low, b.close, p["period"]),),
    "adx": lambda b, p: (
        talib.ADX(b.high, b.low, b.close, p["period"]),
        talib.PLUS_DI(b.high, b.low, b.close, p["period"]),
        talib.MINUS_DI(b.high, b.low, b.close, p["period"]),
    ),
    "sar": lambda b, p: (talib.SAR(b.high, b.low, p["acceleration"], p["maximum"]),),
}

CASES: list[tuple[str, dict[str, float]]] = [
    ("sma", {"period": 1}),
    ("sma", {"period": 2}),
    ("sma", {"period": 30}),
    ("sma", {"period": 200}),
    ("ema", {"period": 1}),
    ("ema", {"period": 12}),
    ("ema", {"period": 200}),
    ("wma", {"period": 2}),
    ("wma", {"period": 30}),
    ("wma", {"period": 200}),  # rebuilds its sums every 1600 bars
    ("dema", {"period": 2}),
    ("dema", {"period": 30}),
    ("tema", {"period": 2}),
    ("tema", {"period": 30}),
    ("macd", {"fast": 12, "slow": 26, "signal": 9}),
    ("macd", {"fast": 2, "slow": 3, "signal": 1}),
    ("macd", {"fast": 26, "slow": 12, "signal": 9}),  # swapped, as TA-Lib does
    ("macd", {"fast": 5, "slow": 35, "signal": 5}),
    ("bbands", {"period": 20, "k": 2.0}),
    ("bbands", {"period": 2, "k": 1.0}),
    ("bbands", {"period": 200, "k": 2.5}),
    ("keltner", {"period": 20, "multiplier": 2.0}),
    ("keltner", {"period": 1, "multiplier": 1.5}),
    ("atr", {"period": 1}),
    ("atr", {"period": 14}),
    ("atr", {"period": 100}),
    ("adx", {"period": 2}),
    ("adx", {"period": 14}),
    ("adx", {"period": 50}),
    ("sar", {"acceleration": 0.02, "maximum": 0.2}),
    ("sar", {"acceleration": 0.01, "maximum": 0.1}),
    ("sar", {"acceleration": 0.3, "maximum": 0.2}),  # acceleration lowered to the maximum
]
CASE_IDS = [f"{name}-{'-'.join(f'{value:g}' for value in params.values())}" for name, params in CASES]


@cache
def _bars(symbol: str) -> Bars:
    """About 15,800 one-minute bars of the seeded simulator."""
    feed = SimulatedFeed(seed=7, clock=lambda: datetime(2026, 6, 1))
    bars = feed.bars(symbol, Timeframe.M1, datetime(2026, 5, 20), datetime(2026, 5, 31))
    return Bars(*(np.array([getattr(bar, field) for bar in bars], dtype=np.float64) for field in FIELDS))


def _live(definition: IndicatorDef, params: dict[str, float], bars: Bars) -> tuple[Array, ...]:
    state = definition.incremental(**params)
    rows = [state.update(*bar) for bar in zip(*(getattr(bars, field).tolist() for field in FIELDS), strict=True)]
    columns = [np.array([row[i] for row in rows], dtype=np.float64) for i in range(len(definition.outputs))]
    return tuple(columns)


def _assert_matches_talib(ours: tuple[Array, ...], theirs: tuple[Array, ...]) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(reference))
        scale = float(np.nanmax(np.abs(reference))) if not np.isnan(reference).all() else 1.0
        np.testing.assert_allclose(mine, reference, rtol=1e-8, atol=1e-8 * scale, equal_nan=True)


def _with(bars: Bars, **columns: Array) -> Bars:
    values = {field: getattr(bars, field) for field in FIELDS} | columns
    return Bars(*(values[field] for field in FIELDS))


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_batch_matches_talib(name: str, params: dict[str, float], symbol: str) -> None:
    bars = _bars(symbol)
    ours = REGISTRY[name].batch(bars, **params)
    assert all(len(values) == len(bars) for values in ours)
    _assert_matches_talib(ours, TALIB[name](bars, params))


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_batch_is_bit_identical_to_talib_0_8(name: str, params: dict[str, float], symbol: str) -> None:
    """The kernels reproduce TA-Lib 0.8's float operations (its fma() steps, BBANDS re-centering, WMA resync)."""
    if not getattr(talib, "__ta_version__", b"").startswith(b"0.8"):
        pytest.skip("bit-for-bit agreement is with the TA-Lib 0.8 C library; others agree within 1e-8")
    bars = _bars(symbol)
    for mine, reference in zip(REGISTRY[name].batch(bars, **params), TALIB[name](bars, params), strict=True):
        np.testing.assert_array_equal(mine, reference)


@pytest.mark.parametrize("symbol", ["SIM-BTC-USDT", "SIM-EUR-USD"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_live_form_is_bit_identical_to_batch(name: str, params: dict[str, float], symbol: str) -> None:
    definition, bars = REGISTRY[name], _bars(symbol)
    for live, batch in zip(_live(definition, params, bars), definition.batch(bars, **params), strict=True):
        np.testing.assert_array_equal(live, batch)  # NaN in the same places, every other value the same bits


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_no_look_ahead(name: str, params: dict[str, float]) -> None:
    definition, bars = REGISTRY[name], _bars("SIM-AAPL")
    before = definition.batch(bars, **params)
    rng = np.random.default_rng(11)
    for cut in (5, 700, len(bars) // 2):
        noise = {field: getattr(bars, field).copy() for field in FIELDS}
        for values in noise.values():
            values[cut + 1 :] *= 1.0 + 0.01 * rng.standard_normal(len(values) - cut - 1)
        after = definition.batch(_with(bars, **noise), **params)
        for old, new in zip(before, after, strict=True):
            np.testing.assert_array_equal(new[: cut + 1], old[: cut + 1])


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_series_shorter_than_the_warm_up_are_all_nan(name: str, params: dict[str, float]) -> None:
    definition, bars = REGISTRY[name], _bars("SIM-AAPL")
    first = min(int(np.flatnonzero(~np.isnan(values))[0]) for values in definition.batch(bars, **params))
    short = Bars(*(getattr(bars, field)[:first] for field in FIELDS))
    for values in (*definition.batch(short, **params), *_live(definition, params, short)):
        assert len(values) == first
        assert np.isnan(values).all()
    for values in TALIB[name](short, params) if first else ():
        assert np.isnan(values).all()


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_empty_input_gives_empty_outputs(name: str, params: dict[str, float]) -> None:
    empty = Bars(*(np.empty(0) for _ in FIELDS))
    outputs = REGISTRY[name].batch(empty, **params)
    assert [len(values) for values in outputs] == [0] * len(OUTPUTS[name])


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_constant_prices(name: str, params: dict[str, float]) -> None:
    flat = np.full(500, 101.25)
    bars = Bars(flat, flat + 0.5, flat - 0.5, flat, np.full(500, 1_000.0))
    ours = REGISTRY[name].batch(bars, **params)
    _assert_matches_talib(ours, TALIB[name](bars, params))
    for live, batch in zip(_live(REGISTRY[name], params, bars), ours, strict=True):
        np.testing.assert_array_equal(live, batch)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_a_nan_prefix_is_skipped_like_talib(name: str, params: dict[str, float]) -> None:
    """TA-Lib's wrapper starts the warm-up at the first bar where every input is a number; so do both forms."""
    bars = _bars("SIM-BTC-USDT")
    bars = Bars(*(getattr(bars, field)[:3000].copy() for field in FIELDS))
    bars.close[:7] = np.nan
    bars.high[:12] = np.nan
    ours = REGISTRY[name].batch(bars, **params)
    _assert_matches_talib(ours, TALIB[name](bars, params))
    for live, batch in zip(_live(REGISTRY[name], params, bars), ours, strict=True):
        np.testing.assert_array_equal(live, batch)


def test_strided_and_integer_inputs_are_accepted() -> None:
    bars = _bars("SIM-AAPL")
    strided = Bars(*(np.repeat(getattr(bars, field), 2)[::2] for field in FIELDS))
    for name, params in CASES:
        for got, expected in zip(
            REGISTRY[name].batch(strided, **params), REGISTRY[name].batch(bars, **params), strict=True
        ):
            np.testing.assert_array_equal(got, expected)
    whole = np.arange(1, 101)
    (value,) = REGISTRY["sma"].batch(Bars(whole, whole, whole, whole, whole), period=4)  # type: ignore[arg-type]
    np.testing.assert_array_equal(value, talib.SMA(whole.astype(np.float64), 4))


def test_registry_has_these_indicators_with_their_outputs() -> None:
    for name, outputs in OUTPUTS.items():
        definition = REGISTRY[name]
        assert definition.name == name
        assert tuple(output.name for output in definition.outputs) == outputs
        assert set(definition.inputs) <= set(FIELDS)
        assert "TA-Lib" in definition.description
        assert definition.accepts_source == (definition.inputs == ("close",))
        defaults = definition.resolve({})
        assert [len(values) for values in definition.batch(_bars("SIM-AAPL"), **defaults)] == [15_840] * len(outputs)


@pytest.mark.parametrize(
    ("name", "given", "field"),
    [
        ("sma", {"length": 5}, "parameters.length"),
        ("ema", {"period": 0}, "parameters.period"),
        ("wma", {"period": 100_001}, "parameters.period"),
        ("dema", {"period": 2.5}, "parameters.period"),
        ("tema", {"period": math.nan}, "parameters.period"),
        ("macd", {"signal": 0}, "parameters.signal"),
        ("macd", {"fast": 1}, "parameters.fast"),
        ("bbands", {"period": 1}, "parameters.period"),
        ("bbands", {"k": 0.0}, "parameters.k"),
        ("bbands", {"k": 101.0}, "parameters.k"),
        ("keltner", {"multiplier": -1.0}, "parameters.multiplier"),
        ("atr", {"period": 0}, "parameters.period"),
        ("adx", {"period": 1}, "parameters.period"),
        ("adx", {"period": 14.5}, "parameters.period"),
        ("sar", {"acceleration": 0.0}, "parameters.acceleration"),
        ("sar", {"maximum": 2.0}, "parameters.maximum"),
    ],
)
def test_bad_parameters_are_refused(name: str, given: dict[str, float], field: str) -> None:
    definition = REGISTRY[name]
    with pytest.raises(InvalidArgument) as refused:
        definition.resolve(given)
    assert refused.value.reason == "PARAMETER_INVALID"
    assert [violation.field for violation in refused.value.violations] == [field]
    with pytest.raises(InvalidArgument):  # direct calls of either form are checked alike
        definition.batch(_bars("SIM-AAPL"), **given)
    with pytest.raises(InvalidArgument):
        definition.incremental(**given)


def test_defaults_and_whole_numbers_resolve() -> None:
    assert REGISTRY["sma"].resolve({}) == {"period": 30}
    assert REGISTRY["macd"].resolve({"fast": 5.0}) == {"fast": 5, "slow": 26, "signal": 9}
    assert REGISTRY["bbands"].resolve({"k": 1.5}) == {"period": 20, "k": 1.5}
    assert REGISTRY["sar"].resolve({}) == {"acceleration": 0.02, "maximum": 0.2}


def test_fused_multiply_add_rounds_once() -> None:
    """The live forms' fma (Python 3.11 has no math.fma) against exact rational arithmetic."""
    rng = random.Random(5)
    for _ in range(20_000):
        a, b, c = (rng.uniform(-1, 1) * 10.0 ** rng.randint(-12, 12) for _ in range(3))
        assert fused_multiply_add(a, b, c) == float(Fraction(a) * Fraction(b) + Fraction(c))
    assert fused_multiply_add(0.1, 10.0, -1.0) == float(Fraction(0.1) * 10 - 1)  # 5.55e-17, not 0.0
    assert fused_multiply_add(math.inf, 2.0, 1.0) == math.inf
    assert math.isnan(fused_multiply_add(math.nan, 2.0, 1.0))
    assert math.isnan(fused_multiply_add(math.inf, 0.0, 1.0))
