"""Summary figures of a simulation: returns, risk, drawdowns and trade statistics, each a small pure function."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from services.signal.backtests.engine.config import BacktestMetric
from services.signal.backtests.engine.kernel import Array

SECONDS_PER_YEAR = 365.25 * 86_400.0
_DAY = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestMetrics:
    """The figures of bullant.signal.v1.BacktestMetrics (None where the proto field is absent) plus average win and
    loss and the drawdown duration in bars. Returns and drawdowns are fractions; money is in the quote currency."""

    total_return: float
    cagr: float
    annual_volatility: float
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration: timedelta
    max_drawdown_duration_bars: int
    win_rate: float | None
    profit_factor: float | None
    average_win: float | None
    average_loss: float | None
    exposure: float
    trade_count: int
    buy_and_hold_return: float
    calmar: float | None
    final_equity: float
    total_fees: float
    average_trade_return: float | None
    best_trade_return: float | None
    worst_trade_return: float | None

    def value(self, metric: BacktestMetric) -> float | None:
        """The figure a sweep ranks by."""
        return {
            BacktestMetric.TOTAL_RETURN: self.total_return,
            BacktestMetric.CAGR: self.cagr,
            BacktestMetric.SHARPE: self.sharpe,
            BacktestMetric.SORTINO: self.sortino,
            BacktestMetric.MAX_DRAWDOWN: self.max_drawdown,
            BacktestMetric.PROFIT_FACTOR: self.profit_factor,
            BacktestMetric.WIN_RATE: self.win_rate,
            BacktestMetric.CALMAR: self.calmar,
        }[metric]


def bars_per_year(bar_span: timedelta, *, days_per_year: float = 365.0, hours_per_day: float = 24.0) -> float:
    """Bars in a year of trading: crypto trades 365 days × 24 h (the defaults), an exchange about 252 days × 6.5 h.
    A daily bar is one per trading day however short the session; bars longer than a day divide a calendar year.
    Backtests of stored instruments count them on the instrument's calendar instead (InstrumentInfo.periods_per_year:
    its sessions, holidays and early closes)."""
    seconds = bar_span.total_seconds()
    if seconds <= 0:
        raise ValueError(f"bar span must be positive, got {bar_span}")
    if seconds > _DAY:
        return SECONDS_PER_YEAR / seconds
    return days_per_year * max(1.0, hours_per_day * 3600.0 / seconds)


def bar_returns(equity: Array, initial_cash: float) -> Array:
    """Simple return of each bar, the first one against the initial cash."""
    previous = np.concatenate(([initial_cash], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        returns: Array = equity / previous - 1.0
    return returns


def annual_volatility(returns: Array, periods_per_year: float) -> float:
    """Sample standard deviation of per-bar returns × √periods_per_year; 0 with fewer than two returns."""
    if returns.shape[0] < 2:
        return 0.0
    return float(np.std(returns, ddof=1) * math.sqrt(periods_per_year))


def per_bar_risk_free(risk_free_rate: float, periods_per_year: float) -> float:
    """The annual risk-free rate compounded down to one bar."""
    return float((1.0 + risk_free_rate) ** (1.0 / periods_per_year) - 1.0)


def sharpe_ratio(returns: Array, periods_per_year: float, risk_free_rate: float = 0.0) -> float | None:
    """Mean excess per-bar return over its sample standard deviation, × √periods_per_year; None without
    volatility."""
    if returns.shape[0] < 2:
        return None
    deviation = float(np.std(returns, ddof=1))
    if not deviation > 0.0:
        return None
    excess = float(np.mean(returns)) - per_bar_risk_free(risk_free_rate, periods_per_year)
    return excess / deviation * math.sqrt(periods_per_year)


def sortino_ratio(returns: Array, periods_per_year: float, risk_free_rate: float = 0.0) -> float | None:
    """Mean excess per-bar return over the downside deviation √mean(min(excess, 0)²), × √periods_per_year; None
    without downside."""
    if returns.shape[0] == 0:
        return None
    excess = returns - per_bar_risk_free(risk_free_rate, periods_per_year)
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if not downside > 0.0:
        return None
    return float(np.mean(excess)) / downside * math.sqrt(periods_per_year)


def cagr(initial: float, final: float, years: float) -> float:
    """Compound annual growth rate; -1 when everything was lost."""
    if final <= 0.0:
        return -1.0
    return float((final / initial) ** (1.0 / years) - 1.0)


def drawdowns(equity: Array, initial_cash: float) -> Array:
    """Per bar, the fall from the running equity peak (the initial cash counts as the first peak), as a positive
    fraction."""
    peaks = np.maximum.accumulate(np.concatenate(([initial_cash], equity)))[1:]
    fall: Array = 1.0 - equity / peaks
    return fall


def max_drawdown_duration(
    equity: Array, initial_cash: float, point_times: npt.NDArray[np.datetime64]
) -> tuple[timedelta, int]:
    """The longest time from an equity peak to its recovery (the first later point at or above it), or to the end
    when not recovered, and that stretch's length in bars. The initial cash is the first point: `point_times[0]` is
    the start of the range and `point_times[k + 1]` the time of equity[k]."""
    points = np.concatenate(([initial_cash], equity))
    marks = np.flatnonzero(points >= np.maximum.accumulate(points))
    ends_underwater = marks[-1] != points.shape[0] - 1
    if ends_underwater:
        marks = np.append(marks, points.shape[0] - 1)
    gaps = np.diff(marks)
    underwater = gaps > 1  # consecutive peaks have no drawdown between them ...
    if ends_underwater:
        underwater[-1] = True  # ... but a last point below the peak is one, however short
    if not underwater.any():
        return timedelta(0), 0
    stamps = point_times.astype("datetime64[ns]").astype(np.int64)
    lengths_ns = stamps[marks[1:]] - stamps[marks[:-1]]
    longest = int(np.argmax(np.where(underwater, lengths_ns, -1)))
    return timedelta(microseconds=int(lengths_ns[longest]) // 1000), int(gaps[longest])


def compute_metrics(
    *,
    equity: Array,
    drawdown: Array,
    point_times: npt.NDArray[np.datetime64],
    initial_cash: float,
    pnl: Array,
    return_fraction: Array,
    total_fees: float,
    exposed_bars: int,
    buy_and_hold_return: float,
    periods_per_year: float,
    risk_free_rate: float,
) -> BacktestMetrics:
    """Every figure of one simulation from its per-bar equity and `drawdowns` of it (`point_times` as in
    max_drawdown_duration: the range start, then each bar's close time) and its closed trades' pnl and returns."""
    returns = bar_returns(equity, initial_cash)
    final = float(equity[-1])
    span_ns = int((point_times[-1] - point_times[0]).astype("timedelta64[ns]").astype(np.int64))
    growth = cagr(initial_cash, final, span_ns / 1e9 / SECONDS_PER_YEAR)
    deepest = float(np.max(drawdown))
    duration, duration_bars = max_drawdown_duration(equity, initial_cash, point_times)
    stats = trade_statistics(pnl, return_fraction)
    return BacktestMetrics(
        total_return=final / initial_cash - 1.0,
        cagr=growth,
        annual_volatility=annual_volatility(returns, periods_per_year),
        sharpe=sharpe_ratio(returns, periods_per_year, risk_free_rate),
        sortino=sortino_ratio(returns, periods_per_year, risk_free_rate),
        max_drawdown=deepest,
        max_drawdown_duration=duration,
        max_drawdown_duration_bars=duration_bars,
        exposure=exposed_bars / equity.shape[0],
        trade_count=int(pnl.shape[0]),
        buy_and_hold_return=buy_and_hold_return,
        calmar=growth / deepest if deepest > 0.0 else None,
        final_equity=final,
        total_fees=total_fees,
        win_rate=stats.win_rate,
        profit_factor=stats.profit_factor,
        average_win=stats.average_win,
        average_loss=stats.average_loss,
        average_trade_return=stats.average_trade_return,
        best_trade_return=stats.best_trade_return,
        worst_trade_return=stats.worst_trade_return,
    )


@dataclass(frozen=True, slots=True)
class TradeStatistics:
    """Figures over closed trades; None where undefined (no trades, no winners, no losers)."""

    win_rate: float | None
    profit_factor: float | None
    average_win: float | None
    average_loss: float | None
    average_trade_return: float | None
    best_trade_return: float | None
    worst_trade_return: float | None


def trade_statistics(pnl: Array, return_fraction: Array) -> TradeStatistics:
    """Win rate (pnl > 0), profit factor (gross profit / gross loss, in money), average win and loss (money), and
    the mean, best and worst trade return fraction."""
    wins, losses = pnl[pnl > 0.0], pnl[pnl < 0.0]
    count = pnl.shape[0]
    return TradeStatistics(
        win_rate=wins.shape[0] / count if count else None,
        profit_factor=float(wins.sum() / -losses.sum()) if losses.shape[0] else None,
        average_win=float(wins.mean()) if wins.shape[0] else None,
        average_loss=float(losses.mean()) if losses.shape[0] else None,
        average_trade_return=float(return_fraction.mean()) if count else None,
        best_trade_return=float(return_fraction.max()) if count else None,
        worst_trade_return=float(return_fraction.min()) if count else None,
    )
