"""Volatility indicators (Bollinger bands, Keltner channel, average true range) reproducing TA-Lib's arithmetic."""

from __future__ import annotations

from collections import deque
from math import isnan, sqrt

import numpy as np

from services.core.parameters import Param, integer, number
from services.signal.indicators.averages import EMA, ExponentialMovingAverage, ema_pole
from services.signal.indicators.base import Array, Bars, IndicatorDef, Memory, Output, register
from services.signal.indicators.kernels_trend import (
    NAN,
    as_series,
    atr_kernel,
    data_start,
    jit,
    outputs,
    resolved,
    shared,
    true_range,
    wilder_step,
)

_NONE = (NAN,)
_NONE3 = (NAN, NAN, NAN)


# TA-Lib 0.8 computes the deviation from sums of (x - center), re-centering on the window mean every 32*period
# bars or when cancellation threatens (the thresholds below); the middle band keeps the plain running sum.
RECENTER_PERIODS = 32
DRIFT = 1e-6  # re-center when the variance falls below this share of the mean squared offset from the center
SPIKE = 1e6  # ... or when the value leaving the window is this far out compared to the rest
FLAT = 1e-12  # after re-centering, a variance below this share of the mean square counts as zero


@shared
def root(variance: float) -> float:
    """sqrt as TA-Lib applies it: exact zero stays +0.0, a negative (rounding) variance gives NaN like C's sqrt."""
    if variance == 0.0:
        return 0.0
    return sqrt(variance) if variance > 0.0 else NAN


@shared
def deviation_step(
    value: float, oldest: float, sums: tuple[float, float, float], inverse: float
) -> tuple[float, float, float, bool]:
    """Adds `value` to the (center, offsets, squares) sums, measures the window's variance, drops `oldest`:
    (variance, offsets, squares, still stable)."""
    center, offsets, squares = sums
    offset = value - center
    offsets += offset
    mean_offset = inverse * offsets
    squares += offset * offset
    variance = inverse * squares - mean_offset * mean_offset
    leaving = oldest - center
    leaving_square = leaving * leaving
    squares -= leaving_square
    stable = not (inverse * squares * DRIFT > variance) and not (leaving_square > squares * SPIKE)
    return variance, offsets - leaving, squares, stable


@shared
def recentered(window: Array | deque[float], inverse: float) -> tuple[float, float, float, float]:
    """Re-center on the window's mean and rebuild the sums: (center, variance, offsets, squares), the sums
    already without the window's oldest value, the variance zeroed where cancellation leaves only noise."""
    total = 0.0
    for value in window:
        total += value
    center = total * inverse
    offsets = squares = 0.0
    for value in window:
        offset = value - center
        offsets += offset
        squares += offset * offset
    mean_square = inverse * squares
    mean_offset = inverse * offsets
    variance = mean_square - mean_offset * mean_offset
    if mean_square * FLAT > variance:
        variance = 0.0
    leaving = window[0] - center
    return center, variance, offsets - leaving, squares - leaving * leaving


@jit
def bbands_kernel(values: Array, period: int, k: float, out: tuple[Array, Array, Array]) -> None:
    """TA_BBANDS (TA-Lib 0.8) into (upper, middle, lower): SMA middle band, population deviation."""
    upper, middle, lower = out
    count = len(values)
    lookback = period - 1
    upper[: min(lookback, count)] = np.nan
    middle[: min(lookback, count)] = np.nan
    lower[: min(lookback, count)] = np.nan
    if count <= lookback:
        return
    inverse = 1.0 / period
    center = values[0]
    total = offsets = squares = 0.0
    for i in range(lookback):
        total += values[i]
        offset = values[i] - center
        offsets += offset
        squares += offset * offset
    countdown = RECENTER_PERIODS * period
    for i in range(lookback, count):
        value, oldest = values[i], values[i - lookback]
        total += value
        mean = total / period
        total -= oldest
        variance, offsets, squares, stable = deviation_step(value, oldest, (center, offsets, squares), inverse)
        if stable:
            countdown -= 1
        if not stable or countdown == 0:
            countdown = RECENTER_PERIODS * period
            center, variance, offsets, squares = recentered(values[i - lookback : i + 1], inverse)
        width = root(variance) * k
        upper[i], middle[i], lower[i] = mean + width, mean, mean - width


