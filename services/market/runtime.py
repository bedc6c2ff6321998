"""Builds the market domain from the platform's dependencies: store, tick hub, feed runners and the service."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.core.dependencies import Dependencies
from services.core.server import Component
from services.market.feeds.registry import AdapterFactory, HistorySources, build_factories
from services.market.feeds.runner import FeedRunner, RunnerPolicy
from services.market.service import MarketService
from services.market.store import MarketStore
from services.market.streaming import TickHub, TickStreams


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketParts:
    """The market service and the components its registration starts (hub first, then the feeds)."""

    service: MarketService
    hub: TickHub
    runners: Sequence[FeedRunner]
    history: HistorySources

    @property
    def components(self) -> tuple[Component, ...]:
        return (self.hub, self.history, *self.runners)


def build_market(
    deps: Dependencies, *, clock: Callable[[], datetime], factories: Mapping[str, AdapterFactory] | None = None
) -> MarketParts:
    """The market parts; `factories` replaces the configured feeds (tests drive their own)."""
    settings = deps.settings
    coordination = deps.coordination.for_service("market")
    store = MarketStore(deps.databases)
    hub = TickHub(coordination.pubsub, deps.lifecycle.draining)
    factories = dict(factories) if factories is not None else build_factories(settings, store)
    runners = [
        FeedRunner(
            factory(),
            store=store,
            hub=hub,
            cache=coordination.cache,
            locks=coordination.locks,
            policy=RunnerPolicy(
                staleness_seconds=settings.feed_staleness_seconds,
                initial_daily_days=settings.sim_history_daily_days if feed_id == "sim" else 0,
                initial_minute_days=settings.sim_history_minute_days if feed_id == "sim" else 0,
            ),
            clock=clock,
        )
        for feed_id, factory in factories.items()
    ]
    history = HistorySources(factories)
    service = MarketService(
        store=store,
        cache=coordination.cache,
        locks=coordination.locks,
        history=history,
        streams=TickStreams(
            hub, capacity=settings.stream_queue_capacity, max_per_account=settings.max_streams_per_account
        ),
        staleness=timedelta(seconds=settings.feed_staleness_seconds),
        clock=clock,
    )
    return MarketParts(service=service, hub=hub, runners=runners, history=history)
