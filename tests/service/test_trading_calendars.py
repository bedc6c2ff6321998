"""Instruments trade on their calendars, through real channels: a stock created without a session gets its exchange's
calendar (not "always open"), its backtest annualises with that calendar's 252 sessions a year, and forecast points
are the open times of the bars that will really come (weekends, holidays and closed hours skipped)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import exchange_calendars
import numpy as np
import pytest
from backtesting.test import GOOG  # type: ignore[import-untyped]

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.signal.backtests.engine.config import BacktestConfig
from services.signal.backtests.engine.engine import BacktestBars, run_backtest
from services.signal.strategies.base import REGISTRY, StrategyBars
from tests.signal_platform import SignalPlatform, running_signal_platform, stamp

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore:.*values returning an ndarray")]
Row = tuple[datetime, float, float, float, float, float]


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[SignalPlatform]:
    async with running_signal_platform(
        (), services=("market", "signal", "model"), model_dir=str(tmp_path / "models")
    ) as running:
        yield running


async def _create(platform: SignalPlatform, symbol: str, venue: str, currency: str = "USD") -> market_pb2.Instrument:
    """A stock created as a CSV import's would be: no trading session."""
    instrument = market_pb2.Instrument(
        symbol=symbol, venue=venue, asset_class=market_pb2.ASSET_CLASS_STOCK, quote_currency=currency
    )
    reply = await platform.market.CreateInstrument(
        market_pb2.CreateInstrumentRequest(instrument=instrument), metadata=platform.admin
    )
    return reply.instrument


async def _import(platform: SignalPlatform, symbol: str, timeframe: int, rows: Sequence[Row]) -> None:
    bars = [
        market_pb2.Bar(open_time=stamp(when), open=o, high=h, low=low, close=c, volume=v)
        for when, o, h, low, c, v in rows
    ]
    await platform.market.ImportBars(
        market_pb2.ImportBarsRequest(symbol=symbol, timeframe=timeframe, bars=bars),  # type: ignore[arg-type]
        metadata=platform.admin,
    )


def _walk(times: Sequence[datetime], seed: int) -> list[Row]:
    closes = 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0.0, 0.01, len(times))))
    return [(when, c, c * 1.01, c * 0.99, c, 1000.0) for when, c in zip(times, closes.tolist(), strict=True)]


async def _forecast_times(platform: SignalPlatform, symbol: str, timeframe: int, horizon: int) -> list[datetime]:
    """Train a naive model, promote it (the gate is beside the point here) and date its forecast."""
    request = model_pb2.TrainModelRequest(algorithm=model_pb2.ALGORITHM_NAIVE, symbol=symbol, timeframe=timeframe)  # type: ignore[arg-type]
    job = await platform.model.TrainModel(request, metadata=platform.admin)
    watch = platform.model.WatchTraining(model_pb2.WatchTrainingRequest(job_id=job.job_id), metadata=platform.reader)
    last = [message async for message in watch][-1]
    assert last.HasField("completed"), last
    await platform.model.PromoteModel(
        model_pb2.PromoteModelRequest(
            model_id=last.completed.model.model_id, override_gate=True, override_reason="calendar test: dates only"
        ),
        metadata=platform.admin,
    )
    reply = await platform.model.Predict(
        model_pb2.PredictRequest(symbol=symbol, timeframe=timeframe, horizon_bars=horizon),  # type: ignore[arg-type]
        metadata=platform.reader,
    )
    return [point.time.ToDatetime() for point in reply.prediction.points]


