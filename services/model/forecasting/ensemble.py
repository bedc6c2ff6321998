"""Weighted ensemble of the other forecasters.

Members: naive, drift, ARIMA and Kalman with their default parameters, plus the LSTM when `include_lstm`.

Fit: the members are fitted on the training data without its last `weight_fraction`; each then forecasts one step
ahead from every bar of that tail (conditioning on the closes up to the bar, no refit), and its weight is
proportional to 1 / (mean squared one-step error of the log price) - the recent out-of-sample error. Finally every
member is refitted on all the training data (with the same seed) and keeps its weight.

Forecast: the weighted mean of the members' paths; the interval bounds are the weighted means of the members'
bounds at each step (quantile averaging, "Vincentisation"): a simple, monotone combination that, unlike the exact
mixture quantile, needs no root finding; it is a little narrower than the mixture when the members disagree.

Cost: about twice the cost of fitting the members.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from services.core.parameters import Params
from services.model.forecasting.arima import ArimaForecaster
from services.model.forecasting.base import (
    Algorithm,
    Array,
    FitProgress,
    FitStage,
    Forecast,
    Forecaster,
    NotFittedError,
    ProgressCallback,
    boolean,
    check_forecast_request,
    log_prices,
    number,
    pack_artifact,
    report,
    unpack_artifact,
)
from services.model.forecasting.baselines import DriftForecaster, NaiveForecaster
from services.model.forecasting.kalman import KalmanForecaster
from services.model.forecasting.lstm import LstmForecaster

_MEMBERS: dict[Algorithm, type[Forecaster]] = {
    Algorithm.NAIVE: NaiveForecaster,
    Algorithm.DRIFT: DriftForecaster,
    Algorithm.ARIMA: ArimaForecaster,
    Algorithm.KALMAN: KalmanForecaster,
    Algorithm.LSTM: LstmForecaster,
}


def _scaled(progress: ProgressCallback | None, start: float, span: float, label: str) -> ProgressCallback | None:
    """A callback that forwards a member's reports with its fraction mapped into [start, start + span]."""
    if progress is None:
        return None
    outer = progress

    def forward(event: FitProgress) -> None:
        outer(
            FitProgress(
                stage=event.stage,
                message=f"{label}: {event.message}",
                fraction=start + span * event.fraction,
                epoch=event.epoch,
                epoch_count=event.epoch_count,
                loss=event.loss,
                validation_loss=event.validation_loss,
            )
        )

    return forward


class EnsembleForecaster(Forecaster):
    """Members weighted by their inverse recent one-step MSE (see the module docstring)."""

    algorithm = Algorithm.ENSEMBLE
    parameters = (
        boolean("include_lstm", "Add the LSTM (default parameters) as a member.", False),
        number("weight_fraction", "Share of the training data used to weight the members.", 0.2, 0.1, 0.5, step=0.05),
    )

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.members: list[Forecaster] = []
        self.weights = np.zeros(0)

    @classmethod
    def _member_types(cls, params: Params) -> list[type[Forecaster]]:
        kinds = [Algorithm.NAIVE, Algorithm.DRIFT, Algorithm.ARIMA, Algorithm.KALMAN]
        if params["include_lstm"]:
            kinds.append(Algorithm.LSTM)
        return [_MEMBERS[kind] for kind in kinds]

    @classmethod
    def min_training_bars(cls, params: Params) -> int:
        """Enough for every member on the part before the weighting tail, and 30 weighting forecasts."""
        need = max(kind.min_training_bars(kind.resolve()) for kind in cls._member_types(params))
        fraction = float(params["weight_fraction"])
        return max(math.ceil(need / (1.0 - fraction)) + 1, math.ceil(30 / fraction) + 1)

    def fit(self, closes: Array, *, seed: int = 0, progress: ProgressCallback | None = None) -> None:
        """Weights from a walk-forward on the tail, then every member refitted on all the data."""
        x = self._training_log_prices(closes)
        prices = np.exp(x)
        kinds = self._member_types(self.params)
        count = x.shape[0]
        split = count - round(count * float(self.params["weight_fraction"]))
        span = 1.0 / (2 * len(kinds))
        errors = []
        for index, kind in enumerate(kinds):
            label = f"{kind.algorithm.name.lower()} (weighting)"
            member = kind(kind.resolve())
            member.fit(prices[:split], seed=seed, progress=_scaled(progress, index * span, span * 0.8, label))
            report(progress, FitStage.FITTING, f"{label}: one-step forecasts of the tail", (index + 0.8) * span)
            predicted = np.array(
                [np.log(member.forecast(prices[: t + 1], 1).mean[0]) for t in range(split - 1, count - 1)]
            )
            errors.append(float(np.mean((predicted - x[split:]) ** 2)))
        inverse = 1.0 / np.maximum(np.array(errors), 1e-300)
        weights = inverse / inverse.sum()
        members: list[Forecaster] = []
        for index, kind in enumerate(kinds):
            label = f"{kind.algorithm.name.lower()} (weight {weights[index]:.3f})"
            member = kind(kind.resolve())
            start = 0.5 + index * span
            member.fit(prices, seed=seed, progress=_scaled(progress, start, span, label))
            members.append(member)
        summary = ", ".join(f"{m.algorithm.name.lower()} {w:.3f}" for m, w in zip(members, weights, strict=True))
        report(progress, FitStage.FITTING, f"weights: {summary}", 1.0)
        self.members, self.weights = members, weights

    def forecast(self, history: Array, horizon: int, level: float = 0.8) -> Forecast:
        """Weighted mean of the members' paths and of their bounds."""
        check_forecast_request(horizon, level)
        if not self.members:
            raise NotFittedError("ensemble is not fitted")
        log_prices(history, minimum=2, what="history")
        forecasts = [member.forecast(history, horizon, level) for member in self.members]
        w = self.weights[:, None]
        return Forecast(
            mean=np.sum(w * np.stack([f.mean for f in forecasts]), axis=0),
            lower=np.sum(w * np.stack([f.lower for f in forecasts]), axis=0),
            upper=np.sum(w * np.stack([f.upper for f in forecasts]), axis=0),
            level=level,
        )

    def to_bytes(self) -> bytes:
        """The weights and every member's own artifact."""
        if not self.members:
            raise NotFittedError("ensemble is not fitted")
        meta = {"params": self.params, "members": [int(member.algorithm) for member in self.members]}
        arrays: dict[str, npt.NDArray[Any]] = {"weights": self.weights}
        for index, member in enumerate(self.members):
            arrays[f"member.{index}"] = np.frombuffer(member.to_bytes(), dtype=np.uint8)
        return pack_artifact(self.algorithm, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The ensemble written by to_bytes."""
        meta, arrays = unpack_artifact(data, cls.algorithm)
        model = cls(meta["params"])
        model.members = [
            _MEMBERS[Algorithm(int(kind))].from_bytes(arrays[f"member.{index}"].astype(np.uint8).tobytes())
            for index, kind in enumerate(meta["members"])
        ]
        model.weights = arrays["weights"].astype(np.float64)
        return model
