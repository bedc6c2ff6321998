"""How a backtest's report is stored: the outcome encoded as BacktestReport bytes, a summary (the BASIC view: no
trades, equity curve or sweep results) and the whole report compressed – the runner stores both – and read back
into a message for the views that show it. The store keeps the bytes opaque (it never sees protobuf)."""

from __future__ import annotations

import math
import zlib

import numpy as np

from bullant.signal.v1 import signal_pb2
from services.core.parameter_messages import parameter_values
from services.core.timestamps import timestamp
from services.signal.backtests.engine.engine import EquityCurve
from services.signal.backtests.engine.metrics import BacktestMetrics
from services.signal.backtests.simulation import BacktestOutcome
from services.signal.backtests.store import BacktestRecord


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


def read_report(record: BacktestRecord, *, full: bool, into: signal_pb2.BacktestReport) -> None:
    """The stored report of `record` into `into`: the whole one for the full view (when stored), else the summary."""
    if full and record.detail is not None:
        into.ParseFromString(zlib.decompress(record.detail))
    elif record.summary is not None:
        into.ParseFromString(record.summary)
