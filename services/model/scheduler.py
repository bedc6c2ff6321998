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
from dataclasses import dataclass
from datetime import timedelta

from services.core.auth.service_identity import SERVICE_ACCOUNT_ID, ServiceIdentity
from services.core.clock import WallClock, utc_now
from services.core.coordination.base import Lease, Locks
from services.core.coordination.leader import LeaderElection
from services.core.errors import DomainError, FailedPrecondition
from services.core.market_data import MarketData
from services.core.settings import ModelSettings, SignalSettings
from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.registry.service import ModelRegistry
from services.model.registry.versions import ModelFilter, ModelStatus, ModelVersion
from services.model.tracking.service import DEFAULT_WINDOW, Tracker
from services.model.training.jobs import JobState, TrainingSpec, Trigger
from services.model.training.service import TrainingOutcome, TrainingService

log = logging.getLogger("bullant.model.scheduler")
# The Kalman local-linear-trend filter: fast, and it finds the structure a random walk with noise has.
DEMO_ALGORITHM = Algorithm.KALMAN
DEMO_SEED = 7
# The held-out tail the demo models are scored on: the latest fifth of the stored minutes (~860 of three days).
DEMO_HOLDOUT = 0.2
DEMO_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerPolicy:
    """How often the scheduler works, how old an auto-retrain version gets, and the demo models it seeds."""

    interval_seconds: float
    retrain_every: timedelta
    demo_symbols: tuple[str, ...] = ()
    demo_timeframes: tuple[Timeframe, ...] = (Timeframe.M1,)
    demo_horizon: int = 1

    @classmethod
    def from_settings(cls, model: ModelSettings, signal: SignalSettings) -> SchedulerPolicy:
        """The model settings' round, retraining age and demo symbols; the demo models forecast what the live
        signal engine fuses: its timeframes, at its horizon (the signal settings)."""
        return cls(
            interval_seconds=model.model_scheduler_interval_seconds,
            retrain_every=timedelta(hours=model.model_retrain_every_hours),
            demo_symbols=tuple(model.model_demo_symbols),
            demo_timeframes=signal.timeframes(),
            demo_horizon=signal.signal_fusion_horizon_bars,
        )


class ModelScheduler:
    """A Component: campaigns for the scheduler lease and runs the periodic work while holding it."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        tracker: Tracker,
        training: TrainingService,
        market: MarketData,
        identity: ServiceIdentity,
        locks: Locks,
        policy: SchedulerPolicy,
        clock: WallClock = utc_now,
    ) -> None:
        self._registry = registry
        self._tracker = tracker
        self._training = training
        self._market = market
        self._identity = identity
        self._interval = policy.interval_seconds
        self._retrain_every = policy.retrain_every
        self._demo_pending = [
            (symbol, timeframe) for symbol in policy.demo_symbols for timeframe in policy.demo_timeframes
        ]
        self._demo_horizon = policy.demo_horizon
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
        production = await self._registry.find(ModelFilter(status=ModelStatus.PRODUCTION), after=None, limit=1000)
        for version in production:
            await self._tracker.report(version, horizon=None, window_size=DEFAULT_WINDOW, include_history=False)
            if version.auto_retrain and await self._retrain_due(version):
                job = await self._training.retrain(version, Trigger.SCHEDULED)
                log.info("scheduled retraining of %s: job %s", version.model_id, job.job_id)

    async def _retrain_due(self, version: ModelVersion) -> bool:
        children = await self._registry.find(
            ModelFilter(symbol=version.symbol, timeframe=version.timeframe), after=None, limit=1000
        )
        latest = max(
            [version.create_time]
            + [child.create_time for child in children if child.parent_model_id == version.model_id]
        )
        busy = any(
            job.spec.parent_model_id == version.model_id and not job.state.finished
            for job in await self._training.active()
        )
        return not busy and self._clock() - latest >= self._retrain_every

    async def _seed_demo(self) -> None:
        """Train a model for each demo series that has none, once its history is stored; promote it when it passes
        the gate."""
        for series in list(self._demo_pending):
            symbol, timeframe = series
            existing = await self._registry.find(ModelFilter(symbol=symbol, timeframe=timeframe), after=None, limit=1)
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
                holdout_fraction=DEMO_HOLDOUT,
                horizon=self._demo_horizon,
                seed=DEMO_SEED,
                auto_retrain=False,
            )
            try:
                job = await self._training.submit(spec, trigger=Trigger.SCHEDULED, account_id=SERVICE_ACCOUNT_ID)
            except FailedPrecondition as error:
                if error.reason != "INSUFFICIENT_DATA":
                    raise
                if series not in self._demo_waiting:  # said once; tried again each round as bars accumulate
                    self._demo_waiting.add(series)
                    log.info("demo model of %s %s waits for more bars: %s", symbol, timeframe.label, error.message)
                continue
            model = None
            async for event in self._training.watch(job.job_id):
                if isinstance(event, TrainingOutcome):
                    job, model = event.job, event.model
            self._demo_pending.remove(series)
            if job.state is not JobState.SUCCEEDED or model is None:
                log.warning(
                    "demo model of %s %s: training job %s ended %s (%s)",
                    symbol,
                    timeframe.label,
                    job.job_id,
                    job.state.name,
                    job.failure_message,
                )
                continue
            await self._promote_if_earned(model)

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
