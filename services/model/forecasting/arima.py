"""ARIMA(p, d, q) on log prices, the order chosen within small bounds.

Fit:
1. d: 0 when a KPSS test (level-stationarity null, 5 %) does not reject stationarity of the log prices, else 1
   (never more than `max_d`) - the unit-root choice of Hyndman & Khandakar's auto.arima, since AICs of different
   d are not comparable.
2. The differenced series y is standardised (its mean and sd are kept) for numerical stability.
3. (p, q): every order within (max_p, max_q) is fitted by conditional sum of squares (CSS: the recursion compiled
   with numba, AR kept stationary and MA invertible by the partial-autocorrelation transform, all orders scored on
   the same residuals so their AICs compare) - auto.arima's `approximation` for long series, milliseconds per
   order.
4. The three orders with the lowest CSS-AIC are refitted by exact maximum likelihood (statsmodels SARIMAX with a
   constant, started from the CSS estimates) and the lowest exact AIC wins. Its parameters (constant, AR, MA,
   innovation variance) are all the artifact keeps, with the order and the standardisation - no statsmodels object
   is stored.

Forecast: the ARMA innovations are recomputed by the CSS recursion over the last `CONDITIONING_BARS` of the history
(any later closes included; an invertible MA forgets its start within a few dozen bars), the ARMA recursion runs
ahead with zero future shocks, and the variance comes from the psi (MA(inf)) weights: sigma²·Σψ² for d = 0, and
with the cumulated weights Ψ_m = ψ_0 + ... + ψ_m for the integrated d = 1 path. Log-scale mean and sd are
exponentiated (see base). Parameter uncertainty is not included, as in statsmodels' own forecast intervals.

Cost: 16 CSS fits and three exact fits: one to a few seconds on 2,000 bars; a forecast takes well under a
millisecond.
"""

from __future__ import annotations

import itertools
import math
import warnings
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
    integer,
    log_prices,
    lognormal_forecast,
    njit,
    pack_artifact,
    report,
    unpack_artifact,
)

CONDITIONING_BARS = 500
EXACT_FINALISTS = 3
KPSS_ALPHA = 0.05


@njit
def _arma_residuals(y: Array, const: float, phi: Array, theta: Array, start: int) -> Array:
    """CSS innovations e_t = y_t - c - Σ φ_i y_{t-i} - Σ θ_j e_{t-j} for t >= start (0 before)."""
    n = y.shape[0]
    p = phi.shape[0]
    q = theta.shape[0]
    e = np.zeros(n)
    for t in range(start, n):
        value = y[t] - const
        for i in range(p):
            value -= phi[i] * y[t - 1 - i]
        for j in range(q):
            if t - 1 - j >= 0:
                value -= theta[j] * e[t - 1 - j]
        e[t] = value
    return e


def _constrain(free: Array, p: int, q: int) -> Array:
    """[c, φ..., θ...] from unconstrained values: φ stationary and θ invertible through the partial-autocorrelation
    transform (Monahan; as statsmodels' SARIMAX does)."""
    from statsmodels.tsa.statespace.tools import constrain_stationary_univariate  # noqa: PLC0415 - heavy

    params = free.copy()
    if p:
        params[1 : 1 + p] = constrain_stationary_univariate(free[1 : 1 + p])
    if q:
        params[1 + p :] = -constrain_stationary_univariate(-free[1 + p :])
    return params


def _css_objective(free: Array, y: Array, p: int, q: int, start: int) -> float:
    """Mean squared CSS innovation of the constrained parameters."""
    params = _constrain(free, p, q)
    e = _arma_residuals(y, float(params[0]), params[1 : 1 + p], params[1 + p :], start)
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(np.mean(e[start:] ** 2))
    return value if math.isfinite(value) else 1e6


def _css_fit(y: Array, p: int, q: int, start: int) -> tuple[Array, float]:
    """CSS estimates [c, φ..., θ...] (stationary, invertible) and the AIC on the residuals from `start` on."""
    result = minimize(_css_objective, np.zeros(1 + p + q), args=(y, p, q, start), method="L-BFGS-B")
    free = np.asarray(result.x, dtype=np.float64)
    count = y.shape[0] - start
    aic = count * math.log(max(_css_objective(free, y, p, q, start), 1e-300)) + 2.0 * (p + q + 2)
    return _constrain(free, p, q), aic


