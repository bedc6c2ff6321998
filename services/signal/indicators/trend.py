"""Trend indicators (MACD, ADX with its directional indices, parabolic SAR) reproducing TA-Lib's arithmetic."""

from __future__ import annotations

from math import isnan

import numpy as np

from services.core.parameters import Param, integer, number
from services.signal.indicators.averages import ExponentialMovingAverage, ema_pole
from services.signal.indicators.base import Array, Bars, IndicatorDef, Memory, MemoryKind, Output, register
from services.signal.indicators.kernels_trend import (
    NAN,
    SarState,
    add_movement,
    adx_kernel,
    as_series,
    data_start,
    directional_indices,
    ema_step,
    jit,
    outputs,
    resolved,
    sar_kernel,
    sar_start,
    sar_step,
    true_range,
)

_NONE1 = (NAN,)
_NONE3 = (NAN, NAN, NAN)


@jit
def macd_kernel(values: Array, fast: int, slow: int, signal: int, out: tuple[Array, Array, Array]) -> None:
    """TA_MACD into (macd, signal, histogram): fast and slow EMAs seeded by means whose windows end on the same
    bar (slow-1), so the fast EMA starts where the slow one does; the signal EMA is seeded by the mean of the first
    `signal` MACD values."""
    line, trigger, histogram = out
    count = len(values)
    lookback = slow - 1 + signal - 1
    line[: min(lookback, count)] = np.nan
    trigger[: min(lookback, count)] = np.nan
    histogram[: min(lookback, count)] = np.nan
    if count <= lookback:
        return
    fast_k, slow_k, signal_k = 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)
    slow_total = fast_average = 0.0
    for i in range(slow):
        if i >= slow - fast:
            fast_average += values[i]
        slow_total += values[i]
    slow_average = slow_total / slow
    fast_average = fast_average / fast
    value = fast_average - slow_average
    average = 0.0
    average += value
    for i in range(slow, lookback + 1):
        fast_average = ema_step(fast_average, values[i], fast_k)
        slow_average = ema_step(slow_average, values[i], slow_k)
        value = fast_average - slow_average
        average += value
    average = average / signal
    line[lookback], trigger[lookback], histogram[lookback] = value, average, value - average
    for i in range(lookback + 1, count):
        fast_average = ema_step(fast_average, values[i], fast_k)
        slow_average = ema_step(slow_average, values[i], slow_k)
        value = fast_average - slow_average
        average = ema_step(average, value, signal_k)
        line[i], trigger[i], histogram[i] = value, average, value - average


def _macd_periods(params: dict[str, float]) -> tuple[int, int, int]:
    given = resolved(MACD, params)
    fast, slow = sorted((int(given["fast"]), int(given["slow"])))  # TA-Lib swaps a fast period above the slow one
    return fast, slow, int(given["signal"])


def moving_average_convergence_divergence(bars: Bars, **params: float) -> tuple[Array, ...]:
    fast, slow, signal = _macd_periods(params)
    close = as_series(bars.close)
    start = data_start(close)
    line, trigger, histogram = outputs(3, len(close), start)
    macd_kernel(close[start:], fast, slow, signal, (line[start:], trigger[start:], histogram[start:]))
    return line, trigger, histogram


class MovingAverageConvergenceDivergence:
    """Live MACD: three EMAs seeded as TA_MACD seeds them. The fast one starts `slow - fast` bars late, so its
    seed window ends with the slow one's; the signal EMA runs over the MACD line."""

    __slots__ = ("_delay", "_fast", "_signal", "_slow")

    def __init__(self, **params: float) -> None:
        fast, slow, signal = _macd_periods(params)
        self._delay = slow - fast  # closes the fast EMA skips
        self._fast = ExponentialMovingAverage(period=fast)
        self._slow = ExponentialMovingAverage(period=slow)
        self._signal = ExponentialMovingAverage(period=signal)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        slow = self._slow.step(close)
        if self._delay:
            self._delay -= self._slow.started  # bars of a NaN prefix do not count
            return _NONE3
        value = self._fast.step(close) - slow
        signal = self._signal.step(value)
        return (value if not isnan(signal) else NAN, signal, value - signal)


