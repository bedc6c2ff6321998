"""Volume-weighted indicators: Money Flow Index and On-Balance Volume as TA-Lib computes them, and VWAP."""

from __future__ import annotations

import numpy as np

from services.core.parameters import integer
from services.signal.indicators.base import (
    Array,
    Bars,
    Incremental,
    IndicatorDef,
    Memory,
    MemoryKind,
    Output,
    register,
)
from services.signal.indicators.kernels_oscillators import (
    NAN,
    TA_EPSILON,
    SkipLeadingNaN,
    njit,
    run_batch,
    whole_params,
)

MAX_PERIOD = 100_000

# Scalar formulas, written once: kernels call the jitted copies, the incremental forms the Python originals.


def _money_flow(typical: float, previous: float, volume: float) -> tuple[float, float]:
    """(positive, negative) money flow of a bar; none when the typical price did not move (TA-Lib's scaled test)."""
    change = typical - previous
    flow = 0.0 if abs(change) <= TA_EPSILON * (abs(typical) + abs(previous)) else typical * volume
    return (0.0, flow) if change < 0.0 else (flow, 0.0)


def _mfi_value(positive: float, negative: float) -> float:
    total = positive + negative
    # The running sums drift by a few ulp; TA-Lib clamps the numerator into [0, total].
    clamped = 0.0 if positive < 0.0 else (total if positive > total else positive)
    return 0.0 if total <= 0.0 else 100.0 * (clamped / total)


def _neumaier(total: float, compensation: float, value: float) -> tuple[float, float]:
    """Compensated addition: a rolling sum stays exact-ish after a huge value has left the window."""
    added = total + value
    if abs(total) >= abs(value):
        compensation += (total - added) + value
    else:
        compensation += (value - added) + total
    return added, compensation


_money_flow_jit = njit(_money_flow)
_mfi_value_jit = njit(_mfi_value)
_neumaier_jit = njit(_neumaier)


@njit
def _mfi_kernel(high: Array, low: Array, close: Array, volume: Array, period: int) -> tuple[Array]:
    n = close.shape[0]
    out = np.full(n, np.nan)
    positives = np.zeros(period)
    negatives = np.zeros(period)
    positive = negative = 0.0
    slot = idle = 0
    previous = (high[0] + low[0] + close[0]) / 3.0 if n else 0.0
    for i in range(1, n):
        if i > period:
            positive -= positives[slot]
            negative -= negatives[slot]
        typical = (high[i] + low[i] + close[i]) / 3.0
        up, down = _money_flow_jit(typical, previous, volume[i])
        previous = typical
        positives[slot] = up
        negatives[slot] = down
        positive += up
        negative += down
        # A whole period without money flow (up + down: one of them is 0.0) empties the window; TA-Lib then
        # drops the residue the add-then-subtract sums hold.
        idle = idle + 1 if up + down == 0.0 else 0
        if idle >= period:
            idle = period
            positive = negative = 0.0
        if i >= period:
            out[i] = _mfi_value_jit(positive, negative)
        slot = slot + 1 if slot + 1 < period else 0
    return (out,)


class _Mfi:
    __slots__ = (
        "_count",
        "_idle",
        "_negative",
        "_negatives",
        "_period",
        "_positive",
        "_positives",
        "_previous",
        "_slot",
    )

    def __init__(self, period: int) -> None:
        self._period = period
        self._positives = [0.0] * period
        self._negatives = [0.0] * period
        self._positive = self._negative = 0.0
        self._slot = self._idle = self._count = 0
        self._previous = NAN

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        count = self._count
        self._count = count + 1
        typical = (high + low + close) / 3.0
        if count == 0:
            self._previous = typical
            return (NAN,)
        slot = self._slot
        if count > self._period:
            self._positive -= self._positives[slot]
            self._negative -= self._negatives[slot]
        up, down = _money_flow(typical, self._previous, volume)
        self._previous = typical
        self._positives[slot] = up
        self._negatives[slot] = down
        self._positive += up
        self._negative += down
        self._idle = self._idle + 1 if up + down == 0.0 else 0
        if self._idle >= self._period:
            self._idle = self._period
            self._positive = self._negative = 0.0
        self._slot = slot + 1 if slot + 1 < self._period else 0
        return (_mfi_value(self._positive, self._negative),) if count >= self._period else (NAN,)


@njit
def _obv_kernel(close: Array, volume: Array) -> tuple[Array]:
    n = close.shape[0]
    out = np.empty(n)
    balance = volume[0] if n else 0.0
    previous = close[0] if n else 0.0
    for i in range(n):
        if close[i] > previous:
            balance += volume[i]
        elif close[i] < previous:
            balance -= volume[i]
        out[i] = balance
        previous = close[i]
    return (out,)


class _Obv:
    __slots__ = ("_balance", "_previous", "_started")

    def __init__(self) -> None:
        self._balance = self._previous = NAN
        self._started = False

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        if not self._started:  # TA-Lib starts the balance at the first bar's volume
            self._started = True
            self._balance = volume
            self._previous = close
        if close > self._previous:
            self._balance += volume
        elif close < self._previous:
            self._balance -= volume
        self._previous = close
        return (self._balance,)


