"""The catalogue of forecasting algorithms (ListAlgorithms), and loading any artifact by the algorithm it names.

Importing it does not import torch (the LSTM imports torch inside its functions).
"""

from __future__ import annotations

from services.core.parameters import Params
from services.model.forecasting.arima import ArimaForecaster
from services.model.forecasting.base import (
    Algorithm,
    AlgorithmDef,
    Forecaster,
    artifact_algorithm,
)
from services.model.forecasting.baselines import DriftForecaster, NaiveForecaster
from services.model.forecasting.ensemble import EnsembleForecaster
from services.model.forecasting.kalman import KalmanForecaster
from services.model.forecasting.lstm import LstmForecaster

_INTERVAL = (
    "The interval is exp(mean ± z·sd) of a normal predictive distribution of the log price, z the normal quantile "
    "of the level. Confidence in the direction is the predictive probability of the predicted side, Φ(|μ|/σ) on "
    "the log scale, blended with the version's recent out-of-sample directional accuracy (shrunk toward 0.5)."
)

ALGORITHMS: dict[Algorithm, AlgorithmDef] = {
    Algorithm.NAIVE: AlgorithmDef(
        algorithm=Algorithm.NAIVE,
        display_name="Naive (random walk)",
        description=(
            "Every future close equals the last close. The interval grows with sqrt(h) from the sd of the training "
            "log returns. " + _INTERVAL + " Its direction is always FLAT. The baseline of the promotion gate; "
            "trains instantly."
        ),
        baseline=True,
        forecaster=NaiveForecaster,
    ),
    Algorithm.DRIFT: AlgorithmDef(
        algorithm=Algorithm.DRIFT,
        display_name="Random walk with drift",
        description=(
            "The last close extended by the mean training log return per bar. The interval's sd is "
            "sigma·sqrt(h·(1 + h/T)) (Hyndman & Athanasopoulos), which adds the drift estimate's uncertainty. "
            + _INTERVAL
            + " A baseline; trains instantly."
        ),
        baseline=True,
        forecaster=DriftForecaster,
    ),
    Algorithm.ARIMA: AlgorithmDef(
        algorithm=Algorithm.ARIMA,
        display_name="ARIMA (AIC order selection)",
        description=(
            "ARIMA(p, d, q) with a constant on log prices: d by a KPSS test, (p, q) by conditional-sum-of-squares "
            "AIC over every order within the bounds, the chosen order refitted by exact maximum likelihood "
            "(statsmodels). Forecasts condition on the latest closes without refitting; the interval comes from "
            "the model's forecast variance (psi weights). " + _INTERVAL + " About a second on 2,000 bars."
        ),
        baseline=False,
        forecaster=ArimaForecaster,
    ),
    Algorithm.LSTM: AlgorithmDef(
        algorithm=Algorithm.LSTM,
        display_name="LSTM (log returns)",
        description=(
            "A one-layer LSTM maps a window of normalised log returns to the next one (torch, CPU, fixed seeds); "
            "early stopping on the last 15 % of the training returns. Multi-step forecasts iterate one-step "
            "predictions. The interval's sd is the validation residual sd times sqrt(h) (an approximation). "
            + _INTERVAL
            + " Seconds to a minute on 2,000 bars, depending on epochs and size."
        ),
        baseline=False,
        forecaster=LstmForecaster,
    ),
    Algorithm.KALMAN: AlgorithmDef(
        algorithm=Algorithm.KALMAN,
        display_name="Kalman filter (local linear trend)",
        description=(
            "A local-linear-trend state-space model of the log price (level and slope), noise variances by "
            "maximum likelihood; forecasts filter the latest closes and extend the level by the slope. The "
            "interval comes from the state's variance plus the accumulated noise. " + _INTERVAL + " Also reports "
            "the trend state (slope, its sd, up/down/flat). Under a second on 2,000 bars."
        ),
        baseline=False,
        forecaster=KalmanForecaster,
    ),
    Algorithm.ENSEMBLE: AlgorithmDef(
        algorithm=Algorithm.ENSEMBLE,
        display_name="Weighted ensemble",
        description=(
            "Naive, drift, ARIMA and Kalman (and the LSTM when include_lstm) weighted by the inverse of their "
            "one-step mean squared error in a walk-forward over the last 20 % of the training data, then refitted "
            "on all of it. The forecast is the weighted mean of the members' paths; the interval bounds are the "
            "weighted means of the members' bounds (quantile averaging). Confidence as for the others, from the "
            "combined interval. Costs about twice its members."
        ),
        baseline=False,
        forecaster=EnsembleForecaster,
    ),
}


def create(algorithm: Algorithm, params: Params | None = None) -> Forecaster:
    """An unfitted forecaster of `algorithm` with `params` resolved (InvalidArgument on bad parameters)."""
    return ALGORITHMS[algorithm].create(params)


def load(data: bytes) -> Forecaster:
    """The fitted forecaster an artifact holds, of whichever algorithm it names (ArtifactError when unreadable)."""
    return ALGORITHMS[artifact_algorithm(data)].load(data)
