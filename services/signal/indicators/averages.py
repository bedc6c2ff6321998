"""Moving averages (SMA, EMA, WMA, DEMA, TEMA) reproducing TA-Lib's arithmetic, in batch and live form."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from math import isnan

import numpy as np

from services.core.parameters import integer
from services.signal.indicators.base import Array, Bars, Incremental, IndicatorDef, Memory, Output, register
from services.signal.indicators.kernels_trend import NAN, as_series, data_start, ema_step, jit, outputs, resolved

_NONE = (NAN,)


@jit
def sma_kernel(values: Array, period: int, out: Array) -> None:
    """TA_SMA's running sum: add the newest value, read the total, then subtract the oldest."""
    count = len(values)
    out[: min(period - 1, count)] = np.nan
    total = 0.0
    for i in range(min(period - 1, count)):
        total += values[i]
    for i in range(period - 1, count):
        total += values[i]
        current = total
        total -= values[i - period + 1]
        out[i] = current / period


@jit
def ema_kernel(values: Array, period: int, out: Array) -> None:
    """TA_EMA: seeded with the mean of the first `period` values (summed in order), then TA-Lib 0.8's
    fma(x - prev, k, prev) with k = 2/(period+1)."""
    count = len(values)
    out[: min(period - 1, count)] = np.nan
    if count < period:
        return
    k = 2.0 / (period + 1)
    total = 0.0
    for i in range(period):
        total += values[i]
    average = total / period
    out[period - 1] = average
    for i in range(period, count):
        average = ema_step(average, values[i], k)
        out[i] = average


# TA-Lib 0.8's WMA rebuilds its running sums from the window every 8*period bars, so rounding cannot drift.
RESYNC_PERIODS = 8


@jit
def wma_kernel(values: Array, period: int, out: Array) -> None:
    """TA_WMA's running sums: `weighted` gains period*x and loses the window's plain sum each bar."""
    count = len(values)
    if period == 1:  # TA-Lib copies the input
        out[:] = values
        return
    lookback = period - 1
    out[: min(lookback, count)] = np.nan
    divider = (period + 1.0) * period * 0.5
    plain = weighted = trailing = 0.0
    for i in range(min(lookback, count)):
        plain += values[i]
        weighted += (i + 1) * values[i]
    countdown = RESYNC_PERIODS * period
    for i in range(lookback, count):
        countdown -= 1
        if countdown == 0:
            countdown = RESYNC_PERIODS * period
            plain = weighted = 0.0
            for weight in range(1, period + 1):
                plain += values[i - period + weight]
                weighted += weight * values[i - period + weight]
        else:
            plain += values[i]
            plain -= trailing
            weighted += values[i] * period
        trailing = values[i - lookback]
        out[i] = weighted / divider
        weighted -= plain


@jit
def dema_kernel(values: Array, period: int, out: Array) -> None:
    """TA_DEMA: EMA1 and EMA(EMA1) in lockstep, each seeded by the mean of its first `period` inputs."""
    count = len(values)
    lookback = 2 * (period - 1)
    out[: min(lookback, count)] = np.nan
    if count <= lookback:
        return
    k = 2.0 / (period + 1)
    total = 0.0
    for i in range(period):
        total += values[i]
    first = total / period
    total = 0.0
    total += first  # 0.0 + x, as TA-Lib (differs from x for -0.0)
    for i in range(period, lookback + 1):
        first = ema_step(first, values[i], k)
        total += first
    second = total / period
    out[lookback] = 2.0 * first - second
    for i in range(lookback + 1, count):
        first = ema_step(first, values[i], k)
        second = ema_step(second, first, k)
        out[i] = 2.0 * first - second


