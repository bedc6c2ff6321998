"""`bullant backtest`: runs a backtest on a running platform through RunBacktest, with a progress bar, a summary
table and an equity-curve PNG (in the data directory unless a path is given)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.progress import ProgressBar
from services.core.timestamps import naive_utc, timestamp

TIMEFRAMES = {
    "1m": common_pb2.TIMEFRAME_1M,
    "5m": common_pb2.TIMEFRAME_5M,
    "15m": common_pb2.TIMEFRAME_15M,
    "1h": common_pb2.TIMEFRAME_1H,
    "1d": common_pb2.TIMEFRAME_1D,
}
END_OF_DATA = {
    "close": signal_pb2.END_OF_DATA_CLOSE,
    "mark-to-market": signal_pb2.END_OF_DATA_MARK_TO_MARKET,
}
RANK_BY = {
    "total_return": signal_pb2.BACKTEST_METRIC_TOTAL_RETURN,
    "cagr": signal_pb2.BACKTEST_METRIC_CAGR,
    "sharpe": signal_pb2.BACKTEST_METRIC_SHARPE,
    "sortino": signal_pb2.BACKTEST_METRIC_SORTINO,
    "max_drawdown": signal_pb2.BACKTEST_METRIC_MAX_DRAWDOWN,
    "profit_factor": signal_pb2.BACKTEST_METRIC_PROFIT_FACTOR,
    "win_rate": signal_pb2.BACKTEST_METRIC_WIN_RATE,
    "calmar": signal_pb2.BACKTEST_METRIC_CALMAR,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `bullant backtest`."""
    parser.add_argument("--strategy", required=True, help="strategy id (ListStrategies), e.g. golden_cross")
    parser.add_argument("--symbol", action="append", required=True, help="a symbol; repeat for several")
    parser.add_argument("--timeframe", default="1d", choices=list(TIMEFRAMES), help="bar timeframe (default 1d)")
    parser.add_argument("--start", help="first bar, YYYY-MM-DD or RFC 3339 (default: a year ago)")
    parser.add_argument("--end", help="bars from here on are left out (default: up to the latest bar)")
    parser.add_argument("--cash", type=float, default=100_000.0, help="initial cash (default 100000)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a strategy parameter")
    parser.add_argument(
        "--sweep", action="append", default=[], metavar="NAME=V1,V2,...", help="sweep a parameter over values"
    )
    parser.add_argument("--rank-by", choices=list(RANK_BY), default="sharpe", help="metric ranking a sweep")
    parser.add_argument("--commission-bps", type=float, default=0.0, help="fee in basis points of each fill")
    parser.add_argument("--fee", type=float, default=0.0, help="fixed fee per fill")
    parser.add_argument(
        "--slippage-bps", type=float, default=0.0, help="slippage in basis points against each fill (default 0)"
    )
    parser.add_argument(
        "--sizing",
        default="fraction:1",
        help="fraction:F (of equity), quantity:Q (units) or volatility:V (annual target, e.g. 0.15)",
    )
    parser.add_argument("--stop-loss", type=float, metavar="PERCENT", help="close a position this far below entry")
    parser.add_argument("--take-profit", type=float, metavar="PERCENT", help="close a position this far above entry")
    parser.add_argument(
        "--trailing-stop", type=float, metavar="PERCENT", help="close a position this far below its best price"
    )
    parser.add_argument("--allow-short", action="store_true", help="SELL signals open shorts")
    parser.add_argument("--fractional", action="store_true", help="allow fractional quantities")
    parser.add_argument("--fill", choices=("next-open", "close"), default="next-open", help="when orders fill")
    parser.add_argument(
        "--end-of-data",
        choices=list(END_OF_DATA),
        default="close",
        help="a position open after the last bar: close it at the last close (a trade, exit fee paid) or leave it "
        "open, marked to market (as backtesting.py does)",
    )
    parser.add_argument(
        "--png",
        type=Path,
        metavar="PATH",
        help="where to write the equity-curve image (default: <BULLANT_DATA_DIR>/backtests/backtest-<id>.png)",
    )
    parser.add_argument("--no-png", action="store_true", help="write no image")
    parser.add_argument("--target", help="host:port of the signal service (default: 127.0.0.1 and BULLANT_PORT)")
    parser.add_argument("--token", help="access token (default: $BULLANT_TOKEN, or a development token in local)")
    parser.add_argument("--request-id", default="", help="idempotency key: re-running attaches to the same run")


class UsageError(ValueError):
    """A command-line value that cannot be turned into a request."""


def _time(text: str, option: str) -> Timestamp:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date (YYYY-MM-DD) or RFC 3339 time") from None
    return timestamp(moment)


