"""Backtests on the production parts: the store on MariaDB (reports larger than a 64 KiB BLOB, symbol filters) and
two signal replicas sharing it – one runs a backtest, the other sees its progress, re-attaches to it by request id
and cancels it, and the running replica stops."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from tests.db_support import DatabaseSet, new_prefix
from tests.signal_platform import START, StoredSymbol, running_signal_platform, stamp

pytestmark = pytest.mark.integration

SYMBOLS = (StoredSymbol("DEMO", "SIM-AAPL"), StoredSymbol("DEMO2", "SIM-AAPL", seed=12))


@pytest.fixture
async def shared(mysql_url: str, redis_url: str) -> AsyncIterator[dict[str, Any]]:
    databases = DatabaseSet("mysql", mysql_url, new_prefix())
    await databases.create(2)
    try:
        yield {
            "database_url": databases.url("global"),
            "shard_urls": [databases.url("shard_0"), databases.url("shard_1")],
            "db_auto_migrate": True,
            "redis_url": redis_url,
            "app_name": f"t{uuid.uuid4().hex[:12]}",
            # One data directory: both replicas sign and verify with the same development key.
            "data_dir": tempfile.mkdtemp(prefix="bullant-signal-"),
        }
    finally:
        await databases.drop()


def _values(numbers: range) -> common_pb2.ParameterValueList:
    return common_pb2.ParameterValueList(values=[common_pb2.ParameterValue(int_value=n) for n in numbers])


def _config(fast: range, slow: range, symbols: tuple[str, ...] = ("DEMO",)) -> signal_pb2.BacktestConfig:
    return signal_pb2.BacktestConfig(
        strategy_id="golden_cross",
        symbols=symbols,
        timeframe=common_pb2.TIMEFRAME_1D,
        range=common_pb2.TimeRange(start_time=stamp(START)),
        initial_cash=50_000.0,
        sweep=signal_pb2.ParameterSweep(grid={"fast": _values(fast), "slow": _values(slow)}),
    )


async def _first(call: Any) -> signal_pb2.RunBacktestResponse:
    message = await call.read()
    assert isinstance(message, signal_pb2.RunBacktestResponse)
    return message


async def _messages(call: Any) -> list[signal_pb2.RunBacktestResponse]:
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:
        messages.append(message)
    return messages


async def test_replicas_share_backtests(shared: dict[str, Any]) -> None:
    async with (
        running_signal_platform(SYMBOLS, **shared) as first,
        running_signal_platform(SYMBOLS, store=False, **shared) as second,
    ):
        # A finished report bigger than a BLOB (2,000 sweep results) is read whole from the other replica.
        done = await _messages(
            first.signal.RunBacktest(
                signal_pb2.RunBacktestRequest(config=_config(range(2, 42), range(50, 100), ("DEMO", "DEMO2"))),
                metadata=first.trader,
            )
        )
        finished = done[-1].backtest
        assert finished.state == signal_pb2.BACKTEST_STATE_SUCCEEDED
        assert len(finished.report.sweep_results) == 2000
        assert finished.report.ByteSize() > 65_536
        read = await second.signal.GetBacktest(
            signal_pb2.GetBacktestRequest(backtest_id=finished.backtest_id), metadata=second.trader
        )
        assert read.backtest == finished
        for symbol, expected in (("DEMO2", [finished.backtest_id]), ("DEMO", [finished.backtest_id]), ("DEM", [])):
            listed = await second.signal.ListBacktests(
                signal_pb2.ListBacktestsRequest(symbol=symbol), metadata=second.trader
            )
            assert [item.backtest_id for item in listed.backtests] == expected

        # A long run on the first replica: the second sees it progress, attaches to it and cancels it.
        config = _config(range(2, 102), range(150, 250))
        running = first.signal.RunBacktest(
            signal_pb2.RunBacktestRequest(request_id="long-run", config=config), metadata=first.trader
        )
        opening = await _first(running)
        backtest_id = opening.backtest_id
        attached = second.signal.RunBacktest(
            signal_pb2.RunBacktestRequest(request_id="long-run", config=config), metadata=second.trader
        )
        followed = await _first(attached)
        assert followed.backtest_id == backtest_id
        progressed = None
        for _ in range(100):
            state = await second.signal.GetBacktest(
                signal_pb2.GetBacktestRequest(backtest_id=backtest_id, view=signal_pb2.BACKTEST_VIEW_BASIC),
                metadata=second.trader,
            )
            if state.backtest.progress.bars_processed > 0:
                progressed = state.backtest
                break
            await asyncio.sleep(0.1)
        assert progressed is not None
        assert progressed.state == signal_pb2.BACKTEST_STATE_RUNNING
        cancelled = await second.signal.CancelBacktest(
            signal_pb2.CancelBacktestRequest(backtest_id=backtest_id), metadata=second.trader
        )
        assert cancelled.backtest.state == signal_pb2.BACKTEST_STATE_CANCELLED
        # The running replica notices at its next heartbeat and ends its stream; the attached one ends too.
        ends = await asyncio.wait_for(asyncio.gather(_messages(running), _messages(attached)), timeout=20)
        for messages in ends:
            assert messages[-1].backtest.state == signal_pb2.BACKTEST_STATE_CANCELLED
        # Its worker is free again: a new backtest runs to the end.
        again = await _messages(
            first.signal.RunBacktest(
                signal_pb2.RunBacktestRequest(config=_config(range(5, 7), range(30, 32))), metadata=first.trader
            )
        )
        assert again[-1].backtest.state == signal_pb2.BACKTEST_STATE_SUCCEEDED
