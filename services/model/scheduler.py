"""The model service's leader job: on one replica at a time, every `interval`, it checks each production version
for drift (scheduling a retrain when a drift episode starts), retrains the versions marked auto-retrain once their
latest training is `retrain_every` old, and seeds the demo symbols' models (`make run`) until they exist. It calls
the market service as the service itself (services.core.auth.service_identity).

Demo models are trained for the live signal engine's timeframes through the normal path (a training job, the
walk-forward evaluation and the promotion gate) once the market has stored the symbol's history (its feed has
started), and promoted only when they pass the gate: where nothing beats naive the version stays a candidate and
the engine's signals stay technical-only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from services.core.auth.service_identity import SERVICE_ACCOUNT_ID, ServiceIdentity
from services.core.coordination.base import Lease, Locks
from services.core.coordination.leader import LeaderElection
from services.core.db.databases import utc_now
from services.core.errors import DomainError, FailedPrecondition
from services.core.market_data import MarketData
from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.records import JobState, ModelStatus, ModelVersion, TrainingSpec, Trigger
from services.model.retraining import Tracker, training_data
from services.model.service import ModelRegistry
from services.model.store import ModelFilter, ModelStore
from services.model.training import TrainingRunner

log = logging.getLogger("bullant.model.scheduler")
# The Kalman local-linear-trend filter: fast, and it finds the structure a random walk with noise has.
DEMO_ALGORITHM = Algorithm.KALMAN
DEMO_SEED = 7
DEMO_RETRY_SECONDS = 5.0


class ModelScheduler:
    """A Component: campaigns for the scheduler lease and runs the periodic work while holding it."""

    def __init__(
        self,
        *,
        store: ModelStore,
        registry: ModelRegistry,
        tracker: Tracker,
        runner: TrainingRunner,
        market: MarketData,
        identity: ServiceIdentity,
        locks: Locks,
        interval: float,
        retrain_every: timedelta,
        demo_symbols: Sequence[str] = (),
        demo_timeframes: Sequence[Timeframe] = (Timeframe.M1,),
        demo_horizon: int = 1,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._registry = registry
        self._tracker = tracker
        self._runner = runner
        self._market = market
        self._identity = identity
        self._interval = interval
        self._retrain_every = retrain_every
        self._demo_pending = [(symbol, timeframe) for symbol in demo_symbols for timeframe in demo_timeframes]
        self._demo_horizon = demo_horizon
        self._demo_waiting: set[tuple[str, Timeframe]] = set()
        self._clock = clock
        self._election = LeaderElection(locks, "model-scheduler", self._lead, ttl_seconds=15.0)

    async def start(self) -> None:
        await self._election.start()

    async def stop(self) -> None:
        await self._election.stop()

    async def _lead(self, lease: Lease) -> None:
        while True:
            try:
                with self._identity.acting():
                    await self.tick()
            except DomainError as error:
                log.warning("model scheduler: %s", error.message)
            except Exception:
                log.exception("model scheduler tick failed")
            # Demo models wait for the market's first history: retry them sooner than the regular round.
            await asyncio.sleep(min(self._interval, DEMO_RETRY_SECONDS) if self._demo_pending else self._interval)

    async def tick(self) -> None:
        """One round: demo models, then drift checks and scheduled retraining of production versions."""
        await self._seed_demo()
        production = await self._store.versions(ModelFilter(status=ModelStatus.PRODUCTION), after=None, limit=1000)
        for version in production:
            await self._tracker.report(version, horizon=None, window_size=100, include_history=False)
            if version.auto_retrain and await self._retrain_due(version):
                job = await self._tracker.retrain(version, Trigger.SCHEDULED)
                log.info("scheduled retraining of %s: job %s", version.model_id, job.job_id)

    async def _retrain_due(self, version: ModelVersion) -> bool:
        children = await self._store.versions(
            ModelFilter(symbol=version.symbol, timeframe=version.timeframe), after=None, limit=1000
        )
        latest = max(
            [version.create_time]
            + [child.create_time for child in children if child.parent_model_id == version.model_id]
        )
        busy = any(
            job.spec.parent_model_id == version.model_id and not job.state.finished
            for job in await self._store.active_jobs()
        )
        return not busy and self._clock() - latest >= self._retrain_every

    async def _seed_demo(self) -> None:
        """Train a model for each demo series that has none, once its history is stored; promote it when it passes
        the gate."""
        for series in list(self._demo_pending):
            symbol, timeframe = series
            existing = await self._store.versions(ModelFilter(symbol=symbol, timeframe=timeframe), after=None, limit=1)
            if existing:
                self._demo_pending.remove(series)
                continue
            if not await self._market.history_stored(symbol):
                continue  # the market is still storing the first history: ask again in a few seconds
            spec = TrainingSpec(
                algorithm=DEMO_ALGORITHM,
                parameters=ALGORITHMS[DEMO_ALGORITHM].resolve({}),
                symbol=symbol,
                timeframe=timeframe,
                start=None,
                end=None,
                holdout_fraction=0.2,
                horizon=self._demo_horizon,
                seed=DEMO_SEED,
                auto_retrain=False,
            )
            try:
                data = await training_data(self._market, spec)
            except FailedPrecondition as error:
                if error.reason != "INSUFFICIENT_DATA":
                    raise
                if series not in self._demo_waiting:  # said once; tried again each round as bars accumulate
                    self._demo_waiting.add(series)
                    log.info("demo model of %s %s waits for more bars: %s", symbol, timeframe.label, error.message)
                continue
            spec = replace(spec, start=data.times[0], end=data.times[-1] + timeframe.delta)
            job = await self._runner.submit(spec, data, trigger=Trigger.SCHEDULED, account_id=SERVICE_ACCOUNT_ID)
            async for update in self._runner.watch(job.job_id):
                if update is not None and update.state.finished:
                    job = update
            self._demo_pending.remove(series)
            if job.state is not JobState.SUCCEEDED:
                log.warning(
                    "demo model of %s %s: training job %s ended %s (%s)",
                    symbol,
                    timeframe.label,
                    job.job_id,
                    job.state.name,
                    job.failure_message,
                )
                continue
            await self._promote_if_earned(await self._registry.get(job.model_id))

    async def _promote_if_earned(self, version: ModelVersion) -> None:
        """Promote a demo version that passed the gate (never over it); say which way it went."""
        series = f"{version.symbol} {version.timeframe.label}"
        if not version.gate.passed:
            log.info(
                "demo model %s of %s stays a candidate: %s; signals on %s stay technical-only",
                version.model_id,
                series,
                version.gate.detail,
                series,
            )
            return
        await self._registry.promote(
            version.model_id, account_id=SERVICE_ACCOUNT_ID, override_gate=False, override_reason=""
        )
        log.info("demo model %s serves %s: %s", version.model_id, series, version.gate.detail)
