"""Training data for a job, live tracking with drift flags, and the retraining that drift and the schedule start."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np

from services.core.db.databases import utc_now
from services.core.errors import FailedPrecondition
from services.core.market_data import MarketData
from services.core.parameters import Params
from services.model.forecasting.base import Algorithm, AlgorithmDef
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.records import ModelVersion, TrainingJob, TrainingSpec, Trigger
from services.model.store import ModelStore, PredictionStore
from services.model.tracking import Performance, performance
from services.model.training import TrainingData, TrainingRunner

# Most bars one training job reads (the latest of the range).
MAX_TRAINING_BARS = 20_000
# Held-out bars needed beyond the horizon so the evaluation scores enough forecasts.
MIN_HELD_OUT_FORECASTS = 30
# Most recorded predictions read to score a version.
MAX_TRACKED_PREDICTIONS = 20_000


def minimum_range_bars(definition: AlgorithmDef, parameters: Params, holdout: float, horizon: int) -> int:
    """Fewest bars a training range needs: enough before the held-out tail to fit, and a tail long enough to
    score MIN_HELD_OUT_FORECASTS forecasts at the horizon."""
    fit = definition.min_training_bars(parameters)
    return max(math.ceil(fit / (1.0 - holdout)), math.ceil((horizon + MIN_HELD_OUT_FORECASTS) / holdout))


async def training_data(market: MarketData, spec: TrainingSpec) -> TrainingData:
    """The latest MAX_TRAINING_BARS closes of the range; INSUFFICIENT_DATA when too few for the algorithm."""
    series = await market.bars(
        spec.symbol, spec.timeframe, start=spec.start, end=spec.end, limit=MAX_TRAINING_BARS, descending=True
    )
    needed = minimum_range_bars(ALGORITHMS[spec.algorithm], spec.parameters, spec.holdout_fraction, spec.horizon)
    if len(series) < needed:
        raise FailedPrecondition(
            f"{spec.algorithm.name.lower()} needs at least {needed} {spec.timeframe.label} bars of {spec.symbol} "
            f"with holdout {spec.holdout_fraction:g} and horizon {spec.horizon}; the range has {len(series)}",
            reason="INSUFFICIENT_DATA",
            metadata={"needed": needed, "found": len(series)},
        )
    return TrainingData(times=series.times, closes=np.ascontiguousarray(series.close))


class Tracker:
    """Scores a version's recorded predictions, keeps its drift episode, and retrains it when drift starts."""

    def __init__(
        self,
        store: ModelStore,
        predictions: PredictionStore,
        market: MarketData,
        runner: TrainingRunner,
        *,
        drift_threshold: float = 1.5,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._predictions = predictions
        self._market = market
        self._runner = runner
        self.drift_threshold = drift_threshold
        self._clock = clock

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
                job = await self.retrain(version, Trigger.DRIFT)
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

    async def retrain(self, version: ModelVersion, trigger: Trigger) -> TrainingJob:
        """A new training job of the version's algorithm and parameters on the latest bars (the same length of
        history), with the version as its parent."""
        span = version.training_end - version.training_start
        spec = TrainingSpec(
            algorithm=Algorithm(version.algorithm),
            parameters=dict(version.parameters),
            symbol=version.symbol,
            timeframe=version.timeframe,
            start=self._clock() - span - timedelta(days=7),
            end=None,
            holdout_fraction=_holdout(version),
            horizon=int(version.metrics.get("horizon_bars") or 1),
            seed=version.seed,
            auto_retrain=version.auto_retrain,
            parent_model_id=version.model_id,
        )
        data = await training_data(self._market, spec)
        spec = replace(spec, start=data.times[0], end=data.times[-1] + spec.timeframe.delta)
        return await self._runner.submit(spec, data, trigger=trigger, account_id=0)


def _holdout(version: ModelVersion) -> float:
    """The holdout fraction the version was evaluated with (its held-out window over its whole range)."""
    start = version.metrics.get("evaluation_start_time")
    if not start:
        return 0.2
    held = version.training_end - datetime.fromisoformat(str(start))
    whole = version.training_end - version.training_start
    return min(0.5, max(0.1, held / whole)) if whole.total_seconds() > 0 else 0.2