@njit
def _vwap_kernel(high: Array, low: Array, close: Array, volume: Array, period: int) -> tuple[Array]:
    n = close.shape[0]
    out = np.full(n, np.nan)
    # Rolling windows keep each bar's price×volume to take it back out later; period 0 never does.
    flows = np.zeros(max(period, 1))
    volumes = np.zeros(max(period, 1))
    flow_sum = flow_error = volume_sum = volume_error = 0.0
    traded = 0  # bars with non-zero volume in the window: an exact test for "no volume", unlike the sums
    slot = 0
    for i in range(n):
        flow = (high[i] + low[i] + close[i]) / 3.0 * volume[i]
        if period > 0 and i >= period:
            flow_sum, flow_error = _neumaier_jit(flow_sum, flow_error, -flows[slot])
            volume_sum, volume_error = _neumaier_jit(volume_sum, volume_error, -volumes[slot])
            traded -= volumes[slot] != 0.0
        flow_sum, flow_error = _neumaier_jit(flow_sum, flow_error, flow)
        volume_sum, volume_error = _neumaier_jit(volume_sum, volume_error, volume[i])
        traded += volume[i] != 0.0
        if period > 0:
            flows[slot] = flow
            volumes[slot] = volume[i]
            slot = slot + 1 if slot + 1 < period else 0
        if (period == 0 or i >= period - 1) and traded > 0:
            out[i] = (flow_sum + flow_error) / (volume_sum + volume_error)
    return (out,)


class _Vwap:
    __slots__ = (
        "_count",
        "_flow_error",
        "_flow_sum",
        "_flows",
        "_period",
        "_slot",
        "_traded",
        "_volume_error",
        "_volume_sum",
        "_volumes",
    )

    def __init__(self, period: int) -> None:
        self._period = period
        self._flows = [0.0] * max(period, 1)
        self._volumes = [0.0] * max(period, 1)
        self._flow_sum = self._flow_error = self._volume_sum = self._volume_error = 0.0
        self._traded = self._slot = self._count = 0

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        period, slot = self._period, self._slot
        flow = (high + low + close) / 3.0 * volume
        if period > 0 and self._count >= period:
            self._flow_sum, self._flow_error = _neumaier(self._flow_sum, self._flow_error, -self._flows[slot])
            self._volume_sum, self._volume_error = _neumaier(self._volume_sum, self._volume_error, -self._volumes[slot])
            self._traded -= self._volumes[slot] != 0.0
        self._flow_sum, self._flow_error = _neumaier(self._flow_sum, self._flow_error, flow)
        self._volume_sum, self._volume_error = _neumaier(self._volume_sum, self._volume_error, volume)
        self._traded += volume != 0.0
        if period > 0:
            self._flows[slot] = flow
            self._volumes[slot] = volume
            self._slot = slot + 1 if slot + 1 < period else 0
        self._count += 1
        if (period == 0 or self._count >= period) and self._traded > 0:
            return ((self._flow_sum + self._flow_error) / (self._volume_sum + self._volume_error),)
        return (NAN,)


def mfi_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_mfi_kernel, bars, MFI.inputs, *whole_params(MFI, params))


def mfi_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Mfi(*whole_params(MFI, params)), MFI.inputs, 1)


def obv_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_obv_kernel, bars, OBV.inputs, *whole_params(OBV, params))


def obv_incremental(**params: float) -> Incremental:
    whole_params(OBV, params)  # rejects unknown parameters
    return SkipLeadingNaN(_Obv(), OBV.inputs, 1)


def vwap_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_vwap_kernel, bars, VWAP.inputs, *whole_params(VWAP, params))


def vwap_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Vwap(*whole_params(VWAP, params)), VWAP.inputs, 1)


def _vwap_memory(period: int) -> Memory:
    """A rolling window, or (period 0) a running total from the first bar."""
    return Memory.window(period - 1) if period else Memory(MemoryKind.CUMULATIVE)


MFI = register(
    IndicatorDef(
        name="mfi",
        display_name="Money Flow Index",
        description="Volume-weighted RSI as TA-Lib MFI: positive over total money flow (typical price × "
        "volume, signed by the typical price's move) over the period, 0–100; 0 when no money flowed.",
        params=(integer("period", "Window in bars (TA-Lib MFI timeperiod).", 14, 2, MAX_PERIOD, unit="bars"),),
        outputs=(Output(name="value", description="MFI, 0–100."),),
        inputs=("high", "low", "close", "volume"),
        accepts_source=False,
        overlay=False,
        batch=mfi_batch,
        incremental=mfi_incremental,
        memory=lambda **params: Memory.window(int(params["period"])),
    )
)

OBV = register(
    IndicatorDef(
        name="obv",
        display_name="On-Balance Volume",
        description="Granville's running volume total as TA-Lib OBV: starts at the first bar's volume, then "
        "adds a bar's volume when the close rises and subtracts it when the close falls. A running total never "
        "forgets its start, so its origin is defined: ComputeIndicators cumulates it from the first bar of the "
        "requested range (whether or not extend_for_warmup is set); only its changes compare across ranges.",
        params=(),
        outputs=(Output(name="value", description="Cumulative signed volume."),),
        inputs=("close", "volume"),
        accepts_source=True,
        overlay=False,
        batch=obv_batch,
        incremental=obv_incremental,
        memory=lambda **params: Memory(MemoryKind.CUMULATIVE),
    )
)

VWAP = register(
    IndicatorDef(
        name="vwap",
        display_name="Volume-Weighted Average Price",
        description="Σ(typical price × volume) / Σ(volume), typical price (high+low+close)/3, over the last "
        "`period` bars, or with period 0 over every bar since an anchor: ComputeIndicators anchors it at the first "
        "bar of the requested range (whether or not extend_for_warmup is set). NaN while no volume traded. TA-Lib "
        "has no VWAP.",
        params=(
            integer(
                "period",
                "Bars in the rolling window; 0 accumulates over the whole series.",
                0,
                0,
                MAX_PERIOD,
                unit="bars",
            ),
        ),
        outputs=(Output(name="value", description="The volume-weighted average price."),),
        inputs=("high", "low", "close", "volume"),
        accepts_source=False,
        overlay=True,
        batch=vwap_batch,
        incremental=vwap_incremental,
        memory=lambda **params: _vwap_memory(int(params["period"])),
    )
)
