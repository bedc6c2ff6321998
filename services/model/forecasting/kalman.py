"""Kalman filter with a local linear trend on log prices (numpy + numba), which also reports the trend state.

Model (x_t the log close): x_t = l_t + ε_t, l_{t+1} = l_t + b_t + η_t, b_{t+1} = b_t + ζ_t with independent normal
noises of variances s_ε, s_η, s_ζ. The level l and the slope b (the expected log return per bar) are the state.

Fit: the three variances by maximum likelihood on the training data. The likelihood is concentrated in the level
variance (s_ε = q_ε·σ², s_η = σ², s_ζ = q_ζ·σ², σ² estimated in closed form from the standardised innovations), so
scipy's L-BFGS-B searches only log q_ε and log q_ζ, from the best point of a small grid. The filter starts diffuse
(level at the first close, slope 0, variances 10⁶σ²) and the first two innovations are left out of the
likelihood. A random walk comes out as s_ε ≈ 0, s_ζ ≈ 0 (the slope is then the filtered mean log return); a noisy
trend as s_ε > 0 with a steady slope.

Forecast: the filter continues from the state it had at the end of training over any later closes of the history
(the full history is filtered from the start when it does not extend the training data), then the state is
propagated: mean l + h·b, variance [1 h]P[1 h]ᵀ plus the accumulated state noise and s_ε, exponentiated as in
base. `trend_state()` gives the slope, its sd and a regime (UP / DOWN when the slope is more than 1.96 sds from 0).

Cost: a few hundred filter passes of microseconds each; well under a second on 2,000 bars.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

import numpy as np
from scipy.optimize import minimize

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
    njit,
    pack_artifact,
    report,
    unpack_artifact,
)

DIFFUSE = 1e6
SKIP = 2
REGIME_Z = 1.96
_LOG_Q_BOUNDS = (-30.0, 8.0)


@njit
def _filter(
    x: Array, variances: tuple[float, float, float], state: Array, skip: int
) -> tuple[float, float, int, Array]:
    """Runs the filter with the noise variances (s_ε, s_η, s_ζ) over x from the predicted state [l, b, P00, P01,
    P11] of the first value; returns Σ v²/F, Σ log F and the count of innovations from `skip` on, and the predicted
    state after the last value."""
    s_e, s_l, s_b = variances
    level, slope, p00, p01, p11 = state[0], state[1], state[2], state[3], state[4]
    sum_v2f = 0.0
    sum_logf = 0.0
    count = 0
    for t in range(x.shape[0]):
        v = x[t] - level
        f = p00 + s_e
        if f <= 0.0:
            f = 1e-300
        k0 = p00 / f
        k1 = p01 / f
        level += k0 * v
        slope += k1 * v
        u00 = p00 - p00 * k0
        u01 = p01 - p00 * k1
        u11 = p11 - p01 * k1
        if t >= skip:
            sum_v2f += v * v / f
            sum_logf += math.log(f)
            count += 1
        level += slope
        p00 = u00 + 2.0 * u01 + u11 + s_l
        p01 = u01 + u11
        p11 = u11 + s_b
    out = np.empty(5)
    out[0] = level
    out[1] = slope
    out[2] = p00
    out[3] = p01
    out[4] = p11
    return sum_v2f, sum_logf, count, out


def _initial_state(x: Array, scale: float) -> Array:
    """The diffuse predicted state of the first value."""
    return np.array([x[0], 0.0, DIFFUSE * scale, 0.0, DIFFUSE * scale])


def _profile(log_q: Array, x: Array) -> tuple[float, float]:
    """-2·(concentrated log-likelihood) up to a constant, and σ̂², for log q_ε and log q_ζ."""
    q_e, q_b = math.exp(float(log_q[0])), math.exp(float(log_q[1]))
    sum_v2f, sum_logf, count, _ = _filter(x, (q_e, 1.0, q_b), _initial_state(x, 1.0), SKIP)
    sigma2 = sum_v2f / count
    if not (math.isfinite(sigma2) and sigma2 > 0.0 and math.isfinite(sum_logf)):
        return 1e300, math.nan
    return count * math.log(sigma2) + sum_logf, sigma2


class Regime(StrEnum):
    """Direction of the estimated trend."""

    UP = "UP"
    DOWN = "DOWN"
    FLAT = "FLAT"


@dataclass(frozen=True, slots=True)
class TrendState:
    """The filtered slope (expected log return per bar), its sd and the regime it implies."""

    slope: float
    slope_sd: float
    regime: Regime


class KalmanForecaster(Forecaster):
    """Local-linear-trend Kalman filter on log prices (see the module docstring)."""

    algorithm = Algorithm.KALMAN

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.variances: tuple[float, float, float] | None = None
        self._state = np.zeros(5)
        self._tail = np.zeros(0)
        self._count = 0

    @classmethod
    def min_training_bars(cls, params: Params) -> int:
        """Enough bars to separate level, slope and noise."""
        return 50

    def fit(self, closes: Array, *, seed: int = 0, progress: ProgressCallback | None = None) -> None:
        """Maximum-likelihood variances, then the state at the end of the training data."""
        x = self._training_log_prices(closes)
        report(progress, FitStage.FITTING, "grid search of the noise variance ratios", 0.0)
        grid = [np.array(point) for point in itertools.product((-16.0, -8.0, -2.0, 2.0), (-20.0, -12.0, -6.0))]
        start = min(grid, key=lambda point: _profile(point, x)[0])
        report(progress, FitStage.FITTING, "maximum likelihood of the noise variances", 0.3)
        result = minimize(lambda point: _profile(point, x)[0], start, method="L-BFGS-B", bounds=[_LOG_Q_BOUNDS] * 2)
        best = np.asarray(result.x, dtype=np.float64)
        value, sigma2 = _profile(best, x)
        if not math.isfinite(sigma2):
            raise ValueError("the Kalman likelihood could not be evaluated on these closes")
        q_e, q_b = math.exp(float(best[0])), math.exp(float(best[1]))
        variances = (q_e * sigma2, sigma2, q_b * sigma2)
        state = _filter(x, variances, _initial_state(x, sigma2), SKIP)[3]
        message = f"variances ε {variances[0]:.3g}, η {variances[1]:.3g}, ζ {variances[2]:.3g}"
        report(progress, FitStage.FITTING, message, 1.0, loss=value / x.shape[0])
        self.variances, self._state = variances, state
        self._tail = x[-min(10, x.shape[0]) :].copy()
        self._count = int(x.shape[0])

    def _state_after(self, history: Array) -> Array:
        """The predicted state of the bar after `history`."""
        if self.variances is None:
            raise NotFittedError("kalman is not fitted")
        x = log_prices(history, minimum=2, what="history")
        n, tail = self._count, self._tail
        if x.shape[0] >= n and np.array_equal(x[n - tail.shape[0] : n], tail):
            return _filter(x[n:], self.variances, self._state, SKIP)[3]
        return _filter(x, self.variances, _initial_state(x, self.variances[1]), SKIP)[3]

    def forecast(self, history: Array, horizon: int, level: float = 0.8) -> Forecast:
        """Filters to the end of `history` and propagates the state (see the module docstring)."""
        check_forecast_request(horizon, level)
        state = self._state_after(history)
        assert self.variances is not None
        s_e, s_l, s_b = self.variances
        level_mean, slope = float(state[0]), float(state[1])
        p00, p01, p11 = float(state[2]), float(state[3]), float(state[4])
        mu = np.empty(horizon)
        variance = np.empty(horizon)
        for step in range(horizon):
            mu[step] = level_mean + step * slope
            variance[step] = p00 + s_e
            p00, p01, p11 = p00 + 2.0 * p01 + p11 + s_l, p01 + p11, p11 + s_b
        return lognormal_forecast(mu, np.sqrt(variance), level)

    def trend_state(self, history: Array | None = None) -> TrendState:
        """The slope and its sd at the end of `history` (of the training data when None) and the regime."""
        if self.variances is None:
            raise NotFittedError("kalman is not fitted")
        state = self._state if history is None else self._state_after(history)
        slope, sd = float(state[1]), math.sqrt(max(float(state[4]), 0.0))
        regime = Regime.FLAT
        if slope > REGIME_Z * sd:
            regime = Regime.UP
        elif slope < -REGIME_Z * sd:
            regime = Regime.DOWN
        return TrendState(slope, sd, regime)

    def to_bytes(self) -> bytes:
        """The variances, the final state and the tail of the training data it belongs to."""
        if self.variances is None:
            raise NotFittedError("kalman is not fitted")
        meta = {"params": self.params, "variances": list(self.variances), "count": self._count}
        return pack_artifact(self.algorithm, meta, {"state": self._state, "tail": self._tail})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The model written by to_bytes."""
        meta, arrays = unpack_artifact(data, cls.algorithm)
        model = cls(meta["params"])
        s_e, s_l, s_b = (float(value) for value in meta["variances"])
        model.variances = (s_e, s_l, s_b)
        model._count = int(meta["count"])
        model._state = arrays["state"].astype(np.float64).reshape(5)
        model._tail = arrays["tail"].astype(np.float64)
        return model
