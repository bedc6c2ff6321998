"""The two baselines: the naive random walk and the random walk with drift, both on log prices.

Naive: every future close equals the last close. Interval: the sd of the training log returns (sigma) times
sqrt(h) at step h, i.e. the random walk's h-step sd, with the normal quantile of the level, exponentiated.

Drift: the last log close plus h times the mean training log return (mu). Interval as in Hyndman & Athanasopoulos,
Forecasting: Principles and Practice, 5.5: sd = sigma·sqrt(h·(1 + h/T)) with T the number of training returns, the
h/T term being the uncertainty of the drift estimate.

Both keep their training estimates (mu, sigma, T) and forecast from the last close of whatever history they get.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from services.core.parameters import Params
from services.model.forecasting.base import (
    Algorithm,
    Array,
    FitStage,
    Forecast,
    Forecaster,
    NotFittedError,
    ProgressCallback,
    check_forecast_request,
    log_prices,
    lognormal_forecast,
    pack_artifact,
    report,
    unpack_artifact,
)


class _RandomWalk(Forecaster):
    """Shared state of the baselines: the training log returns' mean, sd and count."""

    with_drift = False

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self._mu = 0.0
        self._sigma = 0.0
        self._count = 0

    @classmethod
    def min_training_bars(cls, params: Params) -> int:
        """Enough returns for a stable sd."""
        return 30

    def fit(self, closes: Array, *, seed: int = 0, progress: ProgressCallback | None = None) -> None:
        """Estimates the mean and sd of the log returns."""
        report(progress, FitStage.FITTING, "estimating the mean and sd of log returns", 0.0)
        returns = np.diff(self._training_log_prices(closes))
        mu, sigma = float(np.mean(returns)), float(np.std(returns, ddof=1))
        report(progress, FitStage.FITTING, f"mean {mu:.3g}, sd {sigma:.3g} per bar", 1.0)
        self._mu, self._sigma, self._count = mu, sigma, int(returns.shape[0])

    def forecast(self, history: Array, horizon: int, level: float = 0.8) -> Forecast:
        """The path from the last close of `history` (see the module docstring)."""
        check_forecast_request(horizon, level)
        if self._count == 0:
            raise NotFittedError(f"{self.algorithm.name.lower()} is not fitted")
        last = float(log_prices(history, minimum=1, what="history")[-1])
        steps = np.arange(1, horizon + 1, dtype=np.float64)
        if self.with_drift:
            mu = last + self._mu * steps
            sd = self._sigma * np.sqrt(steps * (1.0 + steps / self._count))
            return lognormal_forecast(mu, sd, level)
        forecast = lognormal_forecast(np.full(horizon, last), self._sigma * np.sqrt(steps), level)
        # exactly the last close (exp(log(close)) may differ in the last bit), so naive's MASE is exactly 1
        exact = np.full(horizon, float(np.asarray(history, dtype=np.float64)[-1]))
        return Forecast(mean=exact, lower=forecast.lower, upper=forecast.upper, level=level)

    def to_bytes(self) -> bytes:
        """mu, sigma and T in the meta."""
        if self._count == 0:
            raise NotFittedError(f"{self.algorithm.name.lower()} is not fitted")
        meta = {"params": self.params, "mu": self._mu, "sigma": self._sigma, "count": self._count}
        return pack_artifact(self.algorithm, meta, {})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The baseline written by to_bytes."""
        meta, _ = unpack_artifact(data, cls.algorithm)
        model = cls(meta["params"])
        model._mu, model._sigma, model._count = float(meta["mu"]), float(meta["sigma"]), int(meta["count"])
        return model


class NaiveForecaster(_RandomWalk):
    """Random walk on log prices: the path stays at the last close."""

    algorithm = Algorithm.NAIVE


class DriftForecaster(_RandomWalk):
    """Random walk with drift on log prices: the mean log return extrapolated from the last close."""

    algorithm = Algorithm.DRIFT
    with_drift = True
