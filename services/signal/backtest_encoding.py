"""RunBacktest's config decoded and validated into the domain's terms, and stored backtests encoded as messages.

The declared rules of BacktestConfig (lengths, counts, ranges, each with the reason the contract names: INVALID_CASH,
INVALID_COST, ...) are checked by the server before the handler runs; the rules no declaration can say are checked
here, before any bar is read, so bad input fails the call before its first message."""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from google.protobuf import json_format

from bullant.signal.v1 import signal_pb2
from services.core.errors import FieldViolation, InvalidArgument
from services.core.messages import decode_parameters, naive_utc, parameter_values, timestamp
from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe
from services.signal.backtest.config import (
    BacktestMetric,
    CommissionModel,
    FillTiming,
    FixedFraction,
    FixedQuantity,
    Sizing,
    VolatilityTarget,
)
from services.signal.backtest.engine import EquityCurve
from services.signal.backtest.metrics import BacktestMetrics
from services.signal.backtest.sweep import grid_combinations
from services.signal.backtest_store import BacktestRecord, Progress
from services.signal.backtests import BacktestOutcome, sweep_size
from services.signal.encoding import find_strategy, timeframe_of
from services.signal.strategies.base import StrategyDef

MAX_COMBINATIONS = 10_000
DEFAULT_EQUITY_POINTS = 5_000


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedBacktest:
    """A validated RunBacktest config: the domain values, the normalised config (defaults filled in) as it is
    stored, and a digest of it for request-id deduplication."""

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
    normalized: signal_pb2.BacktestConfig

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.normalized.SerializeToString(deterministic=True)).hexdigest()

    @property
    def config_json(self) -> str:
        return json_format.MessageToJson(self.normalized, indent=None, sort_keys=True)


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


def decode_config(config: signal_pb2.BacktestConfig, *, field: str = "config") -> DecodedBacktest:
    """The rules of BacktestConfig that its contract cannot declare: STRATEGY_NOT_FOUND (NOT_FOUND) for an unknown
    strategy, else INVALID_ARGUMENT with a violation per problem (a symbol listed twice, in any case: DUPLICATE_SYMBOL;
    the range's order: INVALID_RANGE; the strategy's parameters and sweep). Lengths, counts, ranges and the sizing's
    method are the declared request rules, already checked by the server before the handler runs
    (services/core/rules.py)."""
    problems = _Problems()
    normalized = signal_pb2.BacktestConfig()
    normalized.CopyFrom(config)
    strategy = find_strategy(config.strategy_id, f"{field}.strategy_id")
    symbols = tuple(symbol.upper() for symbol in config.symbols)
    seen: set[str] = set()
    for index, symbol in enumerate(symbols):
        if symbol in seen:
            problems.add("DUPLICATE_SYMBOL", f"{field}.symbols[{index}]", f"{symbol} is listed twice")
        seen.add(symbol)
    del normalized.symbols[:]
    normalized.symbols.extend(symbols)
    timeframe = timeframe_of(config.timeframe, f"{field}.timeframe")
    start = naive_utc(config.range.start_time)
    end = naive_utc(config.range.end_time) if config.range.HasField("end_time") else None
    if end is not None and not start < end:
        problems.add("INVALID_RANGE", f"{field}.range", "start_time must be before end_time")
    commission = CommissionModel(
        rate=config.commission.rate_bps / 10_000.0, fixed_per_fill=config.commission.fixed_per_fill
    )
    sizing = _sizing(config, normalized)
    fill_timing = FillTiming(config.fill_timing) if config.fill_timing else FillTiming.NEXT_BAR_OPEN
    normalized.fill_timing = int(fill_timing)  # type: ignore[assignment]
    end_of_data = config.end_of_data or signal_pb2.END_OF_DATA_CLOSE
    normalized.end_of_data = end_of_data
    points = config.max_equity_points or DEFAULT_EQUITY_POINTS
    normalized.max_equity_points = points
    parameters: dict[str, ParamValue] = {}
    grid: dict[str, list[ParamValue]] = {}
    rank_by = BacktestMetric.SHARPE
    try:
        given = decode_parameters(config.parameters)
        parameters = strategy.resolve(given, timeframe=timeframe, field=f"{field}.parameters")
        normalized.parameters.clear()
        for name, value in parameter_values(parameters).items():
            normalized.parameters[name].CopyFrom(value)
        if config.HasField("sweep"):
            grid, rank_by = _grid(
                strategy, config.sweep, parameters=parameters, timeframe=timeframe, problems=problems, field=field
            )
            normalized.sweep.rank_by = int(rank_by)  # type: ignore[assignment]
    except InvalidArgument as error:
        problems.absorb(error)
    problems.raise_any()
    return DecodedBacktest(
        strategy=strategy,
        parameters=parameters,
        grid=grid,
        symbols=symbols,
        timeframe=timeframe,
        start=start,
        end=end,
        initial_cash=config.initial_cash,
        commission=commission,
        slippage_bps=config.slippage_bps,
        sizing=sizing,
        stop_loss=_fraction(config, "stop_loss_percent"),
        take_profit=_fraction(config, "take_profit_percent"),
        trailing_stop=_fraction(config, "trailing_stop_percent"),
        allow_short=config.allow_short,
        allow_fractional=config.allow_fractional,
        fill_timing=fill_timing,
        close_at_end=end_of_data != signal_pb2.END_OF_DATA_MARK_TO_MARKET,
        risk_free_rate=config.risk_free_rate,
        rank_by=rank_by,
        max_equity_points=points,
        normalized=normalized,
    )


