"""Building blocks the strategies share: indicator access, crossings and edges, excursions beyond a level, run
lengths, ATR distances, confidence grades, number formatting and cross-parameter constraints.

Every helper is causal and element-wise or a running (prefix) operation, so a strategy built from them decides bar
t from bars 0..t only, and computes the same numbers for bar t whatever follows it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from services.core.errors import FieldViolation
from services.core.parameters import Params, ParamValue
from services.core.timeframes import Timeframe
from services.signal.indicators.base import Array, Bars
from services.signal.indicators.catalogue import load_indicators
from services.signal.strategies.base import (
    Constraint,
    StrategyBars,
    StrategyParam,
    integer,
    number,
)

Flags = npt.NDArray[np.bool_]

INDICATORS = load_indicators()
ATR_PERIOD = 14  # the ATR that turns price distances into confidences where a strategy has no ATR parameter
MAX_PERIOD = 1000


def indicator(name: str, bars: Bars, **params: ParamValue) -> tuple[Array, ...]:
    """The batch outputs of the catalogue's indicator `name` (TA-Lib warm-up NaNs included), given numeric
    strategy parameters."""
    return INDICATORS[name].batch(bars, **{key: float(value) for key, value in params.items()})


def series(values: Array) -> Bars:
    """One series as indicator input (indicators over one price series read `close`; `volume` too is it)."""
    return Bars(values, values, values, values, values)


def average(values: Array, period: int, kind: str = "SMA") -> Array:
    """The SMA (or EMA, with kind "EMA") of a series."""
    return indicator(kind.lower(), series(values), period=period)[0]


def atr(bars: StrategyBars, period: int = ATR_PERIOD) -> Array:
    """The average true range of the bars."""
    return indicator("atr", bars.indicator_bars, period=period)[0]


def lagged(values: Array, bars: int) -> Array:
    """The series `bars` bars later: lagged(x, k)[t] = x[t-k], NaN on the first k bars."""
    out = np.full_like(values, np.nan)
    if bars < values.shape[0]:
        out[bars:] = values[: values.shape[0] - bars]
    return out


def previous(values: Array) -> Array:
    """The series one bar later: previous(x)[t] = x[t-1], NaN at bar 0."""
    return lagged(values, 1)


def previous_flags(flags: Flags) -> Flags:
    """The flags one bar later, False at bar 0."""
    out = np.zeros_like(flags)
    out[1:] = flags[:-1]
    return out


def finite(*arrays: Array) -> Flags:
    """Bars where every array holds a number."""
    ok = np.ones(arrays[0].shape[0], dtype=np.bool_)
    for values in arrays:
        ok &= np.isfinite(values)
    return ok


def _lagged(values: Array | float) -> Array | float:
    return previous(values) if isinstance(values, np.ndarray) else values


def crosses_above(a: Array, b: Array | float) -> Flags:
    """a[t] > b[t] after a[t-1] <= b[t-1] (a line or a level); False wherever a value involved is NaN."""
    return np.asarray((a > b) & (previous(a) <= _lagged(b)), dtype=np.bool_)


def crosses_below(a: Array, b: Array | float) -> Flags:
    """a[t] < b[t] after a[t-1] >= b[t-1]; False wherever a value involved is NaN."""
    return np.asarray((a < b) & (previous(a) >= _lagged(b)), dtype=np.bool_)


def edge(state: npt.NDArray[np.bool_] | npt.NDArray[np.int8], valid: Flags) -> Flags:
    """Bars where `state` rises above its value on the previous bar, both bars valid: a condition that becomes true
    (or an ordered level that climbs) fires once, not on every bar while it holds."""
    lagged = np.zeros_like(state)
    lagged[1:] = state[:-1]
    return np.asarray((state > lagged) & valid & previous_flags(valid), dtype=np.bool_)


def run_length(flags: Flags) -> npt.NDArray[np.int64]:
    """How many bars in a row, ending at each bar, the flag has held (0 where it does not hold)."""
    index = np.arange(flags.shape[0], dtype=np.int64)
    last_off = np.maximum.accumulate(np.where(flags, -1, index))
    return index - last_off


def excursion_extreme(values: Array, inside: Flags, *, lowest: bool) -> Array:
    """On each bar that follows a run of `inside` bars, the lowest (or highest) value of that run; NaN elsewhere.

    The run ends before the bar, so the result reads only earlier bars (values after the run are masked out of the
    reduction, whatever they are)."""
    out = np.full(values.shape[0], np.nan)
    starts = inside & ~previous_flags(inside)
    exits = np.flatnonzero(~inside[1:] & inside[:-1]) + 1
    if not exits.size:
        return out
    reducer = np.minimum if lowest else np.maximum
    masked = np.where(inside, values, np.inf if lowest else -np.inf)
    extremes = reducer.reduceat(masked, np.flatnonzero(starts))
    out[exits] = extremes[np.cumsum(starts)[exits - 1] - 1]
    return out


def in_atr(distance: Array, average_range: Array) -> Array:
    """A price distance in ATRs (0 where the ATR is not positive)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(average_range > 0, distance / average_range, 0.0)


