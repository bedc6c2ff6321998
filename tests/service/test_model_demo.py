"""The demo as `make run` starts it (the simulator with its first history, demo models for SIM-AAPL and SIM-BTC-USDT,
the live engine on their 1-minute bars), on a fresh data directory and a market clock of our own: the demo models are
trained for the engine's timeframe once the market has stored their history (no warning on the way), promoted only
through the real gate - SIM-BTC-USDT, whose minute closes carry noise around the efficient price, passes; SIM-AAPL,
a random walk, does not - and live signals are fused on SIM-BTC-USDT and technical-only on SIM-AAPL, saying why."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.market.feeds.sim import SimulatedFeed
from tests.account_platform import refusal
from tests.live_platform import LivePlatform, running_live_platform
from tests.signal_platform import free_port
from tests.support import eventually, make_settings

pytestmark = pytest.mark.timeout(420)
# The market's time: from a fixed moment (a reproducible history), 20 market seconds a second, so minute bars close
# every 3 s while the simulator still streams every tick (it replays at most 10 s of market time per step).
START = datetime(2026, 1, 5, 13, 7)
SPEED = 20.0
BTC, AAPL = "SIM-BTC-USDT", "SIM-AAPL"


@dataclass
class MarketClock:
    start: datetime
    speed: float
    began: float = 0.0

    def __call__(self) -> datetime:
        if not self.began:
            self.began = time.monotonic()
        return self.start + timedelta(seconds=(time.monotonic() - self.began) * self.speed)


@pytest.fixture
async def demo(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[LivePlatform]:
    caplog.set_level(logging.INFO, logger="bullant")
    clock = MarketClock(START, SPEED)
    port = free_port()
    settings = make_settings(
        port=port,
        default_upstream=f"127.0.0.1:{port}",
        model_dir=str(tmp_path / "models"),
        # As config/local.env has it.
        model_demo_symbols=[AAPL, BTC],
        signal_symbols=[AAPL, BTC],
        # The defaults, said here: the engine's 1-minute bars, a minute-bar history of three days.
        signal_timeframes=["1m"],
        sim_history_minute_days=3,
        # Daily history plays no part here; a month keeps the start quick.
        sim_history_daily_days=30,
        model_serving_cache_seconds=0.0,
        signal_fusion_deadline_seconds=5.0,
        signal_repeat_bars=0,
    )
    feed = SimulatedFeed(seed=settings.market.sim_seed, clock=clock)
    async with running_live_platform(settings, feed=feed, clock=clock) as running:
        yield running


async def _versions(platform: LivePlatform, symbol: str) -> list[model_pb2.Model]:
    reply = await platform.model.ListModels(
        model_pb2.ListModelsRequest(symbol=symbol, timeframe=common_pb2.TIMEFRAME_1M), metadata=platform.admin
    )
    return list(reply.models)


async def _signals(platform: LivePlatform, symbol: str, keep: Callable[[signal_pb2.Signal], bool]) -> bool:
    reply = await platform.signal.ListSignals(
        signal_pb2.ListSignalsRequest(symbols=[symbol], page_size=1000), metadata=platform.trader
    )
    return any(keep(item) for item in reply.signals)


async def test_demo_models_earn_their_place_and_fuse_where_they_do(
    demo: LivePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    async def seeded() -> bool:
        """Both series trained, and a version that passed its gate promoted (a moment after it is registered)."""
        versions = await _versions(demo, BTC) + await _versions(demo, AAPL)
        settled = [v.status == model_pb2.MODEL_STATUS_PRODUCTION or not v.promotion_gate.passed for v in versions]
        return len(versions) == 2 and all(settled)

    await eventually(seeded, timeout=240)
    (btc,) = await _versions(demo, BTC)
    assert btc.status == model_pb2.MODEL_STATUS_PRODUCTION
    assert btc.algorithm == model_pb2.ALGORITHM_KALMAN
    assert btc.promotion_gate.passed, btc.promotion_gate.detail
    assert btc.promotion_gate.mase < 0.97
    assert "significantly" in btc.promotion_gate.detail
    assert not btc.HasField("promotion_override")  # promoted by the gate, not over it
    (aapl,) = await _versions(demo, AAPL)
    assert aapl.status == model_pb2.MODEL_STATUS_CANDIDATE
    assert not aapl.promotion_gate.passed
    assert aapl.promotion_gate.mase > 0.99
    predict = model_pb2.PredictRequest(symbol=AAPL, timeframe=common_pb2.TIMEFRAME_1M, horizon_bars=1)
    assert await refusal(demo.model.Predict(predict, metadata=demo.trader)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MODEL_NOT_TRAINED",
    )

    # The live engine's signals on those minute bars: fused with the model on SIM-BTC-USDT once it serves,
    # technical-only on SIM-AAPL with the reason.
    def fused(signal: signal_pb2.Signal) -> bool:
        return not signal.technical_only and signal.model_id == btc.model_id and "model " in signal.reason

    def untrained(signal: signal_pb2.Signal) -> bool:
        return (
            signal.technical_only
            and signal.technical_only_reason == signal_pb2.TECHNICAL_ONLY_REASON_MODEL_NOT_TRAINED
            and "technical only: no production model for SIM-AAPL 1m" in signal.reason
        )

    await eventually(lambda: _signals(demo, BTC, fused), timeout=180)
    await eventually(lambda: _signals(demo, AAPL, untrained), timeout=180)
    assert not await _signals(demo, AAPL, lambda signal: not signal.technical_only)

    # A clean first start says nothing alarming: the models waited for the market's history.
    alarming = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert not alarming, [record.getMessage() for record in alarming]
    said = [record.getMessage() for record in caplog.records if record.name == "bullant.model.scheduler"]
    assert any(f"serves {BTC} 1m" in line for line in said), said
    assert any(f"of {AAPL} 1m stays a candidate" in line for line in said), said
    assert not any("waits for more bars" in line for line in said), said  # never tried before the history was in