def _sizing(config: signal_pb2.BacktestConfig, normalized: signal_pb2.BacktestConfig) -> Sizing:
    """The sizing given (the declared rules require a method when sizing is set), else all of equity."""
    method = config.sizing.WhichOneof("method") if config.HasField("sizing") else None
    if method == "fixed_quantity":
        return FixedQuantity(quantity=config.sizing.fixed_quantity.quantity)
    if method == "volatility_target":
        target = config.sizing.volatility_target
        lookback = target.lookback_bars or 20
        cap = target.max_fraction or 1.0
        normalized.sizing.volatility_target.lookback_bars = lookback
        normalized.sizing.volatility_target.max_fraction = cap
        return VolatilityTarget(annual_volatility=target.annual_volatility, lookback_bars=lookback, max_fraction=cap)
    if method == "fixed_fraction":
        return FixedFraction(fraction=config.sizing.fixed_fraction.fraction)
    normalized.sizing.fixed_fraction.fraction = 1.0
    return FixedFraction(fraction=1.0)


def _fraction(
    config: signal_pb2.BacktestConfig,
    name: Literal["stop_loss_percent", "take_profit_percent", "trailing_stop_percent"],
) -> float | None:
    """An exit rule's percent as a fraction, None when absent."""
    return getattr(config, name) / 100.0 if config.HasField(name) else None


def _grid(
    strategy: StrategyDef,
    sweep: signal_pb2.ParameterSweep,
    *,
    parameters: dict[str, ParamValue],
    timeframe: Timeframe | None,
    problems: _Problems,
    field: str,
) -> tuple[dict[str, list[ParamValue]], BacktestMetric]:
    path = f"{field}.sweep"
    rank_by = BacktestMetric(sweep.rank_by) if sweep.rank_by else BacktestMetric.SHARPE
    known = {param.name for param in strategy.params}
    grid: dict[str, list[ParamValue]] = {}
    for name in sorted(sweep.grid):
        if name not in known:
            problems.add("UNKNOWN_PARAMETER", f"{path}.grid.{name}", f"unknown parameter of {strategy.strategy_id}")
        else:
            values = sweep.grid[name].values
            decoded = decode_parameters({f"{index}": value for index, value in enumerate(values)})
            grid[name] = list(decoded.values())
    size = sweep_size(grid)
    if size > MAX_COMBINATIONS:
        problems.add("SWEEP_TOO_LARGE", f"{path}.grid", f"{size} combinations; at most {MAX_COMBINATIONS}")
        return {}, rank_by
    if problems.items:
        return {}, rank_by
    # Every combination must be valid on its own (bounds and cross-parameter rules such as fast < slow).
    for combination in grid_combinations(grid):
        try:
            strategy.resolve({**parameters, **combination}, timeframe=timeframe, field=f"{path}.grid")
        except InvalidArgument as error:
            problems.absorb(error)
            break
    return grid, rank_by


# -- stored backtests as messages ----------------------------------------------------------------------------------


class ProtoReportCodec:
    """Encodes an outcome as BacktestReport bytes: the summary (BASIC view) and the whole report, compressed."""

    def encode(self, outcome: BacktestOutcome, max_equity_points: int) -> tuple[bytes, bytes]:
        report = summary_report(outcome)
        summary = report.SerializeToString()
        _add_detail(report, outcome, max_equity_points)
        return summary, zlib.compress(report.SerializeToString(), 6)


