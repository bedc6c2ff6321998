"""Numba plumbing shared by the oscillator, volume and channel indicators, each kernel with its live counterpart."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numba
import numpy as np

from services.signal.indicators.base import Array, Bars, Incremental, IndicatorDef

F = TypeVar("F", bound=Callable[..., Any])

NAN = math.nan
# TA-Lib's TA_EPSILON: its flatness tests treat |v| <= TA_EPSILON * scale as zero (TA_IS_ZERO_SCALED).
TA_EPSILON = 1e-14
FIELDS = ("open", "high", "low", "close", "volume")


def njit(function: F) -> F:
    """numba.njit(cache=True) keeping the Python signature for mypy (numba ships no usable types).

    Without fastmath numba neither reassociates nor fuses multiply-adds, so a kernel performs exactly the IEEE
    operations its source spells out, as the same source run by CPython does: that is what lets the incremental
    forms call the undecorated scalar helpers and still agree bit for bit.

    A cached kernel must call jitted functions of its own module only: numba's cache is keyed on the kernel's
    own file, so it would keep running the old code of a changed callee elsewhere. Compose across modules in
    Python instead.
    """
    return cast(F, numba.njit(cache=True)(function))


def _higher(a: float, b: float) -> float:
    return a if a > b else b


def _lower(a: float, b: float) -> float:
    return a if a < b else b


_higher_jit = njit(_higher)
_lower_jit = njit(_lower)


@njit
def rolling_extremes(high: Array, low: Array, period: int) -> tuple[Array, Array]:
    """Highest high and lowest low of the last `period` bars (NaN for the first period-1).

    A van Herk / Gil-Werman scan: bars fall in blocks of `period`, and a window is a tail of the previous block
    plus the head of the current one, so its extreme is the tail's (computed once per block, backwards) against
    the head's running one: three comparisons per bar, no data-dependent branches, O(period) memory.
    """
    n = high.shape[0]
    upper = np.empty(n)
    lower = np.empty(n)
    upper[: period - 1] = np.nan
    lower[: period - 1] = np.nan
    tail_high = np.empty(period)  # tail_high[j]: highest of the previous block from its j-th bar on
    tail_low = np.empty(period)
    for start in range(0, n, period):
        head_high, head_low = high[start], low[start]
        if start > 0 and period > 1:
            upper[start] = _higher_jit(tail_high[1], head_high)
            lower[start] = _lower_jit(tail_low[1], head_low)
        last = start + period - 1
        for i in range(start + 1, min(last, n)):
            head_high = _higher_jit(head_high, high[i])
            head_low = _lower_jit(head_low, low[i])
            if start > 0:
                upper[i] = _higher_jit(tail_high[i - start + 1], head_high)
                lower[i] = _lower_jit(tail_low[i - start + 1], head_low)
        if last >= n:
            break
        # The block is complete: its tails serve the next block, and its last bar's window is the block itself.
        if period > 1:
            head_high = _higher_jit(head_high, high[last])
            head_low = _lower_jit(head_low, low[last])
        tail_high[period - 1] = high[last]
        tail_low[period - 1] = low[last]
        for j in range(period - 2, -1, -1):
            tail_high[j] = _higher_jit(high[start + j], tail_high[j + 1])
            tail_low[j] = _lower_jit(low[start + j], tail_low[j + 1])
        upper[last] = _higher_jit(tail_high[0], head_high)
        lower[last] = _lower_jit(tail_low[0], head_low)
    return upper, lower


class RollingExtremes:
    """Live `rolling_extremes`: the same block scan and comparisons, amortised O(1) per bar."""

    __slots__ = (
        "_block_high",
        "_block_low",
        "_count",
        "_head_high",
        "_head_low",
        "_offset",
        "_period",
        "_tail_high",
        "_tail_low",
    )

    def __init__(self, period: int) -> None:
        self._period = period
        self._block_high = [0.0] * period
        self._block_low = [0.0] * period
        self._tail_high = [0.0] * period
        self._tail_low = [0.0] * period
        self._head_high = self._head_low = 0.0
        self._offset = self._count = 0

    def update(self, high: float, low: float) -> tuple[float, float] | None:
        """(highest, lowest) of the window ending with this bar; None until the window is full."""
        period, offset = self._period, self._offset
        self._block_high[offset] = high
        self._block_low[offset] = low
        if offset == 0:
            self._head_high, self._head_low = high, low
        else:
            self._head_high = _higher(self._head_high, high)
            self._head_low = _lower(self._head_low, low)
        if offset == period - 1:
            self._close_block(high, low)
        offset = offset + 1 if offset + 1 < period else 0
        self._offset = offset
        if self._count < period - 1:
            self._count += 1
            return None
        return _higher(self._tail_high[offset], self._head_high), _lower(self._tail_low[offset], self._head_low)

    def _close_block(self, high: float, low: float) -> None:
        """The completed block's tails, backwards from its last bar (high, low)."""
        block_high, block_low, tail_high, tail_low = self._block_high, self._block_low, self._tail_high, self._tail_low
        tail_high[-1] = high
        tail_low[-1] = low
        for j in range(self._period - 2, -1, -1):
            tail_high[j] = _higher(block_high[j], tail_high[j + 1])
            tail_low[j] = _lower(block_low[j], tail_low[j + 1])