def average_directional_index(bars: Bars, **params: float) -> tuple[Array, ...]:
    period = int(resolved(ADX, params)["period"])
    high, low, close = as_series(bars.high), as_series(bars.low), as_series(bars.close)
    start = data_start(high, low, close)
    adx, plus_di, minus_di = outputs(3, len(close), start)
    adx_kernel(high[start:], low[start:], close[start:], period, (adx[start:], plus_di[start:], minus_di[start:]))
    return adx, plus_di, minus_di


class AverageDirectionalIndex:
    """Live ADX, +DI and -DI: Wilder's sums of directional movement and true range, as TA-Lib runs them."""

    __slots__ = (
        "_average",
        "_count",
        "_minus_dm",
        "_period",
        "_plus_dm",
        "_previous",
        "_smoothed_tr",
        "_sum_dx",
    )

    def __init__(self, **params: float) -> None:
        self._period = int(resolved(ADX, params)["period"])
        self._count = 0
        self._plus_dm = self._minus_dm = self._smoothed_tr = self._sum_dx = self._average = 0.0
        self._previous = (NAN, NAN, NAN)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        index, period = self._count, self._period
        previous_high, previous_low, previous_close = self._previous
        self._previous = (high, low, close)
        if index == 0:
            if isnan(high) or isnan(low) or isnan(close):  # NaN prefix: not started yet
                return _NONE3
            self._count = 1
            return _NONE3
        self._count = index + 1
        plus_dm, minus_dm, smoothed_tr = self._plus_dm, self._minus_dm, self._smoothed_tr
        if index >= period:  # Wilder's smoothing once the first `period - 1` movements are summed
            minus_dm -= minus_dm / period
            plus_dm -= plus_dm / period
            smoothed_tr -= smoothed_tr / period
        plus_dm, minus_dm = add_movement(plus_dm, minus_dm, high - previous_high, previous_low - low)
        smoothed_tr += true_range(high, low, previous_close)
        self._plus_dm, self._minus_dm, self._smoothed_tr = plus_dm, minus_dm, smoothed_tr
        if index < period:
            return _NONE3
        plus, minus, dx, counted = directional_indices(plus_dm, minus_dm, smoothed_tr)
        first_adx = 2 * period - 1
        if counted and index <= first_adx:
            self._sum_dx += dx
        elif counted:
            self._average = (self._average * (period - 1) + dx) / period
        if index == first_adx:
            self._average = self._sum_dx / period
        return (self._average if index >= first_adx else NAN, plus, minus)


def _sar_factors(params: dict[str, float]) -> tuple[float, float]:
    given = resolved(SAR, params)
    step, cap = given["acceleration"], given["maximum"]
    return min(step, cap), cap  # TA-Lib lowers an acceleration above the maximum to the maximum


def parabolic_sar(bars: Bars, **params: float) -> tuple[Array, ...]:
    step, cap = _sar_factors(params)
    high, low = as_series(bars.high), as_series(bars.low)
    start = data_start(high, low)
    (out,) = outputs(1, len(high), start)
    sar_kernel(high[start:], low[start:], step, cap, out[start:])
    return (out,)


class ParabolicSar:
    """Live parabolic SAR: the first bar seeds, then TA-Lib's step runs once per bar (the same function)."""

    __slots__ = ("_cap", "_previous", "_seeded", "_state", "_step")

    def __init__(self, **params: float) -> None:
        self._step, self._cap = _sar_factors(params)
        self._previous = (NAN, NAN)
        self._seeded = False  # the first bar's high and low are in
        self._state: SarState | None = None

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        previous, state = self._previous, self._state
        if state is None:
            if not self._seeded:
                if not (isnan(high) or isnan(low)):  # else a NaN prefix: not started yet
                    self._previous, self._seeded = (high, low), True
                return _NONE1
            state = sar_start(previous[0], previous[1], high, low, self._step)
            previous = (high, low)  # TA-Lib treats the second bar as its own previous bar
        output, self._state = sar_step(state, (previous[0], previous[1], high, low), self._step, self._cap)
        self._previous = (high, low)
        return (output,)


