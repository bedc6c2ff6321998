"""Backtests ⇄ bullant.signal.v1 messages: RunBacktest's config decoded as given (`backtest_request`; its rules are
BacktestSpec's constructor), the normalised config stored with a backtest (defaults filled in) and its digest for
request-id deduplication, and stored backtests and progress encoded as messages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from google.protobuf import json_format

from bullant.signal.v1 import signal_pb2
from services.core.parameter_messages import decode_parameters, parameter_values
from services.core.timestamps import naive_utc, timestamp
from services.signal.backtests.engine.config import (
    CommissionModel,
    FixedFraction,
    FixedQuantity,
    Sizing,
    VolatilityTarget,
)
from services.signal.backtests.report_codec import read_report
from services.signal.backtests.spec import (
    DEFAULT_MAX_FRACTION,
    DEFAULT_VOLATILITY_LOOKBACK,
    BacktestRequest,
    BacktestSpec,
    SweepRequest,
)
from services.signal.backtests.store import BacktestRecord, Progress


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredConfig:
    """The normalised config as it is stored with the backtest (proto3 JSON) and a digest of it."""

    text: str
    digest: str


def backtest_request(config: signal_pb2.BacktestConfig) -> BacktestRequest:
    """The config's values as given (the declared rules were checked before the handler)."""
    sweep = None
    if config.HasField("sweep"):
        grid = {
            name: list(decode_parameters({f"{index}": value for index, value in enumerate(values.values)}).values())
            for name, values in config.sweep.grid.items()
        }
        sweep = SweepRequest(grid=grid, rank_by=config.sweep.rank_by)
    return BacktestRequest(
        strategy_id=config.strategy_id,
        symbols=tuple(config.symbols),
        timeframe=config.timeframe,
        start=naive_utc(config.range.start_time),
        end=naive_utc(config.range.end_time) if config.range.HasField("end_time") else None,
        parameters=decode_parameters(config.parameters),
        sweep=sweep,
        initial_cash=config.initial_cash,
        commission=CommissionModel(
            rate=config.commission.rate_bps / 10_000.0, fixed_per_fill=config.commission.fixed_per_fill
        ),
        slippage_bps=config.slippage_bps,
        sizing=_sizing(config),
        stop_loss=_fraction(config, "stop_loss_percent"),
        take_profit=_fraction(config, "take_profit_percent"),
        trailing_stop=_fraction(config, "trailing_stop_percent"),
        allow_short=config.allow_short,
        allow_fractional=config.allow_fractional,
        fill_timing=config.fill_timing,
        close_at_end=config.end_of_data != signal_pb2.END_OF_DATA_MARK_TO_MARKET,
        risk_free_rate=config.risk_free_rate,
        max_equity_points=config.max_equity_points,
    )


def _sizing(config: signal_pb2.BacktestConfig) -> Sizing:
    """The sizing given (the declared rules require a method when sizing is set), else all of equity; a volatility
    target's unset lookback and cap are the spec's defaults."""
    method = config.sizing.WhichOneof("method") if config.HasField("sizing") else None
    if method == "fixed_quantity":
        return FixedQuantity(quantity=config.sizing.fixed_quantity.quantity)
    if method == "volatility_target":
        target = config.sizing.volatility_target
        return VolatilityTarget(
            annual_volatility=target.annual_volatility,
            lookback_bars=target.lookback_bars or DEFAULT_VOLATILITY_LOOKBACK,
            max_fraction=target.max_fraction or DEFAULT_MAX_FRACTION,
        )
    if method == "fixed_fraction":
        return FixedFraction(fraction=config.sizing.fixed_fraction.fraction)
    return FixedFraction(fraction=1.0)


def _fraction(
    config: signal_pb2.BacktestConfig,
    name: Literal["stop_loss_percent", "take_profit_percent", "trailing_stop_percent"],
) -> float | None:
    """An exit rule's percent as a fraction, None when absent."""
    return getattr(config, name) / 100.0 if config.HasField(name) else None


def stored_config(config: signal_pb2.BacktestConfig, spec: BacktestSpec) -> StoredConfig:
    """The config as asked with what the spec settled written in (upper-case symbols, resolved parameters, the
    defaults of sizing, fill timing, end of data, equity points and sweep ranking), as JSON and digested."""
    normalized = signal_pb2.BacktestConfig()
    normalized.CopyFrom(config)
    del normalized.symbols[:]
    normalized.symbols.extend(spec.symbols)
    method = config.sizing.WhichOneof("method") if config.HasField("sizing") else None
    if method == "volatility_target" and isinstance(spec.sizing, VolatilityTarget):
        normalized.sizing.volatility_target.lookback_bars = spec.sizing.lookback_bars
        normalized.sizing.volatility_target.max_fraction = spec.sizing.max_fraction
    elif method is None:
        normalized.sizing.fixed_fraction.fraction = 1.0
    normalized.fill_timing = int(spec.fill_timing)  # type: ignore[assignment]
    normalized.end_of_data = config.end_of_data or signal_pb2.END_OF_DATA_CLOSE
    normalized.max_equity_points = spec.max_equity_points
    normalized.parameters.clear()
    for name, value in parameter_values(spec.parameters).items():
        normalized.parameters[name].CopyFrom(value)
    if config.HasField("sweep"):
        normalized.sweep.rank_by = int(spec.rank_by)  # type: ignore[assignment]
    return StoredConfig(
        text=json_format.MessageToJson(normalized, indent=None, sort_keys=True),
        digest=hashlib.sha256(normalized.SerializeToString(deterministic=True)).hexdigest(),
    )


def full_view(view: int, *, default: bool) -> bool:
    """Whether a BacktestView asks for the whole report (`default` when unset)."""
    return default if view == 0 else view == signal_pb2.BACKTEST_VIEW_FULL


def backtest_message(record: BacktestRecord, *, full: bool) -> signal_pb2.Backtest:
    """A stored backtest as a Backtest message (the full view decodes the compressed report)."""
    message = signal_pb2.Backtest(
        backtest_id=record.backtest_id,
        state=int(record.state),  # type: ignore[arg-type]
        progress=progress_message(record.progress),
        create_time=timestamp(record.create_time),
    )
    json_format.Parse(record.config, message.config)
    read_report(record, full=full, into=message.report)
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