@jit
def tema_kernel(values: Array, period: int, out: Array) -> None:
    """TA_TEMA: three chained EMAs in lockstep; output EMA3 + (3*EMA1 - 3*EMA2), TA-Lib's grouping."""
    count = len(values)
    if period == 1:  # TA-Lib copies the input
        out[:] = values
        return
    lookback = 3 * (period - 1)
    out[: min(lookback, count)] = np.nan
    if count <= lookback:
        return
    k = 2.0 / (period + 1)
    total = 0.0
    for i in range(period):
        total += values[i]
    first = total / period
    total = 0.0
    total += first
    for i in range(period, 2 * period - 1):
        first = ema_step(first, values[i], k)
        total += first
    second = total / period
    total = 0.0
    total += second
    for i in range(2 * period - 1, lookback + 1):
        first = ema_step(first, values[i], k)
        second = ema_step(second, first, k)
        total += second
    third = total / period
    out[lookback] = third + (3.0 * first - 3.0 * second)
    for i in range(lookback + 1, count):
        first = ema_step(first, values[i], k)
        second = ema_step(second, first, k)
        third = ema_step(third, second, k)
        out[i] = third + (3.0 * first - 3.0 * second)


def ema_pole(period: int) -> float:
    """The share of its previous value an EMA keeps each bar: 1 - 2/(period+1)."""
    return 1.0 - 2.0 / (period + 1)