def bollinger_bands(bars: Bars, **params: float) -> tuple[Array, ...]:
    given = resolved(BBANDS, params)
    close = as_series(bars.close)
    start = data_start(close)
    upper, middle, lower = outputs(3, len(close), start)
    bbands_kernel(close[start:], int(given["period"]), given["k"], (upper[start:], middle[start:], lower[start:]))
    return upper, middle, lower


class BollingerBands:
    """Live Bollinger bands: a ring of the last `period` closes and TA-Lib's running sums, updated alike."""

    __slots__ = ("_center", "_countdown", "_inverse", "_k", "_offsets", "_period", "_squares", "_total", "_window")

    def __init__(self, **params: float) -> None:
        given = resolved(BBANDS, params)
        self._period, self._k = int(given["period"]), given["k"]
        self._inverse = 1.0 / self._period
        self._total = self._offsets = self._squares = self._center = 0.0
        self._countdown = RECENTER_PERIODS * self._period
        self._window: deque[float] = deque(maxlen=self._period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        window, period = self._window, self._period
        if len(window) < period - 1:
            return self._warm_up(close)
        window.append(close)
        oldest = window[0]
        total = self._total + close
        mean = total / period
        self._total = total - oldest
        variance, self._offsets, self._squares, stable = deviation_step(
            close, oldest, (self._center, self._offsets, self._squares), self._inverse
        )
        if stable:
            self._countdown -= 1
        if not stable or self._countdown == 0:
            self._countdown = RECENTER_PERIODS * period
            self._center, variance, self._offsets, self._squares = recentered(window, self._inverse)
        width = root(variance) * self._k
        return (mean + width, mean, mean - width)

    def _warm_up(self, close: float) -> tuple[float, ...]:
        if not self._window:
            if isnan(close):  # NaN prefix: not started yet
                return _NONE3
            self._center = close  # TA-Lib centers the first window on its first value
        self._total += close
        offset = close - self._center
        self._offsets += offset
        self._squares += offset * offset
        self._window.append(close)
        return _NONE3


def average_true_range(bars: Bars, **params: float) -> tuple[Array, ...]:
    period = int(resolved(ATR, params)["period"])
    high, low, close = as_series(bars.high), as_series(bars.low), as_series(bars.close)
    start = data_start(high, low, close)
    (out,) = outputs(1, len(close), start)
    atr_kernel(high[start:], low[start:], close[start:], period, out[start:])
    return (out,)


class AverageTrueRange:
    """Live ATR: the mean of the first `period` true ranges, then TA-Lib 0.8's Wilder step."""

    __slots__ = ("_average", "_count", "_keep", "_period", "_previous_close")

    def __init__(self, **params: float) -> None:
        self._period = int(resolved(ATR, params)["period"])
        self._keep = (self._period - 1) / self._period
        self._count = 0
        self._average = 0.0  # the seed's running total until `period` true ranges are in
        self._previous_close = NAN

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        if self._count > self._period > 1:
            value = true_range(high, low, self._previous_close)
            self._previous_close = close
            self._average = average = wilder_step(self._average, value, self._keep)
            return (average,)
        return self._warm_up(high, low, close)

    def _warm_up(self, high: float, low: float, close: float) -> tuple[float, ...]:
        period = self._period
        if self._count == 0:
            if not (isnan(high) or isnan(low) or isnan(close)):  # else a NaN prefix: not started yet
                self._count, self._previous_close = 1, close
            return _NONE
        value = true_range(high, low, self._previous_close)
        self._previous_close = close
        if period == 1:  # TA-Lib returns the plain true range
            return (value,)
        self._average += value
        self._count += 1
        if self._count <= period:
            return _NONE
        self._average = self._average / period
        return (self._average,)


def keltner_channel(bars: Bars, **params: float) -> tuple[Array, ...]:
    given = resolved(KELTNER, params)
    period = int(given["period"])
    (middle,) = EMA.batch(bars, period=period)
    (atr,) = average_true_range(bars, period=period)
    width = given["multiplier"] * atr
    return middle + width, middle, middle - width


class KeltnerChannel:
    """Live Keltner channel: a live EMA and a live ATR, combined as the batch form combines their arrays."""

    __slots__ = ("_atr", "_average", "_multiplier")

    def __init__(self, **params: float) -> None:
        given = resolved(KELTNER, params)
        self._average = ExponentialMovingAverage(period=given["period"])
        self._atr = AverageTrueRange(period=given["period"])
        self._multiplier = given["multiplier"]

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        (middle,) = self._average.update(open, high, low, close, volume)
        (atr,) = self._atr.update(open, high, low, close, volume)
        width = self._multiplier * atr
        return (middle + width, middle, middle - width)


def _atr_memory(period: int) -> Memory:
    """Wilder's smoothing keeps 1 - 1/period of the average; period 1 is the plain true range (two bars)."""
    if period == 1:
        return Memory.window(1)
    return Memory.decaying(period, [1.0 - 1.0 / period])


def _keltner_memory(period: int) -> Memory:
    """The EMA and the ATR side by side (listed as a chain: a larger bound than their sum)."""
    return Memory.decaying(period, [ema_pole(period), 1.0 - 1.0 / period])


def _period(default: int, minimum: int, description: str) -> Param:
    return integer("period", description, default, minimum, 100_000, unit="bars")


def _width(name: str, description: str) -> Param:
    return number(name, description, 2.0, 0.01, 100.0, step=0.1)


def _channel(what: str) -> tuple[Output, ...]:
    return (
        Output(name="upper", description=f"middle plus {what}"),
        Output(name="middle", description="the middle line"),
        Output(name="lower", description=f"middle minus {what}"),
    )


BBANDS = register(
    IndicatorDef(
        name="bbands",
        display_name="Bollinger Bands",
        description="SMA of `period` values plus and minus k population standard deviations; matches TA-Lib's "
        "BBANDS (SMA middle, nbdevup = nbdevdn = k).",
        params=(_period(20, 2, "bars in the average and deviation"), _width("k", "standard deviations")),
        outputs=_channel("k standard deviations"),
        inputs=("close",),
        accepts_source=True,
        overlay=True,
        batch=bollinger_bands,
        incremental=BollingerBands,
        memory=lambda **params: Memory.window(int(params["period"]) - 1),
    )
)
ATR = register(
    IndicatorDef(
        name="atr",
        display_name="Average True Range",
        description="Wilder's average of the true range (first value: mean of the first `period` true ranges); "
        "matches TA-Lib's ATR.",
        params=(_period(14, 1, "bars smoothed"),),
        outputs=(Output(name="value", description="average true range, in price units"),),
        inputs=("high", "low", "close"),
        accepts_source=False,
        overlay=False,
        batch=average_true_range,
        incremental=AverageTrueRange,
        memory=lambda **params: _atr_memory(int(params["period"])),
    )
)
KELTNER = register(
    IndicatorDef(
        name="keltner",
        display_name="Keltner Channel",
        description="EMA of the close plus and minus `multiplier` ATRs over the same period; composed of TA-Lib's "
        "EMA and ATR (the middle line starts one bar before the bands, as the EMA does).",
        params=(_period(20, 1, "bars in the EMA and the ATR"), _width("multiplier", "ATRs from the middle")),
        outputs=_channel("multiplier ATRs"),
        inputs=("high", "low", "close"),
        accepts_source=False,
        overlay=True,
        batch=keltner_channel,
        incremental=KeltnerChannel,
        memory=lambda **params: _keltner_memory(int(params["period"])),
    )
)
