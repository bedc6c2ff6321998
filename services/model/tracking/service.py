"""Live tracking's use cases (GetModelPerformance, and the scheduler's drift checks): a version's recorded
predictions scored against the bars that followed (the figures are in performance.py), its drift episode opened
or closed as they say, and a retraining scheduled when drift starts."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np

from services.core.clock import WallClock, utc_now
from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.core.market_data import MarketData
from services.core.timeframes import Timeframe
from services.model.registry.service import ModelRegistry
from services.model.registry.store import VersionStore
from services.model.registry.versions import ModelFilter, ModelStatus, ModelVersion
from services.model.serving.store import PredictionStore
from services.model.tracking.performance import Performance, performance
from services.model.training.jobs import Trigger
from services.model.training.service import TrainingService

# Most recorded predictions read to score a version.
MAX_TRACKED_PREDICTIONS = 20_000
# Resolved predictions in the rolling window when the request names no size.
DEFAULT_WINDOW = 100


class Tracker:
    """Scores a version's recorded predictions, keeps its drift episode, and retrains it when drift starts."""

    def __init__(
        self,
        versions: VersionStore,
        predictions: PredictionStore,
        market: MarketData,
        registry: ModelRegistry,
        training: TrainingService,
        *,
        drift_threshold: float = 1.5,
        clock: WallClock = utc_now,
    ) -> None:
        self._store = versions
        self._predictions = predictions
        self._market = market
        self._registry = registry
        self._training = training
        self.drift_threshold = drift_threshold
        self._clock = clock

    async def model_performance(
        self,
        *,
        model_id: str,
        symbol: str,
        timeframe: Timeframe | None,
        horizon: int | None,
        window_size: int | None,
        include_history: bool,
    ) -> tuple[Performance, ModelVersion]:
        """GetModelPerformance: the live figures of the version `model_id` names, else of the production version of
        `symbol` and `timeframe` (MODEL_NOT_TRAINED when there is none); MISSING_MODEL_SELECTOR when neither is
        given. `window_size` defaults to DEFAULT_WINDOW."""
        if model_id:
            version = await self._registry.get(model_id)
        elif symbol and timeframe is not None:
            production = await self._registry.find(
                ModelFilter(symbol=symbol, timeframe=timeframe, status=ModelStatus.PRODUCTION), after=None, limit=1
            )
            if not production:
                raise FailedPrecondition(
                    f"no production model for {symbol} {timeframe.label}; train one with TrainModel and promote it",
                    reason="MODEL_NOT_TRAINED",
                )
            version = production[0]
        else:
            raise InvalidArgument(
                FieldViolation("model_id", "name a model_id, or a symbol and timeframe"),
                reason="MISSING_MODEL_SELECTOR",
            )
        return await self.report(
            version, horizon=horizon, window_size=window_size or DEFAULT_WINDOW, include_history=include_history
        )

    async def report(
        self, version: ModelVersion, *, horizon: int | None, window_size: int, include_history: bool
    ) -> tuple[Performance, ModelVersion]:
        """The version's live figures at `horizon` (default: its evaluation horizon); at the evaluation horizon
        the drift episode is opened (scheduling a retrain) or closed as the figures say. Returns the version as
        it is afterwards."""
        evaluation_horizon = int(version.metrics.get("horizon_bars") or 1)
        scored = horizon or evaluation_horizon
        recorded = await self._predictions.for_model(
            version.model_id, min_horizon=scored, limit=MAX_TRACKED_PREDICTIONS
        )
        times: list[datetime] = []
        closes = np.empty(0)
        if recorded:
            oldest = min(item.base_time for item in recorded)
            series = await self._market.bars(
                version.symbol, version.timeframe, start=oldest, end=None, limit=MAX_TRACKED_PREDICTIONS + 600
            )
            times, closes = series.times, series.close
        evaluation_mae = version.metrics.get("mae") if scored == evaluation_horizon else None
        report = performance(
            recorded,
            times,
            closes.tolist(),
            horizon=scored,
            window_size=window_size,
            evaluation_mae=float(evaluation_mae) if evaluation_mae else None,
            threshold=self.drift_threshold,
            include_history=include_history,
        )
        if scored == evaluation_horizon:
            version = await self._follow_drift(version, report)
        return report, version

    async def _follow_drift(self, version: ModelVersion, report: Performance) -> ModelVersion:
        now = self._clock()
        if report.drifting and version.drift_detect_time is None:
            if await self._store.set_drift(version.model_id, detected=now):
                version = replace(version, drift_detect_time=now)
                job = await self._training.retrain(version, Trigger.DRIFT)
                await self._store.set_drift(version.model_id, detected=now, retrain_job_id=job.job_id)
                version = replace(version, retrain_job_id=job.job_id)
            return version
        recovered = not report.drifting and report.drift_factor is not None
        if (
            recovered
            and version.drift_detect_time is not None
            and await self._store.set_drift(version.model_id, detected=None)
        ):
            version = replace(version, drift_detect_time=None, retrain_job_id="")
        return version
