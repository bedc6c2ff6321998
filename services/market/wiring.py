"""Builds the market domain from the platform's dependencies: store, tick hub and streams, feed runners, history
sources, bar imports, the service and its servicer (the only place they are put together)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from bullant.market.v1 import market_pb2_grpc
from services.core.clock import WallClock, utc_now
from services.core.db.databases import Databases
from services.core.dependencies import Dependencies
from services.core.server import PreEncodedResponses, ServiceRegistration
from services.core.settings import Settings
from services.market.feeds.registry import AdapterFactory, HistorySources, build_factories
from services.market.feeds.runner import FeedRunner, RunnerPolicy
from services.market.imports.service import BarImports
from services.market.service import MarketService
from services.market.servicer import SERVICE, MarketServicer
from services.market.store import MarketStore
from services.market.streaming import TickHub, TickStreams


def build(
    deps: Dependencies,
    settings: Settings | None = None,
    *,
    clock: WallClock = utc_now,
    factories: Mapping[str, AdapterFactory] | None = None,
) -> ServiceRegistration:
    """The market service and the components its registration starts (tick hub first, then the history sources,
    then a runner per feed): `deps` are the shared platform dependencies, `settings` the process's settings (those of
    `deps` when not given; the feeds and their runners take its market section), `factories` replaces the configured
    feeds (tests drive their own)."""
    settings = settings or deps.settings
    market = settings.market
    coordination = deps.coordination.for_service("market")
    store = MarketStore(deps.databases)
    hub = TickHub(coordination.pubsub, deps.lifecycle.draining)
    factories = dict(factories) if factories is not None else build_factories(market, store)
    runners = [
        FeedRunner(
            factory(),
            store=store,
            hub=hub,
            cache=coordination.cache,
            locks=coordination.locks,
            policy=RunnerPolicy.for_feed(market, feed_id),
            clock=clock,
        )
        for feed_id, factory in factories.items()
    ]
    history = HistorySources(factories)
    imports = BarImports(store, clock=clock)
    service = MarketService(
        store=store,
        cache=coordination.cache,
        locks=coordination.locks,
        history=history,
        streams=TickStreams(
            hub, capacity=market.stream_queue_capacity, max_per_account=settings.server.max_streams_per_account
        ),
        staleness=timedelta(seconds=market.feed_staleness_seconds),
        pages=deps.page_tokens,
        clock=clock,
    )
    servicer = MarketServicer(service, imports, deps.lifecycle)
    return ServiceRegistration(
        name="market",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: market_pb2_grpc.add_MarketServiceServicer_to_server(
            servicer,
            PreEncodedResponses(server, {"StreamTicks"}),  # type: ignore[arg-type]
        ),
        components=(hub, history, *runners),
    )


def build_bar_imports(databases: Databases) -> BarImports:
    """The bar-import use cases alone, for `bullant import-bars` (the databases are all they need)."""
    return BarImports(MarketStore(databases), clock=utc_now)
