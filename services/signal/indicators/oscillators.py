"""Momentum oscillators (RSI, Stochastic, CCI, Williams %R, Rate of Change), computed as TA-Lib computes them."""

from __future__ import annotations

from functools import partial

import numpy as np

from services.core.parameters import Param, integer
from services.signal.indicators.base import Array, Bars, Incremental, IndicatorDef, Memory, Output, register
from services.signal.indicators.kernels_oscillators import (
    NAN,
    TA_EPSILON,
    RollingExtremes,
    RunningMean,
    SkipLeadingNaN,
    njit,
    rolling_extremes,
    run_batch,
    running_mean,
    whole_params,
)

MAX_PERIOD = 100_000
HLC = ("high", "low", "close")


def _period(name: str, default: int, minimum: int, what: str) -> Param:
    return integer(name, what, default, minimum, MAX_PERIOD, unit="bars")


# Scalar formulas, written once: kernels call the jitted copies, the incremental forms the Python originals.


def _wilder(average: float, amount: float, weight: float, inverse: float) -> float:
    # TA-Lib multiplies by the reciprocal of the period rather than dividing by it.
    return (average * weight + amount) * inverse


def _rsi_value(gain: float, loss: float) -> float:
    total = loss + gain
    return (gain / total) * 100.0 if total > 0.0 else 0.0


def _fast_k(close: float, highest: float, lowest: float) -> float:
    span = highest - lowest
    if abs(span) <= TA_EPSILON * (abs(highest) + abs(lowest)):
        return 0.0  # a flat window (TA-Lib's scaled zero test)
    return ((close - lowest) / span) * 100.0


def _williams_r(close: float, highest: float, lowest: float) -> float:
    span = highest - lowest
    if abs(span) <= TA_EPSILON * (abs(highest) + abs(lowest)):
        return 0.0
    value = ((highest - close) / span) * -100.0
    # TA-Lib clamps: only a close outside its own bar's range can leave [-100, 0].
    if value > 0.0:
        return 0.0
    if value < -100.0:
        return -100.0
    return value


def _rate_of_change(close: float, previous: float) -> float:
    return ((close / previous) - 1.0) * 100.0 if previous != 0.0 else 0.0


_wilder_jit = njit(_wilder)
_rsi_value_jit = njit(_rsi_value)
_fast_k_jit = njit(_fast_k)
_williams_r_jit = njit(_williams_r)
_rate_of_change_jit = njit(_rate_of_change)


@njit
def _cci_value(typical: Array, last: float, period: int) -> float:
    """CCI of a full window: TA-Lib sums its circular buffer in storage order (not oldest first)."""
    average = 0.0
    for j in range(period):
        average += typical[j]
    average /= period
    deviation = 0.0
    for j in range(period):
        deviation += abs(typical[j] - average)
    deviation /= period
    distance = last - average
    scale = TA_EPSILON * abs(average)
    if abs(distance) <= scale or abs(deviation) <= scale:
        return 0.0
    return distance / (0.015 * deviation)


@njit
def _rsi_kernel(close: Array, period: int) -> tuple[Array]:
    n = close.shape[0]
    out = np.full(n, np.nan)
    inverse = 1.0 / period
    weight = float(period - 1)
    gain = loss = 0.0
    for i in range(1, n):
        change = close[i] - close[i - 1]
        up = change if change > 0.0 else 0.0
        if i < period:
            gain += up
            loss += up - change
            continue
        if i == period:
            gain = (gain + up) * inverse
            loss = (loss + (up - change)) * inverse
        else:
            gain = _wilder_jit(gain, up, weight, inverse)
            loss = _wilder_jit(loss, up - change, weight, inverse)
        out[i] = _rsi_value_jit(gain, loss)
    return (out,)


class _Rsi:
    __slots__ = ("_count", "_gain", "_inverse", "_loss", "_period", "_previous", "_weight")

    def __init__(self, period: int) -> None:
        self._period = period
        self._inverse = 1.0 / period
        self._weight = float(period - 1)
        self._gain = self._loss = 0.0
        self._previous = NAN
        self._count = 0

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        count = self._count
        self._count = count + 1
        change = close - self._previous
        self._previous = close
        if count == 0:
            return (NAN,)
        up = change if change > 0.0 else 0.0
        if count < self._period:
            self._gain += up
            self._loss += up - change
            return (NAN,)
        if count == self._period:
            self._gain = (self._gain + up) * self._inverse
            self._loss = (self._loss + (up - change)) * self._inverse
        else:
            self._gain = _wilder(self._gain, up, self._weight, self._inverse)
            self._loss = _wilder(self._loss, up - change, self._weight, self._inverse)
        return (_rsi_value(self._gain, self._loss),)


