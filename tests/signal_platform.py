"""The market service with the signal and/or model service in one real gRPC server on loopback (they read bars
through their configured upstream, which is that same server), with instruments and simulated bars stored, and
tokens for a reader, an admin and two traders."""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2, market_pb2_grpc
from bullant.model.v1 import model_pb2_grpc
from bullant.signal.v1 import signal_pb2_grpc
from services.bootstrap import build_authenticator, build_dependencies
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.bars import Bar
from services.core.dependencies import Dependencies
from services.core.server import GrpcServer, ServiceRegistration
from services.market import wiring as market_wiring
from services.market.feeds.sim import SimulatedFeed
from services.market.records import Timeframe
from services.model import wiring as model_wiring
from services.signal import wiring as signal_wiring
from services.signal.strategies.base import StrategyBars
from tests.support import make_settings

START = datetime(2025, 3, 3)
DAYS = 400
Metadata = tuple[tuple[str, str], ...]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment.replace(tzinfo=UTC))
    return value


@dataclass(frozen=True, slots=True)
class StoredSymbol:
    """A symbol to create, the simulated series its bars come from, and its quote currency."""

    symbol: str
    source: str
    currency: str = "USD"
    seed: int = 11
    timeframe: Timeframe = Timeframe.D1


@dataclass
class SignalPlatform:
    signal: signal_pb2_grpc.SignalServiceAsyncStub
    model: model_pb2_grpc.ModelServiceAsyncStub
    market: market_pb2_grpc.MarketServiceAsyncStub
    reader: Metadata
    admin: Metadata
    trader: Metadata
    other_trader: Metadata
    bars: dict[str, StrategyBars]

    def closes(self, symbol: str = "DEMO") -> np.ndarray:
        return self.bars[symbol].close

    server: GrpcServer
    deps: Dependencies


@functools.cache
def simulated_bars(source: str, seed: int, timeframe: Timeframe, days: int) -> tuple[Bar, ...]:
    """The simulator's bars of `source` from START for `days` days: the same for the same seed, so generated once
    per test process (about 0.13 s of CPU for 400 daily bars, and most platforms store two or three series)."""
    feed = SimulatedFeed(seed=seed, clock=lambda: datetime(2027, 6, 1))
    return tuple(feed.bars(source, timeframe, START, START + timedelta(days=days)))


DEFAULT_SYMBOLS = (StoredSymbol("DEMO", "SIM-AAPL"),)
REGISTRATIONS: dict[str, Callable[[Dependencies], ServiceRegistration]] = {
    "market": market_wiring.build,
    "signal": signal_wiring.build,
    "model": model_wiring.build,
}


@asynccontextmanager
async def running_signal_platform(
    symbols: Sequence[StoredSymbol] = DEFAULT_SYMBOLS,
    *,
    days: int = DAYS,
    store: bool = True,
    services: Sequence[str] = ("market", "signal"),
    **settings_overrides: Any,
) -> AsyncIterator[SignalPlatform]:
    """The platform with `symbols` stored as `days` days of daily bars from START (`store=False`: another replica
    of a platform that stored them; `bars` are still generated)."""
    port = free_port()
    settings = make_settings(port=port, default_upstream=f"127.0.0.1:{port}", market_feeds=[], **settings_overrides)
    deps = build_dependencies(settings)
    server = GrpcServer(
        settings.server,
        [REGISTRATIONS[name](deps) for name in services],
        lifecycle=deps.lifecycle,
        components=(deps.databases, deps.coordination, deps.clients),
        authenticator=build_authenticator(deps),
    )
    await server.start()
    assert deps.signing_keys is not None
    issuer = TokenIssuer(deps.signing_keys, token_policy(settings.auth))

    def bearer(account_id: int, scopes: tuple[str, ...], roles: tuple[str, ...] = ("user",)) -> Metadata:
        token, _ = issuer.issue(account_id=account_id, shard=0, roles=roles, scopes=scopes, session_id=f"s{account_id}")
        return (("authorization", f"Bearer {token}"),)

    admin = bearer(1, ("read", "trade", "admin"), ("user", "admin"))
    stored: dict[str, StrategyBars] = {}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            market = market_pb2_grpc.MarketServiceStub(channel)
            for item in symbols:
                bars = simulated_bars(item.source, item.seed, item.timeframe, days)
                columns = {
                    name: np.array([getattr(bar, name) for bar in bars])
                    for name in ("open", "high", "low", "close", "volume")
                }
                stored[item.symbol] = StrategyBars(
                    np.array([bar.open_time for bar in bars], dtype="datetime64[us]").astype("datetime64[ns]"),
                    **columns,
                    span=item.timeframe.delta,
                )
                if not store:
                    continue
                await market.CreateInstrument(
                    market_pb2.CreateInstrumentRequest(
                        instrument=market_pb2.Instrument(
                            symbol=item.symbol,
                            venue="TEST",
                            asset_class=market_pb2.ASSET_CLASS_STOCK,
                            quote_currency=item.currency,
                            # Simulated bars come every day, as the simulator's instruments say.
                            trading_session=market_pb2.TradingSession(always_open=True),
                        )
                    ),
                    metadata=admin,
                )
                await market.ImportBars(
                    market_pb2.ImportBarsRequest(
                        symbol=item.symbol,
                        timeframe=int(item.timeframe),  # type: ignore[arg-type]
                        bars=[
                            market_pb2.Bar(
                                open_time=stamp(bar.open_time),
                                open=bar.open,
                                high=bar.high,
                                low=bar.low,
                                close=bar.close,
                                volume=bar.volume,
                            )
                            for bar in bars
                        ],
                    ),
                    metadata=admin,
                )
            yield SignalPlatform(
                signal=signal_pb2_grpc.SignalServiceStub(channel),
                model=model_pb2_grpc.ModelServiceStub(channel),
                market=market,
                reader=bearer(2, ("read",)),
                admin=admin,
                trader=bearer(3, ("read", "trade")),
                other_trader=bearer(4, ("read", "trade")),
                bars=stored,
                server=server,
                deps=deps,
            )
    finally:
        await server.stop(grace=0.5)


async def store_trend(platform: SignalPlatform, symbol: str = "TREND", days: int = 500) -> None:
    """A steadily rising series with small noise: drift forecasts beat the random walk on it."""
    await platform.market.CreateInstrument(
        market_pb2.CreateInstrumentRequest(
            instrument=market_pb2.Instrument(
                symbol=symbol,
                venue="TEST",
                asset_class=market_pb2.ASSET_CLASS_STOCK,
                quote_currency="USD",
                trading_session=market_pb2.TradingSession(always_open=True),  # a bar every day
            )
        ),
        metadata=platform.admin,
    )
    rng = np.random.default_rng(5)
    closes = 100.0 * np.exp(np.cumsum(0.004 + 0.002 * rng.standard_normal(days)))
    bars = []
    for day, close in enumerate(closes):
        opened = close / np.exp(0.004)
        bars.append(
            market_pb2.Bar(
                open_time=stamp(START + timedelta(days=day)),
                open=opened,
                high=max(opened, close) * 1.001,
                low=min(opened, close) * 0.999,
                close=close,
                volume=1000.0,
            )
        )
    await platform.market.ImportBars(
        market_pb2.ImportBarsRequest(symbol=symbol, timeframe=common_pb2.TIMEFRAME_1D, bars=bars),
        metadata=platform.admin,
    )
