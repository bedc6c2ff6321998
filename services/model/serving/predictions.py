"""Serving's domain types: a served prediction and the arm of the A/B split that served it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm


class ServingArm(IntEnum):
    """Numbers of bullant.model.v1.ServingArm."""

    PRODUCTION = 1
    CANDIDATE = 2
    PINNED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One served forecast, recorded to be scored when its horizon passes (direction: bullant.model.v1.Direction
    numbers)."""

    prediction_id: str
    model_id: str
    algorithm: Algorithm
    serving_arm: ServingArm
    symbol: str
    timeframe: Timeframe
    horizon: int
    base_time: datetime
    base_price: float
    interval_level: float
    direction: int
    confidence: float
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    create_time: datetime
    # The open time of each forecast bar on the instrument's calendar (not stored: served predictions carry them).
    point_times: tuple[datetime, ...] = ()
