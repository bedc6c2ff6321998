"""Forecasters: parameters, artifacts, reproducibility, progress and cancellation, the lazy torch import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from statsmodels.tsa.statespace.sarimax import SARIMAX

from services.core.errors import InvalidArgument
from services.core.parameters import ParamType, ParamValue
from services.model.forecasting import catalogue
from services.model.forecasting.arima import ArimaForecaster
from services.model.forecasting.base import (
    Algorithm,
    ArtifactError,
    FitProgress,
    FitStage,
    NotFittedError,
    number,
)
from services.model.forecasting.kalman import KalmanForecaster, Regime
from tests.forecast_series import mean_reverting, random_walk, trending

ROOT = Path(__file__).resolve().parents[2]
SMALL_LSTM: dict[str, ParamValue] = {"epochs": 4, "hidden_size": 8, "window": 10}


class Cancelled(Exception):
    """What a cancelling progress callback raises."""


def small_params(algorithm: Algorithm) -> dict[str, ParamValue]:
    """Cheap parameters for the tests."""
    return dict(SMALL_LSTM) if algorithm is Algorithm.LSTM else {}


def test_catalogue_lists_every_algorithm_with_valid_defaults() -> None:
    assert list(catalogue.ALGORITHMS) == list(Algorithm)
    assert [int(a) for a in Algorithm] == [1, 2, 3, 4, 5, 6]
    for algorithm, definition in catalogue.ALGORITHMS.items():
        assert definition.algorithm is algorithm
        assert definition.description
        assert definition.display_name
        assert definition.baseline is (algorithm in (Algorithm.NAIVE, Algorithm.DRIFT))
        defaults = definition.resolve({})
        assert set(defaults) == {param.name for param in definition.params}
        assert definition.min_training_bars() >= 30
        for param in definition.params:
            assert param.check(param.default) == (param.default, None)
    lstm = {param.name: param for param in catalogue.ALGORITHMS[Algorithm.LSTM].params}
    assert lstm["window"].default == 30
    assert lstm["hidden_size"].default == 32
    assert lstm["epochs"].default == 50
    assert lstm["patience"].default == 5
    assert lstm["learning_rate"].type is ParamType.NUMBER
    arima = {param.name: param for param in catalogue.ALGORITHMS[Algorithm.ARIMA].params}
    assert (arima["max_p"].maximum, arima["max_d"].maximum, arima["max_q"].maximum) == (3, 1, 3)
    ensemble = {param.name: param for param in catalogue.ALGORITHMS[Algorithm.ENSEMBLE].params}
    assert ensemble["include_lstm"].type is ParamType.BOOLEAN
    assert ensemble["include_lstm"].default is False


@pytest.mark.parametrize(
    ("algorithm", "given", "reason", "field", "text"),
    [
        (Algorithm.ARIMA, {"max_r": 1}, "UNKNOWN_PARAMETER", "parameters.max_r", "unknown parameter of arima"),
        (Algorithm.NAIVE, {"window": 3}, "UNKNOWN_PARAMETER", "parameters.window", "known: none"),
        (Algorithm.ARIMA, {"max_p": 4}, "INVALID_PARAMETER", "parameters.max_p", "at most 3"),
        (Algorithm.ARIMA, {"max_q": -1}, "INVALID_PARAMETER", "parameters.max_q", "at least 0"),
        (Algorithm.ARIMA, {"max_p": 1.5}, "INVALID_PARAMETER", "parameters.max_p", "whole number"),
        (Algorithm.LSTM, {"window": True}, "INVALID_PARAMETER", "parameters.window", "whole number"),
        (Algorithm.LSTM, {"learning_rate": "fast"}, "INVALID_PARAMETER", "parameters.learning_rate", "a number"),
        (Algorithm.LSTM, {"learning_rate": float("nan")}, "INVALID_PARAMETER", "parameters.learning_rate", "finite"),
        (Algorithm.ENSEMBLE, {"include_lstm": 1}, "INVALID_PARAMETER", "parameters.include_lstm", "boolean"),
    ],
)
def test_parameter_errors(
    algorithm: Algorithm, given: dict[str, ParamValue], reason: str, field: str, text: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        catalogue.create(algorithm, given)
    assert caught.value.reason == reason
    assert [v.field for v in caught.value.violations] == [field]
    assert text in caught.value.violations[0].description


def test_parameters_resolve_with_defaults_and_numbers_as_floats() -> None:
    values = catalogue.ALGORITHMS[Algorithm.LSTM].resolve({"learning_rate": 0.01, "epochs": 7})
    assert values["learning_rate"] == 0.01
    assert values["epochs"] == 7
    assert values["window"] == 30
    rate = number("rate", "A rate.", 0.5, 0.0, 10.0)
    assert rate.check(2) == (2.0, None)
    assert isinstance(rate.check(2)[0], float)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_artifact_round_trip_gives_identical_forecasts(algorithm: Algorithm) -> None:
    closes = random_walk(600, seed=11)
    model = catalogue.create(algorithm, small_params(algorithm))
    with pytest.raises(NotFittedError):
        model.to_bytes()
    model.fit(closes[:500], seed=3)
    artifact = model.to_bytes()
    restored = catalogue.load(artifact)
    assert type(restored) is type(model)
    assert restored.params == model.params
    for history in (closes[:500], closes):  # the training data, and a history extending past it
        before, after = model.forecast(history, 7, 0.8), restored.forecast(history, 7, 0.8)
        for field in ("mean", "lower", "upper"):
            np.testing.assert_array_equal(getattr(before, field), getattr(after, field))
        assert before.horizon == 7
        assert np.all(before.lower < before.mean)
        assert np.all(before.mean < before.upper)
        assert np.all(np.diff(before.upper - before.lower) > 0)  # the interval widens with the horizon
    assert restored.to_bytes() == artifact


def test_artifacts_are_checked() -> None:
    model = catalogue.create(Algorithm.NAIVE)
    model.fit(random_walk(100, seed=1))
    with pytest.raises(ArtifactError):
        catalogue.load(b"not an artifact")
    with pytest.raises(ArtifactError):
        ArimaForecaster.from_bytes(model.to_bytes())
    with pytest.raises(ArtifactError):
        catalogue.load(model.to_bytes()[:-20])


def test_lstm_is_reproducible_per_seed() -> None:
    closes = random_walk(400, seed=5)

    def fitted(seed: int) -> np.ndarray[tuple[int], np.dtype[np.float64]]:
        model = catalogue.create(Algorithm.LSTM, SMALL_LSTM)
        model.fit(closes, seed=seed)
        return model.forecast(closes, 5).mean

    first, again, other = fitted(1), fitted(1), fitted(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_lstm_reports_epochs_and_stops_early() -> None:
    events: list[FitProgress] = []
    model = catalogue.create(Algorithm.LSTM, {"epochs": 40, "hidden_size": 8, "window": 10, "patience": 2})
    model.fit(random_walk(400, seed=6), seed=0, progress=events.append)
    epochs = [e for e in events if e.epoch is not None]
    assert events[0].stage is FitStage.PREPARING
    assert [e.epoch for e in epochs] == list(range(1, len(epochs) + 1))
    assert all(e.epoch_count == 40 and e.loss is not None and e.validation_loss is not None for e in epochs)
    assert len(epochs) < 40  # early stopping on a random walk
    assert "patience" in epochs[-1].message
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_raising_from_progress_aborts_the_fit(algorithm: Algorithm) -> None:
    calls: list[FitProgress] = []

    def cancel(event: FitProgress) -> None:
        calls.append(event)
        if len(calls) == 2:
            raise Cancelled

    model = catalogue.create(algorithm, small_params(algorithm))
    with pytest.raises(Cancelled):
        model.fit(random_walk(500, seed=2), progress=cancel)
    assert len(calls) == 2
    with pytest.raises(NotFittedError):
        model.to_bytes()


def test_arima_reports_every_candidate_order_and_finds_the_ar1() -> None:
    events: list[FitProgress] = []
    model = ArimaForecaster(ArimaForecaster.resolve({}))
    model.fit(mean_reverting(1000, seed=4, phi=0.7), progress=events.append)
    orders = [e for e in events if e.message.startswith("order (")]
    assert len(orders) == 16
    assert model.order is not None
    assert model.order[1] == 0


def test_arima_forecast_matches_statsmodels_filter() -> None:
    closes = mean_reverting(800, seed=9, phi=0.8)
    model = ArimaForecaster(ArimaForecaster.resolve({"max_d": 0, "max_p": 2, "max_q": 1}))
    model.fit(closes)
    assert model.order is not None
    p, _, q = model.order
    mine = model.forecast(closes, 6, 0.8)
    standardised = (np.log(closes) - model._center) / model._scale
    params = np.concatenate([[model._const], model._phi, model._theta, [model._sigma2]])
    theirs = SARIMAX(standardised, order=(p, 0, q), trend="c").filter(params).get_forecast(6)
    expected = np.asarray(theirs.predicted_mean) * model._scale + model._center
    np.testing.assert_allclose(np.log(mine.mean), expected, rtol=0, atol=1e-6)
    sd = np.sqrt(np.asarray(theirs.var_pred_mean)) * model._scale
    np.testing.assert_allclose(np.log(mine.upper / mine.mean), 1.2815515655446004 * sd, rtol=1e-3)


def test_kalman_trend_state() -> None:
    up = KalmanForecaster({})
    up.fit(trending(600, seed=1, drift=0.002))
    state = up.trend_state()
    assert state.regime is Regime.UP
    assert state.slope == pytest.approx(0.002, rel=0.05)
    assert state.slope_sd > 0
    down = KalmanForecaster({})
    down.fit(trending(600, seed=1, drift=-0.002))
    assert down.trend_state().regime is Regime.DOWN
    flat = KalmanForecaster({})
    closes = random_walk(600, seed=3)
    flat.fit(closes)
    walk = flat.trend_state(closes)
    assert walk.regime is Regime.FLAT
    assert abs(walk.slope) < 1.96 * walk.slope_sd


def test_short_or_bad_inputs_are_refused() -> None:
    model = catalogue.create(Algorithm.ARIMA)
    with pytest.raises(ValueError, match="at least"):
        model.fit(random_walk(20, seed=1))
    with pytest.raises(ValueError, match="positive"):
        model.fit(np.concatenate([random_walk(200, seed=1), [-1.0]]))
    naive = catalogue.create(Algorithm.NAIVE)
    naive.fit(random_walk(100, seed=1))
    with pytest.raises(ValueError, match="horizon"):
        naive.forecast(random_walk(100, seed=1), 0)
    with pytest.raises(ValueError, match="level"):
        naive.forecast(random_walk(100, seed=1), 3, 1.0)


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys; import services.model.forecasting.catalogue, services.model.forecasting.evaluation, "
        "services.model.forecasting.confidence; assert 'torch' not in sys.modules, 'torch imported'"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