class SimpleMovingAverage:
    """Live SMA: a ring of the last `period` closes and TA-Lib's running total."""

    __slots__ = ("_period", "_ready", "_total", "_window")

    def __init__(self, **params: float) -> None:
        self._period = int(resolved(SMA, params)["period"])
        self._ready = max(self._period - 1, 1)  # closes held before the sliding update runs
        self._total = 0.0
        self._window: deque[float] = deque(maxlen=self._period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        window = self._window
        if len(window) < self._ready:
            if not window and isnan(close):  # NaN prefix: not started yet
                return _NONE
            if self._period > 1:
                self._total += close
                window.append(close)
                return _NONE
        total = self._total + close
        window.append(close)  # now the oldest entry is the one leaving the window
        self._total = total - window[0]
        return (total / self._period,)


class ExponentialMovingAverage:
    """Live EMA: sums the first `period` inputs for the seed, then TA-Lib 0.8's step. `step` also serves the
    chained EMAs of DEMA, TEMA, MACD and Keltner, which TA-Lib seeds the same way."""

    __slots__ = ("_average", "_count", "_k", "_period")

    def __init__(self, **params: float) -> None:
        self._period = int(resolved(EMA, params)["period"])
        self._k = 2.0 / (self._period + 1)
        self._count = 0
        self._average = 0.0  # the seed's running total until `period` inputs are in

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        return (self.step(close),)

    @property
    def started(self) -> bool:
        """Whether a first (non-NaN) input is in."""
        return self._count > 0

    def step(self, value: float) -> float:
        if self._count >= self._period:
            self._average = average = ema_step(self._average, value, self._k)
            return average
        if self._count == 0 and isnan(value):  # NaN prefix (or an earlier stage warming up): not started yet
            return NAN
        self._average += value
        self._count += 1
        if self._count < self._period:
            return NAN
        self._average = self._average / self._period
        return self._average


class WeightedMovingAverage:
    """Live WMA: TA-Lib's plain and weighted running sums over a ring of the last `period` closes."""

    __slots__ = ("_countdown", "_divider", "_period", "_plain", "_trailing", "_weighted", "_window")

    def __init__(self, **params: float) -> None:
        self._period = int(resolved(WMA, params)["period"])
        self._divider = (self._period + 1.0) * self._period * 0.5
        self._plain = self._weighted = self._trailing = 0.0
        self._countdown = RESYNC_PERIODS * self._period
        self._window: deque[float] = deque(maxlen=self._period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        window = self._window
        if len(window) < self._period - 1 or self._period == 1:
            return self._warm_up(close)
        window.append(close)
        self._countdown -= 1
        if self._countdown:
            plain = self._plain + close
            plain -= self._trailing
            weighted = self._weighted + close * self._period
        else:
            self._countdown = RESYNC_PERIODS * self._period
            plain = weighted = 0.0
            for weight, value in enumerate(window, start=1):
                plain += value
                weighted += weight * value
        self._trailing = window[0]
        self._weighted = weighted - plain
        self._plain = plain
        return (weighted / self._divider,)

    def _warm_up(self, close: float) -> tuple[float, ...]:
        window = self._window
        if self._period == 1:
            return (close,)
        if not window and isnan(close):  # NaN prefix: not started yet
            return _NONE
        self._plain += close
        self._weighted += (len(window) + 1) * close
        window.append(close)
        return _NONE


class DoubleExponentialMovingAverage:
    """Live DEMA: an EMA of the close and an EMA of that, each seeded by the mean of its first `period` inputs."""

    __slots__ = ("_first", "_second")

    def __init__(self, **params: float) -> None:
        period = resolved(DEMA, params)["period"]
        self._first = ExponentialMovingAverage(period=period)
        self._second = ExponentialMovingAverage(period=period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        first = self._first.step(close)
        second = self._second.step(first)
        return (2.0 * first - second,)


class TripleExponentialMovingAverage:
    """Live TEMA: three chained EMAs, each seeded by the mean of its first `period` inputs."""

    __slots__ = ("_copy", "_first", "_second", "_third")

    def __init__(self, **params: float) -> None:
        period = resolved(TEMA, params)["period"]
        self._copy = period == 1  # TA-Lib copies the input
        self._first = ExponentialMovingAverage(period=period)
        self._second = ExponentialMovingAverage(period=period)
        self._third = ExponentialMovingAverage(period=period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        if self._copy:
            return (close,)
        first = self._first.step(close)
        second = self._second.step(first)
        third = self._third.step(second)
        return (third + (3.0 * first - 3.0 * second),)


def _average(
    name: str,
    *,
    display_name: str,
    summary: str,
    kernel: Callable[[Array, int, Array], None],
    live: Callable[..., Incremental],
    memory: Callable[[int], Memory],
) -> IndicatorDef:
    """Registers a one-series average; its batch form skips a NaN prefix as TA-Lib does and runs `kernel`."""

    def batch(bars: Bars, **params: float) -> tuple[Array, ...]:
        period = int(resolved(definition, params)["period"])
        close = as_series(bars.close)
        start = data_start(close)
        (out,) = outputs(1, len(close), start)
        kernel(close[start:], period, out[start:])
        return (out,)

    batch.__qualname__ = batch.__name__ = f"{name}_batch"
    period = integer("period", "bars averaged", 30, 1, 100_000, unit="bars")
    definition = IndicatorDef(
        name=name,
        display_name=display_name,
        description=summary,
        params=(period,),
        outputs=(Output(name="value", description=display_name),),
        inputs=("close",),
        accepts_source=True,
        overlay=True,
        batch=batch,
        incremental=live,
        memory=lambda **params: memory(int(params["period"])),
    )
    return register(definition)


SMA = _average(
    "sma",
    display_name="Simple Moving Average",
    summary="Mean of the last `period` values; matches TA-Lib's SMA.",
    kernel=sma_kernel,
    live=SimpleMovingAverage,
    memory=lambda period: Memory.window(period - 1),
)
EMA = _average(
    "ema",
    display_name="Exponential Moving Average",
    summary="Smoothing factor 2/(period+1), seeded with the SMA of the first `period` values; matches TA-Lib's EMA.",
    kernel=ema_kernel,
    live=ExponentialMovingAverage,
    memory=lambda period: Memory.decaying(period - 1, [ema_pole(period)]),
)
WMA = _average(
    "wma",
    display_name="Weighted Moving Average",
    summary="Linearly weighted mean of the last `period` values (newest weighs most); matches TA-Lib's WMA.",
    kernel=wma_kernel,
    live=WeightedMovingAverage,
    memory=lambda period: Memory.window(period - 1),
)
DEMA = _average(
    "dema",
    display_name="Double Exponential Moving Average",
    summary="2*EMA - EMA(EMA), less lag than an EMA (Mulloy); matches TA-Lib's DEMA.",
    kernel=dema_kernel,
    live=DoubleExponentialMovingAverage,
    memory=lambda period: Memory.decaying(2 * (period - 1), [ema_pole(period)] * 2),
)
TEMA = _average(
    "tema",
    display_name="Triple Exponential Moving Average",
    summary="3*EMA - 3*EMA(EMA) + EMA(EMA(EMA)) (Mulloy); matches TA-Lib's TEMA.",
    kernel=tema_kernel,
    live=TripleExponentialMovingAverage,
    memory=lambda period: Memory.decaying(3 * (period - 1), [ema_pole(period)] * 3),
)
