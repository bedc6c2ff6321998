"""RunBacktest, GetBacktest, ListBacktests and CancelBacktest through real channels: progress is streamed and the
report equals the engine run in-process on the same bars; backtests belong to their owner; every bad input gets the
contract's reason before any message."""

from __future__ import annotations

import argparse
import asyncio
import math
import warnings
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from backtesting import Backtest, Strategy  # type: ignore[import-untyped]
from backtesting.lib import crossover  # type: ignore[import-untyped]
from backtesting.test import GOOG, SMA  # type: ignore[import-untyped]
from google.protobuf import json_format

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from bullant.signal.v1 import signal_pb2
from services.core.accounts import AccountRef
from services.signal.backtests import cli as backtest_cli
from services.signal.backtests.engine.config import BacktestConfig, CommissionModel
from services.signal.backtests.engine.engine import BacktestBars, run_backtest
from services.signal.backtests.store import BacktestRecord, BacktestState, BacktestStore, Progress
from services.signal.strategies.base import REGISTRY
from tests.account_platform import refusal
from tests.signal_platform import START, Metadata, SignalPlatform, StoredSymbol, running_signal_platform, stamp

SYMBOLS = (
    StoredSymbol("DEMO", "SIM-AAPL"),
    StoredSymbol("DEMO2", "SIM-AAPL", seed=12),
    StoredSymbol("EUROX", "SIM-AAPL", currency="EUR", seed=13),
)
CROSS = {"fast": common_pb2.ParameterValue(int_value=10), "slow": common_pb2.ParameterValue(int_value=30)}


@pytest.fixture
async def platform() -> AsyncIterator[SignalPlatform]:
    async with running_signal_platform(SYMBOLS) as running:
        yield running


def _config(**extra: object) -> signal_pb2.BacktestConfig:
    values: dict[str, object] = {
        "strategy_id": "golden_cross",
        "parameters": CROSS,
        "symbols": ["DEMO"],
        "timeframe": common_pb2.TIMEFRAME_1D,
        "range": common_pb2.TimeRange(start_time=stamp(START)),
        "initial_cash": 10_000.0,
    }
    values.update(extra)
    return signal_pb2.BacktestConfig(**values)  # type: ignore[arg-type]


async def _run(
    platform: SignalPlatform,
    config: signal_pb2.BacktestConfig,
    *,
    request_id: str = "",
    metadata: Metadata | None = None,
) -> list[signal_pb2.RunBacktestResponse]:
    call = platform.signal.RunBacktest(
        signal_pb2.RunBacktestRequest(request_id=request_id, config=config), metadata=metadata or platform.trader
    )
    return [message async for message in call]


async def _first(call: Any) -> signal_pb2.RunBacktestResponse:
    message = await call.read()
    assert isinstance(message, signal_pb2.RunBacktestResponse)
    return message


async def _remaining(call: Any) -> list[signal_pb2.RunBacktestResponse]:
    """The rest of a stream already read with read()."""
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