def atr_text(distance: float, average_range: float) -> str:
    """A distance in ATRs for a reason, e.g. "1.25 ATR"."""
    return f"{abs(distance) / average_range:.2f} ATR" if average_range > 0 else "n/a ATR"


def grade(excess: Array, strong: Flags) -> Array:
    """Confidence from how clearly a condition is met: 0.5-1 for STRONG, 0.2-0.5 for WEAK, rising with `excess`
    (>= 0, in the strategy's own unit) as 1 - exp(-excess)."""
    rise = 1.0 - np.exp(-np.clip(np.nan_to_num(excess), 0.0, None))
    return np.where(strong, 0.5 + 0.5 * rise, 0.2 + 0.3 * rise)


def tiered(depth: Array) -> tuple[Flags, Array]:
    """STRONG and confidence from a depth measured in steps from a trigger level (0) to the strong level (1):
    below 1 it is WEAK with confidence 0.2 + 0.3 x depth, beyond it STRONG with 0.5 + 0.5 x (1 - exp(1 - depth))."""
    depth = np.clip(np.nan_to_num(depth), 0.0, None)
    strong = depth > 1.0
    return strong, np.where(strong, grade(depth - 1.0, strong), 0.2 + 0.3 * np.minimum(depth, 1.0))


class ZoneExit:
    """Crossings back out of a zone: up through `low` after an excursion at or below it (BUY), down through `high`
    after one at or above it (SELL); STRONG when the excursion reached beyond the strong level, confidence from its
    depth (see `tiered`). `extreme` holds the excursion's extreme on the crossing bars."""

    __slots__ = ("buy", "confidence", "extreme", "sell", "strong")

    def __init__(self, values: Array, levels: tuple[float, float, float, float]) -> None:
        strong_low, low, high, strong_high = levels
        self.buy = crosses_above(values, low)
        self.sell = crosses_below(values, high)
        lows = excursion_extreme(values, values <= low, lowest=True)
        highs = excursion_extreme(values, values >= high, lowest=False)
        self.extreme = np.where(self.buy, lows, np.where(self.sell, highs, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(self.buy, (low - lows) / (low - strong_low), (highs - high) / (strong_high - high))
        self.strong, self.confidence = tiered(depth)


def num(value: float) -> str:
    """A number for a reason: two decimals from 100 up, more below (four significant digits), "n/a" for NaN."""
    if not math.isfinite(value):
        return "n/a"
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    return f"{value:.{max(2, 3 - magnitude)}f}"


def side_word(side: int, up: str = "above", down: str = "below") -> str:
    """`up` for a BUY, `down` for a SELL."""
    return up if side > 0 else down


def strength(strong: bool) -> str:
    """ "STRONG" or "WEAK"."""
    return "STRONG" if strong else "WEAK"


def period(name: str, description: str, default: int, minimum: int = 2) -> StrategyParam:
    """A window length in bars, at most MAX_PERIOD."""
    return integer(name, description, default, minimum, MAX_PERIOD)


def multiple(
    name: str, description: str, default: float, maximum: float = 20.0, *, minimum: float = 0.0
) -> StrategyParam:
    """A non-negative multiplier (of an ATR, a band width, an average)."""
    return number(name, description, default, minimum, maximum, unit="x", step=0.1)


def percent(name: str, description: str, default: float, maximum: float = 100.0) -> StrategyParam:
    """A non-negative percentage."""
    return number(name, description, default, 0.0, maximum, unit="%", step=0.1)


def level(name: str, description: str, default: float, minimum: float, maximum: float) -> StrategyParam:
    """An oscillator level."""
    return number(name, description, default, minimum, maximum, step=1.0)


def increasing(*names: str) -> Constraint:
    """A constraint that the named parameters strictly increase; a violation names the first of an unordered pair."""

    def check(params: Params, timeframe: Timeframe | None) -> list[FieldViolation]:
        return [
            FieldViolation(first, f"must be less than {second} ({_plain(params[second])})")
            for first, second in itertools.pairwise(names)
            if not float(params[first]) < float(params[second])
        ]

    return check


def _plain(value: ParamValue) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