def metrics_message(metrics: BacktestMetrics) -> signal_pb2.BacktestMetrics:
    """BacktestMetrics with absent optionals where the domain has None (or NaN)."""
    message = signal_pb2.BacktestMetrics(
        total_return=metrics.total_return,
        cagr=metrics.cagr,
        annual_volatility=metrics.annual_volatility,
        max_drawdown=metrics.max_drawdown,
        exposure=metrics.exposure,
        trade_count=metrics.trade_count,
        buy_and_hold_return=metrics.buy_and_hold_return,
        final_equity=metrics.final_equity,
        total_fees=metrics.total_fees,
    )
    message.max_drawdown_duration.FromTimedelta(metrics.max_drawdown_duration)
    for name in (
        "sharpe",
        "sortino",
        "win_rate",
        "profit_factor",
        "calmar",
        "average_trade_return",
        "best_trade_return",
        "worst_trade_return",
    ):
        value = getattr(metrics, name)
        if value is not None and math.isfinite(value):
            setattr(message, name, value)
    return message


def summary_report(outcome: BacktestOutcome) -> signal_pb2.BacktestReport:
    """The report without trades, equity curve and sweep results."""
    result = outcome.result
    return signal_pb2.BacktestReport(
        parameters=parameter_values(outcome.parameters),
        metrics=metrics_message(result.metrics),
        symbol_results=[
            signal_pb2.SymbolResult(
                symbol=outcome.symbols[index],
                pnl=item.pnl,
                trade_count=item.trade_count,
                win_rate=item.win_rate,
                buy_and_hold_return=item.buy_and_hold_return,
                open_quantity=item.open_position,
                open_pnl=item.open_pnl,
            )
            for index, item in enumerate(result.symbol_results)
        ],
        bar_count=outcome.bar_count,
    )


def _add_detail(report: signal_pb2.BacktestReport, outcome: BacktestOutcome, max_points: int) -> None:
    trades = outcome.result.trades
    sides = {1: 1, -1: 2}
    for index in range(len(trades)):
        report.trades.append(
            signal_pb2.BacktestTrade(
                symbol=outcome.symbols[int(trades.symbol_index[index])],
                side=sides[int(trades.side[index])],  # type: ignore[arg-type]
                quantity=float(trades.quantity[index]),
                entry_time=timestamp(trades.entry_time[index]),
                entry_price=float(trades.entry_price[index]),
                exit_time=timestamp(trades.exit_time[index]),
                exit_price=float(trades.exit_price[index]),
                pnl=float(trades.pnl[index]),
                return_fraction=float(trades.return_fraction[index]),
                fees=float(trades.fees[index]),
                exit_reason=int(trades.exit_reason[index]),  # type: ignore[arg-type]
                bar_count=int(trades.bar_count[index]),
            )
        )
    curve: EquityCurve = outcome.result.equity_curve.downsample(max_points)
    nanos = curve.time.astype("datetime64[ns]").astype(np.int64)
    for position in range(len(curve)):
        point = report.equity_curve.add(
            equity=float(curve.equity[position]),
            drawdown=float(curve.drawdown[position]),
            benchmark_equity=float(curve.benchmark_equity[position]),
        )
        point.time.FromNanoseconds(int(nanos[position]))
    for item in outcome.sweep:
        report.sweep_results.append(
            signal_pb2.SweepResult(
                parameters=parameter_values(item.parameters), metrics=metrics_message(item.metrics), rank=item.rank
            )
        )


def backtest_message(record: BacktestRecord, *, full: bool) -> signal_pb2.Backtest:
    """A stored backtest as a Backtest message (the full view decodes the compressed report)."""
    message = signal_pb2.Backtest(
        backtest_id=record.backtest_id,
        state=int(record.state),  # type: ignore[arg-type]
        progress=progress_message(record.progress),
        create_time=timestamp(record.create_time),
    )
    json_format.Parse(record.config, message.config)
    if full and record.detail is not None:
        message.report.ParseFromString(zlib.decompress(record.detail))
    elif record.summary is not None:
        message.report.ParseFromString(record.summary)
    if record.failure_reason:
        message.failure.reason = record.failure_reason
        message.failure.message = record.failure_message or ""
    if record.start_time is not None:
        message.start_time.CopyFrom(timestamp(record.start_time))
    if record.end_time is not None:
        message.end_time.CopyFrom(timestamp(record.end_time))
    return message


def progress_message(progress: Progress) -> signal_pb2.BacktestProgress:
    """Progress as a BacktestProgress."""
    return signal_pb2.BacktestProgress(
        fraction=progress.fraction,
        bars_processed=progress.bars_processed,
        bars_total=progress.bars_total,
        combinations_completed=progress.combinations_completed,
        combinations_total=progress.combinations_total,
        message=progress.message,
    )