async def test_a_backtest_streams_progress_then_a_report_equal_to_the_engine(platform: SignalPlatform) -> None:
    messages = await _run(platform, _config(commission=signal_pb2.CommissionModel(rate_bps=10)))
    assert messages[-1].HasField("backtest")
    assert all(message.HasField("progress") for message in messages[:-1])
    assert len(messages) >= 2
    assert len({message.backtest_id for message in messages}) == 1
    fractions = [message.progress.fraction for message in messages[:-1]]
    assert fractions == sorted(fractions)
    backtest = messages[-1].backtest
    assert backtest.state == signal_pb2.BACKTEST_STATE_SUCCEEDED
    assert backtest.config.parameters["fast"].int_value == 10
    assert backtest.config.sizing.fixed_fraction.fraction == 1.0  # defaults filled in
    report = backtest.report

    # The same strategy and engine, in-process, over the same bars.
    bars = platform.bars["DEMO"]
    strategy = REGISTRY["golden_cross"]
    signal = strategy.evaluate(bars, strategy.resolve({"fast": 10, "slow": 30})).target_positions()
    engine = run_backtest(
        BacktestBars(bars.open_time, bars.open, bars.high, bars.low, bars.close, bars.volume, bars.span),
        signal,
        BacktestConfig(initial_cash=10_000.0, commission=CommissionModel(rate=0.001)),
    )
    assert len(report.trades) == len(engine.trades) > 0
    for got, expected in zip(report.trades, engine.trades, strict=True):
        assert got.symbol == "DEMO"
        assert got.side == common_pb2.SIDE_BUY
        assert got.entry_time.ToDatetime() == expected.entry_time.replace(tzinfo=None)
        assert got.exit_time.ToDatetime() == expected.exit_time.replace(tzinfo=None)
        assert math.isclose(got.entry_price, expected.entry_price, rel_tol=1e-12)
        assert math.isclose(got.pnl, expected.pnl, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(report.metrics.final_equity, engine.metrics.final_equity, rel_tol=1e-12)
    assert report.metrics.trade_count == len(report.trades)
    assert report.bar_count == len(bars)
    assert math.isclose(report.metrics.buy_and_hold_return, bars.close[-1] / bars.open[0] - 1.0, rel_tol=1e-12)
    assert report.equity_curve[-1].equity == pytest.approx(report.metrics.final_equity)
    assert report.symbol_results[0].symbol == "DEMO"
    assert report.symbol_results[0].pnl == pytest.approx(report.metrics.final_equity - 10_000.0)


async def test_reads_views_and_listing_belong_to_the_owner(platform: SignalPlatform) -> None:
    first = (await _run(platform, _config()))[-1].backtest
    second = (await _run(platform, _config(strategy_id="macd_cross", parameters={}, symbols=["DEMO2"])))[-1].backtest
    full = (
        await platform.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id=first.backtest_id), metadata=platform.trader
        )
    ).backtest
    assert full == first  # GetBacktest defaults to FULL: the same as the stream's last message
    basic = (
        await platform.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id=first.backtest_id, view=signal_pb2.BACKTEST_VIEW_BASIC),
            metadata=platform.trader,
        )
    ).backtest
    assert not basic.report.trades
    assert not basic.report.equity_curve
    assert basic.report.metrics == first.report.metrics
    assert len(first.report.trades) > 0

    listed = await platform.signal.ListBacktests(signal_pb2.ListBacktestsRequest(), metadata=platform.trader)
    assert [item.backtest_id for item in listed.backtests] == [second.backtest_id, first.backtest_id]
    assert not listed.backtests[0].report.equity_curve  # BASIC by default
    page = await platform.signal.ListBacktests(signal_pb2.ListBacktestsRequest(page_size=1), metadata=platform.trader)
    rest = await platform.signal.ListBacktests(
        signal_pb2.ListBacktestsRequest(page_size=1, page_token=page.next_page_token), metadata=platform.trader
    )
    assert [page.backtests[0].backtest_id, rest.backtests[0].backtest_id] == [second.backtest_id, first.backtest_id]
    assert rest.next_page_token == ""
    for request, expected in (
        (signal_pb2.ListBacktestsRequest(strategy_id="macd_cross"), [second.backtest_id]),
        (signal_pb2.ListBacktestsRequest(symbol="demo"), [first.backtest_id]),
        (signal_pb2.ListBacktestsRequest(state=signal_pb2.BACKTEST_STATE_FAILED), []),
    ):
        reply = await platform.signal.ListBacktests(request, metadata=platform.trader)
        assert [item.backtest_id for item in reply.backtests] == expected
    assert await refusal(
        platform.signal.ListBacktests(
            signal_pb2.ListBacktestsRequest(symbol="DEMO2", page_token=page.next_page_token), metadata=platform.trader
        )
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")

    # Another account sees none of them and cannot read, cancel or even learn that they exist.
    theirs = await platform.signal.ListBacktests(signal_pb2.ListBacktestsRequest(), metadata=platform.other_trader)
    assert list(theirs.backtests) == []
    for call in (
        platform.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id=first.backtest_id), metadata=platform.other_trader
        ),
        platform.signal.CancelBacktest(
            signal_pb2.CancelBacktestRequest(backtest_id=first.backtest_id), metadata=platform.other_trader
        ),
        platform.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id="bt_000000000000000000000000"), metadata=platform.trader
        ),
    ):
        assert await refusal(call) == (grpc.StatusCode.NOT_FOUND, "BACKTEST_NOT_FOUND")
    # Cancelling a finished backtest changes nothing.
    cancelled = await platform.signal.CancelBacktest(
        signal_pb2.CancelBacktestRequest(backtest_id=first.backtest_id), metadata=platform.trader
    )
    assert cancelled.backtest.state == signal_pb2.BACKTEST_STATE_SUCCEEDED


