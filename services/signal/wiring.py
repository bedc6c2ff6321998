"""The signal service's wiring: its stores, runner, live engine, facades and servicer, built once from the shared
platform dependencies. services/bootstrap.py is the only caller (and tests and benchmarks that host the service)."""

from __future__ import annotations

from bullant.signal.v1 import signal_pb2_grpc
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
from services.core.clock import WallClock, utc_now
from services.core.dependencies import Dependencies
from services.core.jobs import JobOptions
from services.core.market_data import MarketData
from services.core.replica import replica_identity
from services.core.server import PreEncodedResponses, ServiceRegistration
from services.core.settings import Settings
from services.signal.alerts.store import AlertStore
from services.signal.backtests.report_codec import ProtoReportCodec
from services.signal.backtests.runner import BacktestRunner
from services.signal.backtests.store import BacktestStore
from services.signal.indicators.catalogue import load_indicators
from services.signal.live.alerting import AlertDispatcher
from services.signal.live.engine import EnginePolicy, LiveEngine
from services.signal.live.firing_store import FiringStore
from services.signal.live.hub import SignalHub, WatchRegistry
from services.signal.live.market_ticks import MarketTicks
from services.signal.live.model_fusion import ModelFusion
from services.signal.live.outcome_store import OutcomeStore
from services.signal.live.performance import PerformanceJob
from services.signal.live.series_runner import ProcessedProbe, RunnerPolicy, SignalPipeline
from services.signal.live.signal_store import SignalStore
from services.signal.service.alerts import Alerts
from services.signal.service.backtests import Backtests
from services.signal.service.catalogue import Catalogue
from services.signal.service.live import LiveSignals, StreamPolicy
from services.signal.servicer import SERVICE, SignalServicer
from services.signal.strategies.catalogue import load_strategies


def build(
    deps: Dependencies,
    settings: Settings | None = None,
    *,
    on_processed: ProcessedProbe | None = None,
    clock: WallClock = utc_now,
) -> ServiceRegistration:
    """The signal service, ready to be hosted by a GrpcServer: `deps` are the shared platform dependencies,
    `settings` the process's settings (those of `deps` when not given; the engine's, the runners' and the streams'
    policies are built from its signal section), `on_processed` the engine's probe (benchmarks and tests) and `clock`
    the live engine's (the market's time)."""
    settings = settings or deps.settings
    signal = settings.signal
    load_indicators()
    load_strategies()
    runner = BacktestRunner(
        BacktestStore(deps.databases),
        ProtoReportCodec(),
        per_account=signal.backtests_per_account,
        jobs=JobOptions(slots=signal.backtest_workers, runner_id=replica_identity(settings.server)),
    )
    market = MarketData(deps.clients)
    alerts = AlertStore(deps.databases)
    signals = SignalStore(deps.databases)
    firings = FiringStore(deps.databases)
    outcomes = OutcomeStore(deps.databases)
    coordination = deps.coordination.for_service("signal")
    hub = SignalHub(coordination.pubsub, draining=deps.lifecycle.draining)
    watch = WatchRegistry(coordination.pubsub, refresh=signal.signal_watch_refresh_seconds)
    dispatcher = AlertDispatcher(firings=firings, rules=alerts, signals=signals, databases=deps.databases, hub=hub)
    identity = ServiceIdentity(deps.signing_keys, token_policy(settings.auth), "signal")
    pipeline = SignalPipeline(
        market=market,
        signals=signals,
        fusion=ModelFusion(
            deps.clients, deadline_seconds=signal.signal_fusion_deadline_seconds, enabled=signal.signal_fusion_enabled
        ),
        hub=hub,
        dispatcher=dispatcher,
        identity=identity,
        policy=RunnerPolicy.from_settings(signal),
        on_processed=on_processed,
        clock=clock,
    )
    engine = LiveEngine(
        draining=deps.lifecycle.draining,
        pipeline=pipeline,
        ticks=MarketTicks(deps.clients),
        rules=alerts,
        dispatcher=dispatcher,
        performance=PerformanceJob(outcomes, market),
        pubsub=coordination.pubsub,
        locks=coordination.locks,
        identity=identity,
        policy=EnginePolicy.from_settings(signal),
        clock=clock,
    )
    live = LiveSignals(
        market,
        signals=signals,
        outcomes=outcomes,
        firings=firings,
        alerts=alerts,
        hub=hub,
        watch=watch,
        draining=deps.lifecycle.draining,
        pages=deps.page_tokens,
        policy=StreamPolicy.from_settings(signal, max_streams=settings.server.max_streams_per_account),
    )
    servicer = SignalServicer(
        Catalogue(market, deps.page_tokens),
        Backtests(market, runner, deps.page_tokens),
        Alerts(market, alerts, watch, deps.page_tokens, limit=signal.max_alerts_per_account),
        live,
    )
    return ServiceRegistration(
        name="signal",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: signal_pb2_grpc.add_SignalServiceServicer_to_server(
            servicer,
            PreEncodedResponses(server, {"StreamSignals"}),  # type: ignore[arg-type]
        ),
        # The hub listens before the engine publishes; the engine stops before the hub.
        components=(runner, hub, watch, engine),
    )
