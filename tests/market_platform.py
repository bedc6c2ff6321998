"""A running market service for tests: a scripted feed the test drives tick by tick, real databases and
coordination backend behind a loopback gRPC server with authentication on, and tokens to call it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import grpc
import grpc.aio

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.bootstrap import build_authenticator, build_dependencies
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.clock import utc_now
from services.core.dependencies import Dependencies
from services.core.server import GrpcServer
from services.core.settings import Settings
from services.market import wiring as market_wiring
from services.market.feeds.base import FeedAdapter, FeedError, HistoryNotSupported
from services.market.feeds.registry import AdapterFactory
from services.market.feeds.runner import FeedRunner, FeedState
from services.market.records import AssetClass, Bar, Instrument, Tick, Timeframe
from services.market.streaming import TickHub
from tests.support import eventually, make_settings

STOCK = Instrument(
    symbol="TEST-AAPL",
    venue="TEST",
    asset_class=AssetClass.STOCK,
    quote_currency="USD",
    display_name="Apple test stock",
    tick_size=0.01,
    lot_size=1,
    feed_id="script",
)
COIN = Instrument(
    symbol="TEST-BTC",
    venue="TEST",
    asset_class=AssetClass.CRYPTO,
    quote_currency="USDT",
    base_currency="BTC",
    display_name="Bitcoin test pair",
    feed_id="script",
)


class ScriptedFeed(FeedAdapter):
    """A feed whose ticks the test pushes (`await feed.push(...)`) and whose history is a dict it fills."""

    adapter = "script"
    simulated = True

    def __init__(self, feed_id: str = "script", instruments: Sequence[Instrument] = (STOCK, COIN)) -> None:
        super().__init__(feed_id)
        self._instruments = list(instruments)
        self.queue: asyncio.Queue[list[Tick] | Exception] = asyncio.Queue()
        self.history_bars: dict[tuple[str, Timeframe], list[Bar]] = {}
        self.starts = 0
        self.fail_start: Exception | None = None

    async def start(self) -> None:
        self.starts += 1
        if self.fail_start is not None:
            raise self.fail_start

    async def stop(self) -> None:
        return None

    def instruments(self) -> Sequence[Instrument]:
        return self._instruments

    async def ticks(self, symbols: Sequence[str]) -> AsyncIterator[list[Tick]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def push(self, *ticks: Tick) -> None:
        await self.queue.put(list(ticks))

    async def fail(self, reason: str = "connection lost") -> None:
        await self.queue.put(FeedError(reason))

    async def history(self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        bars = self.history_bars.get((symbol, timeframe))
        if bars is None:
            raise HistoryNotSupported(f"no {timeframe.label} history of {symbol}")
        return [bar for bar in bars if start <= bar.open_time < end]

    def history_timeframes(self, symbol: str) -> Sequence[Timeframe]:
        return tuple(timeframe for (name, timeframe) in self.history_bars if name == symbol)


def tick(symbol: str, price: float, size: float = 1.0, *, at: datetime | None = None, **extra: Any) -> Tick:
    return Tick(symbol, at or utc_now(), price, size, **extra)


class MarketPlatform:
    def __init__(self, server: GrpcServer, channel: grpc.aio.Channel, deps: Dependencies, feed: ScriptedFeed) -> None:
        self.server = server
        self.channel = channel
        self.stub = market_pb2_grpc.MarketServiceStub(channel)
        self.deps = deps
        self.feed = feed

    def token(self, *scopes: str, account_id: int = 7, admin: bool = False) -> tuple[tuple[str, str], ...]:
        assert self.deps.signing_keys is not None
        roles = ("user", "admin") if admin else ("user",)
        granted = tuple(scopes or ("read",)) + (("admin",) if admin else ())
        token, _ = TokenIssuer(self.deps.signing_keys, token_policy(self.deps.settings.auth)).issue(
            account_id=account_id, shard=0, roles=roles, scopes=granted, session_id=f"s{account_id}"
        )
        return (("authorization", f"Bearer {token}"),)

    @property
    def reader(self) -> tuple[tuple[str, str], ...]:
        return self.token("read")

    def runner(self, feed_id: str = "script") -> FeedRunner:
        """The runner of one feed (the scripted feed by default)."""
        components = self.server.registrations[0].components
        return next(c for c in components if isinstance(c, FeedRunner) and c.adapter.feed_id == feed_id)

    @property
    def hub(self) -> TickHub:
        return next(c for c in self.server.registrations[0].components if isinstance(c, TickHub))

    async def feed_running(self, feed_id: str = "script", timeout: float = 15) -> None:
        """Until the feed is HEALTHY: its leader stored its instruments and consumes ticks."""
        await eventually(lambda: self.runner(feed_id).status.state == FeedState.HEALTHY, timeout=timeout)

    async def subscribed(self, count: int = 1) -> None:
        """Until `count` StreamTicks callers are subscribed to this server's tick hub (a tick pushed before that
        reaches nobody)."""
        await eventually(lambda: self.hub.subscriber_count == count, timeout=10)

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return self.token("read", "trade", admin=True)


def market_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"market_feeds": [], "feed_staleness_seconds": 30.0}
    values.update(overrides)
    return make_settings(**values)


@asynccontextmanager
async def running_market(
    settings: Settings | None = None,
    *,
    feed: ScriptedFeed | None = None,
    factories: Mapping[str, AdapterFactory] | None = None,
    feeds: Callable[[Dependencies], Mapping[str, AdapterFactory]] | None = None,
) -> AsyncIterator[MarketPlatform]:
    """The market service with a scripted feed (or the given factories, or those `feeds` builds on the platform's
    dependencies), authentication on."""
    settings = settings or market_settings()
    feed = feed or ScriptedFeed()
    deps = build_dependencies(settings)
    chosen = feeds(deps) if feeds is not None else factories if factories is not None else {feed.feed_id: lambda: feed}
    server = GrpcServer(
        settings.server,
        [market_wiring.build(deps, factories=chosen)],
        lifecycle=deps.lifecycle,
        components=(deps.databases, deps.coordination),
        authenticator=build_authenticator(deps),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield MarketPlatform(server, channel, deps, feed)
    finally:
        await server.stop(grace=0.5)


async def read(stream: Any) -> market_pb2.StreamTicksResponse:
    """The next message of a StreamTicks call (typed; fails at the end of the stream)."""
    message = await stream.read()
    assert isinstance(message, market_pb2.StreamTicksResponse), "the stream ended"
    return message


def minutes_ago(count: int) -> datetime:
    return Timeframe.M1.floor(utc_now()) - timedelta(minutes=count)
