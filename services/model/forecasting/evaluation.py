"""Honest evaluation: a walk-forward over the held-out tail of a training range, and the promotion gate.

The model is fitted on the first (1 - holdout_fraction) of the closes only. Then, for every base bar t from the last
training bar to the last bar with `horizon` bars after it (every `step`-th), it forecasts `horizon` bars ahead from
the closes up to t - conditioning on the held-out closes it has seen so far without refitting, or refitted on them
every `refit_every` base bars when asked - and the forecast at the horizon is scored against the close at
t + horizon. No forecast ever sees its target.

Scores (at the horizon, in price units):
- MAE, RMSE, MAPE (a fraction);
- MASE = MAE / MAE of the naive forecast (the base close) on the same base bars; absent when the naive MAE is 0;
- directional accuracy: the share of forecasts with a predicted change (forecast ≠ base close) whose sign matches
  the actual change's, with a Wilson score interval at 0.95; absent when no forecast predicts a change (naive);
- interval coverage: the share of actual closes inside the forecast's interval of nominal `level`;
- a one-sided Diebold-Mariano test that the absolute errors are smaller than naive's (mean loss difference over its
  HAC sd with horizon - 1 Bartlett lags), as a p-value: evidence beyond the point estimate of MASE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from services.core.parameters import Params
from services.model.forecasting.base import (
    Algorithm,
    Array,
    FitProgress,
    FitStage,
    Forecaster,
    ProgressCallback,
    log_prices,
    report,
)
from services.model.forecasting.catalogue import ALGORITHMS

DIRECTION_CI_LEVEL = 0.95


@dataclass(frozen=True, slots=True)
class ForecastRecords:
    """Every scored forecast: its base bar index (into the closes), and at the horizon the forecast, the actual
    close and the interval bounds; and the base close."""

    base_index: np.ndarray[tuple[int], np.dtype[np.int64]]
    base: Array
    predicted: Array
    actual: Array
    lower: Array
    upper: Array


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """The walk-forward results (see the module docstring). `train_count` closes were used for the fit; the first
    held-out bar is index `train_count`."""

    algorithm: Algorithm
    horizon: int
    level: float
    train_count: int
    forecast_count: int
    mae: float
    rmse: float
    mape: float
    mase: float | None
    naive_mae: float
    directional_accuracy: float | None
    direction_count: int
    directional_accuracy_ci_low: float | None
    directional_accuracy_ci_high: float | None
    directional_accuracy_ci_level: float
    interval_coverage: float
    dm_pvalue: float | None
    refit_count: int
    seconds: float
    records: ForecastRecords


@dataclass(frozen=True, slots=True)
class Gate:
    """The promotion gate's verdict."""

    passed: bool
    mase: float | None
    threshold: float
    detail: str


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """A fitted model's artifact with its evaluation and gate; all plain data, to return from a worker process."""

    artifact: bytes
    evaluation: Evaluation
    gate: Gate
    fit_seconds: float


def train_count(count: int, holdout_fraction: float) -> int:
    """Closes used for the fit when `count` closes are split with `holdout_fraction` held out."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    return count - round(count * holdout_fraction)


def min_range_bars(algorithm: Algorithm, params: Params, *, holdout_fraction: float, horizon: int) -> int:
    """Fewest closes in a training range (held-out tail included) for a fit and at least 30 scored forecasts."""
    need = ALGORITHMS[algorithm].min_training_bars(params)
    total = max(math.ceil(need / (1.0 - holdout_fraction)), math.ceil((horizon + 30) / holdout_fraction))
    while train_count(total, holdout_fraction) < need or total - train_count(total, holdout_fraction) < horizon + 30:
        total += 1
    return total


def wilson_interval(successes: int, trials: int, level: float = DIRECTION_CI_LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def diebold_mariano_pvalue(loss_model: Array, loss_naive: Array, horizon: int) -> float | None:
    """One-sided p-value of H0 "the model's loss is not smaller than naive's" (HAC variance, Bartlett weights,
    horizon - 1 lags); None when the loss differences do not vary."""
    difference = loss_naive - loss_model
    n = difference.shape[0]
    if n < 2:
        return None
    centred = difference - difference.mean()
    variance = float(np.dot(centred, centred)) / n
    for lag in range(1, min(horizon, n)):
        weight = 1.0 - lag / horizon
        variance += 2.0 * weight * float(np.dot(centred[lag:], centred[:-lag])) / n
    if not variance > 0.0:
        return None
    statistic = float(difference.mean()) / math.sqrt(variance / n)
    return 1.0 - NormalDist().cdf(statistic)


def _scaled(progress: ProgressCallback | None, start: float, span: float) -> Callable[[FitProgress], None] | None:
    """Forwards a fit's reports with fractions mapped into [start, start + span]."""
    if progress is None:
        return None
    outer = progress

    def forward(event: FitProgress) -> None:
        outer(
            FitProgress(
                stage=event.stage,
                message=event.message,
                fraction=start + span * event.fraction,
                epoch=event.epoch,
                epoch_count=event.epoch_count,
                loss=event.loss,
                validation_loss=event.validation_loss,
            )
        )

    return forward


