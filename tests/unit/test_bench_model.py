"""The model benchmark's workload: seeded closes, valid bars around them, and the in-process baseline."""

from __future__ import annotations

import itertools

import numpy as np

from bench import model
from services.model.forecasting.base import Algorithm
from services.model.forecasting.catalogue import create


def test_generated_closes_are_seeded_positive_and_plausible() -> None:
    closes = model.generate_closes()
    np.testing.assert_array_equal(closes, model.generate_closes())
    assert not np.array_equal(closes, model.generate_closes(seed=model.SEED + 1))
    assert closes.shape == (model.BARS,)
    assert closes.dtype == np.float64
    assert np.all(closes > 0)
    daily = np.diff(np.log(closes))
    assert 0.01 < daily.std() < 0.02  # about 25 % a year


def test_bars_are_valid_daily_ohlc_around_the_closes() -> None:
    closes = model.generate_closes(50)
    bars = model.bar_messages(closes)
    assert [bar.close for bar in bars] == closes.tolist()
    for previous, bar in itertools.pairwise(bars):
        assert bar.open == previous.close
        assert bar.open_time.ToSeconds() - previous.open_time.ToSeconds() == 86_400
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0


def test_quick_runs_limit_only_the_lstm_epochs() -> None:
    assert model.training_parameters(4, quick=True) == {"epochs": 10}
    assert model.training_parameters(4, quick=False) == {}
    assert model.training_parameters(3, quick=True) == {}


def test_the_in_process_baseline_forecasts_from_the_artifact() -> None:
    closes = model.generate_closes(300)
    forecaster = create(Algorithm.DRIFT)
    forecaster.fit(closes)
    latencies = model.in_process_latencies(forecaster.to_bytes(), closes, calls=20, warmup=2)
    assert len(latencies) == 20
    assert all(value > 0 for value in latencies)
    assert model.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
