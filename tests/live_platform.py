"""The live signal path in one real gRPC server on loopback: the market service fed by a scripted feed the test
pushes ticks into, the signal service with its engine, and the model service, each calling the others through its
configured upstream (that same server). Also the price script the tests push: stored 1-minute history, then live
minutes whose ticks close each bar with the next minute's first tick."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc

from bullant.market.v1 import market_pb2, market_pb2_grpc
from bullant.model.v1 import model_pb2_grpc
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.bootstrap import build_authenticator, build_dependencies
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.clock import WallClock, utc_now
from services.core.dependencies import Dependencies
from services.core.server import GrpcServer, ServiceRegistration
from services.core.settings import Settings
from services.core.timeframes import Timeframe
from services.market import wiring as market_wiring
from services.market.feeds.base import FeedAdapter
from services.market.records import Tick
from services.model import wiring as model_wiring
from services.signal import wiring as signal_wiring
from services.signal.live.engine import LiveEngine
from services.signal.live.records import LiveSignal, SeriesKey
from tests.market_platform import COIN, ScriptedFeed
from tests.signal_platform import Metadata, free_port, stamp
from tests.support import eventually, make_settings

SYMBOL = COIN.symbol
MINUTE = timedelta(minutes=1)
# Fast for tests: the engine re-plans, resolves performance and stream heartbeats within a second.
LIVE_SETTINGS: dict[str, Any] = {
    "market_feeds": [],
    "feed_staleness_seconds": 60.0,
    "signal_timeframes": ["1m"],
    "signal_strategies": ["ema_cross"],
    "signal_repeat_bars": 0,
    "signal_watch_refresh_seconds": 0.5,
    "signal_performance_interval_seconds": 0.3,
    "signal_heartbeat_seconds": 0.5,
    "signal_bar_close_grace_seconds": 1.0,
    "signal_engine_lease_seconds": 2.0,
    "signal_fusion_deadline_seconds": 5.0,
    "model_serving_cache_seconds": 0.0,
}


@dataclass
class Processed:
    """The engine's probe: every bar a series finished, with its stored signals."""

    bars: list[tuple[SeriesKey, datetime, list[LiveSignal]]] = field(default_factory=list)

    def __call__(self, series: SeriesKey, bar_time: datetime, signals: Sequence[LiveSignal]) -> None:
        self.bars.append((series, bar_time, list(signals)))

    def reached(self, bar_time: datetime) -> bool:
        return any(moment >= bar_time for _, moment, _ in self.bars)


@dataclass
class LivePlatform:
    server: GrpcServer
    deps: Dependencies
    feed: ScriptedFeed | None
    processed: Processed
    signal: signal_pb2_grpc.SignalServiceAsyncStub
    market: market_pb2_grpc.MarketServiceAsyncStub
    model: model_pb2_grpc.ModelServiceAsyncStub
    admin: Metadata
    trader: Metadata
    other_trader: Metadata

    @property
    def engine(self) -> LiveEngine:
        for registration in self.server.registrations:
            for component in registration.components:
                if isinstance(component, LiveEngine):
                    return component
        raise AssertionError("no signal engine in this server")

    async def instrument_stored(self, symbol: str = SYMBOL, timeout: float = 15) -> None:
        """Until the feed's leader has stored `symbol` (it is leader before it stores its instruments, so bars
        imported in between would be refused with "no instrument")."""

        async def stored() -> bool:
            try:
                await self.market.GetInstrument(market_pb2.GetInstrumentRequest(symbol=symbol), metadata=self.admin)
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually(stored, timeout=timeout)


def live_settings(**overrides: Any) -> Settings:
    port = overrides.pop("port", None) or free_port()
    values = {**LIVE_SETTINGS, "port": port, "default_upstream": f"127.0.0.1:{port}", **overrides}
    return make_settings(**values)


def bearer(
    deps: Dependencies, account_id: int, scopes: tuple[str, ...], roles: tuple[str, ...] = ("user",)
) -> Metadata:
    assert deps.signing_keys is not None
    token, _ = TokenIssuer(deps.signing_keys, token_policy(deps.settings.auth)).issue(
        account_id=account_id, shard=0, roles=roles, scopes=scopes, session_id=f"s{account_id}"
    )
    return (("authorization", f"Bearer {token}"),)


