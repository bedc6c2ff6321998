"""The bars a training job reads: the range's latest closes, and how many an algorithm needs to fit and be
evaluated."""

from __future__ import annotations

import math

import numpy as np

from services.core.errors import FailedPrecondition
from services.core.market_data import MarketData
from services.core.parameters import Params
from services.model.forecasting.base import AlgorithmDef
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.training.jobs import TrainingSpec
from services.model.training.runner import TrainingData

# Most bars one training job reads (the latest of the range).
MAX_TRAINING_BARS = 20_000
# Held-out bars needed beyond the horizon so the evaluation scores enough forecasts.
MIN_HELD_OUT_FORECASTS = 30


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