def _macd_memory(fast: int, slow: int, signal: int) -> Memory:
    """The fast and slow EMAs (listed as a chain: a larger bound than the sum of the two) feed the signal EMA."""
    fast, slow = sorted((fast, slow))  # TA-Lib swaps a fast period above the slow one
    return Memory.decaying(slow - 1 + signal - 1, [ema_pole(fast), ema_pole(slow), ema_pole(signal)])


def _adx_memory(period: int) -> Memory:
    """Wilder's sums of movement and range (keeping 1 - 1/period) feed the DX, which Wilder's average smooths."""
    keep = 1.0 - 1.0 / period
    return Memory.decaying(2 * period - 1, [keep, keep])


# The SAR forgets its start only when a reversal resets its state, which no bound in bars guarantees: history is
# read from this many bars before a range and extended until SAR from two starting points agrees (analytics.py).
SAR_FIRST_HISTORY = 128


def _period(name: str, default: int, minimum: int, description: str) -> Param:
    return integer(name, description, default, minimum, 100_000, unit="bars")


def _factor(name: str, default: float, description: str) -> Param:
    return number(name, description, default, 0.001, 1.0, step=0.01)


MACD = register(
    IndicatorDef(
        name="macd",
        display_name="MACD",
        description="Fast EMA minus slow EMA, its signal EMA and their difference; matches TA-Lib's MACD (a fast "
        "period above the slow one is swapped, as TA-Lib does).",
        params=(
            _period("fast", 12, 2, "bars in the fast EMA"),
            _period("slow", 26, 2, "bars in the slow EMA"),
            _period("signal", 9, 1, "bars in the signal EMA"),
        ),
        outputs=(
            Output(name="macd", description="fast EMA minus slow EMA"),
            Output(name="signal", description="EMA of the MACD line"),
            Output(name="histogram", description="MACD line minus signal line"),
        ),
        inputs=("close",),
        accepts_source=True,
        overlay=False,
        batch=moving_average_convergence_divergence,
        incremental=MovingAverageConvergenceDivergence,
        memory=lambda **params: _macd_memory(int(params["fast"]), int(params["slow"]), int(params["signal"])),
    )
)
ADX = register(
    IndicatorDef(
        name="adx",
        display_name="Average Directional Index",
        description="Wilder's trend strength (ADX, 0-100) with the +DI and -DI it is built from; matches TA-Lib's "
        "ADX, PLUS_DI and MINUS_DI (the DIs start `period - 1` bars before the ADX).",
        params=(_period("period", 14, 2, "bars smoothed"),),
        outputs=(
            Output(name="adx", description="average directional index, 0-100"),
            Output(name="plus_di", description="+DI: upward directional indicator, 0-100"),
            Output(name="minus_di", description="-DI: downward directional indicator, 0-100"),
        ),
        inputs=("high", "low", "close"),
        accepts_source=False,
        overlay=False,
        batch=average_directional_index,
        incremental=AverageDirectionalIndex,
        memory=lambda **params: _adx_memory(int(params["period"])),
    )
)
SAR = register(
    IndicatorDef(
        name="sar",
        display_name="Parabolic SAR",
        description="Wilder's stop-and-reverse trailing stop; matches TA-Lib's SAR (direction from the first two "
        "bars, first value on the second bar; an acceleration above the maximum is lowered to it).",
        params=(
            _factor("acceleration", 0.02, "acceleration factor: start and increment"),
            _factor("maximum", 0.2, "acceleration factor cap"),
        ),
        outputs=(Output(name="value", description="stop level for the current trend"),),
        inputs=("high", "low"),
        accepts_source=False,
        overlay=True,
        batch=parabolic_sar,
        incremental=ParabolicSar,
        memory=lambda **params: Memory(MemoryKind.PATH, SAR_FIRST_HISTORY),
    )
)
