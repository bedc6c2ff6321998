"""A backtest as asked and as it will run: RunBacktest's config decoded (`BacktestRequest`, the values as given) and
validated into a `BacktestSpec` by its constructor, `BacktestSpec.of`.

The declared rules of the config (lengths, counts, ranges, each with the reason the contract names: INVALID_CASH,
INVALID_COST, ...) are checked by the server before the handler runs; the rules no declaration can say are checked
here, before any bar is read, so bad input fails the call before its first message: STRATEGY_NOT_FOUND (NOT_FOUND)
for an unknown strategy, else INVALID_ARGUMENT with a violation per problem (a symbol listed twice, in any case:
DUPLICATE_SYMBOL; the range's order: INVALID_RANGE; the strategy's parameters and sweep), raised under the first
problem's reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.core.errors import FieldViolation, InvalidArgument
from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe
from services.signal.backtests.engine.config import BacktestMetric, CommissionModel, FillTiming, Sizing
from services.signal.backtests.engine.sweep import grid_combinations
from services.signal.backtests.simulation import sweep_size
from services.signal.strategies.base import StrategyDef
from services.signal.validation import find_strategy, range_problem, timeframe_of

MAX_COMBINATIONS = 10_000
DEFAULT_EQUITY_POINTS = 5_000
DEFAULT_FILL_TIMING = FillTiming.NEXT_BAR_OPEN
DEFAULT_RANK_BY = BacktestMetric.SHARPE
# A volatility target's lookback and largest fraction of equity when the request leaves them unset.
DEFAULT_VOLATILITY_LOOKBACK = 20
DEFAULT_MAX_FRACTION = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepRequest:
    """A parameter sweep as asked: each swept parameter's values, and the metric ranking them (0: the default)."""

    grid: dict[str, list[ParamValue]]
    rank_by: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestRequest:
    """RunBacktest's config as given (decoded, not yet validated); 0 means unset for the enums and counts."""

    strategy_id: str
    symbols: tuple[str, ...]
    timeframe: int
    start: datetime
    end: datetime | None
    parameters: dict[str, ParamValue]
    sweep: SweepRequest | None
    initial_cash: float
    commission: CommissionModel
    slippage_bps: float
    sizing: Sizing
    stop_loss: float | None
    take_profit: float | None
    trailing_stop: float | None
    allow_short: bool
    allow_fractional: bool
    fill_timing: int
    close_at_end: bool
    risk_free_rate: float
    max_equity_points: int