def _psi_weights(phi: Array, theta: Array, horizon: int) -> Array:
    """ψ_0..ψ_{h-1} of the ARMA's MA(∞) form."""
    psi = np.zeros(horizon)
    psi[0] = 1.0
    for j in range(1, horizon):
        value = theta[j - 1] if j - 1 < theta.shape[0] else 0.0
        for i in range(min(j, phi.shape[0])):
            value += phi[i] * psi[j - 1 - i]
        psi[j] = value
    return psi


def _choose_d(x: Array, max_d: int) -> int:
    """0 when KPSS does not reject level stationarity at 5 %, else 1 (bounded by max_d)."""
    if max_d == 0:
        return 0
    from statsmodels.tsa.stattools import kpss  # noqa: PLC0415 - statsmodels loads on first fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_value = float(kpss(x, regression="c", nlags="auto")[1])
    return 1 if p_value < KPSS_ALPHA else 0


class ArimaForecaster(Forecaster):
    """ARIMA on log prices, order by (CSS-)AIC within small bounds (see the module docstring)."""

    algorithm = Algorithm.ARIMA
    parameters = (
        integer("max_p", "Largest autoregressive order tried.", 3, 0, 3),
        integer("max_d", "Largest differencing order (0: the log prices are treated as stationary).", 1, 0, 1),
        integer("max_q", "Largest moving-average order tried.", 3, 0, 3),
    )

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self.order: tuple[int, int, int] | None = None
        self._const = 0.0
        self._phi = np.zeros(0)
        self._theta = np.zeros(0)
        self._sigma2 = 0.0
        self._center = 0.0
        self._scale = 1.0

    @classmethod
    def min_training_bars(cls, params: Params) -> int:
        """Ten observations per candidate parameter, at least 100."""
        return max(100, 10 * (int(params["max_p"]) + int(params["max_q"]) + 2))

    def fit(self, closes: Array, *, seed: int = 0, progress: ProgressCallback | None = None) -> None:
        """Chooses d by KPSS and (p, q) by CSS-AIC, then fits the order by exact maximum likelihood."""
        x = self._training_log_prices(closes)
        max_p, max_d, max_q = int(self.params["max_p"]), int(self.params["max_d"]), int(self.params["max_q"])
        report(progress, FitStage.PREPARING, "choosing the differencing order (KPSS test)", 0.0)
        d = _choose_d(x, max_d)
        y = np.diff(x, n=d) if d else x.copy()
        center, scale = float(np.mean(y)), float(np.std(y))
        if not scale > 0.0:
            raise ValueError("training closes do not vary")
        ys = (y - center) / scale
        orders = list(itertools.product(range(max_p + 1), range(max_q + 1)))
        scored: list[tuple[float, int, int, Array]] = []
        for index, (p, q) in enumerate(orders):
            params, aic = _css_fit(ys, p, q, max_p)
            scored.append((aic, p, q, params))
            best = min(scored, key=lambda item: item[0])
            report(
                progress,
                FitStage.FITTING,
                f"order ({p},{d},{q}): CSS-AIC {aic:.1f}; best ({best[1]},{d},{best[2]})",
                0.6 * (index + 1) / len(orders),
            )
        scored.sort(key=lambda item: item[0])
        finalists = scored[:EXACT_FINALISTS]
        fitted: list[tuple[float, int, int, float, Array, Array, float]] = []
        for index, (_, p, q, css) in enumerate(finalists):
            const, phi, theta, sigma2, aic = self._exact_fit(ys, p, q, css)
            fitted.append((aic, p, q, const, phi, theta, sigma2))
            report(
                progress,
                FitStage.FITTING,
                f"exact maximum likelihood of ARIMA({p},{d},{q}): AIC {aic:.1f}",
                0.6 + 0.4 * (index + 1) / len(finalists),
            )
        _, p, q, const, phi, theta, sigma2 = min(fitted, key=lambda item: item[0])
        report(progress, FitStage.FITTING, f"ARIMA({p},{d},{q}) fitted", 1.0, loss=sigma2)
        self.order = (p, d, q)
        self._const, self._phi, self._theta, self._sigma2 = const, phi, theta, sigma2
        self._center, self._scale = center, scale

    @staticmethod
    def _exact_fit(ys: Array, p: int, q: int, css: Array) -> tuple[float, Array, Array, float, float]:
        """Exact MLE with statsmodels SARIMAX (constant, stationary and invertible), started at the CSS estimates:
        constant, φ, θ, σ² and the AIC (the CSS estimates, with an infinite AIC, when the exact fit fails)."""
        from statsmodels.tsa.statespace.sarimax import SARIMAX  # noqa: PLC0415 - statsmodels loads on first fit

        residuals = _arma_residuals(ys, float(css[0]), css[1 : 1 + p], css[1 + p :], p)
        css_sigma2 = float(np.mean(residuals[p:] ** 2))
        fallback = (float(css[0]), css[1 : 1 + p].copy(), css[1 + p :].copy(), css_sigma2, math.inf)
        model = SARIMAX(ys, order=(p, 0, q), trend="c")
        start = np.concatenate([[css[0]], css[1:], [css_sigma2]])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = model.fit(start_params=start, disp=False, maxiter=100)
        except (ValueError, np.linalg.LinAlgError):
            return fallback
        params = np.asarray(result.params, dtype=np.float64)
        aic = float(result.aic)
        if not (np.all(np.isfinite(params)) and math.isfinite(aic)):
            return fallback
        return float(params[0]), params[1 : 1 + p].copy(), params[1 + p : 1 + p + q].copy(), float(params[-1]), aic

    def forecast(self, history: Array, horizon: int, level: float = 0.8) -> Forecast:
        """Conditions on the end of `history` and runs the ARMA ahead (see the module docstring)."""
        check_forecast_request(horizon, level)
        if self.order is None:
            raise NotFittedError("arima is not fitted")
        p, d, q = self.order
        x = log_prices(history, minimum=p + d + 1, what="history")[-(CONDITIONING_BARS + d) :]
        y = (np.diff(x, n=d) if d else x) - self._center
        ys = y / self._scale
        e = _arma_residuals(ys, self._const, self._phi, self._theta, p)
        path = np.concatenate([ys, np.zeros(horizon)])
        shocks = np.concatenate([e, np.zeros(horizon)])
        n = ys.shape[0]
        for t in range(n, n + horizon):
            value = self._const
            for i in range(p):
                value += self._phi[i] * path[t - 1 - i]
            for j in range(q):
                value += self._theta[j] * shocks[t - 1 - j]
            path[t] = value
        ahead = path[n:] * self._scale + self._center
        psi = _psi_weights(self._phi, self._theta, horizon)
        if d == 0:
            mu = ahead
            variance = np.cumsum(psi**2)
        else:
            mu = x[-1] + np.cumsum(ahead)
            variance = np.cumsum(np.cumsum(psi) ** 2)
        sd = self._scale * np.sqrt(self._sigma2 * variance)
        return lognormal_forecast(mu, sd, level)

    def to_bytes(self) -> bytes:
        """The order, standardisation and ARMA parameters."""
        if self.order is None:
            raise NotFittedError("arima is not fitted")
        meta = {
            "params": self.params,
            "order": list(self.order),
            "const": self._const,
            "sigma2": self._sigma2,
            "center": self._center,
            "scale": self._scale,
        }
        return pack_artifact(self.algorithm, meta, {"phi": self._phi, "theta": self._theta})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The model written by to_bytes."""
        meta, arrays = unpack_artifact(data, cls.algorithm)
        model = cls(meta["params"])
        p, d, q = (int(value) for value in meta["order"])
        model.order = (p, d, q)
        model._const, model._sigma2 = float(meta["const"]), float(meta["sigma2"])
        model._center, model._scale = float(meta["center"]), float(meta["scale"])
        model._phi = arrays["phi"].astype(np.float64).reshape(p)
        model._theta = arrays["theta"].astype(np.float64).reshape(q)
        return model
