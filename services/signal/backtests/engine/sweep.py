"""Parameter sweeps: one backtest per combination of a grid of strategy parameters, ranked by a metric."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy.typing as npt

from services.signal.backtests.engine.config import BacktestConfig, BacktestMetric
from services.signal.backtests.engine.engine import BacktestBars, BacktestResult, Progress, run_backtest
from services.signal.backtests.engine.metrics import BacktestMetrics

MAX_COMBINATIONS = 10_000
# Lower is better only for drawdown; every other rankable metric is "higher is better".
_LOWER_IS_BETTER = frozenset({BacktestMetric.MAX_DRAWDOWN})

ParameterValue = float | int | str | bool
Parameters = Mapping[str, ParameterValue]


@dataclass(frozen=True, slots=True)
class SweepResult:
    """One combination: its parameters, metrics and rank (1 is best)."""

    parameters: dict[str, ParameterValue]
    metrics: BacktestMetrics
    rank: int


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """Every combination best first, and the full result (trades, equity curve) of the best one."""

    results: tuple[SweepResult, ...]
    best: BacktestResult


def grid_combinations(grid: Mapping[str, Sequence[ParameterValue]]) -> list[dict[str, ParameterValue]]:
    """The Cartesian product of the grid, in grid order (the last parameter varies fastest)."""
    names = list(grid)
    for name in names:
        if len(grid[name]) == 0:
            raise ValueError(f"sweep parameter {name} has no values")
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[name] for name in names))]


def rank_key(metrics: BacktestMetrics, metric: BacktestMetric) -> tuple[bool, float]:
    """Sort key, ascending = better: undefined (None or NaN) values last, then by the metric in its direction."""
    value = metrics.value(metric)
    if value is None or math.isnan(value):
        return True, 0.0
    return False, value if metric in _LOWER_IS_BETTER else -value


def sweep(
    bars: BacktestBars,
    signal_for: Callable[[Parameters], npt.ArrayLike],
    grid: Mapping[str, Sequence[ParameterValue]],
    config: BacktestConfig,
    *,
    rank_by: BacktestMetric = BacktestMetric.SHARPE,
    warmup_bars: int = 0,
    max_combinations: int = MAX_COMBINATIONS,
    progress: Progress | None = None,
) -> SweepOutcome:
    """Run `signal_for(parameters)` through the engine for every grid combination and rank them by `rank_by`;
    ties keep grid order. `progress(done, total)` is called after each combination."""
    combinations = grid_combinations(grid)
    if len(combinations) > max_combinations:
        raise ValueError(f"the grid has {len(combinations)} combinations, more than {max_combinations}")
    scored: list[tuple[dict[str, ParameterValue], BacktestMetrics]] = []
    for done, parameters in enumerate(combinations, start=1):
        result = run_backtest(bars, signal_for(parameters), config, warmup_bars=warmup_bars)
        scored.append((parameters, result.metrics))
        if progress is not None:
            progress(done, len(combinations))
    order = sorted(range(len(scored)), key=lambda index: (*rank_key(scored[index][1], rank_by), index))
    results = tuple(SweepResult(scored[index][0], scored[index][1], rank) for rank, index in enumerate(order, start=1))
    # Only metrics are kept per combination (a big grid's trades would not fit); the winner is simply re-run.
    best = run_backtest(bars, signal_for(results[0].parameters), config, warmup_bars=warmup_bars)
    return SweepOutcome(results, best)
