"""A backtest as the product runs it: a strategy's events over each symbol's bars become target positions, the
portfolio engine trades them from one cash balance, and a sweep repeats that per parameter combination.

Everything here is synchronous and CPU-bound (the runner calls it in a worker thread); `progress` is how a run
reports and how it is cancelled (the callback raises)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.core.parameters import Params, ParamValue
from services.core.timeframes import Timeframe
from services.signal.backtests.engine.config import BacktestConfig, BacktestMetric
from services.signal.backtests.engine.engine import BacktestBars
from services.signal.backtests.engine.metrics import BacktestMetrics
from services.signal.backtests.engine.portfolio import PortfolioResult, run_portfolio
from services.signal.backtests.engine.sweep import grid_combinations, rank_key
from services.signal.strategies.base import StrategyBars, StrategyDef

# Bars one backtest may simulate per symbol, and in total (all symbols, before a sweep multiplies them).
MAX_BARS_PER_SYMBOL = 1_000_000
MAX_BARS_TOTAL = 2_000_000
# Combinations × bars a sweep may simulate (10,000 combinations of 10,000 bars, or 100 of a million).
MAX_SWEEP_BAR_RUNS = 200_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolBars:
    """One symbol's bars: the range's bars preceded by `warmup` bars of history (strategy warm-up only)."""

    symbol: str
    bars: StrategyBars
    warmup: int

    @property
    def simulated(self) -> int:
        return len(self.bars) - self.warmup


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestPlan:
    """A validated backtest: the strategy with its resolved parameters (the sweep grid's values are resolved per
    combination), symbols, engine settings and reporting choices."""

    strategy: StrategyDef
    parameters: dict[str, ParamValue]
    symbols: tuple[str, ...]
    timeframe: Timeframe
    start: datetime
    end: datetime | None
    engine: BacktestConfig
    grid: dict[str, list[ParamValue]]
    rank_by: BacktestMetric
    max_equity_points: int

    @property
    def combinations(self) -> list[dict[str, ParamValue]]:
        return parameter_sets(self.parameters, self.grid)


@dataclass(frozen=True, slots=True, kw_only=True)
class RankedCombination:
    """One sweep combination with its metrics and rank (1 is best)."""

    parameters: dict[str, ParamValue]
    metrics: BacktestMetrics
    rank: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestOutcome:
    """What a finished backtest reports: the (best) parameters and their full result, every sweep combination, and
    each symbol's simulated bar count."""

    parameters: dict[str, ParamValue]
    result: PortfolioResult
    symbols: tuple[str, ...]
    sweep: tuple[RankedCombination, ...]
    bar_count: int


Report = Callable[[int, int, int, int, str], None]
"""progress(bars_done, bars_total, combinations_done, combinations_total, stage); raising aborts the run."""


def _engine_bars(item: SymbolBars) -> BacktestBars:
    bars = item.bars
    return BacktestBars(bars.open_time, bars.open, bars.high, bars.low, bars.close, bars.volume, bars.span)


def simulate(plan: BacktestPlan, data: Sequence[SymbolBars], progress: Report) -> BacktestOutcome:
    """Run the plan over the symbols' bars (in plan.symbols order) and rank sweep combinations."""
    engine_bars = [_engine_bars(item) for item in data]
    warmups = [item.warmup for item in data]
    combinations = plan.combinations
    per_run = sum(item.simulated for item in data)
    total = per_run * len(combinations)

    def run(parameters: Params, done_before: int, index: int) -> PortfolioResult:
        signals = [plan.strategy.evaluate(item.bars, parameters).target_positions() for item in data]

        def report(done: int, _: int) -> None:
            progress(min(done_before + min(done, per_run), total), total, index, len(combinations), "simulating")

        return run_portfolio(engine_bars, signals, plan.engine, warmup_bars=warmups, progress=report)

    # Only metrics are kept per combination (a big grid's trades and curves would not fit); the best is re-run.
    scored: list[tuple[dict[str, ParamValue], BacktestMetrics]] = []
    kept: PortfolioResult | None = None
    for index, parameters in enumerate(combinations):
        result = run(parameters, per_run * index, index)
        scored.append((parameters, result.metrics))
        kept = result if len(combinations) == 1 else None
        progress(per_run * (index + 1), total, index + 1, len(combinations), "simulating")
    ranked = rank(scored, plan.rank_by)
    progress(total, total, len(combinations), len(combinations), "ranking")
    best_parameters = ranked[0].parameters
    best = kept if kept is not None else run(best_parameters, total, len(combinations))
    return BacktestOutcome(
        parameters=best_parameters,
        result=best,
        symbols=plan.symbols,
        sweep=tuple(ranked) if plan.grid else (),
        bar_count=max(item.simulated for item in data),
    )


def rank(
    scored: Sequence[tuple[dict[str, ParamValue], BacktestMetrics]], metric: BacktestMetric
) -> list[RankedCombination]:
    """Combinations best first by `metric` (undefined values last, ties in grid order)."""
    order = sorted(range(len(scored)), key=lambda index: (*rank_key(scored[index][1], metric), index))
    return [
        RankedCombination(parameters=scored[index][0], metrics=scored[index][1], rank=position)
        for position, index in enumerate(order, start=1)
    ]


def parameter_sets(
    parameters: Mapping[str, ParamValue], grid: Mapping[str, Sequence[ParamValue]]
) -> list[dict[str, ParamValue]]:
    """Every parameter set to simulate: the parameters, overridden by each grid combination (just them without a
    grid)."""
    if not grid:
        return [dict(parameters)]
    return [{**parameters, **combination} for combination in grid_combinations(grid)]


def sweep_size(grid: Mapping[str, Sequence[ParamValue]]) -> int:
    """Combinations in a grid (1 without one)."""
    size = 1
    for values in grid.values():
        size *= len(values)
    return size
