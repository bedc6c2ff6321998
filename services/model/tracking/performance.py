"""Live tracking: how a version's recorded predictions did once their horizon passed, against its own evaluation
error, and whether it drifts.

A prediction made at base bar b with horizon H resolves at horizon h <= H when the bar h bars after b has closed;
its error is |mean[h-1] - close[b+h]|. Hits count predictions whose direction at h (from the path's point h against
the base price) was right, FLAT ones and unchanged prices excluded. Coverage counts actual closes inside the point
h interval. Drift: the rolling MAE over a full window above `threshold` times the evaluation MAE at the same
horizon."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from services.model.serving.predictions import Prediction

HISTORY_POINTS = 500
_DOWN, _UP = 2, 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """One resolved prediction at the scored horizon."""

    base_time: datetime
    predicted: float
    actual: float
    lower: float
    upper: float
    hit: bool | None  # None: FLAT or an unchanged price, left out of the hit rate


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Rolling figures over the latest resolved predictions."""

    count: int
    start: datetime | None
    end: datetime | None
    mae: float | None
    mape: float | None
    hit_rate: float | None
    coverage: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Performance:
    """What GetModelPerformance reports (drift state comes from the registry)."""

    horizon: int
    window: Window
    resolved_count: int
    pending_count: int
    evaluation_mae: float | None
    drift_factor: float | None
    threshold: float
    drifting: bool
    history: tuple[tuple[datetime, Window], ...] = field(default=())


def resolve(
    predictions: Sequence[Prediction], bar_times: Sequence[datetime], closes: Sequence[float], horizon: int
) -> tuple[list[Resolved], int]:
    """The predictions resolved at `horizon`, oldest base first, and how many are still pending."""
    resolved: list[Resolved] = []
    pending = 0
    for prediction in sorted(predictions, key=lambda item: item.base_time):
        index = bisect_left(bar_times, prediction.base_time)
        if index >= len(bar_times) or bar_times[index] != prediction.base_time or index + horizon >= len(closes):
            pending += 1
            continue
        actual = float(closes[index + horizon])
        predicted = prediction.mean[horizon - 1]
        move = np.sign(predicted - prediction.base_price) if prediction.direction in (_UP, _DOWN) else 0.0
        realised = np.sign(actual - prediction.base_price)
        resolved.append(
            Resolved(
                base_time=prediction.base_time,
                predicted=predicted,
                actual=actual,
                lower=prediction.lower[horizon - 1],
                upper=prediction.upper[horizon - 1],
                hit=None if move == 0.0 or realised == 0.0 else bool(move == realised),
            )
        )
    return resolved, pending


def window(resolved: Sequence[Resolved]) -> Window:
    """Figures over `resolved` (already cut to the window)."""
    if not resolved:
        return Window(count=0, start=None, end=None, mae=None, mape=None, hit_rate=None, coverage=None)
    errors = np.array([abs(item.predicted - item.actual) for item in resolved])
    actuals = np.array([item.actual for item in resolved])
    hits = [item.hit for item in resolved if item.hit is not None]
    covered = [item.lower <= item.actual <= item.upper for item in resolved]
    return Window(
        count=len(resolved),
        start=resolved[0].base_time,
        end=resolved[-1].base_time,
        mae=float(errors.mean()),
        mape=float(np.mean(errors / actuals)),
        hit_rate=sum(hits) / len(hits) if hits else None,
        coverage=sum(covered) / len(covered),
    )


def performance(
    predictions: Sequence[Prediction],
    bar_times: Sequence[datetime],
    closes: Sequence[float],
    *,
    horizon: int,
    window_size: int,
    evaluation_mae: float | None,
    threshold: float,
    include_history: bool,
) -> Performance:
    """The rolling figures at `horizon` over the latest `window_size` resolved predictions, and the drift verdict
    (only over a full window)."""
    resolved, pending = resolve(predictions, bar_times, closes, horizon)
    latest = window(resolved[-window_size:])
    factor = latest.mae / evaluation_mae if latest.mae is not None and evaluation_mae else None
    drifting = factor is not None and latest.count >= window_size and factor > threshold
    history: list[tuple[datetime, Window]] = []
    if include_history and resolved:
        step = max(1, math.ceil(len(resolved) / HISTORY_POINTS))
        for end in range(len(resolved), 0, -step):
            history.append((resolved[end - 1].base_time, window(resolved[max(0, end - window_size) : end])))
        history.reverse()
    return Performance(
        horizon=horizon,
        window=latest,
        resolved_count=len(resolved),
        pending_count=pending,
        evaluation_mae=evaluation_mae,
        drift_factor=factor,
        threshold=threshold,
        drifting=drifting,
        history=tuple(history),
    )
