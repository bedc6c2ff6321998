"""The backtest benchmark's workload: valid generated bars, the crossover signal, and parity with backtesting.py."""

from __future__ import annotations

import numpy as np

from bench import backtest
from services.signal.backtests.engine.engine import run_backtest


def test_generated_bars_are_valid_seeded_and_stay_in_range() -> None:
    bars = backtest.generate_bars(6_000)  # BacktestBars refuses invalid OHLC itself
    again = backtest.generate_bars(6_000)
    np.testing.assert_array_equal(bars.close, again.close)
    assert not np.array_equal(bars.close, backtest.generate_bars(6_000, seed=backtest.SEED + 1).close)
    assert bars.close.min() > 40.0
    assert bars.close.max() < 250.0
    pinned = np.arange(backtest.SEGMENT_BARS - 1, 6_000, backtest.SEGMENT_BARS)
    np.testing.assert_allclose(bars.close[pinned], 100.0, rtol=1e-12)


def test_crossover_signal_marks_only_the_crossing_bars() -> None:
    fast = np.array([np.nan, 1.0, 3.0, 3.0, 1.0, 1.0, 2.0])
    slow = np.array([np.nan, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    signal = backtest.crossover_signal(fast, slow)
    np.testing.assert_array_equal(signal, [np.nan, np.nan, 1.0, np.nan, 0.0, np.nan, np.nan])


def test_bullant_and_backtesting_py_make_the_same_trades() -> None:
    bars = backtest.generate_bars(3_000)
    result = run_backtest(bars, backtest.bullant_signal(bars), backtest.bullant_config())
    _, reference = backtest.time_backtesting_py(bars, 1)
    assert len(result.trades) == reference.trades > 20
    np.testing.assert_array_equal(result.trades.quantity, reference.quantities)
    assert abs(result.metrics.final_equity - reference.final_equity) <= 1e-9 * reference.final_equity