@njit
def running_mean(values: Array, start: int, period: int, out: Array) -> Array:
    """TA-Lib's SMA (TA_INT_SMA) of values[start:] into `out` (not `values`): a running total, added to, read,
    then trimmed."""
    n = values.shape[0]
    out[: min(start + period - 1, n)] = np.nan
    total = 0.0
    for i in range(start, n):
        total += values[i]
        if i - start >= period - 1:
            out[i] = total / period
            total -= values[i - period + 1]
    return out


class RunningMean:
    """Live `running_mean`: the same total, with the window's values in a ring."""

    __slots__ = ("_count", "_period", "_ring", "_slot", "_total")

    def __init__(self, period: int) -> None:
        self._period = period
        self._ring = [0.0] * period
        self._slot = 0
        self._count = 0
        self._total = 0.0

    def update(self, value: float) -> float | None:
        """The mean of the last `period` values; None until there are that many."""
        ring, slot = self._ring, self._slot
        ring[slot] = value
        slot = slot + 1 if slot + 1 < self._period else 0
        self._slot = slot
        self._total += value
        if self._count < self._period - 1:
            self._count += 1
            return None
        mean = self._total / self._period
        self._total -= ring[slot]  # after the advance, `slot` holds the oldest value of this window
        return mean


def whole_params(definition: IndicatorDef, params: Mapping[str, float]) -> list[int]:
    """The validated (INVALID_ARGUMENT otherwise) whole-number parameters, in declaration order."""
    values = definition.resolve(params)
    return [int(values[param.name]) for param in definition.params]


def first_complete(arrays: Sequence[Array]) -> int:
    """Index of the first bar where every input is a number (len if none): TA-Lib's wrapper starts there."""
    if all(not math.isnan(array[0]) for array in arrays if array.shape[0]):
        return 0
    present = np.ones(arrays[0].shape[0], dtype=bool)
    for array in arrays:
        present &= ~np.isnan(array)
    first = int(np.argmax(present))
    return first if present.shape[0] and present[first] else present.shape[0]


def run_batch(
    kernel: Callable[..., tuple[Array, ...]],
    bars: Bars,
    inputs: Sequence[str],
    *params: int,
    gate: Sequence[str] | None = None,
) -> tuple[Array, ...]:
    """kernel(*input arrays, *params) over the bars from the first where every `gate` input (default: all) is a
    number, NaN before it, as TA-Lib's Python wrapper treats leading NaNs (say, a source that is an indicator)."""
    arrays = [np.ascontiguousarray(getattr(bars, name), dtype=np.float64) for name in inputs]
    start = first_complete([arrays[inputs.index(name)] for name in gate] if gate else arrays)
    if start == 0:
        return kernel(*arrays, *params)
    n = len(bars)
    results = kernel(*(array[start:] for array in arrays), *params)
    padded = []
    for result in results:
        out = np.full(n, np.nan)
        out[start:] = result
        padded.append(out)
    return tuple(padded)


class SkipLeadingNaN:
    """Live counterpart of `run_batch`'s start: bars before the first complete one yield NaN and are not seen."""

    __slots__ = ("_fields", "_inner", "_nans", "_waiting")

    def __init__(self, inner: Incremental, inputs: Sequence[str], outputs: int) -> None:
        self._inner = inner
        self._fields = tuple(FIELDS.index(name) for name in inputs)
        self._nans = (NAN,) * outputs
        self._waiting = True

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        if self._waiting:
            bar = (open, high, low, close, volume)
            if any(math.isnan(bar[field]) for field in self._fields):
                return self._nans
            self._waiting = False
        return self._inner.update(open, high, low, close, volume)