async def test_a_stock_without_a_session_annualises_on_its_exchanges_calendar(platform: SignalPlatform) -> None:
    goog = await _create(platform, "GOOG", "NASDAQ")
    assert (goog.trading_session.calendar, goog.trading_session.always_open, goog.timezone) == (
        "XNAS",
        False,
        "America/New_York",
    )
    rows = [
        (when.to_pydatetime(), *(float(row[name]) for name in ("Open", "High", "Low", "Close", "Volume")))
        for when, row in GOOG.iterrows()
    ]
    await _import(platform, "GOOG", common_pb2.TIMEFRAME_1D, rows)
    fast, slow = common_pb2.ParameterValue(int_value=10), common_pb2.ParameterValue(int_value=20)
    config = signal_pb2.BacktestConfig(
        strategy_id="golden_cross",
        parameters={"fast": fast, "slow": slow},
        symbols=["GOOG"],
        timeframe=common_pb2.TIMEFRAME_1D,
        range=common_pb2.TimeRange(start_time=stamp(rows[0][0])),
        initial_cash=10_000.0,
    )
    call = platform.signal.RunBacktest(signal_pb2.RunBacktestRequest(config=config), metadata=platform.trader)
    report = [message async for message in call][-1].backtest.report

    # By hand: the same strategy and engine over the same bars, then the Sharpe ratio of its per-bar returns
    # annualised with the NYSE/Nasdaq calendar's 252 sessions a year (not 365 calendar days).
    o, h, low, c, v = np.array([row[1:] for row in rows]).T
    bars = StrategyBars(np.array([row[0] for row in rows], dtype="datetime64[ns]"), o, h, low, c, v, timedelta(days=1))
    strategy = REGISTRY["golden_cross"]
    signal = strategy.evaluate(bars, strategy.resolve({"fast": 10, "slow": 20})).target_positions()
    engine = run_backtest(
        BacktestBars(bars.open_time, bars.open, bars.high, bars.low, bars.close, bars.volume, bars.span),
        signal,
        BacktestConfig(initial_cash=10_000.0),
    )
    equity = engine.equity_curve.equity
    returns = equity / np.concatenate(([10_000.0], equity[:-1])) - 1.0
    per_bar = float(np.mean(returns) / np.std(returns, ddof=1))
    assert report.metrics.sharpe == pytest.approx(per_bar * math.sqrt(252), rel=1e-9)
    assert report.metrics.sharpe != pytest.approx(per_bar * math.sqrt(365), rel=1e-3)


async def test_forecast_points_are_the_next_bars_of_the_instruments_calendar(platform: SignalPlatform) -> None:
    nyse = exchange_calendars.get_calendar("XNYS", start="2012-01-01", end="2013-12-31")
    sessions = [stamp.to_pydatetime() for stamp in nyse.sessions]

    # Daily bars up to Friday 2013-03-01: the fifth bar ahead is Friday 2013-03-08, not Wednesday.
    await _create(platform, "ZZ-D", "NASDAQ")
    await _import(
        platform, "ZZ-D", common_pb2.TIMEFRAME_1D, _walk([s for s in sessions if s <= datetime(2013, 3, 1)], 1)
    )
    points = await _forecast_times(platform, "ZZ-D", common_pb2.TIMEFRAME_1D, 5)
    assert points == [datetime(2013, 3, day) for day in (4, 5, 6, 7, 8)]

    # Up to Thursday 2013-03-28: Good Friday is skipped.
    await _create(platform, "ZZ-GF", "NYSE")
    await _import(
        platform, "ZZ-GF", common_pb2.TIMEFRAME_1D, _walk([s for s in sessions if s <= datetime(2013, 3, 28)], 2)
    )
    points = await _forecast_times(platform, "ZZ-GF", common_pb2.TIMEFRAME_1D, 3)
    assert points == [datetime(2013, 4, 1), datetime(2013, 4, 2), datetime(2013, 4, 3)]
    assert points == [s for s in sessions if s > datetime(2013, 3, 28)][:3]

    # Minute bars up to that Thursday's close: the next minute bar opens on Monday at 09:30 New York (13:30 UTC).
    minutes = nyse.minutes_nanos // 1_000_000_000
    closing = int((datetime(2013, 3, 28, 20, 0) - datetime(1970, 1, 1)).total_seconds())
    last_minutes = minutes[(minutes < closing)][-400:]
    await _create(platform, "ZZ-M", "NYSE")
    times = [datetime(1970, 1, 1) + timedelta(seconds=int(second)) for second in last_minutes]
    await _import(platform, "ZZ-M", common_pb2.TIMEFRAME_1M, _walk(times, 3))
    points = await _forecast_times(platform, "ZZ-M", common_pb2.TIMEFRAME_1M, 3)
    assert points == [datetime(2013, 4, 1, 13, 30), datetime(2013, 4, 1, 13, 31), datetime(2013, 4, 1, 13, 32)]

    # A Korean stock before Seollal 2024 (9-12 February closed).
    krx = exchange_calendars.get_calendar("XKRX", start="2023-01-01", end="2024-12-31")
    korean = [stamp.to_pydatetime() for stamp in krx.sessions]
    samsung = await _create(platform, "ZZ-KR", "KRX", "KRW")
    assert (samsung.trading_session.calendar, samsung.timezone) == ("XKRX", "Asia/Seoul")
    await _import(
        platform, "ZZ-KR", common_pb2.TIMEFRAME_1D, _walk([s for s in korean if s <= datetime(2024, 2, 8)], 4)
    )
    points = await _forecast_times(platform, "ZZ-KR", common_pb2.TIMEFRAME_1D, 2)
    assert points == [datetime(2024, 2, 13), datetime(2024, 2, 14)]
    assert points == [s for s in korean if s > datetime(2024, 2, 8)][:2]
