"""Walk-forward evaluation, the promotion gate, direction and confidence."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.parameters import ParamValue
from services.model.forecasting import catalogue
from services.model.forecasting.base import Algorithm, FitProgress, FitStage, Forecast
from services.model.forecasting.confidence import Direction, confidence, direction, model_probability
from services.model.forecasting.evaluation import (
    evaluate_forecaster,
    fit_and_evaluate,
    min_range_bars,
    promotion_gate,
    walk_forward,
    wilson_interval,
)
from tests.forecast_series import mean_reverting, random_walk, trending

# On a random walk every sensible model is within a hair of naive, so a point estimate of MASE falls below 1.0 by
# luck about a third of the time for drift-like models (drift, ARIMA(0,1,0) with drift, Kalman, ensemble) with 400
# one-step forecasts; over 30 seeds none went below 0.997. The gate that reliably refuses them needs a margin:
RANDOM_WALK_SAFE_THRESHOLD = 0.99
HOLDOUT = 0.4  # 1,000 bars → 400 held-out one-step forecasts


def test_naive_scores_exactly_one_and_fails_the_gate_with_nominal_coverage() -> None:
    evaluation = walk_forward(Algorithm.NAIVE, {}, random_walk(1000, seed=0), holdout_fraction=HOLDOUT, level=0.8)
    assert evaluation.forecast_count == 400
    assert evaluation.train_count == 600
    assert evaluation.mase == 1.0
    assert evaluation.mae == evaluation.naive_mae
    assert evaluation.directional_accuracy is None
    assert evaluation.direction_count == 0
    assert evaluation.interval_coverage == pytest.approx(0.8, abs=0.1)
    gate = promotion_gate(evaluation)
    assert not gate.passed
    assert gate.mase == 1.0
    assert gate.threshold == 1.0
    assert gate.detail == "MASE 1.000 over 400 held-out forecasts does not beat naive (< 1.00)"


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_naive_interval_coverage_is_near_nominal(seed: int) -> None:
    closes = random_walk(800, seed=seed)
    evaluation = walk_forward(Algorithm.NAIVE, {}, closes, holdout_fraction=0.45, level=0.8)
    assert evaluation.forecast_count >= 300
    assert evaluation.interval_coverage == pytest.approx(0.8, abs=0.1)


# ARIMA's full order search (16 orders, three exact fits) is the model most able to find structure in noise, and the
# slowest: it runs once with its defaults; the other seeds use a small search, which costs a tenth. The ensemble
# (whose members include that full search) runs on one seed.
SMALL_ARIMA: dict[str, ParamValue] = {"max_p": 1, "max_q": 1}


@pytest.mark.parametrize(
    ("algorithm", "seed", "params"),
    [
        (Algorithm.DRIFT, 0, {}),
        (Algorithm.DRIFT, 1, {}),
        (Algorithm.DRIFT, 2, {}),
        (Algorithm.KALMAN, 0, {}),
        (Algorithm.KALMAN, 1, {}),
        (Algorithm.KALMAN, 2, {}),
        (Algorithm.ARIMA, 0, {}),
        (Algorithm.ARIMA, 1, SMALL_ARIMA),
        (Algorithm.ARIMA, 2, SMALL_ARIMA),
        (Algorithm.ENSEMBLE, 1, {}),
        (Algorithm.LSTM, 0, {"epochs": 5, "hidden_size": 8, "window": 10}),
    ],
)
def test_no_model_passes_the_gate_on_a_random_walk(
    algorithm: Algorithm, seed: int, params: dict[str, ParamValue]
) -> None:
    closes = random_walk(1000, seed=seed)
    evaluation = walk_forward(algorithm, params, closes, holdout_fraction=HOLDOUT, seed=0)
    assert evaluation.mase is not None
    assert evaluation.mase > RANDOM_WALK_SAFE_THRESHOLD
    assert not promotion_gate(evaluation, RANDOM_WALK_SAFE_THRESHOLD).passed
    assert evaluation.directional_accuracy is not None
    assert 0.4 < evaluation.directional_accuracy < 0.6
    assert evaluation.directional_accuracy_ci_low is not None
    assert evaluation.directional_accuracy_ci_high is not None
    assert (
        evaluation.directional_accuracy_ci_low
        < evaluation.directional_accuracy
        < evaluation.directional_accuracy_ci_high
    )


@pytest.mark.parametrize("algorithm", [Algorithm.DRIFT, Algorithm.KALMAN])
def test_trend_followers_beat_naive_on_a_trend(algorithm: Algorithm) -> None:
    evaluation = walk_forward(algorithm, {}, trending(600, seed=1), holdout_fraction=HOLDOUT)
    assert evaluation.mase is not None
    assert evaluation.mase < 0.9
    gate = promotion_gate(evaluation)
    assert gate.passed
    assert gate.detail.endswith("beats naive (< 1.00)")
    assert evaluation.dm_pvalue is not None
    assert evaluation.dm_pvalue < 0.01


def test_arima_beats_naive_on_mean_reversion() -> None:
    evaluation = walk_forward(Algorithm.ARIMA, {}, mean_reverting(1000, seed=2, phi=0.7), holdout_fraction=HOLDOUT)
    assert evaluation.mase is not None
    assert evaluation.mase < 0.95
    assert promotion_gate(evaluation).passed
    assert promotion_gate(evaluation, max_pvalue=0.05).passed


def test_gate_requires_a_defined_mase_and_optionally_significance() -> None:
    evaluation = walk_forward(Algorithm.NAIVE, {}, np.full(300, 100.0), holdout_fraction=0.3)
    assert evaluation.mase is None
    gate = promotion_gate(evaluation)
    assert not gate.passed
    assert gate.mase is None
    assert "undefined" in gate.detail
    drift = walk_forward(Algorithm.DRIFT, {}, random_walk(1000, seed=0), holdout_fraction=HOLDOUT)
    assert drift.mase is not None
    assert drift.dm_pvalue is not None
    strict = promotion_gate(drift, 1.1, max_pvalue=1e-6)
    assert not strict.passed
    assert "not significantly better" in strict.detail


def test_records_and_metrics_are_consistent() -> None:
    closes = random_walk(500, seed=4)
    evaluation = walk_forward(Algorithm.DRIFT, {}, closes, holdout_fraction=0.3, horizon=5, level=0.9)
    records = evaluation.records
    assert evaluation.train_count == 350
    assert evaluation.forecast_count == 500 - 350 - 5 + 1
    assert records.base_index[0] == 349
    assert records.base_index[-1] == 494
    np.testing.assert_array_equal(records.actual, closes[records.base_index + 5])
    np.testing.assert_array_equal(records.base, closes[records.base_index])
    errors = np.abs(records.predicted - records.actual)
    assert evaluation.mae == pytest.approx(errors.mean())
    assert evaluation.rmse == pytest.approx(np.sqrt((errors**2).mean()))
    assert evaluation.mape == pytest.approx((errors / records.actual).mean())
    assert evaluation.mase == pytest.approx(errors.mean() / np.abs(records.base - records.actual).mean())
    inside = (records.actual >= records.lower) & (records.actual <= records.upper)
    assert evaluation.interval_coverage == pytest.approx(inside.mean())
    assert evaluation.level == 0.9
    assert evaluation.directional_accuracy_ci_level == 0.95


def test_refitting_during_the_walk_forward() -> None:
    closes = random_walk(400, seed=5)
    model = catalogue.create(Algorithm.DRIFT)
    model.fit(closes[:300])
    evaluation = evaluate_forecaster(model, closes, train_count=300, refit_every=25)
    assert evaluation.forecast_count == 100
    assert evaluation.refit_count == 3


def test_fit_and_evaluate_reports_stages_and_returns_a_loadable_artifact() -> None:
    events: list[FitProgress] = []
    closes = trending(500, seed=2)
    result = fit_and_evaluate(Algorithm.KALMAN, {}, closes, holdout_fraction=0.2, progress=events.append)
    stages = [event.stage for event in events]
    assert stages[0] is FitStage.PREPARING
    assert FitStage.FITTING in stages
    assert stages[-1] is FitStage.EVALUATING
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert result.gate.passed
    assert result.evaluation.forecast_count == 100
    assert result.fit_seconds >= 0
    model = catalogue.load(result.artifact)
    assert model.algorithm is Algorithm.KALMAN
    np.testing.assert_allclose(model.forecast(closes[:450], 1).mean[0], result.evaluation.records.predicted[50])


def test_minimum_range() -> None:
    assert min_range_bars(Algorithm.NAIVE, {}, holdout_fraction=0.2, horizon=1) == 155
    lstm_training = catalogue.ALGORITHMS[Algorithm.LSTM].min_training_bars()
    assert min_range_bars(Algorithm.LSTM, {}, holdout_fraction=0.2, horizon=1) >= lstm_training / 0.8
    with pytest.raises(ValueError, match="needs at least"):
        walk_forward(Algorithm.ARIMA, {}, random_walk(120, seed=1), holdout_fraction=0.2)


def test_wilson_interval() -> None:
    low, high = wilson_interval(55, 100)
    assert low == pytest.approx(0.4524, abs=1e-4)
    assert high == pytest.approx(0.6438, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def _forecast(mean: float, lower: float, upper: float, level: float = 0.8) -> Forecast:
    return Forecast(np.array([mean]), np.array([lower]), np.array([upper]), level)


def test_direction_has_a_flat_band() -> None:
    assert direction(_forecast(100.05, 95.0, 105.0), 100.0) is Direction.FLAT  # 0.05 < 0.1 × 5
    assert direction(_forecast(100.0, 95.0, 105.0), 100.0) is Direction.FLAT
    assert direction(_forecast(101.0, 96.0, 106.0), 100.0) is Direction.UP
    assert direction(_forecast(99.0, 94.0, 104.0), 100.0) is Direction.DOWN


def test_confidence_follows_the_uncertainty_and_the_record() -> None:
    sure, unsure = _forecast(105.0, 103.0, 107.0), _forecast(101.0, 90.0, 112.0)
    assert model_probability(sure, 100.0) > 0.99
    assert 0.5 < model_probability(unsure, 100.0) < 0.6
    values = [
        confidence(sure, 100.0, None, 0),
        confidence(unsure, 100.0, None, 0),
        confidence(sure, 100.0, 0.9, 500),
        confidence(sure, 100.0, 0.9, 5),
        confidence(sure, 100.0, 0.2, 500),
        confidence(_forecast(100.0, 95.0, 105.0), 100.0, 0.5, 50),
    ]
    assert all(0.0 <= value <= 1.0 for value in values)
    assert values[0] > values[1]  # a clear expected move is more confident
    assert values[2] > values[3] > values[0]  # a long good record counts more than a short one
    assert values[4] < 0.5 + 0.5 * 0.25 < values[0] <= 0.75  # unproven: at most 0.75; a bad record drags it down
    assert values[5] == pytest.approx(0.5)


def test_confidence_varies_with_the_data() -> None:
    up = catalogue.create(Algorithm.DRIFT)
    closes = trending(400, seed=3, drift=0.003)
    up.fit(closes)
    walk = catalogue.create(Algorithm.DRIFT)
    walk_closes = random_walk(400, seed=3)
    walk.fit(walk_closes)
    trend_forecast = up.forecast(closes, 10)
    walk_forecast = walk.forecast(walk_closes, 10)
    assert direction(trend_forecast, float(closes[-1])) is Direction.UP
    trend_confidence = confidence(trend_forecast, float(closes[-1]), None, 0)
    walk_confidence = confidence(walk_forecast, float(walk_closes[-1]), None, 0)
    assert 0.5 <= walk_confidence < trend_confidence <= 1.0
    naive = catalogue.create(Algorithm.NAIVE)
    naive.fit(closes)
    assert direction(naive.forecast(closes, 10), float(closes[-1])) is Direction.FLAT