@njit
def _fast_k_series(close: Array, upper: Array, lower: Array, start: int) -> Array:
    """Fast %K from bar `start` on, written over `upper` (each bar reads it before writing)."""
    for i in range(start, close.shape[0]):
        upper[i] = _fast_k_jit(close[i], upper[i], lower[i])
    return upper


def _stoch_kernel(
    high: Array, low: Array, close: Array, *, fastk_period: int, slowk_period: int, slowd_period: int
) -> tuple[Array, Array]:
    # Two full-length buffers serve all four series: at 1M bars memory traffic, not arithmetic, sets the pace.
    upper, lower = rolling_extremes(high, low, fastk_period)
    fast_k = _fast_k_series(close, upper, lower, fastk_period - 1)
    slow_k = running_mean(fast_k, fastk_period - 1, slowk_period, lower)
    slow_d = running_mean(slow_k, fastk_period + slowk_period - 2, slowd_period, fast_k)
    # TA-Lib starts both lines where %D starts.
    slow_k[: fastk_period + slowk_period + slowd_period - 3] = np.nan
    return slow_k, slow_d


class _Stoch:
    __slots__ = ("_slow_d", "_slow_k", "_window")

    def __init__(self, fastk_period: int, slowk_period: int, slowd_period: int) -> None:
        self._window = RollingExtremes(fastk_period)
        self._slow_k = RunningMean(slowk_period)
        self._slow_d = RunningMean(slowd_period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        extremes = self._window.update(high, low)
        if extremes is None:
            return NAN, NAN
        slow_k = self._slow_k.update(_fast_k(close, *extremes))
        if slow_k is None:
            return NAN, NAN
        slow_d = self._slow_d.update(slow_k)
        if slow_d is None:
            return NAN, NAN
        return slow_k, slow_d


@njit
def _cci_kernel(high: Array, low: Array, close: Array, period: int) -> tuple[Array]:
    n = close.shape[0]
    out = np.full(n, np.nan)
    typical = np.zeros(period)
    slot = 0
    for i in range(n):
        last = (high[i] + low[i] + close[i]) / 3
        typical[slot] = last
        if i >= period - 1:
            out[i] = _cci_value(typical, last, period)
        slot = slot + 1 if slot + 1 < period else 0
    return (out,)


class _Cci:
    __slots__ = ("_count", "_period", "_slot", "_typical")

    def __init__(self, period: int) -> None:
        self._period = period
        self._typical = np.zeros(period)
        self._slot = 0
        self._count = 0

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        last = (high + low + close) / 3
        self._typical[self._slot] = last
        self._slot = self._slot + 1 if self._slot + 1 < self._period else 0
        if self._count < self._period - 1:
            self._count += 1
            return (NAN,)
        # The window sums run in the jitted helper the batch kernel uses, on the same circular buffer.
        return (float(_cci_value(self._typical, last, self._period)),)


@njit
def _williams_r_series(close: Array, upper: Array, lower: Array, start: int) -> Array:
    """%R from bar `start` on, written over `upper` (each bar reads it before writing)."""
    for i in range(start, close.shape[0]):
        upper[i] = _williams_r_jit(close[i], upper[i], lower[i])
    return upper


def _willr_kernel(high: Array, low: Array, close: Array, period: int) -> tuple[Array]:
    upper, lower = rolling_extremes(high, low, period)
    return (_williams_r_series(close, upper, lower, period - 1),)


class _Willr:
    __slots__ = ("_window",)

    def __init__(self, period: int) -> None:
        self._window = RollingExtremes(period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        extremes = self._window.update(high, low)
        return (NAN,) if extremes is None else (_williams_r(close, *extremes),)


@njit
def _roc_kernel(close: Array, period: int) -> tuple[Array]:
    out = np.full(close.shape[0], np.nan)
    for i in range(period, close.shape[0]):
        out[i] = _rate_of_change_jit(close[i], close[i - period])
    return (out,)


class _Roc:
    __slots__ = ("_count", "_period", "_ring", "_slot")

    def __init__(self, period: int) -> None:
        self._period = period
        self._ring = [NAN] * period  # the last `period` closes
        self._slot = 0
        self._count = 0

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        previous = self._ring[self._slot]
        self._ring[self._slot] = close
        self._slot = self._slot + 1 if self._slot + 1 < self._period else 0
        if self._count < self._period:
            self._count += 1
            return (NAN,)
        return (_rate_of_change(close, previous),)


def rsi_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_rsi_kernel, bars, RSI.inputs, *whole_params(RSI, params))


def rsi_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Rsi(*whole_params(RSI, params)), RSI.inputs, 1)


def stoch_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    fastk, slowk, slowd = whole_params(STOCH, params)
    kernel = partial(_stoch_kernel, fastk_period=fastk, slowk_period=slowk, slowd_period=slowd)
    return run_batch(kernel, bars, STOCH.inputs)