async def test_a_request_id_attaches_to_the_first_run(platform: SignalPlatform) -> None:
    first = await _run(platform, _config(), request_id="req-1")
    again = await _run(platform, _config(), request_id="req-1")
    assert again[-1].backtest == first[-1].backtest
    assert len(again) == 1  # finished: the final message at once
    listed = await platform.signal.ListBacktests(signal_pb2.ListBacktestsRequest(), metadata=platform.trader)
    assert len(listed.backtests) == 1
    changed = platform.signal.RunBacktest(
        signal_pb2.RunBacktestRequest(request_id="req-1", config=_config(initial_cash=5_000.0)),
        metadata=platform.trader,
    )
    assert await refusal(changed.read()) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    # The same id from another account is that account's own key.
    other = await _run(platform, _config(), request_id="req-1", metadata=platform.other_trader)
    assert other[-1].backtest_id != first[-1].backtest_id


async def test_a_sweep_ranks_every_combination(platform: SignalPlatform) -> None:
    grid = {
        "fast": common_pb2.ParameterValueList(values=[common_pb2.ParameterValue(int_value=v) for v in (5, 10, 20)]),
        "slow": common_pb2.ParameterValueList(values=[common_pb2.ParameterValue(int_value=v) for v in (30, 60)]),
    }
    messages = await _run(
        platform,
        _config(sweep=signal_pb2.ParameterSweep(grid=grid, rank_by=signal_pb2.BACKTEST_METRIC_TOTAL_RETURN)),
    )
    report = messages[-1].backtest.report
    assert len(report.sweep_results) == 6
    assert [item.rank for item in report.sweep_results] == [1, 2, 3, 4, 5, 6]
    returns = [item.metrics.total_return for item in report.sweep_results]
    assert returns == sorted(returns, reverse=True)
    best = report.sweep_results[0].parameters
    assert report.parameters["fast"] == best["fast"]
    assert report.parameters["slow"] == best["slow"]
    assert report.metrics == report.sweep_results[0].metrics
    combos = {(item.parameters["fast"].int_value, item.parameters["slow"].int_value) for item in report.sweep_results}
    assert combos == {(f, s) for f in (5, 10, 20) for s in (30, 60)}
    last_progress = [message.progress for message in messages if message.HasField("progress")][-1]
    assert last_progress.combinations_total == 6


async def test_symbols_share_one_cash_balance(platform: SignalPlatform) -> None:
    config = _config(
        symbols=["DEMO", "DEMO2"],
        sizing=signal_pb2.PositionSizing(fixed_fraction=signal_pb2.FixedFractionSizing(fraction=0.5)),
    )
    report = (await _run(platform, config))[-1].backtest.report
    assert [item.symbol for item in report.symbol_results] == ["DEMO", "DEMO2"]
    assert {trade.symbol for trade in report.trades} == {"DEMO", "DEMO2"}
    total = sum(item.pnl for item in report.symbol_results)
    assert total == pytest.approx(report.metrics.final_equity - 10_000.0)
    assert all(item.trade_count > 0 for item in report.symbol_results)


class SmaCross(Strategy):  # type: ignore[misc]
    """backtesting.py's own example: all in on the 10-bar SMA crossing the 20-bar one, reversing on the way down."""

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, 10)
        self.slow = self.I(SMA, self.data.Close, 20)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell()


async def _store_goog(platform: SignalPlatform) -> None:
    """backtesting.py's GOOG sample (daily, 2004-2013) as the stored bars of GOOG."""
    await platform.market.CreateInstrument(
        market_pb2.CreateInstrumentRequest(
            instrument=market_pb2.Instrument(
                symbol="GOOG", venue="NASDAQ", asset_class=market_pb2.ASSET_CLASS_STOCK, quote_currency="USD"
            )
        ),
        metadata=platform.admin,
    )
    bars = [
        market_pb2.Bar(
            open_time=stamp(moment.to_pydatetime()),
            open=row.Open,
            high=row.High,
            low=row.Low,
            close=row.Close,
            volume=float(row.Volume),
        )
        for moment, row in GOOG.iterrows()
    ]
    await platform.market.ImportBars(
        market_pb2.ImportBarsRequest(symbol="GOOG", timeframe=common_pb2.TIMEFRAME_1D, bars=bars),
        metadata=platform.admin,
    )


