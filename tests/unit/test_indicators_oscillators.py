"""Oscillator, volume and channel indicators: against TA-Lib or pandas, live form against batch, no look-ahead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
import talib
from talib._ta_lib import MA_Type  # the SMA smoothing (matype 0) the stubs type as an enum

from services.core.errors import InvalidArgument
from services.market.feeds.sim import SimulatedFeed
from services.market.records import Timeframe
from services.signal.indicators import channels, oscillators, volume
from services.signal.indicators.base import REGISTRY, Array, Bars

MODULES = (oscillators, volume, channels)
SYMBOLS = ("SIM-AAPL", "SIM-BTC-USDT", "SIM-EUR-USD", "SIM-005930")  # dollars, tens of thousands, ~1, flat ticks
OUTPUTS = {
    "rsi": ("value",),
    "stoch": ("slowk", "slowd"),
    "cci": ("value",),
    "willr": ("value",),
    "roc": ("value",),
    "mfi": ("value",),
    "obv": ("value",),
    "vwap": ("value",),
    "donchian": ("upper", "middle", "lower"),
    "ichimoku": ("tenkan", "kijun", "senkou_a", "senkou_b", "chikou"),
}
Params = dict[str, float]
CASES: list[tuple[str, Params]] = [
    ("rsi", {}),
    ("rsi", {"period": 2}),
    ("rsi", {"period": 50}),
    ("stoch", {}),
    ("stoch", {"fastk_period": 14, "slowk_period": 1, "slowd_period": 5}),
    ("stoch", {"fastk_period": 1, "slowk_period": 1, "slowd_period": 1}),
    ("cci", {}),
    ("cci", {"period": 2}),
    ("cci", {"period": 40}),
    ("willr", {}),
    ("willr", {"period": 2}),
    ("willr", {"period": 60}),
    ("roc", {}),
    ("roc", {"period": 1}),
    ("roc", {"period": 30}),
    ("mfi", {}),
    ("mfi", {"period": 2}),
    ("mfi", {"period": 30}),
    ("obv", {}),
    ("vwap", {}),
    ("vwap", {"period": 1}),
    ("vwap", {"period": 20}),
    ("vwap", {"period": 390}),
    ("donchian", {}),
    ("donchian", {"period": 2}),
    ("donchian", {"period": 55}),
    ("ichimoku", {}),
    ("ichimoku", {"tenkan": 7, "kijun": 22, "senkou_b": 44}),
    ("ichimoku", {"tenkan": 1, "kijun": 2, "senkou_b": 3}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{value:g}' for value in params.values()) or 'default'}" for name, params in CASES]


def make_bars(open: Array, high: Array, low: Array, close: Array, volume: Array) -> Bars:
    return Bars(*(np.asarray(column, dtype=np.float64) for column in (open, high, low, close, volume)))


@cache
def sim_bars(symbol: str) -> Bars:
    """~15,800 one-minute bars of a simulated symbol."""
    feed = SimulatedFeed(seed=7, clock=lambda: datetime(2026, 6, 1))
    rows = feed.bars(symbol, Timeframe.M1, datetime(2026, 5, 20), datetime(2026, 5, 31))
    columns = zip(*((bar.open, bar.high, bar.low, bar.close, bar.volume) for bar in rows), strict=True)
    return make_bars(*(np.array(column) for column in columns))


def _vwap(bars: Bars, period: float = 0) -> tuple[Array, ...]:
    typical = (pd.Series(bars.high) + pd.Series(bars.low) + pd.Series(bars.close)) / 3.0
    priced = typical.notna()  # a bar without a price contributes no volume either
    flow = typical * bars.volume
    vol = pd.Series(bars.volume).where(priced)
    traded = pd.Series((bars.volume != 0).astype(float)).where(priced)
    if period == 0:
        sums = [flow.cumsum(), vol.cumsum(), traded.cumsum()]
    else:
        sums = [series.rolling(int(period)).sum() for series in (flow, vol, traded)]
    value = (sums[0] / sums[1]).where(sums[2] > 0)
    return (value.to_numpy(dtype=np.float64),)


def _midpoint(bars: Bars, period: int) -> pd.Series:
    return (pd.Series(bars.high).rolling(period).max() + pd.Series(bars.low).rolling(period).min()) / 2


def _ichimoku(bars: Bars, tenkan: float = 9, kijun: float = 26, senkou_b: float = 52) -> tuple[Array, ...]:
    conversion, base = _midpoint(bars, int(tenkan)), _midpoint(bars, int(kijun))
    lines = (conversion, base, (conversion + base) / 2, _midpoint(bars, int(senkou_b)), pd.Series(bars.close))
    return tuple(line.to_numpy(dtype=np.float64) for line in lines)


def _donchian(bars: Bars, period: float = 20) -> tuple[Array, ...]:
    upper, lower = talib.MAX(bars.high, int(period)), talib.MIN(bars.low, int(period))
    return upper, (upper + lower) / 2, lower


def _stoch(bars: Bars, fastk_period: float = 5, slowk_period: float = 3, slowd_period: float = 3) -> tuple[Array, ...]:
    periods = dict(fastk_period=int(fastk_period), slowk_period=int(slowk_period), slowd_period=int(slowd_period))
    return tuple(
        talib.STOCH(bars.high, bars.low, bars.close, slowk_matype=MA_Type.SMA, slowd_matype=MA_Type.SMA, **periods)
    )


REFERENCES: dict[str, Callable[..., tuple[Array, ...]]] = {
    "rsi": lambda bars, period=14: (talib.RSI(bars.close, int(period)),),
    "stoch": _stoch,
    "cci": lambda bars, period=14: (talib.CCI(bars.high, bars.low, bars.close, int(period)),),
    "willr": lambda bars, period=14: (talib.WILLR(bars.high, bars.low, bars.close, int(period)),),
    "roc": lambda bars, period=10: (talib.ROC(bars.close, int(period)),),
    "mfi": lambda bars, period=14: (talib.MFI(bars.high, bars.low, bars.close, bars.volume, int(period)),),
    "obv": lambda bars: (talib.OBV(bars.close, bars.volume),),
    "vwap": _vwap,
    "donchian": _donchian,
    "ichimoku": _ichimoku,
}


def assert_matches(ours: tuple[Array, ...], reference: tuple[Array, ...]) -> None:
    """Same NaN positions; elsewhere within 1e-8, relative or of the output's scale."""
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.shape == theirs.shape
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs))
        finite = theirs[~np.isnan(theirs)]
        scale = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
        np.testing.assert_allclose(mine, theirs, rtol=1e-8, atol=1e-8 * scale)


