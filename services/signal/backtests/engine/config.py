"""What defines one backtest run: costs, fill timing, sizing and protective exits, validated when built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum


class FillTiming(IntEnum):
    """When a signal's order fills; numbers of bullant.signal.v1.FillTiming."""

    NEXT_BAR_OPEN = 1
    SIGNAL_BAR_CLOSE = 2


class ExitReason(IntEnum):
    """Why a trade was closed; numbers of bullant.signal.v1.ExitReason."""

    SIGNAL = 1
    STOP_LOSS = 2
    TAKE_PROFIT = 3
    TRAILING_STOP = 4
    END_OF_DATA = 5


class BacktestMetric(IntEnum):
    """A metric that ranks sweep combinations; numbers of bullant.signal.v1.BacktestMetric."""

    TOTAL_RETURN = 1
    CAGR = 2
    SHARPE = 3
    SORTINO = 4
    MAX_DRAWDOWN = 5
    PROFIT_FACTOR = 6
    WIN_RATE = 7
    CALMAR = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class CommissionModel:
    """Fee charged on every fill, entry and exit: `rate` × the fill's notional plus `fixed_per_fill`.

    `rate` is a fraction (0.002 = 0.2 % = 20 bps; the proto's rate_bps / 10,000).
    """

    rate: float = 0.0
    fixed_per_fill: float = 0.0

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.rate) and 0.0 <= self.rate < 0.1, f"commission rate must be in [0, 0.1), got {self.rate}"
        )
        _require(
            math.isfinite(self.fixed_per_fill) and self.fixed_per_fill >= 0.0,
            f"fixed commission per fill must be >= 0, got {self.fixed_per_fill}",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedFraction:
    """Each entry invests this fraction of equity (at the fill, after any position it replaces is closed), fees
    included: quantity = (equity × fraction − fixed fee) / (fill price × (1 + rate)), rounded down to lots."""

    fraction: float = 1.0

    def __post_init__(self) -> None:
        _require(0.0 < self.fraction <= 1.0, f"fraction must be in (0, 1], got {self.fraction}")


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedQuantity:
    """Each entry trades this many units, whatever the equity (the engine models no margin: cash may go negative)."""

    quantity: float

    def __post_init__(self) -> None:
        _require(math.isfinite(self.quantity) and self.quantity > 0.0, f"quantity must be > 0, got {self.quantity}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VolatilityTarget:
    """Each entry invests fraction = annual_volatility / (σ × √periods_per_year) of equity, capped at max_fraction,
    where σ is the sample standard deviation of the last `lookback_bars` close-to-close returns up to and including
    the signal bar's close (never a later price). Entries before σ exists are skipped; σ = 0 gives the cap."""

    annual_volatility: float
    lookback_bars: int = 20
    max_fraction: float = 1.0

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.annual_volatility) and self.annual_volatility > 0.0,
            f"target volatility must be > 0, got {self.annual_volatility}",
        )
        _require(self.lookback_bars >= 2, f"volatility lookback must be at least 2 bars, got {self.lookback_bars}")
        _require(
            math.isfinite(self.max_fraction) and self.max_fraction > 0.0,
            f"max fraction must be > 0, got {self.max_fraction}",
        )


Sizing = FixedFraction | FixedQuantity | VolatilityTarget


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestConfig:
    """One simulation's settings. Fractions are plain fractions (0.05 = 5 %), slippage is in basis points.

    - `periods_per_year`: bars per year, for annualised figures and volatility-target sizing (see
      `metrics.bars_per_year`).
    - `slippage_bps`: every fill is moved this much against the trader (buys higher, sells lower).
    - `allow_short`: when false a -1 signal only closes a long.
    - `allow_fractional`: when false quantities are rounded down to whole multiples of `lot_size`.
    - `stop_loss` / `take_profit`: exit when the price moves this fraction against / for the position from its
      entry fill price. `trailing_stop`: exit when it falls this fraction from the best price since entry.
    - `close_at_end`: close a position still open after the last bar at that bar's close (END_OF_DATA); when false
      it stays open, marked to market in the equity curve and left out of the trades.
    """

    initial_cash: float
    periods_per_year: float = 252.0
    commission: CommissionModel = field(default_factory=CommissionModel)
    slippage_bps: float = 0.0
    sizing: Sizing = field(default_factory=FixedFraction)
    fill_timing: FillTiming = FillTiming.NEXT_BAR_OPEN
    allow_short: bool = False
    allow_fractional: bool = False
    lot_size: float = 1.0
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None
    risk_free_rate: float = 0.0
    close_at_end: bool = True

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.initial_cash) and self.initial_cash > 0.0,
            f"initial cash must be a positive amount, got {self.initial_cash}",
        )
        _require(
            math.isfinite(self.periods_per_year) and self.periods_per_year > 0.0,
            f"periods per year must be > 0, got {self.periods_per_year}",
        )
        _require(
            math.isfinite(self.slippage_bps) and 0.0 <= self.slippage_bps < 10_000.0,
            f"slippage must be in [0, 10000) bps, got {self.slippage_bps}",
        )
        _require(math.isfinite(self.lot_size) and self.lot_size > 0.0, f"lot size must be > 0, got {self.lot_size}")
        _require(
            math.isfinite(self.risk_free_rate) and -1.0 < self.risk_free_rate < 1.0,
            f"risk-free rate must be in (-1, 1), got {self.risk_free_rate}",
        )
        for name, value, upper in (
            ("stop_loss", self.stop_loss, 1.0),
            ("take_profit", self.take_profit, math.inf),
            ("trailing_stop", self.trailing_stop, 1.0),
        ):
            _require(
                value is None or (0.0 < value < upper and math.isfinite(value)),
                f"{name} must be a fraction in (0, {upper:g}), got {value}",
            )
        if isinstance(self.sizing, FixedQuantity) and not self.allow_fractional:
            _require(
                self.sizing.quantity >= self.lot_size,
                f"fixed quantity {self.sizing.quantity} is less than one lot ({self.lot_size})",
            )

    @property
    def slippage(self) -> float:
        """Slippage as a fraction of the price."""
        return self.slippage_bps / 10_000.0


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