async def test_trades_and_final_equity_equal_backtesting_pys_on_its_goog_sample() -> None:
    """The README's claim, exactly: golden_cross(10, 20) with shorts over backtesting.py's GOOG sample at its
    commission gives backtesting.py's trades and final equity when the last position is marked to market
    (backtesting.py's default), and with the default END_OF_DATA_CLOSE one more trade, closed at the last close, and
    its exit fee less."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some trades remain open": the point of the comparison
        stats = Backtest(GOOG, SmaCross, cash=10_000, commission=0.002, exclusive_orders=True).run()
    reference_trades, reference_equity = int(stats["# Trades"]), float(stats["Equity Final [$]"])
    still_open = float(stats._strategy.position.size)
    assert (reference_trades, round(reference_equity, 2), still_open) == (93, 56263.52, 69.0)

    async with running_signal_platform(()) as platform:
        await _store_goog(platform)
        reports = {}
        for mode in (
            signal_pb2.END_OF_DATA_MARK_TO_MARKET,
            signal_pb2.END_OF_DATA_CLOSE,
            signal_pb2.END_OF_DATA_UNSPECIFIED,
        ):
            config = _config(
                symbols=["GOOG"],
                parameters={
                    "fast": common_pb2.ParameterValue(int_value=10),
                    "slow": common_pb2.ParameterValue(int_value=20),
                },
                range=common_pb2.TimeRange(start_time=stamp(GOOG.index[0].to_pydatetime())),
                commission=signal_pb2.CommissionModel(rate_bps=20),
                allow_short=True,
                end_of_data=mode,
            )
            backtest = (await _run(platform, config))[-1].backtest
            assert backtest.state == signal_pb2.BACKTEST_STATE_SUCCEEDED
            assert backtest.config.end_of_data == (mode or signal_pb2.END_OF_DATA_CLOSE)  # stored, default filled in
            reports[mode] = backtest.report
        # A sweep carries the choice to every combination.
        fast_values = [common_pb2.ParameterValue(int_value=value) for value in (5, 10)]
        config.end_of_data = signal_pb2.END_OF_DATA_MARK_TO_MARKET
        config.sweep.grid["fast"].values.extend(fast_values)
        swept = (await _run(platform, config))[-1].backtest.report

    marked = reports[signal_pb2.END_OF_DATA_MARK_TO_MARKET]
    [ten] = [item for item in swept.sweep_results if item.parameters["fast"].int_value == 10]
    assert ten.metrics.final_equity == marked.metrics.final_equity
    assert ten.metrics.trade_count == reference_trades
    assert marked.metrics.trade_count == len(marked.trades) == reference_trades
    assert marked.metrics.final_equity == pytest.approx(reference_equity, rel=1e-12)
    [symbol] = marked.symbol_results
    assert symbol.open_quantity == still_open
    assert 10_000.0 + symbol.pnl + symbol.open_pnl == pytest.approx(marked.metrics.final_equity, rel=1e-12)

    closed = reports[signal_pb2.END_OF_DATA_CLOSE]
    assert reports[signal_pb2.END_OF_DATA_UNSPECIFIED] == closed  # the documented default
    assert closed.metrics.trade_count == len(closed.trades) == reference_trades + 1
    last = closed.trades[-1]
    assert last.exit_reason == signal_pb2.EXIT_REASON_END_OF_DATA
    assert last.quantity == still_open
    assert last.exit_price == GOOG.Close.iloc[-1]
    exit_fee = last.quantity * last.exit_price * 0.002
    assert closed.metrics.final_equity == pytest.approx(reference_equity - exit_fee, rel=1e-12)
    assert round(closed.metrics.final_equity, 2) == 56152.27
    assert closed.symbol_results[0].open_quantity == closed.symbol_results[0].open_pnl == 0.0
    assert [trade.entry_time for trade in closed.trades[:-1]] == [trade.entry_time for trade in marked.trades]


async def test_the_cli_asks_for_mark_to_market_and_shows_what_stayed_open(platform: SignalPlatform) -> None:
    parser = argparse.ArgumentParser()
    backtest_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--strategy", "golden_cross", "--symbol", "DEMO", "--param", "fast=10", "--param", "slow=30",
         "--start", START.date().isoformat(), "--allow-short", "--end-of-data", "mark-to-market"]
    )  # fmt: skip
    request = backtest_cli.build_request(args)
    assert request.config.end_of_data == signal_pb2.END_OF_DATA_MARK_TO_MARKET
    default = backtest_cli.build_request(parser.parse_args(["--strategy", "golden_cross", "--symbol", "DEMO"]))
    assert default.config.end_of_data == signal_pb2.END_OF_DATA_CLOSE
    backtest = (await _run(platform, request.config))[-1].backtest
    [symbol] = backtest.report.symbol_results
    text = backtest_cli.summary(backtest)
    assert symbol.open_quantity != 0  # with shorts, a crossing strategy always holds a side after its first signal
    assert f"{'long' if symbol.open_quantity > 0 else 'short'} {abs(symbol.open_quantity):g} DEMO" in text
    assert f"{symbol.open_pnl:,.2f}" in text
    assert all(trade.exit_reason != signal_pb2.EXIT_REASON_END_OF_DATA for trade in backtest.report.trades)


async def test_cancelling_a_running_backtest(platform: SignalPlatform) -> None:
    config = _config(sweep=_long_sweep())
    call = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=config), metadata=platform.trader)
    first = await _first(call)
    assert first.HasField("progress")
    cancelled = await platform.signal.CancelBacktest(
        signal_pb2.CancelBacktestRequest(backtest_id=first.backtest_id), metadata=platform.trader
    )
    assert cancelled.backtest.state == signal_pb2.BACKTEST_STATE_CANCELLED
    rest = await _remaining(call)
    assert rest[-1].backtest.state == signal_pb2.BACKTEST_STATE_CANCELLED
    assert not rest[-1].backtest.report.trades  # the partial result is not kept
    stored = await platform.signal.GetBacktest(
        signal_pb2.GetBacktestRequest(backtest_id=first.backtest_id), metadata=platform.trader
    )
    assert stored.backtest.state == signal_pb2.BACKTEST_STATE_CANCELLED
    assert stored.backtest.HasField("end_time")


async def test_a_run_nobody_is_running_any_more_is_reported_interrupted(platform: SignalPlatform) -> None:
    store = BacktestStore(platform.deps.databases)
    old = datetime(2026, 1, 1)
    config = (await _run(platform, _config()))[-1].backtest.config
    record = BacktestRecord(
        backtest_id="bt_stale00000000000000000",
        owner=AccountRef(3, 0),
        request_id=None,
        request_digest="x",
        strategy_id="golden_cross",
        symbols=("DEMO",),
        state=BacktestState.RUNNING,
        config=json_format.MessageToJson(config),
        progress=Progress(fraction=0.4, message="simulating"),
        create_time=old,
        start_time=old,
        heartbeat_time=old,
    )
    assert await store.insert(record) is None
    reply = await platform.signal.GetBacktest(
        signal_pb2.GetBacktestRequest(backtest_id=record.backtest_id), metadata=platform.trader
    )
    assert reply.backtest.state == signal_pb2.BACKTEST_STATE_FAILED
    assert reply.backtest.failure.reason == "INTERRUPTED"
    assert reply.backtest.progress.fraction == pytest.approx(0.4)


def _long_sweep() -> signal_pb2.ParameterSweep:
    """10,000 combinations: long enough (several seconds) to be cancelled or to hold a worker."""
    fast = [common_pb2.ParameterValue(int_value=v) for v in range(2, 102)]
    slow = [common_pb2.ParameterValue(int_value=v) for v in range(150, 250)]
    return signal_pb2.ParameterSweep(
        grid={"fast": common_pb2.ParameterValueList(values=fast), "slow": common_pb2.ParameterValueList(values=slow)}
    )


def _sweep(size: int) -> signal_pb2.ParameterSweep:
    values = [common_pb2.ParameterValue(int_value=v) for v in range(2, 2 + size)]
    return signal_pb2.ParameterSweep(grid={"fast": common_pb2.ParameterValueList(values=values)})


@pytest.mark.parametrize(
    ("extra", "code", "reason"),
    [
        ({"strategy_id": "no_such_strategy"}, grpc.StatusCode.NOT_FOUND, "STRATEGY_NOT_FOUND"),
        ({"strategy_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {"parameters": {"fastest": common_pb2.ParameterValue(int_value=3)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_PARAMETER",
        ),
        (
            {"parameters": {"fast": common_pb2.ParameterValue(int_value=0)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {"parameters": {"fast": common_pb2.ParameterValue(string_value="ten")}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {
                "parameters": {
                    "fast": common_pb2.ParameterValue(int_value=50),
                    "slow": common_pb2.ParameterValue(int_value=20),
                }
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        (
            {"range": common_pb2.TimeRange(start_time=stamp(START), end_time=stamp(START))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RANGE",
        ),
        (
            {"range": common_pb2.TimeRange(start_time=stamp(START), end_time=stamp(START - timedelta(days=9)))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RANGE",
        ),
        ({"range": common_pb2.TimeRange()}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"initial_cash": 0.0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CASH"),
        ({"initial_cash": -5.0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CASH"),
        ({"initial_cash": math.nan}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CASH"),
        ({"commission": signal_pb2.CommissionModel(rate_bps=-1)}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COST"),
        # The engine charges at most 10 % a fill: above that the contract refuses it (it once failed with INTERNAL).
        ({"commission": signal_pb2.CommissionModel(rate_bps=1000)}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COST"),
        ({"slippage_bps": -0.5}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COST"),
        ({"sizing": signal_pb2.PositionSizing()}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SIZING"),
        (
            {"sizing": signal_pb2.PositionSizing(fixed_fraction=signal_pb2.FixedFractionSizing(fraction=1.5))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SIZING",
        ),
        (
            {"sizing": signal_pb2.PositionSizing(fixed_quantity=signal_pb2.FixedQuantitySizing(quantity=0.5))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SIZING",  # less than one lot without allow_fractional
        ),
        ({"stop_loss_percent": 0.0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EXIT_RULE"),
        ({"trailing_stop_percent": 100.0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EXIT_RULE"),
        ({"timeframe": common_pb2.TIMEFRAME_UNSPECIFIED}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"symbols": []}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"symbols": ["DEMO", "demo"]}, grpc.StatusCode.INVALID_ARGUMENT, "DUPLICATE_SYMBOL"),
        ({"symbols": [f"S{i}" for i in range(51)]}, grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_SYMBOLS"),
        ({"symbols": ["NOPE"]}, grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND"),
        ({"symbols": ["DEMO", "EUROX"]}, grpc.StatusCode.INVALID_ARGUMENT, "MIXED_QUOTE_CURRENCIES"),
        (
            {
                "range": common_pb2.TimeRange(
                    start_time=stamp(datetime(2010, 1, 1)), end_time=stamp(datetime(2011, 1, 1))
                )
            },
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_BARS",
        ),
        ({"sweep": _sweep(10_001)}, grpc.StatusCode.INVALID_ARGUMENT, "SWEEP_TOO_LARGE"),
        ({"sweep": signal_pb2.ParameterSweep()}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {
                "sweep": signal_pb2.ParameterSweep(
                    grid={"nope": common_pb2.ParameterValueList(values=[common_pb2.ParameterValue(int_value=1)])}
                )
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_PARAMETER",
        ),
        ({"max_equity_points": 1}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"end_of_data": 7}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_bad_configs_fail_before_any_message(
    platform: SignalPlatform, extra: dict[str, object], code: grpc.StatusCode, reason: str
) -> None:
    call = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=_config(**extra)), metadata=platform.trader)
    assert await refusal(call.read()) == (code, reason)  # the first read fails: no message came before the error
    listed = await platform.signal.ListBacktests(signal_pb2.ListBacktestsRequest(), metadata=platform.trader)
    assert list(listed.backtests) == []  # nothing was stored


async def test_backtests_need_the_trade_scope(platform: SignalPlatform) -> None:
    call = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=_config()), metadata=platform.reader)
    assert await refusal(call.read()) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    call = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=_config()))
    assert await refusal(call.read()) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
    for request in (signal_pb2.GetBacktestRequest(), signal_pb2.GetBacktestRequest(view=7, backtest_id="bt_1")):  # type: ignore[arg-type]
        assert (await refusal(platform.signal.GetBacktest(request, metadata=platform.trader)))[0] == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


async def test_the_per_account_limit_and_the_worker_queue() -> None:
    async with running_signal_platform(SYMBOLS[:1], backtests_per_account=1, backtest_workers=1) as platform:
        config = _config(sweep=_long_sweep())
        call = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=config), metadata=platform.trader)
        first = await _first(call)
        second = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=_config()), metadata=platform.trader)
        assert await refusal(second.read()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKTEST_LIMIT_EXCEEDED")
        # Another account's backtest waits for the only worker.
        other = platform.signal.RunBacktest(
            signal_pb2.RunBacktestRequest(config=_config()), metadata=platform.other_trader
        )
        queued = await _first(other)
        state = await platform.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id=queued.backtest_id), metadata=platform.other_trader
        )
        assert state.backtest.state == signal_pb2.BACKTEST_STATE_QUEUED
        await platform.signal.CancelBacktest(
            signal_pb2.CancelBacktestRequest(backtest_id=first.backtest_id), metadata=platform.trader
        )
        rest = await _remaining(other)
        assert rest[-1].backtest.state == signal_pb2.BACKTEST_STATE_SUCCEEDED
        call.cancel()
        await asyncio.sleep(0)