def evaluate_forecaster(
    forecaster: Forecaster,
    closes: Array,
    *,
    train_count: int,
    horizon: int = 1,
    level: float = 0.8,
    step: int = 1,
    refit_every: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Scores a forecaster fitted on closes[:train_count] over the rest (see the module docstring). With
    `refit_every`, a fresh model of the same algorithm and parameters is refitted on the closes up to the base bar
    every `refit_every` base bars; otherwise the fitted model only conditions on the new closes."""
    started = time.perf_counter()
    log_prices(closes, minimum=2)
    prices = np.asarray(closes, dtype=np.float64)
    count = prices.shape[0]
    if horizon < 1 or step < 1 or (refit_every is not None and refit_every < 1):
        raise ValueError("horizon, step and refit_every must be at least 1")
    bases = np.arange(train_count - 1, count - horizon, step, dtype=np.int64)
    if bases.shape[0] == 0:
        raise ValueError(f"no held-out bar has {horizon} bars after it")
    model = forecaster
    predicted, lower, upper = (np.empty(bases.shape[0]) for _ in range(3))
    refits = 0
    for index, base in enumerate(bases):
        if refit_every is not None and index > 0 and index % refit_every == 0:
            model = type(forecaster)(forecaster.params)
            model.fit(prices[: base + 1], seed=seed)
            refits += 1
        forecast = model.forecast(prices[: base + 1], horizon, level)
        predicted[index], lower[index], upper[index] = forecast.mean[-1], forecast.lower[-1], forecast.upper[-1]
        if index % 50 == 0:
            report(
                progress,
                FitStage.EVALUATING,
                f"walk-forward forecast {index + 1}/{bases.shape[0]}",
                index / bases.shape[0],
            )
    base_close = prices[bases]
    actual = prices[bases + horizon]
    errors = np.abs(predicted - actual)
    naive_errors = np.abs(base_close - actual)
    mae = float(errors.mean())
    naive_mae = float(naive_errors.mean())
    predicted_change = np.sign(predicted - base_close)
    called = predicted_change != 0.0
    direction_count = int(called.sum())
    hits = int((predicted_change[called] == np.sign(actual - base_close)[called]).sum())
    ci = wilson_interval(hits, direction_count) if direction_count else None
    report(progress, FitStage.EVALUATING, f"scored {bases.shape[0]} held-out forecasts", 1.0)
    return Evaluation(
        algorithm=forecaster.algorithm,
        horizon=horizon,
        level=level,
        train_count=train_count,
        forecast_count=int(bases.shape[0]),
        mae=mae,
        rmse=float(np.sqrt(np.mean(errors**2))),
        mape=float(np.mean(errors / actual)),
        mase=mae / naive_mae if naive_mae > 0.0 else None,
        naive_mae=naive_mae,
        directional_accuracy=hits / direction_count if direction_count else None,
        direction_count=direction_count,
        directional_accuracy_ci_low=ci[0] if ci else None,
        directional_accuracy_ci_high=ci[1] if ci else None,
        directional_accuracy_ci_level=DIRECTION_CI_LEVEL,
        interval_coverage=float(np.mean((actual >= lower) & (actual <= upper))),
        dm_pvalue=diebold_mariano_pvalue(errors, naive_errors, horizon),
        refit_count=refits,
        seconds=time.perf_counter() - started,
        records=ForecastRecords(bases, base_close, predicted, actual, lower, upper),
    )


def _fit_and_score(
    algorithm: Algorithm,
    params: Params,
    closes: Array,
    *,
    holdout_fraction: float,
    horizon: int,
    level: float,
    seed: int,
    step: int,
    refit_every: int | None,
    progress: ProgressCallback | None,
) -> tuple[Forecaster, Evaluation, float]:
    """The model fitted on the training part, its evaluation and the fit's seconds."""
    definition = ALGORITHMS[algorithm]
    resolved = definition.resolve(params)
    log_prices(closes, minimum=2)
    prices = np.asarray(closes, dtype=np.float64)
    fit_count = train_count(prices.shape[0], holdout_fraction)
    need = definition.forecaster.min_training_bars(resolved)
    if fit_count < need:
        raise ValueError(f"{algorithm.name.lower()} needs at least {need} training closes, got {fit_count}")
    forecaster = definition.forecaster(resolved)
    report(progress, FitStage.PREPARING, f"fitting on {fit_count} closes, holding out {len(prices) - fit_count}", 0)
    started = time.perf_counter()
    forecaster.fit(prices[:fit_count], seed=seed, progress=_scaled(progress, 0.0, 0.7))
    fit_seconds = time.perf_counter() - started
    evaluation = evaluate_forecaster(
        forecaster,
        prices,
        train_count=fit_count,
        horizon=horizon,
        level=level,
        step=step,
        refit_every=refit_every,
        seed=seed,
        progress=_scaled(progress, 0.7, 0.3),
    )
    return forecaster, evaluation, fit_seconds


def walk_forward(
    algorithm: Algorithm,
    params: Params,
    closes: Array,
    *,
    holdout_fraction: float = 0.2,
    horizon: int = 1,
    level: float = 0.8,
    seed: int = 0,
    step: int = 1,
    refit_every: int | None = None,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Fits `algorithm` (params resolved here: InvalidArgument on bad ones) on the first (1 - holdout_fraction) of
    the closes and scores it walk-forward on the rest (see the module docstring)."""
    return _fit_and_score(
        algorithm,
        params,
        closes,
        holdout_fraction=holdout_fraction,
        horizon=horizon,
        level=level,
        seed=seed,
        step=step,
        refit_every=refit_every,
        progress=progress,
    )[1]


def promotion_gate(evaluation: Evaluation, threshold: float = 1.0, *, max_pvalue: float | None = None) -> Gate:
    """Passes only when MASE is defined and strictly below `threshold` - and, when `max_pvalue` is given, the
    Diebold-Mariano p-value against naive is defined and at most `max_pvalue`."""
    count = evaluation.forecast_count
    if evaluation.mase is None:
        return Gate(False, None, threshold, f"MASE undefined over {count} held-out forecasts (naive error is zero)")
    mase = evaluation.mase
    if not mase < threshold:
        detail = f"MASE {mase:.3f} over {count} held-out forecasts does not beat naive (< {threshold:.2f})"
        return Gate(False, mase, threshold, detail)
    if max_pvalue is not None:
        pvalue = evaluation.dm_pvalue
        if pvalue is None or pvalue > max_pvalue:
            shown = "undefined" if pvalue is None else f"{pvalue:.3f}"
            detail = (
                f"MASE {mase:.3f} over {count} held-out forecasts is below {threshold:.2f} but not significantly "
                f"better than naive (Diebold-Mariano p {shown} > {max_pvalue:.2f})"
            )
            return Gate(False, mase, threshold, detail)
    detail = f"MASE {mase:.3f} over {count} held-out forecasts beats naive (< {threshold:.2f})"
    if max_pvalue is not None and evaluation.dm_pvalue is not None:
        detail += f", significantly (Diebold-Mariano p {evaluation.dm_pvalue:.2g} <= {max_pvalue:.2f})"
    return Gate(True, mase, threshold, detail)


def fit_and_evaluate(
    algorithm: Algorithm,
    params: Params,
    closes: Array,
    *,
    holdout_fraction: float = 0.2,
    horizon: int = 1,
    level: float = 0.8,
    seed: int = 0,
    step: int = 1,
    refit_every: int | None = None,
    gate_threshold: float = 1.0,
    gate_max_pvalue: float | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """walk_forward, plus the artifact of the evaluated model (fitted on the training part; it conditions on later
    closes when forecasting) and the gate: what a training worker returns."""
    forecaster, evaluation, fit_seconds = _fit_and_score(
        algorithm,
        params,
        closes,
        holdout_fraction=holdout_fraction,
        horizon=horizon,
        level=level,
        seed=seed,
        step=step,
        refit_every=refit_every,
        progress=progress,
    )
    gate = promotion_gate(evaluation, gate_threshold, max_pvalue=gate_max_pvalue)
    return TrainingResult(forecaster.to_bytes(), evaluation, gate, fit_seconds)
