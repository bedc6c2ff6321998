"""The direction of a forecast at its horizon and the confidence in it.

Both read the forecast's last point as a normal distribution of the log price: mean μ = log(mean / base) (the
expected log move from the base close) and sd σ = (log upper - log lower) / (2z), z the normal quantile of the
interval's level (exact for the log-normal forecasters, an approximation for the ensemble's averaged bounds).

Direction: FLAT when the expected move is small next to the uncertainty, |mean - base| < FLAT_BAND × half the
interval width at the horizon (with FLAT_BAND = 0.1: a move below a tenth of the interval's half-width is noise);
otherwise UP or DOWN by the sign of the move. Naive forecasts are therefore always FLAT.

Confidence (in [0, 1], never a constant):
    p_model = Φ(|μ| / σ)                      the predictive probability that the move has the predicted sign
    a       = (k·accuracy + 0.5·k₀) / (k + k₀)  recent directional accuracy over k resolved predictions, shrunk toward
                                              a coin flip with k₀ = PRIOR_COUNT (20) pseudo-observations; 0.5 without
    confidence = (p_model + a) / 2
so a model that is sure of itself but unproven (or no better than a coin flip lately) gets at most 0.75, and one
with a long record of right calls and a clear predicted move approaches 1. p_model is in [0.5, 1); the confidence
can fall below 0.5 only when the recent accuracy is below 0.5.
"""

from __future__ import annotations

import math
from enum import IntEnum
from statistics import NormalDist

from services.model.forecasting.base import Forecast, z_value

FLAT_BAND = 0.1
PRIOR_COUNT = 20


class Direction(IntEnum):
    """Numbers of bullant.model.v1.Direction."""

    UP = 1
    DOWN = 2
    FLAT = 3


def direction(forecast: Forecast, base: float, *, flat_band: float = FLAT_BAND) -> Direction:
    """UP / DOWN by the sign of the expected move at the horizon, FLAT when it is within the flat band."""
    move = float(forecast.mean[-1]) - base
    half_width = (float(forecast.upper[-1]) - float(forecast.lower[-1])) / 2.0
    if abs(move) <= flat_band * half_width or move == 0.0:
        return Direction.FLAT
    return Direction.UP if move > 0.0 else Direction.DOWN


def model_probability(forecast: Forecast, base: float) -> float:
    """Φ(|μ|/σ): the predictive probability that the log move at the horizon has the predicted sign."""
    mu = math.log(float(forecast.mean[-1]) / base)
    sigma = (math.log(float(forecast.upper[-1])) - math.log(float(forecast.lower[-1]))) / (
        2.0 * z_value(forecast.level)
    )
    if not sigma > 0.0:
        return 0.5 if mu == 0.0 else 1.0
    return NormalDist().cdf(abs(mu) / sigma)


def shrunk_accuracy(recent_accuracy: float | None, recent_count: int, *, prior_count: int = PRIOR_COUNT) -> float:
    """The recent directional accuracy shrunk toward 0.5 with `prior_count` pseudo-observations."""
    if recent_accuracy is None or recent_count <= 0:
        return 0.5
    return (recent_accuracy * recent_count + 0.5 * prior_count) / (recent_count + prior_count)


def confidence(
    forecast: Forecast,
    base: float,
    recent_accuracy: float | None,
    recent_count: int,
    *,
    prior_count: int = PRIOR_COUNT,
) -> float:
    """The confidence in the forecast's direction (see the module docstring), in [0, 1]."""
    value = (
        model_probability(forecast, base) + shrunk_accuracy(recent_accuracy, recent_count, prior_count=prior_count)
    ) / 2
    return min(1.0, max(0.0, value))