def live(name: str, bars: Bars, params: Params) -> tuple[Array, ...]:
    """The incremental form fed bar by bar, as one array per output."""
    state = REGISTRY[name].incremental(**params)
    rows = zip(*(column.tolist() for column in (bars.open, bars.high, bars.low, bars.close, bars.volume)), strict=True)
    values = [state.update(*row) for row in rows]
    return tuple(np.array(column, dtype=np.float64) for column in zip(*values, strict=True)) if values else ()


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_batch_matches_reference(name: str, params: Params, symbol: str) -> None:
    bars = sim_bars(symbol)
    ours = REGISTRY[name].batch(bars, **params)
    assert all(output.shape == (len(bars),) and output.dtype == np.float64 for output in ours)
    assert_matches(ours, REFERENCES[name](bars, **params))


@pytest.mark.parametrize("symbol", ["SIM-AAPL", "SIM-BTC-USDT", "SIM-005930"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_incremental_is_bit_identical_to_batch(name: str, params: Params, symbol: str) -> None:
    bars = sim_bars(symbol)
    batch = REGISTRY[name].batch(bars, **params)
    for streamed, computed in zip(live(name, bars, params), batch, strict=True):
        np.testing.assert_array_equal(streamed, computed)


def edge_series() -> dict[str, Bars]:
    n = 120
    rng = np.random.default_rng(11)
    close = 100 + np.cumsum(rng.normal(size=n))
    high, low = close + rng.random(n), close - rng.random(n)
    flat = np.full(n, 42.0)
    steps = np.repeat(100 + rng.integers(0, 3, n // 10).astype(float), 10)
    sparse_volume = np.where(rng.random(n) < 0.5, 0.0, rng.integers(1, 9, n).astype(float))
    leading_nan = close.copy()
    leading_nan[:7] = np.nan
    return {
        "flat": make_bars(flat, flat, flat, flat, np.full(n, 10.0)),
        "flat-no-volume": make_bars(flat, flat, flat, flat, np.zeros(n)),
        # A flat high-low range with closes off it: %R and %K have no range to place the close in.
        "high-equals-low": make_bars(flat, flat, flat, flat + rng.normal(size=n), np.full(n, 5.0)),
        "steps": make_bars(steps, steps, steps, steps, sparse_volume),
        "tiny-prices": make_bars(close * 1e-7, high * 1e-7, low * 1e-7, close * 1e-7, sparse_volume),
        "close-outside-bar": make_bars(close, high, low, close + rng.normal(size=n) * 3, sparse_volume),
        "zero-closes": make_bars(close, high, low, np.where(np.arange(n) % 9 == 0, 0.0, close), sparse_volume),
        "leading-nan": make_bars(leading_nan, high, low, leading_nan, np.full(n, 3.0)),
        "short": make_bars(close[:6], high[:6], low[:6], close[:6], sparse_volume[:6]),
        "one-bar": make_bars(close[:1], high[:1], low[:1], close[:1], np.ones(1)),
        "empty": make_bars(*(np.empty(0) for _ in range(5))),
    }


EDGES = edge_series()


@pytest.mark.parametrize("edge", list(EDGES))
@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_edge_cases_match_reference_and_live_form(name: str, params: Params, edge: str) -> None:
    bars = EDGES[edge]
    ours = REGISTRY[name].batch(bars, **params)
    if len(bars):
        with np.errstate(divide="ignore", invalid="ignore"):  # the references divide by zero volume or price
            assert_matches(ours, REFERENCES[name](bars, **params))
        for streamed, computed in zip(live(name, bars, params), ours, strict=True):
            np.testing.assert_array_equal(streamed, computed)
    else:
        assert [output.shape for output in ours] == [(0,)] * len(OUTPUTS[name])


@pytest.mark.parametrize(
    ("name", "edge", "expected"),
    [
        ("rsi", "flat", 0.0),  # no gain and no loss
        ("willr", "high-equals-low", 0.0),
        ("stoch", "high-equals-low", 0.0),
        ("cci", "flat", 0.0),
        ("mfi", "flat", 0.0),  # flat typical price: no money flow
        ("mfi", "flat-no-volume", 0.0),
    ],
)
def test_flat_prices_follow_ta_lib(name: str, edge: str, expected: float) -> None:
    for output in REGISTRY[name].batch(EDGES[edge]):
        assert np.all(output[~np.isnan(output)] == expected)
        assert np.count_nonzero(~np.isnan(output)) > 0


def test_short_series_are_all_nan() -> None:
    bars = EDGES["short"]
    for name in ("rsi", "stoch", "cci", "willr", "roc", "mfi", "donchian"):
        assert all(np.isnan(output).all() for output in REGISTRY[name].batch(bars)), name
    assert np.isnan(REGISTRY["vwap"].batch(bars, period=20)[0]).all()


def test_vwap_is_undefined_without_volume() -> None:
    bars = EDGES["flat-no-volume"]
    assert np.isnan(REGISTRY["vwap"].batch(bars)[0]).all()
    assert np.isnan(REGISTRY["vwap"].batch(bars, period=5)[0]).all()


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_no_look_ahead(name: str, params: Params) -> None:
    bars = sim_bars("SIM-BTC-USDT")
    cut = 3000
    rng = np.random.default_rng(5)
    noise = rng.uniform(0.5, 1.5, len(bars) - cut - 1)
    columns = [column.copy() for column in (bars.open, bars.high, bars.low, bars.close, bars.volume)]
    for column in columns:
        column[cut + 1 :] *= noise
    before, after = REGISTRY[name].batch(bars, **params), REGISTRY[name].batch(make_bars(*columns), **params)
    for original, changed in zip(before, after, strict=True):
        np.testing.assert_array_equal(original[: cut + 1], changed[: cut + 1])


def test_registry_holds_the_ten_indicators_with_their_outputs() -> None:
    for name, outputs in OUTPUTS.items():
        definition = REGISTRY[name]
        assert definition.name == name
        assert tuple(output.name for output in definition.outputs) == outputs
        assert set(definition.inputs) <= {"open", "high", "low", "close", "volume"}
        assert definition.description
        assert all(param.description for param in definition.params)
    assert REGISTRY["rsi"].accepts_source
    assert not REGISTRY["rsi"].overlay
    assert REGISTRY["ichimoku"].overlay
    assert REGISTRY["vwap"].params[0].default == 0


def test_ichimoku_spans_are_displayed_shifted_by_kijun() -> None:
    offsets = {output.name: output.display_offset_bars for output in REGISTRY["ichimoku"].outputs}
    assert offsets == {"tenkan": 0, "kijun": 0, "senkou_a": 26, "senkou_b": 26, "chikou": -26}


@pytest.mark.parametrize(
    ("name", "given", "field"),
    [
        ("rsi", {"period": 1}, "parameters.period"),  # TA-Lib's RSI needs 2
        ("rsi", {"period": 100_001}, "parameters.period"),
        ("rsi", {"period": 14.5}, "parameters.period"),
        ("rsi", {"period": float("nan")}, "parameters.period"),
        ("rsi", {"length": 14}, "parameters.length"),
        ("stoch", {"fastk_period": 0}, "parameters.fastk_period"),
        ("stoch", {"slowd_period": 0}, "parameters.slowd_period"),
        ("cci", {"period": 1}, "parameters.period"),
        ("willr", {"period": 1}, "parameters.period"),
        ("roc", {"period": 0}, "parameters.period"),
        ("mfi", {"period": 1}, "parameters.period"),
        ("obv", {"period": 3}, "parameters.period"),
        ("vwap", {"period": -1}, "parameters.period"),
        ("donchian", {"period": 0}, "parameters.period"),
        ("ichimoku", {"kijun": 0}, "parameters.kijun"),
    ],
)
def test_parameters_are_validated(name: str, given: Params, field: str) -> None:
    definition = REGISTRY[name]
    with pytest.raises(InvalidArgument) as resolved:
        definition.resolve(given)
    assert resolved.value.reason == "PARAMETER_INVALID"
    assert [violation.field for violation in resolved.value.violations] == [field]
    # Both forms validate too, so a bad period never reaches a kernel.
    with pytest.raises(InvalidArgument):
        definition.batch(EDGES["short"], **given)
    with pytest.raises(InvalidArgument):
        definition.incremental(**given)


def test_defaults_resolve_to_integers() -> None:
    assert REGISTRY["stoch"].resolve({}) == {"fastk_period": 5, "slowk_period": 3, "slowd_period": 3}
    resolved = REGISTRY["ichimoku"].resolve({"tenkan": 10.0})
    assert resolved == {"tenkan": 10, "kijun": 26, "senkou_b": 52}
    assert all(isinstance(value, int) for value in resolved.values())
