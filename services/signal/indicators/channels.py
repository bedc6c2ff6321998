"""Price channels from rolling highs and lows: Donchian channels and the Ichimoku cloud (unshifted values)."""

from __future__ import annotations

from functools import partial

import numpy as np

from services.core.parameters import Param, integer
from services.signal.indicators.base import Array, Bars, Incremental, IndicatorDef, Memory, Output, register
from services.signal.indicators.kernels_oscillators import (
    NAN,
    RollingExtremes,
    SkipLeadingNaN,
    njit,
    rolling_extremes,
    run_batch,
    whole_params,
)

MAX_PERIOD = 100_000
# Ichimoku displaces by the kijun period, but an Output's offset is fixed per indicator: it carries the default.
DEFAULT_KIJUN = 26
# The Ichimoku lines need only highs and lows; the lagging span merely repeats the close, NaN or not.
LINES = ("high", "low")


def _period(name: str, default: int, what: str) -> Param:
    return integer(name, what, default, 1, MAX_PERIOD, unit="bars")


def _midpoint(a: float, b: float) -> float:
    return (a + b) / 2


@njit
def _midpoints(a: Array, b: Array, out: Array) -> Array:
    """(a + b) / 2 bar by bar into `out` (which may be `a`): the very operations `_midpoint` does on one bar."""
    for i in range(a.shape[0]):
        out[i] = (a[i] + b[i]) / 2
    return out


def _donchian_kernel(high: Array, low: Array, period: int) -> tuple[Array, Array, Array]:
    upper, lower = rolling_extremes(high, low, period)
    return upper, _midpoints(upper, lower, np.empty_like(upper)), lower


class _Donchian:
    __slots__ = ("_window",)

    def __init__(self, period: int) -> None:
        self._window = RollingExtremes(period)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        extremes = self._window.update(high, low)
        if extremes is None:
            return NAN, NAN, NAN
        upper, lower = extremes
        return upper, _midpoint(upper, lower), lower


def _ichimoku(high: Array, low: Array, close: Array, *, tenkan: int, kijun: int, senkou_b: int) -> tuple[Array, ...]:
    # Each midpoint overwrites its window's highs: at 1M bars memory traffic, not arithmetic, sets the pace.
    highs, lows = rolling_extremes(high, low, tenkan)
    conversion = _midpoints(highs, lows, highs)
    highs, lows = rolling_extremes(high, low, kijun)
    base = _midpoints(highs, lows, highs)
    highs, lows = rolling_extremes(high, low, senkou_b)
    span_b = _midpoints(highs, lows, highs)
    return conversion, base, _midpoints(conversion, base, lows), span_b, close.copy()


class _Ichimoku:
    __slots__ = ("_base", "_conversion", "_span_b")

    def __init__(self, tenkan: int, kijun: int, senkou_b: int) -> None:
        self._conversion = RollingExtremes(tenkan)
        self._base = RollingExtremes(kijun)
        self._span_b = RollingExtremes(senkou_b)

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]:
        conversion = self._conversion.update(high, low)
        base = self._base.update(high, low)
        span_b = self._span_b.update(high, low)
        tenkan = NAN if conversion is None else _midpoint(*conversion)
        kijun = NAN if base is None else _midpoint(*base)
        return tenkan, kijun, _midpoint(tenkan, kijun), NAN if span_b is None else _midpoint(*span_b), close


def donchian_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    return run_batch(_donchian_kernel, bars, DONCHIAN.inputs, *whole_params(DONCHIAN, params))


def donchian_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Donchian(*whole_params(DONCHIAN, params)), DONCHIAN.inputs, 3)


def ichimoku_batch(bars: Bars, **params: float) -> tuple[Array, ...]:
    tenkan, kijun, senkou_b = whole_params(ICHIMOKU, params)
    kernel = partial(_ichimoku, tenkan=tenkan, kijun=kijun, senkou_b=senkou_b)
    return run_batch(kernel, bars, ICHIMOKU.inputs, gate=LINES)


def ichimoku_incremental(**params: float) -> Incremental:
    return SkipLeadingNaN(_Ichimoku(*whole_params(ICHIMOKU, params)), LINES, 5)


DONCHIAN = register(
    IndicatorDef(
        name="donchian",
        display_name="Donchian Channels",
        description="Highest high and lowest low of the last `period` bars and their midpoint (the bands of "
        "TA-Lib MAX(high) and MIN(low); TA-Lib has no Donchian function).",
        params=(_period("period", 20, "Bars in the window."),),
        outputs=(
            Output(name="upper", description="Highest high of the window."),
            Output(name="middle", description="(upper + lower) / 2."),
            Output(name="lower", description="Lowest low of the window."),
        ),
        inputs=("high", "low"),
        accepts_source=False,
        overlay=True,
        batch=donchian_batch,
        incremental=donchian_incremental,
        memory=lambda **params: Memory.window(int(params["period"]) - 1),
    )
)

ICHIMOKU = register(
    IndicatorDef(
        name="ichimoku",
        display_name="Ichimoku Cloud",
        description="Ichimoku Kinko Hyo; each line is the midpoint (highest high + lowest low) / 2 of its "
        "window. Values stand at the bar they are computed on (no look-ahead); charts shift the spans forward "
        "and the lagging line back by the kijun period (display offsets hold the default 26). TA-Lib has no "
        "Ichimoku function.",
        params=(
            _period("tenkan", 9, "Window of the conversion line (tenkan-sen)."),
            _period("kijun", DEFAULT_KIJUN, "Window of the base line (kijun-sen) and the chart displacement."),
            _period("senkou_b", 52, "Window of leading span B (senkou span B)."),
        ),
        outputs=(
            Output(name="tenkan", description="Conversion line: midpoint over `tenkan` bars."),
            Output(name="kijun", description="Base line: midpoint over `kijun` bars."),
            Output(
                name="senkou_a",
                description="Leading span A: (tenkan + kijun) / 2, drawn `kijun` bars ahead.",
                display_offset_bars=DEFAULT_KIJUN,
            ),
            Output(
                name="senkou_b",
                description="Leading span B: midpoint over `senkou_b` bars, drawn `kijun` bars ahead.",
                display_offset_bars=DEFAULT_KIJUN,
            ),
            Output(
                name="chikou",
                description="Lagging span: the close, drawn `kijun` bars back.",
                display_offset_bars=-DEFAULT_KIJUN,
            ),
        ),
        inputs=("high", "low", "close"),
        accepts_source=False,
        overlay=True,
        batch=ichimoku_batch,
        incremental=ichimoku_incremental,
        memory=lambda **params: Memory.window(int(max(params.values())) - 1),
    )
)