class _Problems:
    """Violations with the reason of each; raised together under the first one's reason."""

    def __init__(self) -> None:
        self.items: list[tuple[str, FieldViolation]] = []

    def add(self, reason: str, field: str, description: str) -> None:
        self.items.append((reason, FieldViolation(field, description)))

    def absorb(self, error: InvalidArgument) -> None:
        self.items.extend((error.reason, violation) for violation in error.violations)

    def raise_any(self) -> None:
        if self.items:
            raise InvalidArgument([violation for _, violation in self.items], reason=self.items[0][0])


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestSpec:
    """A validated backtest: the strategy with its resolved parameters and sweep grid (every combination valid),
    upper-case symbols, the range, and the engine and reporting settings with their defaults filled in."""

    strategy: StrategyDef
    parameters: dict[str, ParamValue]
    grid: dict[str, list[ParamValue]]
    symbols: tuple[str, ...]
    timeframe: Timeframe
    start: datetime
    end: datetime | None
    initial_cash: float
    commission: CommissionModel
    slippage_bps: float
    sizing: Sizing
    stop_loss: float | None
    take_profit: float | None
    trailing_stop: float | None
    allow_short: bool
    allow_fractional: bool
    fill_timing: FillTiming
    close_at_end: bool
    risk_free_rate: float
    rank_by: BacktestMetric
    max_equity_points: int

    @classmethod
    def of(cls, request: BacktestRequest, *, field: str = "config") -> BacktestSpec:
        """The request validated (see the module docstring); `field` is the config's path in the request."""
        problems = _Problems()
        strategy = find_strategy(request.strategy_id, f"{field}.strategy_id")
        symbols = _symbols(request.symbols, problems, field)
        timeframe = timeframe_of(request.timeframe, f"{field}.timeframe")
        problem = range_problem(request.start, request.end)
        if problem is not None:
            problems.add("INVALID_RANGE", f"{field}.range", problem)
        parameters: dict[str, ParamValue] = {}
        grid: dict[str, list[ParamValue]] = {}
        rank_by = DEFAULT_RANK_BY
        try:
            parameters = strategy.resolve(request.parameters, timeframe=timeframe, field=f"{field}.parameters")
            if request.sweep is not None:
                rank_by = BacktestMetric(request.sweep.rank_by) if request.sweep.rank_by else DEFAULT_RANK_BY
                grid = _grid(
                    strategy,
                    request.sweep,
                    parameters=parameters,
                    timeframe=timeframe,
                    problems=problems,
                    path=f"{field}.sweep",
                )
        except InvalidArgument as error:
            problems.absorb(error)
        problems.raise_any()
        return cls(
            strategy=strategy,
            parameters=parameters,
            grid=grid,
            symbols=symbols,
            timeframe=timeframe,
            start=request.start,
            end=request.end,
            initial_cash=request.initial_cash,
            commission=request.commission,
            slippage_bps=request.slippage_bps,
            sizing=request.sizing,
            stop_loss=request.stop_loss,
            take_profit=request.take_profit,
            trailing_stop=request.trailing_stop,
            allow_short=request.allow_short,
            allow_fractional=request.allow_fractional,
            fill_timing=FillTiming(request.fill_timing) if request.fill_timing else DEFAULT_FILL_TIMING,
            close_at_end=request.close_at_end,
            risk_free_rate=request.risk_free_rate,
            rank_by=rank_by,
            max_equity_points=request.max_equity_points or DEFAULT_EQUITY_POINTS,
        )


def _symbols(given: tuple[str, ...], problems: _Problems, field: str) -> tuple[str, ...]:
    """The symbols upper case; DUPLICATE_SYMBOL for one listed twice (in any case)."""
    symbols = tuple(symbol.upper() for symbol in given)
    seen: set[str] = set()
    for index, symbol in enumerate(symbols):
        if symbol in seen:
            problems.add("DUPLICATE_SYMBOL", f"{field}.symbols[{index}]", f"{symbol} is listed twice")
        seen.add(symbol)
    return symbols


def _grid(
    strategy: StrategyDef,
    sweep: SweepRequest,
    *,
    parameters: dict[str, ParamValue],
    timeframe: Timeframe | None,
    problems: _Problems,
    path: str,
) -> dict[str, list[ParamValue]]:
    """The sweep's grid by parameter name: UNKNOWN_PARAMETER for a name the strategy lacks, SWEEP_TOO_LARGE past
    MAX_COMBINATIONS, and every combination valid on its own (bounds and cross-parameter rules such as fast <
    slow)."""
    known = {param.name for param in strategy.params}
    grid: dict[str, list[ParamValue]] = {}
    for name in sorted(sweep.grid):
        if name not in known:
            problems.add("UNKNOWN_PARAMETER", f"{path}.grid.{name}", f"unknown parameter of {strategy.strategy_id}")
        else:
            grid[name] = list(sweep.grid[name])
    size = sweep_size(grid)
    if size > MAX_COMBINATIONS:
        problems.add("SWEEP_TOO_LARGE", f"{path}.grid", f"{size} combinations; at most {MAX_COMBINATIONS}")
        return {}
    if problems.items:
        return {}
    for combination in grid_combinations(grid):
        try:
            strategy.resolve({**parameters, **combination}, timeframe=timeframe, field=f"{path}.grid")
        except InvalidArgument as error:
            problems.absorb(error)
            break
    return grid
