"""Shared machinery of the TA-Lib-exact indicators: numba compilation, fused multiply-add, Wilder and SAR kernels."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload, register_jitable

from services.signal.indicators.base import Array, IndicatorDef

# The arithmetic follows TA-Lib 0.8, which runs its recursions through C's fma() (a*b+c rounded once) on every CPU.
# Helpers marked @shared are plain Python in the live forms and compiled into the batch kernels: one source, so both
# forms perform the same float operations in the same order and agree bit for bit.

_Function = TypeVar("_Function", bound=Callable[..., Any])

NAN = math.nan
# TA-Lib's TA_EPSILON (0.8): its "is zero" tests treat |v| < 1e-14 as zero.
EPSILON = 1e-14
_SPLITTER = 134_217_729.0  # 2**27 + 1: Veltkamp's split of a double into two 26-bit halves


def jit(function: _Function) -> _Function:
    """Compile with numba (nopython, cached on disk); mypy keeps seeing the Python signature.

    error_model="numpy" gives C's float semantics and skips numba's zero-division checks (no kernel divides by
    zero: divisors are periods or guarded by TA-Lib's own zero tests)."""
    return cast(_Function, numba.njit(cache=True, nogil=True, error_model="numpy")(function))


def shared(function: _Function) -> _Function:
    """Keep `function` plain Python for the live forms and let compiled kernels call it too."""
    return register_jitable(error_model="numpy")(function)


def fused_multiply_add(a: float, b: float, c: float) -> float:
    """a*b + c rounded once, as C's fma(). Python 3.11 has no math.fma: the four products of the operands'
    26-bit halves are exact (while they stay above the subnormal range, ~1e-290) and math.fsum rounds their exact
    sum with c once. Infinities, NaN and operands beyond ~1e291 (which would overflow the split) take the plain
    a*b + c: the same result for the first two."""
    scaled_a = _SPLITTER * a
    scaled_b = _SPLITTER * b
    if not math.isfinite(scaled_a + scaled_b + c):
        return a * b + c
    a_high = scaled_a - (scaled_a - a)
    a_low = a - a_high
    b_high = scaled_b - (scaled_b - b)
    b_low = b - b_high
    return math.fsum((a_high * b_high, a_high * b_low, a_low * b_high, a_low * b_low, c))


@intrinsic
def _llvm_fma(typingctx: object, a: types.Type, b: types.Type, c: types.Type) -> object:
    def codegen(context: object, builder: Any, signature: object, args: list[Any]) -> Any:
        return builder.fma(args[0], args[1], args[2])

    return types.float64(types.float64, types.float64, types.float64), codegen


_compiled_fma = cast(Callable[[float, float, float], float], _llvm_fma)


@overload(fused_multiply_add, jit_options={"error_model": "numpy"})
def _fused_multiply_add_in_kernels(a: Any, b: Any, c: Any) -> Callable[..., float]:
    """In kernels: LLVM's fma (the FMA instruction, or libm's exact fma on CPUs without one). numba wants the
    implementation's parameters declared exactly as the overload's, hence Any for both."""

    def implementation(a: Any, b: Any, c: Any) -> float:
        return _compiled_fma(a, b, c)

    return implementation


def resolved(definition: IndicatorDef, params: Mapping[str, float]) -> dict[str, float]:
    """Every parameter checked against the catalogue, so direct calls get the same validation as requests."""
    return definition.resolve(params)


def as_series(values: Array) -> Array:
    """Contiguous float64 (a no-op for the usual input), the layout the kernels are compiled for."""
    return np.ascontiguousarray(values, dtype=np.float64)


def data_start(*series: Array) -> int:
    """First bar where every input is a number: TA-Lib's Python wrapper skips a NaN prefix and starts its
    warm-up there (the length when no bar qualifies)."""
    length = len(series[0])
    if length == 0 or not any(math.isnan(values[0]) for values in series):
        return 0
    valid = ~np.isnan(series[0])
    for values in series[1:]:
        valid &= ~np.isnan(values)
    found = np.flatnonzero(valid)
    return int(found[0]) if found.size else length


def outputs(count: int, length: int, start: int) -> tuple[Array, ...]:
    """`count` output arrays, NaN before `start`; kernels fill the rest. numpy allocates them (with huge pages
    for big arrays): numba's own allocations page-fault several times slower."""
    arrays = tuple(np.empty(length) for _ in range(count))
    for values in arrays:
        values[:start] = np.nan
    return arrays


@shared
def ema_step(average: float, value: float, k: float) -> float:
    """TA-Lib 0.8's EMA step: fma(value - average, k, average)."""
    return fused_multiply_add(value - average, k, average)


# max()/min() reproduce TA-Lib's `if (b > a) a = b;` chains exactly, NaN included: Python and numba both replace
# the running value only when the new one compares greater (smaller).


@shared
def true_range(high: float, low: float, previous_close: float) -> float:
    """TA-Lib's true range: high-low, replaced by a larger gap to the previous close."""
    return max(high - low, abs(previous_close - high), abs(previous_close - low))


@shared
def wilder_step(average: float, value: float, keep: float) -> float:
    """TA-Lib 0.8's Wilder smoothing for the ATR, `keep` being (period-1)/period: fma(average, keep, value*(1-keep))."""
    return fused_multiply_add(average, keep, value * (1.0 - keep))


@jit
def atr_kernel(high: Array, low: Array, close: Array, period: int, out: Array) -> None:
    """TA_ATR: the first value (bar `period`) averages `period` true ranges, then Wilder's smoothing."""
    count = len(close)
    out[: min(period, count)] = np.nan
    if period == 1:  # TA-Lib returns the plain true range
        for i in range(1, count):
            out[i] = true_range(high[i], low[i], close[i - 1])
        return
    if count <= period:
        return
    total = 0.0
    for i in range(1, period + 1):
        total += true_range(high[i], low[i], close[i - 1])
    average = total / period
    out[period] = average
    keep = (period - 1) / period
    for i in range(period + 1, count):
        average = wilder_step(average, true_range(high[i], low[i], close[i - 1]), keep)
        out[i] = average


@shared
def add_movement(plus_dm: float, minus_dm: float, diff_plus: float, diff_minus: float) -> tuple[float, float]:
    """Adds this bar's one-period +DM or -DM (at most one of them, TA-Lib's rule) to the running sums."""
    if diff_minus > 0 and diff_plus < diff_minus:
        minus_dm += diff_minus
    elif diff_plus > 0 and diff_plus > diff_minus:
        plus_dm += diff_plus
    return plus_dm, minus_dm


@shared
def directional_indices(plus_dm: float, minus_dm: float, smoothed_tr: float) -> tuple[float, float, float, bool]:
    """(+DI, -DI, DX, whether the DX counts): TA-Lib outputs zero DIs and skips the DX when a range is ~zero."""
    if -EPSILON < smoothed_tr < EPSILON:
        return 0.0, 0.0, 0.0, False
    minus = 100.0 * (minus_dm / smoothed_tr)
    plus = 100.0 * (plus_dm / smoothed_tr)
    both = minus + plus
    if -EPSILON < both < EPSILON:
        return plus, minus, 0.0, False
    return plus, minus, 100.0 * (abs(minus - plus) / both), True


@jit
def adx_kernel(high: Array, low: Array, close: Array, period: int, out: tuple[Array, Array, Array]) -> None:
    """TA_ADX, TA_PLUS_DI and TA_MINUS_DI into `out`, in one pass: the DIs from bar `period`, the ADX from
    2*period-1. The three TA-Lib functions run the same directional-movement recursion."""
    adx, plus_di, minus_di = out
    count = len(close)
    first_adx = 2 * period - 1
    adx[: min(first_adx, count)] = np.nan
    plus_di[: min(period, count)] = np.nan
    minus_di[: min(period, count)] = np.nan
    plus_dm = minus_dm = smoothed_tr = sum_dx = average = 0.0
    for i in range(1, count):
        if i >= period:  # Wilder's smoothing once the first `period - 1` movements are summed
            minus_dm -= minus_dm / period
            plus_dm -= plus_dm / period
            smoothed_tr -= smoothed_tr / period
        plus_dm, minus_dm = add_movement(plus_dm, minus_dm, high[i] - high[i - 1], low[i - 1] - low[i])
        smoothed_tr += true_range(high[i], low[i], close[i - 1])
        if i < period:
            continue
        plus_di[i], minus_di[i], dx, counted = directional_indices(plus_dm, minus_dm, smoothed_tr)
        if counted and i <= first_adx:
            sum_dx += dx
        elif counted:
            average = (average * (period - 1) + dx) / period
        if i == first_adx:
            average = sum_dx / period
        if i >= first_adx:
            adx[i] = average


SarState = tuple[bool, float, float, float]  # long?, SAR for the next bar, extreme point, acceleration factor


@shared
def sar_start(first_high: float, first_low: float, high: float, low: float, step: float) -> SarState:
    """TA-Lib's opening: short only when the first two bars' -DM is positive and beats +DM; the first bar's
    extreme is the first SAR, the second bar's the extreme point."""
    diff_plus = high - first_high
    diff_minus = first_low - low
    if diff_minus > 0 and diff_plus < diff_minus:
        return False, first_high, low, step
    return True, first_low, high, step


@shared
def sar_step(
    state: SarState, bar: tuple[float, float, float, float], step: float, cap: float
) -> tuple[float, SarState]:
    """One bar of TA_SAR; `bar` is (previous high, previous low, high, low). Returns (output, next state)."""
    long, sar, extreme, factor = state
    prev_high, prev_low, high, low = bar
    if long:
        if low <= sar:  # stopped out: turn short, the SAR jumps to the extreme point
            output = max(extreme, prev_high, high)
            return output, (False, max(fused_multiply_add(step, low - output, output), prev_high, high), low, step)
        if high > extreme:
            extreme = high
            factor = min(factor + step, cap)
        return sar, (True, min(fused_multiply_add(factor, extreme - sar, sar), prev_low, low), extreme, factor)
    if high >= sar:  # stopped out: turn long
        output = min(extreme, prev_low, low)
        return output, (True, min(fused_multiply_add(step, high - output, output), prev_low, low), high, step)
    if low < extreme:
        extreme = low
        factor = min(factor + step, cap)
    return sar, (False, max(fused_multiply_add(factor, extreme - sar, sar), prev_high, high), extreme, factor)


@jit
def sar_kernel(high: Array, low: Array, step: float, cap: float, out: Array) -> None:
    """TA_SAR: the first bar only seeds, so values start at bar 1 (which TA-Lib treats as its own previous bar)."""
    count = len(high)
    out[: min(1, count)] = np.nan
    if count < 2:
        return
    state = sar_start(high[0], low[0], high[1], low[1], step)
    out[1], state = sar_step(state, (high[1], low[1], high[1], low[1]), step, cap)
    for i in range(2, count):
        out[i], state = sar_step(state, (high[i - 1], low[i - 1], high[i], low[i]), step, cap)
