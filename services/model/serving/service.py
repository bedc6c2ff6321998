"""Predict's use case: the production version of a symbol and timeframe serves, or a candidate when the A/B split
(split.py) routes the request there (deterministic per request key), or a pinned version; models, the series'
versions and the latest bars are cached in-process so a warm prediction costs a forecast and one insert.

Each point is dated by the open time of its future bar on the instrument's trading calendar
(services.core.calendars): the next sessions for daily bars, the next open minutes for intraday ones.

Caches: loaded models by version id (LRU), each series' versions for `registry_ttl` (a promotion reaches every
replica within that time), the latest bars and the instrument's calendar for `bar_ttl` (a new bar close is used
within that time), and the predictions this replica recorded (a repeat of a recorded version, base bar, horizon
and level is answered from memory; the database's unique key makes repeats across replicas return the first
recording too)."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from services.core.calendars import CalendarRangeError, TradingCalendar
from services.core.clock import WallClock, utc_now
from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.core.market_data import MarketData
from services.core.timeframes import Timeframe
from services.model.forecasting.base import Forecaster
from services.model.forecasting.catalogue import load
from services.model.forecasting.confidence import confidence, direction
from services.model.registry.artifacts import read_artifact
from services.model.registry.rules import model_not_found
from services.model.registry.store import VersionStore
from services.model.registry.versions import ModelFilter, ModelStatus, ModelVersion
from services.model.serving.predictions import Prediction, ServingArm
from services.model.serving.split import choose_arm, split_point
from services.model.serving.store import PredictionStore

Array = np.ndarray
# Predictions remembered per replica, by version, base bar, horizon and level.
RECORDED_CACHE_SIZE = 10_000
# The prediction interval's level when the request names none.
DEFAULT_LEVEL = 0.8


class Predictor:
    """Serves and records predictions."""

    def __init__(
        self,
        versions: VersionStore,
        predictions: PredictionStore,
        market: MarketData,
        model_dir: Path,
        *,
        clock: WallClock = utc_now,
        history_bars: int = 1000,
        model_cache_size: int = 64,
        registry_ttl: float = 2.0,
        bar_ttl: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self._store = versions
        self._predictions = predictions
        self._market = market
        self._model_dir = model_dir
        self._clock = clock
        self._history_bars = history_bars
        self._models: OrderedDict[str, Forecaster] = OrderedDict()
        self._model_cache_size = model_cache_size
        self._series: dict[tuple[str, Timeframe], tuple[float, list[ModelVersion]]] = {}
        self._bars: dict[tuple[str, Timeframe], tuple[float, list[datetime], Array]] = {}
        self._calendars: dict[str, tuple[float, TradingCalendar | None]] = {}
        self._registry_ttl = registry_ttl
        self._bar_ttl = bar_ttl
        self._rng = rng or random.Random(secrets.randbits(64))  # noqa: S311 - traffic splitting, not secrets
        self._loading: dict[str, asyncio.Future[Forecaster]] = {}
        self._recorded: OrderedDict[tuple[str, datetime, int, float], Prediction] = OrderedDict()

    async def predict(
        self,
        *,
        symbol: str,
        timeframe: Timeframe,
        horizon: int,
        level: float | None,
        request_key: str,
        model_id: str,
        require_passed_gate: bool = False,
    ) -> Prediction:
        """Forecast the next `horizon` closes at interval `level` (DEFAULT_LEVEL when None) and record the
        prediction (once per version, base bar, horizon and level: a repeat returns the recorded one).
        `require_passed_gate`: only the production version, and only when it passed its promotion gate
        (MODEL_GATE_NOT_PASSED otherwise); it cannot be combined with a pinned `model_id`."""
        if model_id and require_passed_gate:
            raise InvalidArgument(
                FieldViolation("require_passed_gate", "cannot be combined with model_id"),
                reason="MODEL_SELECTOR_CONFLICT",
            )
        level = DEFAULT_LEVEL if level is None else level
        version, arm = await self._serving_version(symbol, timeframe, request_key, model_id)
        if require_passed_gate:
            version, arm = self._gated(version, arm, await self._series_versions(symbol, timeframe))
        times, closes = await self._latest_bars(symbol, timeframe)
        point_times = await self._point_times(symbol, timeframe, times[-1], horizon)
        key = (version.model_id, times[-1], horizon, level)
        recorded = self._recorded.get(key)
        if recorded is not None:  # recorded by this replica already: the same answer without a database round trip
            self._recorded.move_to_end(key)
            return replace(recorded, point_times=point_times)
        forecaster = await self._forecaster(version)
        forecast = forecaster.forecast(closes, horizon, level)
        base = float(closes[-1])
        metrics = version.metrics
        accuracy = metrics.get("directional_accuracy") if metrics.get("forecast_count") else None
        prediction = Prediction(
            prediction_id="prd_" + secrets.token_hex(12),
            model_id=version.model_id,
            algorithm=version.algorithm,
            serving_arm=arm,
            symbol=symbol,
            timeframe=timeframe,
            horizon=horizon,
            base_time=times[-1],
            base_price=base,
            interval_level=level,
            direction=int(direction(forecast, base)),
            confidence=confidence(forecast, base, accuracy, int(metrics.get("forecast_count") or 0)),
            mean=tuple(float(value) for value in forecast.mean),
            lower=tuple(float(value) for value in forecast.lower),
            upper=tuple(float(value) for value in forecast.upper),
            create_time=self._clock(),
        )
        recorded = replace(await self._predictions.record(prediction), point_times=point_times)
        self._recorded[key] = recorded
        while len(self._recorded) > RECORDED_CACHE_SIZE:
            self._recorded.popitem(last=False)
        return recorded

    async def _serving_version(
        self, symbol: str, timeframe: Timeframe, request_key: str, model_id: str
    ) -> tuple[ModelVersion, ServingArm]:
        if model_id:
            version = await self._store.version(model_id)
            if version is None:
                raise model_not_found(model_id)
            if version.status is ModelStatus.ARCHIVED:
                raise FailedPrecondition(
                    f"{model_id} is archived; promote it again or pin another version", reason="MODEL_ARCHIVED"
                )
            if (version.symbol, version.timeframe) != (symbol, timeframe):
                raise FailedPrecondition(
                    f"{model_id} forecasts {version.symbol} {version.timeframe.label}, not {symbol} {timeframe.label}",
                    reason="MODEL_MISMATCH",
                )
            return version, ServingArm.PINNED
        series = await self._series_versions(symbol, timeframe)
        production = next((item for item in series if item.status is ModelStatus.PRODUCTION), None)
        if production is None:
            await self._market.instrument(symbol)  # SYMBOL_NOT_FOUND first: it is the more basic problem
            raise FailedPrecondition(
                f"no production model for {symbol} {timeframe.label}: train one with TrainModel (e.g. "
                f"ALGORITHM_KALMAN on {symbol} {timeframe.label}) and promote it with PromoteModel",
                reason="MODEL_NOT_TRAINED",
                metadata={"symbol": symbol, "timeframe": timeframe.proto_name},
            )
        candidates = [item for item in series if item.status is ModelStatus.CANDIDATE and item.traffic_fraction > 0]
        point = split_point(request_key, symbol, timeframe) if request_key else self._rng.random()
        return choose_arm(production, candidates, point)

    @staticmethod
    def _gated(version: ModelVersion, arm: ServingArm, series: list[ModelVersion]) -> tuple[ModelVersion, ServingArm]:
        """The production version in place of an A/B candidate, refused unless it passed its gate."""
        if arm is not ServingArm.PRODUCTION:
            version = next(item for item in series if item.status is ModelStatus.PRODUCTION)
        if not version.gate.passed:
            raise FailedPrecondition(
                f"the production model {version.model_id} of {version.symbol} {version.timeframe.label} was promoted "
                f"over its promotion gate ({version.gate.detail}): it does not beat naive",
                reason="MODEL_GATE_NOT_PASSED",
                metadata={"model_id": version.model_id},
            )
        return version, ServingArm.PRODUCTION

    async def _point_times(
        self, symbol: str, timeframe: Timeframe, base: datetime, horizon: int
    ) -> tuple[datetime, ...]:
        """The open times of the `horizon` bars after the base bar on the instrument's calendar (nights, weekends
        and holidays skipped); CALENDAR_RANGE_EXCEEDED past the calendar's span."""
        key = symbol
        cached = self._calendars.get(key)
        now = time.monotonic()
        if cached is None or now - cached[0] >= self._bar_ttl:
            cached = (now, (await self._market.instrument(symbol)).calendar)
            self._calendars[key] = cached
        calendar = cached[1]
        if calendar is None:  # a market service that names no calendar: one span per bar
            return tuple(base + timeframe.delta * step for step in range(1, horizon + 1))
        try:
            return tuple(calendar.bar_open_times(base, timeframe, horizon))
        except CalendarRangeError as error:
            raise FailedPrecondition(
                f"cannot date {horizon} {timeframe.label} bars after {base:%Y-%m-%d %H:%M}: {error}",
                reason="CALENDAR_RANGE_EXCEEDED",
            ) from None

    async def _series_versions(self, symbol: str, timeframe: Timeframe) -> list[ModelVersion]:
        key = (symbol, timeframe)
        cached = self._series.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._registry_ttl:
            return cached[1]
        versions = await self._store.versions(ModelFilter(symbol=symbol, timeframe=timeframe), after=None, limit=10_000)
        live = [item for item in versions if item.status is not ModelStatus.ARCHIVED]
        self._series[key] = (now, live)
        return live

    async def _forecaster(self, version: ModelVersion) -> Forecaster:
        cached = self._models.get(version.model_id)
        if cached is not None:
            self._models.move_to_end(version.model_id)
            return cached
        pending = self._loading.get(version.model_id)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(self._load, version))
            self._loading[version.model_id] = pending
        try:
            forecaster = await asyncio.shield(pending)
        finally:
            self._loading.pop(version.model_id, None)
        self._models[version.model_id] = forecaster
        while len(self._models) > self._model_cache_size:
            self._models.popitem(last=False)
        return forecaster

    def _load(self, version: ModelVersion) -> Forecaster:
        return load(read_artifact(self._model_dir, version))

    async def _latest_bars(self, symbol: str, timeframe: Timeframe) -> tuple[list[datetime], Array]:
        key = (symbol, timeframe)
        cached = self._bars.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._bar_ttl:
            return cached[1], cached[2]
        series = await self._market.bars(
            symbol, timeframe, start=None, end=None, limit=self._history_bars, descending=True
        )
        if not len(series):
            raise FailedPrecondition(f"no stored {symbol} {timeframe.label} bars to forecast from", reason="NO_BARS")
        self._bars[key] = (now, series.times, series.close)
        return series.times, series.close