@asynccontextmanager
async def running_live_platform(
    settings: Settings,
    *,
    feed: FeedAdapter | None = None,
    services: Sequence[str] = ("market", "signal", "model"),
    clock: WallClock = utc_now,
) -> AsyncIterator[LivePlatform]:
    """The platform with `feed` as the market's only feed, and `clock` as the market's and the engine's time."""
    deps = build_dependencies(settings)
    processed = Processed()
    registrations: list[ServiceRegistration] = []
    if "market" in services:
        assert feed is not None
        registrations.append(market_wiring.build(deps, clock=clock, factories={feed.feed_id: lambda: feed}))
    if "signal" in services:
        registrations.append(signal_wiring.build(deps, on_processed=processed, clock=clock))
    if "model" in services:
        registrations.append(model_wiring.build(deps))
    server = GrpcServer(
        settings.server,
        registrations,
        lifecycle=deps.lifecycle,
        components=(deps.databases, deps.coordination, deps.clients),
        authenticator=build_authenticator(deps),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield LivePlatform(
                server=server,
                deps=deps,
                feed=feed if isinstance(feed, ScriptedFeed) else None,
                processed=processed,
                signal=signal_pb2_grpc.SignalServiceStub(channel),
                market=market_pb2_grpc.MarketServiceStub(channel),
                model=model_pb2_grpc.ModelServiceStub(channel),
                admin=bearer(deps, 1, ("read", "trade", "admin"), ("user", "admin")),
                trader=bearer(deps, 3, ("read", "trade")),
                other_trader=bearer(deps, 4, ("read", "trade")),
            )
    finally:
        await server.stop(grace=0.5)


# -- the price script -----------------------------------------------------------------------------------------------


def history_closes(count: int = 300) -> list[float]:
    """A slow decline from 110 to 100 with a small wobble: EMA 9 ends below EMA 21 (no cross pending)."""
    return [110.0 - 10.0 * n / (count - 1) + 0.05 * ((n * 7) % 5 - 2) for n in range(count)]


async def store_history(market: market_pb2_grpc.MarketServiceAsyncStub, admin: Metadata, end: datetime) -> None:
    """The history before `end` (its last bar opens a minute before it), 1-minute bars of SYMBOL."""
    closes = history_closes()
    first = end - len(closes) * MINUTE
    bars = []
    previous = closes[0]
    for index, close in enumerate(closes):
        bars.append(
            market_pb2.Bar(
                open_time=stamp(first + index * MINUTE),
                open=previous,
                high=max(previous, close) + 0.02,
                low=min(previous, close) - 0.02,
                close=close,
                volume=10.0,
            )
        )
        previous = close
    await market.ImportBars(
        market_pb2.ImportBarsRequest(symbol=SYMBOL, timeframe=Timeframe.M1.value, bars=bars),  # type: ignore[arg-type]
        metadata=admin,
    )


def minute_ticks(start: datetime, prices: Sequence[float], *, symbol: str = SYMBOL) -> list[Tick]:
    """Three ticks a minute from `start` moving to each minute's price (the last one is the close)."""
    ticks = []
    previous = prices[0]
    for index, price in enumerate(prices):
        minute = start + index * MINUTE
        for step, share in ((0, 1 / 3), (20, 2 / 3), (40, 1.0)):
            value = round(previous + (price - previous) * share, 4)
            ticks.append(Tick(symbol, minute + timedelta(seconds=step), value, 1.0 + step / 20))
        previous = price
    return ticks


async def push(feed: ScriptedFeed, ticks: Sequence[Tick]) -> None:
    for item in ticks:
        await feed.push(item)


def live_start() -> datetime:
    """The first live minute: in the future, so only the next minute's tick closes a bar (never a wall-clock flush,
    which would race the script), with the stored history ending before now."""
    return Timeframe.M1.floor(utc_now()) + 10 * MINUTE


async def wait_streaming(platform: LivePlatform, symbol: str = SYMBOL, timeout: float = 20.0) -> None:
    """Until the engine leads, evaluates the symbol's 1m series from its checkpoint, and streams its ticks."""
    key = SeriesKey(symbol, Timeframe.M1)

    def ready() -> bool:
        engine = platform.engine
        runner = engine.runners.get(key)
        return engine.is_leader and symbol in engine.streaming and runner is not None and runner.checkpoint is not None

    await eventually(ready, timeout=timeout)


async def next_event(stream: Any, kinds: set[str], timeout: float = 30.0) -> signal_pb2.StreamSignalsResponse:
    """The next StreamSignals message of one of `kinds` (heartbeats and others skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await stream.read()
            assert isinstance(message, signal_pb2.StreamSignalsResponse), "the stream ended"
            if message.WhichOneof("event") in kinds:
                return message
