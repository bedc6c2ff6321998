"""Entry sizes per signal bar: a fraction of equity, a fixed quantity, or a volatility-targeted fraction."""

from __future__ import annotations

import math

import numpy as np

from services.signal.backtests.engine.config import FixedFraction, FixedQuantity, Sizing, VolatilityTarget
from services.signal.backtests.engine.kernel import Array, jit


@jit
def _rolling_volatility(close: Array, lookback: int) -> Array:
    # Two passes per window rather than running sums: exact (no cancellation) and still O(n × lookback) in
    # compiled code, which is cheap for the short lookbacks sizing uses.
    result = np.full(close.shape[0], np.nan)
    returns = np.empty(close.shape[0])
    for bar in range(1, close.shape[0]):
        returns[bar] = close[bar] / close[bar - 1] - 1.0
    for bar in range(lookback, close.shape[0]):
        total = 0.0
        for k in range(bar - lookback + 1, bar + 1):
            total += returns[k]
        mean = total / lookback
        squares = 0.0
        for k in range(bar - lookback + 1, bar + 1):
            squares += (returns[k] - mean) ** 2
        result[bar] = math.sqrt(squares / (lookback - 1))
    return result


def rolling_volatility(close: Array, lookback: int) -> Array:
    """Per bar, the sample standard deviation (ddof 1) of the `lookback` simple close-to-close returns ending at
    that bar's close; NaN until that many returns exist. Only that bar and earlier ones are read."""
    if lookback < 2:
        raise ValueError(f"volatility lookback must be at least 2 bars, got {lookback}")
    return _rolling_volatility(np.ascontiguousarray(close, dtype=np.float64), int(lookback))


def entry_sizes(close: Array, sizing: Sizing, *, periods_per_year: float, lot_size: float | None) -> Array:
    """The size of an entry signalled on each bar: a fraction of equity, or for FixedQuantity a quantity (rounded
    down to `lot_size` when given). NaN means no entry can be sized on that bar."""
    if isinstance(sizing, FixedFraction):
        return np.full(close.shape[0], sizing.fraction)
    if isinstance(sizing, FixedQuantity):
        quantity = sizing.quantity if lot_size is None else math.floor(sizing.quantity / lot_size) * lot_size
        return np.full(close.shape[0], quantity)
    return volatility_target_fractions(close, sizing, periods_per_year)


def volatility_target_fractions(close: Array, sizing: VolatilityTarget, periods_per_year: float) -> Array:
    """Fractions of equity that give each bar's entry the target annualised volatility, capped at max_fraction."""
    annual = rolling_volatility(close, sizing.lookback_bars) * math.sqrt(periods_per_year)
    with np.errstate(divide="ignore"):
        fractions = np.minimum(sizing.annual_volatility / annual, sizing.max_fraction)
    # σ = 0 divides to +inf, which the cap already turned into max_fraction; NaN (warm-up) stays NaN.
    return fractions