def stoch_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Stoch(*whole_params(STOCH, params)), STOCH.inputs, 2)


def cci_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_cci_kernel, bars, CCI.inputs, *whole_params(CCI, params))


def cci_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Cci(*whole_params(CCI, params)), CCI.inputs, 1)


def willr_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_willr_kernel, bars, WILLR.inputs, *whole_params(WILLR, params))


def willr_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Willr(*whole_params(WILLR, params)), WILLR.inputs, 1)


def roc_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_roc_kernel, bars, ROC.inputs, *whole_params(ROC, params))


def roc_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Roc(*whole_params(ROC, params)), ROC.inputs, 1)


def _rsi_memory(period: int) -> Memory:
    """Wilder's averages of gains and losses (side by side, listed as a chain: a larger bound than their sum),
    seeded by the first `period` changes."""
    keep = 1.0 - 1.0 / period
    return Memory.decaying(period, [keep, keep])


RSI = register(
    IndicatorDef(
        name="rsi",
        display_name="Relative Strength Index",
        description="Wilder's RSI, 0–100: average gain over average gain plus loss, Wilder-smoothed after a "
        "simple-average seed, as TA-Lib RSI (no unstable period); 0 when nothing moved.",
        params=(_period("period", 14, 2, "Smoothing period in bars (TA-Lib RSI timeperiod)."),),
        outputs=(Output(name="value", description="RSI, 0–100."),),
        inputs=("close",),
        accepts_source=True,
        overlay=False,
        batch=rsi_batch,
        incremental=rsi_incremental,
        memory=lambda **params: _rsi_memory(int(params["period"])),
    )
)

STOCH = register(
    IndicatorDef(
        name="stoch",
        display_name="Stochastic",
        description="Slow stochastic as TA-Lib STOCH with simple moving averages (matype 0): fast %K = where "
        "the close sits in the fastk_period high-low range (0 for a flat range), %K its SMA, %D the SMA of %K.",
        params=(
            _period("fastk_period", 5, 1, "Bars in the high-low range of fast %K (TA-Lib STOCH fastk_period)."),
            _period("slowk_period", 3, 1, "SMA period smoothing fast %K into %K (TA-Lib STOCH slowk_period)."),
            _period("slowd_period", 3, 1, "SMA period smoothing %K into %D (TA-Lib STOCH slowd_period)."),
        ),
        outputs=(
            Output(name="slowk", description="%K, 0–100."),
            Output(name="slowd", description="%D, the SMA of %K."),
        ),
        inputs=HLC,
        accepts_source=False,
        overlay=False,
        batch=stoch_batch,
        incremental=stoch_incremental,
        memory=lambda **params: Memory.window(int(sum(params.values())) - 3),
    )
)

CCI = register(
    IndicatorDef(
        name="cci",
        display_name="Commodity Channel Index",
        description="Lambert's CCI as TA-Lib CCI: (typical price − its mean) / (0.015 × mean absolute "
        "deviation) over the period, typical price (high+low+close)/3; 0 for a flat window.",
        params=(_period("period", 14, 2, "Window in bars (TA-Lib CCI timeperiod)."),),
        outputs=(Output(name="value", description="CCI, unbounded; ±100 are the customary levels."),),
        inputs=HLC,
        accepts_source=False,
        overlay=False,
        batch=cci_batch,
        incremental=cci_incremental,
        memory=lambda **params: Memory.window(int(params["period"]) - 1),
    )
)

WILLR = register(
    IndicatorDef(
        name="willr",
        display_name="Williams %R",
        description="Williams %R as TA-Lib WILLR: −100 × (highest high − close) / (highest high − lowest "
        "low) over the period, clamped to [−100, 0]; 0 when the range is flat.",
        params=(_period("period", 14, 2, "Window in bars (TA-Lib WILLR timeperiod)."),),
        outputs=(Output(name="value", description="%R, −100 (at the low) to 0 (at the high)."),),
        inputs=HLC,
        accepts_source=False,
        overlay=False,
        batch=willr_batch,
        incremental=willr_incremental,
        memory=lambda **params: Memory.window(int(params["period"]) - 1),
    )
)

ROC = register(
    IndicatorDef(
        name="roc",
        display_name="Rate of Change",
        description="Percent change over the period as TA-Lib ROC: (close / close n bars ago − 1) × 100; 0 "
        "when the earlier close is 0.",
        params=(_period("period", 10, 1, "Bars back to compare with (TA-Lib ROC timeperiod)."),),
        outputs=(Output(name="value", description="Change in percent."),),
        inputs=("close",),
        accepts_source=True,
        overlay=False,
        batch=roc_batch,
        incremental=roc_incremental,
        memory=lambda **params: Memory.window(int(params["period"])),
    )
)
