"""Live tracking arithmetic: resolution at a horizon, direction-aware hits, coverage, windows and drift."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm
from services.model.serving.predictions import Prediction, ServingArm
from services.model.tracking.performance import performance, resolve

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 1)
UP, DOWN, FLAT = 1, 2, 3


def _prediction(day: int, base: float, path: list[float], direction: int, width: float = 2.0) -> Prediction:
    return Prediction(
        prediction_id=f"prd_{day}",
        model_id="mdl_x",
        algorithm=Algorithm.KALMAN,
        serving_arm=ServingArm.PRODUCTION,
        symbol="X",
        timeframe=Timeframe.D1,
        horizon=len(path),
        base_time=T0 + DAY * day,
        base_price=base,
        interval_level=0.8,
        direction=direction,
        confidence=0.6,
        mean=tuple(path),
        lower=tuple(value - width for value in path),
        upper=tuple(value + width for value in path),
        create_time=T0 + DAY * day,
    )


TIMES = [T0 + DAY * day for day in range(6)]
CLOSES = [100.0, 101.0, 99.0, 99.0, 104.0, 103.0]


def test_resolution_is_direction_aware_and_waits_for_the_horizon() -> None:
    predictions = [
        _prediction(0, 100.0, [100.5, 101.0], UP),  # h1: actual 101 > 100: hit; h2: 99 < 100: miss
        _prediction(1, 101.0, [100.0, 99.5], DOWN),  # h1: 99 < 101: hit (a SELL before a fall wins)
        _prediction(2, 99.0, [99.0, 99.0], FLAT),  # FLAT: out of the hit rate
        _prediction(4, 104.0, [105.0, 106.0], UP),  # h1: 103 < 104: miss; h2: not closed yet
    ]
    at_one, pending_one = resolve(predictions, TIMES, CLOSES, 1)
    assert [item.hit for item in at_one] == [True, True, None, False]
    assert pending_one == 0
    at_two, pending_two = resolve(predictions, TIMES, CLOSES, 2)
    assert [item.hit for item in at_two] == [False, True, None]  # day 1 DOWN at h2: 99 below 101, a hit
    assert pending_two == 1


def test_windows_and_drift() -> None:
    calm = [_prediction(day, CLOSES[day], [CLOSES[day + 1] + 0.5], UP) for day in range(5)]
    report = performance(
        calm, TIMES, CLOSES, horizon=1, window_size=3, evaluation_mae=0.5, threshold=1.5, include_history=True
    )
    assert report.window.count == 3
    assert report.window.mae == pytest.approx(0.5)
    assert report.window.coverage == 1.0
    assert report.drift_factor == pytest.approx(1.0)
    assert not report.drifting
    assert len(report.history) == 5
    wild = [_prediction(day, CLOSES[day], [CLOSES[day + 1] + 3.0], UP) for day in range(5)]
    drifting = performance(
        wild, TIMES, CLOSES, horizon=1, window_size=3, evaluation_mae=0.5, threshold=1.5, include_history=False
    )
    assert drifting.drift_factor == pytest.approx(6.0)
    assert drifting.drifting
    assert drifting.window.coverage == 0.0
    short = performance(
        wild, TIMES, CLOSES, horizon=1, window_size=10, evaluation_mae=0.5, threshold=1.5, include_history=False
    )
    assert not short.drifting  # only over a full window
