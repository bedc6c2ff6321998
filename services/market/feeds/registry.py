"""The configured feeds: an adapter factory per feed id, built from the market settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.core.settings import MarketSettings
from services.market.feeds.base import FeedAdapter
from services.market.store import MarketStore

AdapterFactory = Callable[[], FeedAdapter]


def ccxt_feed_id(exchange: str) -> str:
    return f"ccxt-{exchange}"


def build_factories(market: MarketSettings, store: MarketStore) -> dict[str, AdapterFactory]:
    """One factory per configured feed, by feed id. Imports are local: a process without ccxt configured never loads
    it (ccxt is large and slow to import)."""
    factories: dict[str, AdapterFactory] = {}
    for name in market.market_feeds:
        if name == "sim":
            from services.market.feeds.sim import SimulatedFeed  # noqa: PLC0415 - load only configured feeds

            def sim() -> FeedAdapter:
                return SimulatedFeed(
                    "sim", seed=market.sim_seed, tick_interval_seconds=market.sim_tick_interval_seconds
                )

            factories["sim"] = sim
        elif name == "replay":
            from services.market.feeds.replay import ReplayFeed  # noqa: PLC0415 - load only configured feeds

            def replay() -> FeedAdapter:
                return ReplayFeed(
                    "replay", store=store, symbols=market.replay_symbols, speed=market.replay_speed, loop=True
                )

            factories["replay"] = replay
        elif name == "ccxt":
            from services.market.feeds.ccxt.feed import CcxtFeed  # noqa: PLC0415 - load only configured feeds

            def ccxt() -> FeedAdapter:
                return CcxtFeed(
                    ccxt_feed_id(market.ccxt_exchange),
                    exchange=market.ccxt_exchange,
                    symbols=market.ccxt_symbols,
                    base_url=market.ccxt_base_url or None,
                    poll_interval_seconds=market.ccxt_poll_interval_seconds,
                )

            factories[ccxt_feed_id(market.ccxt_exchange)] = ccxt
    return factories


class HistorySources:
    """Adapters used for BackfillBars on any replica: separate from the leader's live instance, started once."""

    def __init__(self, factories: dict[str, AdapterFactory]) -> None:
        self._factories = factories
        self._started: dict[str, FeedAdapter] = {}
        self._lock = asyncio.Lock()

    @property
    def feed_ids(self) -> list[str]:
        return sorted(self._factories)

    async def adapter(self, feed_id: str) -> FeedAdapter | None:
        """The started history adapter of `feed_id`, None when no such feed is configured."""
        if feed_id not in self._factories:
            return None
        async with self._lock:
            adapter = self._started.get(feed_id)
            if adapter is None:
                adapter = self._factories[feed_id]()
                await adapter.start()
                self._started[feed_id] = adapter
            return adapter

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for adapter in self._started.values():
            await adapter.stop()
        self._started.clear()