def parameter_value(text: str) -> common_pb2.ParameterValue:
    """A command-line value as a ParameterValue: whole numbers as integers, other numbers as doubles, true/false
    as booleans, anything else as a choice."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return common_pb2.ParameterValue(bool_value=lowered == "true")
    try:
        return common_pb2.ParameterValue(int_value=int(text))
    except ValueError:
        pass
    try:
        return common_pb2.ParameterValue(double_value=float(text))
    except ValueError:
        return common_pb2.ParameterValue(string_value=text.strip())


def _pair(text: str, option: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name.strip() or not value.strip():
        raise UsageError(f"{option}: expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _sizing(text: str) -> signal_pb2.PositionSizing:
    kind, _, value = text.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"--sizing: expected fraction:F, quantity:Q or volatility:V, got {text!r}") from None
    if kind == "fraction":
        return signal_pb2.PositionSizing(fixed_fraction=signal_pb2.FixedFractionSizing(fraction=number))
    if kind == "quantity":
        return signal_pb2.PositionSizing(fixed_quantity=signal_pb2.FixedQuantitySizing(quantity=number))
    if kind == "volatility":
        return signal_pb2.PositionSizing(volatility_target=signal_pb2.VolatilityTargetSizing(annual_volatility=number))
    raise UsageError(f"--sizing: expected fraction:F, quantity:Q or volatility:V, got {text!r}")


def build_request(args: argparse.Namespace, *, now: datetime | None = None) -> signal_pb2.RunBacktestRequest:
    """The RunBacktest request the options describe (the server validates the values)."""
    start = args.start or ((now or datetime.now(UTC)) - timedelta(days=365)).date().isoformat()
    config = signal_pb2.BacktestConfig(
        strategy_id=args.strategy,
        symbols=args.symbol,
        timeframe=TIMEFRAMES[args.timeframe],
        range=common_pb2.TimeRange(start_time=_time(start, "--start")),
        initial_cash=args.cash,
        commission=signal_pb2.CommissionModel(rate_bps=args.commission_bps, fixed_per_fill=args.fee),
        slippage_bps=args.slippage_bps,
        sizing=_sizing(args.sizing),
        allow_short=args.allow_short,
        allow_fractional=args.fractional,
        fill_timing=signal_pb2.FILL_TIMING_SIGNAL_BAR_CLOSE
        if args.fill == "close"
        else signal_pb2.FILL_TIMING_NEXT_BAR_OPEN,
        end_of_data=END_OF_DATA[args.end_of_data],
    )
    if args.end:
        config.range.end_time.CopyFrom(_time(args.end, "--end"))
    for text in args.param:
        name, value = _pair(text, "--param")
        config.parameters[name].CopyFrom(parameter_value(value))
    for text in args.sweep:
        name, values = _pair(text, "--sweep")
        config.sweep.grid[name].values.extend(parameter_value(value) for value in values.split(",") if value.strip())
    if args.sweep:
        config.sweep.rank_by = RANK_BY[args.rank_by]
    for field, value in (
        ("stop_loss_percent", args.stop_loss),
        ("take_profit_percent", args.take_profit),
        ("trailing_stop_percent", args.trailing_stop),
    ):
        if value is not None:
            setattr(config, field, value)
    return signal_pb2.RunBacktestRequest(request_id=args.request_id, config=config)


def run(args: argparse.Namespace, *, target: str, token: str, png_dir: Path, out: TextIO = sys.stdout) -> int:
    """Run the backtest and report it; the exit code is 0 when it succeeded. The image goes to --png, or to
    `png_dir`/backtest-<id>.png (the data directory's, never the working directory); its path is printed."""
    try:
        request = build_request(args)
    except UsageError as error:
        print(f"bullant: {error}", file=sys.stderr)
        return 2
    bar = ProgressBar()
    final: signal_pb2.Backtest | None = None
    with grpc.insecure_channel(target) as channel:
        stub = signal_pb2_grpc.SignalServiceStub(channel)
        try:
            for message in stub.RunBacktest(request, metadata=(("authorization", f"Bearer {token}"),)):
                if message.HasField("progress"):
                    progress = message.progress
                    bar.show(
                        progress.fraction,
                        f"{progress.message}: {progress.bars_processed:,}/{progress.bars_total:,} bars"
                        + (
                            f", {progress.combinations_completed}/{progress.combinations_total} combinations"
                            if progress.combinations_total > 1
                            else ""
                        ),
                    )
                else:
                    final = message.backtest
        except grpc.RpcError as error:
            print(f"bullant: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if final is None:
        print("bullant: the stream ended without a result", file=sys.stderr)
        return 1
    bar.show(final.progress.fraction, final.progress.message or "done", final=True)
    print(summary(final), file=out)
    if final.state != signal_pb2.BACKTEST_STATE_SUCCEEDED:
        return 1
    if not args.no_png:
        path = args.png or png_dir / f"backtest-{final.backtest_id}.png"
        write_png(final, path)
        print(f"equity curve: {path.resolve()}", file=out)
    return 0


def _percent(value: float) -> str:
    return f"{value * 100:,.2f}%"


def _optional(message: signal_pb2.BacktestMetrics, name: str, *, percent: bool = False) -> str:
    if not message.HasField(name):  # type: ignore[arg-type]
        return "n/a"
    value = getattr(message, name)
    return _percent(value) if percent else f"{value:,.2f}"


def _parameter_text(value: common_pb2.ParameterValue) -> str:
    kind = value.WhichOneof("kind")
    return str(getattr(value, kind)).lower() if kind == "bool_value" else str(getattr(value, kind or "int_value"))


def summary(backtest: signal_pb2.Backtest) -> str:
    """A human-readable summary: what ran, the metrics against buy-and-hold, per-symbol results, the best sweep
    combinations."""
    config = backtest.config
    state = signal_pb2.BacktestState.Name(backtest.state).removeprefix("BACKTEST_STATE_")
    lines = [
        f"backtest {backtest.backtest_id}: {config.strategy_id} on {', '.join(config.symbols)} "
        f"({common_pb2.Timeframe.Name(config.timeframe).removeprefix('TIMEFRAME_').lower()}): {state}"
    ]
    if backtest.HasField("failure"):
        lines.append(f"  {backtest.failure.reason}: {backtest.failure.message}")
        return "\n".join(lines)
    report = backtest.report
    metrics = report.metrics
    parameters = " ".join(f"{name}={_parameter_text(report.parameters[name])}" for name in sorted(report.parameters))
    lines.append(f"parameters: {parameters}")
    rows = [
        ("final equity", f"{metrics.final_equity:,.2f}"),
        ("total return", _percent(metrics.total_return)),
        ("buy and hold", _percent(metrics.buy_and_hold_return)),
        ("CAGR", _percent(metrics.cagr)),
        ("annual volatility", _percent(metrics.annual_volatility)),
        ("Sharpe", _optional(metrics, "sharpe")),
        ("Sortino", _optional(metrics, "sortino")),
        ("Calmar", _optional(metrics, "calmar")),
        ("max drawdown", _percent(metrics.max_drawdown)),
        ("max drawdown duration", f"{metrics.max_drawdown_duration.ToTimedelta().days} days"),
        ("trades", f"{metrics.trade_count}"),
        ("win rate", _optional(metrics, "win_rate", percent=True)),
        ("profit factor", _optional(metrics, "profit_factor")),
        ("exposure", _percent(metrics.exposure)),
        ("fees", f"{metrics.total_fees:,.2f}"),
        ("bars", f"{report.bar_count:,}"),
    ]
    open_positions = [item for item in report.symbol_results if item.open_quantity]
    if open_positions:
        held = ", ".join(
            f"{'long' if item.open_quantity > 0 else 'short'} {abs(item.open_quantity):g} {item.symbol}"
            for item in open_positions
        )
        rows.append(("open at the end", held))
        rows.append(("open pnl", f"{sum(item.open_pnl for item in open_positions):,.2f}"))
    width = max(len(name) for name, _ in rows)
    lines.extend(f"  {name:<{width}}  {value:>16}" for name, value in rows)
    if len(report.symbol_results) > 1:
        lines.append("per symbol:")
        lines.extend(
            f"  {item.symbol:<12} pnl {item.pnl:>14,.2f}  trades {item.trade_count:>5}  "
            f"buy and hold {_percent(item.buy_and_hold_return):>9}"
            for item in report.symbol_results
        )
    if report.sweep_results:
        lines.append(f"sweep: {len(report.sweep_results)} combinations, best first:")
        for item in report.sweep_results[:10]:
            values = " ".join(f"{name}={_parameter_text(item.parameters[name])}" for name in sorted(item.parameters))
            sharpe = _optional(item.metrics, "sharpe")
            lines.append(
                f"  #{item.rank:<4} {values}  return {_percent(item.metrics.total_return)}  Sharpe {sharpe}  "
                f"max drawdown {_percent(item.metrics.max_drawdown)}"
            )
    return "\n".join(lines)


def write_png(backtest: signal_pb2.Backtest, path: Path) -> None:
    """Equity against buy-and-hold, and the drawdown below it."""
    import matplotlib  # noqa: PLC0415 - plotting is only loaded when an image is written

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    curve = backtest.report.equity_curve
    times = [naive_utc(point.time) for point in curve]
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    try:
        top.plot(times, [point.equity for point in curve], label="strategy", color="#1f77b4", linewidth=1.4)
        top.plot(
            times, [point.benchmark_equity for point in curve], label="buy and hold", color="#999999", linewidth=1.0
        )
        config = backtest.config
        top.set_title(f"{config.strategy_id} on {', '.join(config.symbols)} ({backtest.backtest_id})")
        top.set_ylabel("equity")
        top.grid(alpha=0.3)
        top.legend(loc="upper left")
        bottom.fill_between(times, [-point.drawdown * 100 for point in curve], 0.0, color="#d62728", alpha=0.4)
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
