"""Backtest engine: backtesting.py parity on its SMA crossover, exits, costs, sizing, look-ahead, metrics, sweeps."""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from backtesting import Backtest, Strategy  # type: ignore[import-untyped]
from backtesting.lib import crossover  # type: ignore[import-untyped]
from backtesting.test import GOOG, SMA  # type: ignore[import-untyped]

from services.signal.backtests.engine.config import (
    BacktestConfig,
    BacktestMetric,
    CommissionModel,
    ExitReason,
    FillTiming,
    FixedFraction,
    FixedQuantity,
    VolatilityTarget,
)
from services.signal.backtests.engine.engine import BacktestBars, BacktestResult, run_backtest
from services.signal.backtests.engine.kernel import Array
from services.signal.backtests.engine.metrics import (
    annual_volatility,
    bars_per_year,
    cagr,
    drawdowns,
    max_drawdown_duration,
    sharpe_ratio,
    sortino_ratio,
    trade_statistics,
)
from services.signal.backtests.engine.sizing import rolling_volatility
from services.signal.backtests.engine.sweep import rank_key, sweep

T0 = np.datetime64("2024-01-01T00:00", "ns")
DAY = timedelta(days=1)
NAN = math.nan


# --- helpers -------------------------------------------------------------------------------------------------------


def make_bars(rows: list[tuple[float, float, float, float]]) -> BacktestBars:
    """Daily bars from (open, high, low, close) rows."""
    opens, highs, lows, closes = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    times = T0 + np.arange(len(rows)) * np.timedelta64(1, "D")
    return BacktestBars(times, opens, highs, lows, closes, np.ones(len(rows)), DAY)


def flat(price: float) -> tuple[float, float, float, float]:
    return price, price, price, price


def events(count: int, targets: Mapping[int, float]) -> Array:
    """A signal that is NaN (no change) except at the given bars."""
    signal = np.full(count, NAN)
    for bar, target in targets.items():
        signal[bar] = target
    return signal


def config(**overrides: Any) -> BacktestConfig:
    """10,000 cash, fractional, no costs, unless overridden."""
    settings: dict[str, Any] = {"initial_cash": 10_000.0, "allow_fractional": True}
    settings.update(overrides)
    return BacktestConfig(**settings)


def random_bars(count: int, seed: int) -> BacktestBars:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, count)))
    opens = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0.0, 0.005, count))
    high = np.maximum(opens, close) * (1.0 + rng.uniform(0.0, 0.02, count))
    low = np.minimum(opens, close) * (1.0 - rng.uniform(0.0, 0.02, count))
    times = T0 + np.arange(count) * np.timedelta64(1, "h")
    return BacktestBars(times, opens, high, low, close, np.ones(count), timedelta(hours=1))


def goog_bars() -> BacktestBars:
    return BacktestBars(
        GOOG.index.values, GOOG.Open.values, GOOG.High.values, GOOG.Low.values, GOOG.Close.values,
        GOOG.Volume.values, DAY,
    )  # fmt: skip


def sma(values: Array, period: int) -> Array:
    result = np.full(values.shape[0], NAN)
    result[period - 1 :] = np.lib.stride_tricks.sliding_window_view(values, period).mean(axis=1)
    return result


def sma_cross_signal(close: Array, fast: int, slow: int) -> Array:
    """backtesting.lib.crossover on every bar: +1 when fast crosses above slow, -1 below, NaN otherwise."""
    a, b = sma(close, fast), sma(close, slow)
    up = np.zeros(close.shape[0], dtype=bool)
    down = np.zeros(close.shape[0], dtype=bool)
    up[1:] = (a[:-1] < b[:-1]) & (a[1:] > b[1:])
    down[1:] = (b[:-1] < a[:-1]) & (b[1:] > a[1:])
    return np.where(up, 1.0, np.where(down, -1.0, NAN))


# --- parity with backtesting.py ------------------------------------------------------------------------------------


def sma_cross_strategy(*, on_close: bool, stop_loss: float | None, take_profit: float | None) -> type:
    """backtesting.py's canonical SmaCross; with stops, the levels are set from the price the order will fill at
    (peeking at the next open when filling there) so they equal the engine's fractions of the entry price."""

    class SmaCross(Strategy):  # type: ignore[misc]
        n1 = 10
        n2 = 20

        def init(self) -> None:
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def levels(self, side: int) -> dict[str, float]:
            bar = len(self.data)
            if stop_loss is None or take_profit is None or (not on_close and bar >= len(GOOG)):
                return {}
            fill = float(self.data.Close[-1]) if on_close else float(GOOG.Open.iloc[bar])
            return {"sl": fill * (1.0 - side * stop_loss), "tp": fill * (1.0 + side * take_profit)}

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy(**self.levels(1))
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell(**self.levels(-1))

    return SmaCross


def run_reference(*, on_close: bool = False, finalize: bool = False, stops: tuple[float, float] | None = None) -> Any:
    strategy = sma_cross_strategy(on_close=on_close, stop_loss=stops and stops[0], take_profit=stops and stops[1])
    backtest = Backtest(
        GOOG, strategy, cash=10_000, commission=0.002, exclusive_orders=True, trade_on_close=on_close,
        finalize_trades=finalize,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some trades remain open" when not finalizing
        return backtest.run()


def run_engine(*, on_close: bool = False, close_at_end: bool = False, stops: tuple[float, float] | None = None):  # type: ignore[no-untyped-def]
    settings = config(
        commission=CommissionModel(rate=0.002),
        allow_short=True,
        allow_fractional=False,
        close_at_end=close_at_end,
        fill_timing=FillTiming.SIGNAL_BAR_CLOSE if on_close else FillTiming.NEXT_BAR_OPEN,
        stop_loss=stops and stops[0],
        take_profit=stops and stops[1],
    )
    return run_backtest(goog_bars(), sma_cross_signal(GOOG.Close.values, 10, 20), settings)


def assert_same_trades(ours: BacktestResult, reference: Any) -> None:
    """`reference` is backtesting.py's stats._trades frame."""
    trades = ours.trades
    assert len(trades) == len(reference)
    np.testing.assert_array_equal(trades.entry_bar, reference.EntryBar.values)
    np.testing.assert_array_equal(trades.exit_bar, reference.ExitBar.values)
    np.testing.assert_array_equal(trades.entry_price, reference.EntryPrice.values)
    np.testing.assert_array_equal(trades.exit_price, reference.ExitPrice.values)
    np.testing.assert_array_equal(trades.side * trades.quantity, reference.Size.values)
    np.testing.assert_allclose(trades.pnl, reference.PnL.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trades.fees, reference.Commission.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trades.return_fraction, reference.ReturnPct.values, rtol=0, atol=1e-12)


def test_sma_cross_matches_backtesting_py() -> None:
    stats = run_reference()
    finalized = run_reference(finalize=True)
    ours = run_engine()
    metrics = ours.metrics

    assert_same_trades(ours, stats._trades)
    np.testing.assert_array_equal(ours.trades.entry_time, stats._trades.EntryTime.values)
    np.testing.assert_array_equal(ours.trades.exit_time, stats._trades.ExitTime.values)
    assert metrics.trade_count == stats["# Trades"] == 93
    assert metrics.final_equity == pytest.approx(stats["Equity Final [$]"], rel=1e-6)
    np.testing.assert_allclose(ours.equity_curve.equity, stats._equity_curve.Equity.values, rtol=1e-9)
    np.testing.assert_allclose(ours.equity_curve.drawdown, stats._equity_curve.DrawdownPct.values, atol=1e-12)
    assert metrics.total_return * 100 == pytest.approx(stats["Return [%]"], rel=1e-9)
    assert -metrics.max_drawdown * 100 == pytest.approx(stats["Max. Drawdown [%]"], rel=1e-9)
    assert metrics.max_drawdown_duration == stats["Max. Drawdown Duration"].to_pytimedelta()
    assert metrics.win_rate is not None
    assert metrics.win_rate * 100 == pytest.approx(stats["Win Rate [%]"], rel=1e-12)
    # backtesting.py counts bars from each closed trade's entry to its exit inclusive, so its exposure leaves out the
    # position still open at the end unless trades are finalized; then it equals ours (bars held at the close).
    assert metrics.exposure * 100 == pytest.approx(finalized["Exposure Time [%]"], rel=1e-12)
    assert ours.open_position == stats._trades.Size.iloc[-1] * -1  # the last reversal is still open
    # Its profit factor sums trade returns, not money; from our trades' returns it is the same number.
    returns = ours.trades.return_fraction
    assert returns[returns > 0].sum() / -returns[returns < 0].sum() == pytest.approx(stats["Profit Factor"], rel=1e-9)


def test_end_of_data_close_at_the_last_close() -> None:
    stats = run_reference()
    ours = run_engine(close_at_end=True)
    assert len(ours.trades) == 94
    assert_same_trades(dataclasses.replace(ours, trades=_first(ours, 93)), stats._trades)
    last = ours.trades[93]
    assert last.exit_reason is ExitReason.END_OF_DATA
    assert last.exit_price == GOOG.Close.iloc[-1]
    assert last.exit_time == GOOG.index[-1].to_pydatetime().replace(tzinfo=UTC) + DAY
    exit_fee = last.quantity * last.exit_price * 0.002
    assert ours.metrics.final_equity == pytest.approx(stats["Equity Final [$]"] - exit_fee, rel=1e-12)
    assert ours.open_position == 0.0


def _first(result: BacktestResult, count: int) -> Any:
    trades = result.trades
    return type(trades)(*(getattr(trades, field.name)[:count] for field in dataclasses.fields(trades)))


@pytest.mark.parametrize(("on_close", "stops"), [(False, (0.08, 0.15)), (True, None), (True, (0.08, 0.15))])
def test_fill_timings_and_stops_match_backtesting_py(on_close: bool, stops: tuple[float, float] | None) -> None:
    stats = run_reference(on_close=on_close, stops=stops)
    ours = run_engine(on_close=on_close, stops=stops)
    assert_same_trades(ours, stats._trades)
    assert ours.metrics.final_equity == pytest.approx(stats["Equity Final [$]"], rel=1e-9)
    if stops:
        reasons = set(ours.trades.exit_reason.tolist())
        assert {ExitReason.STOP_LOSS, ExitReason.TAKE_PROFIT} <= reasons
    # With trade_on_close backtesting.py books a close fill on the next bar's equity point; elsewhere they agree.
    fill_bars = np.union1d(ours.trades.entry_bar, ours.trades.exit_bar) if on_close else np.array([], dtype=np.int64)
    elsewhere = np.setdiff1d(np.arange(len(GOOG)), fill_bars)
    np.testing.assert_allclose(
        ours.equity_curve.equity[elsewhere], stats._equity_curve.Equity.values[elsewhere], rtol=1e-9
    )


# --- protective exits on hand-made bars ----------------------------------------------------------------------------


def single_trade(rows: list[tuple[float, float, float, float]], target: float = 1.0, **overrides: Any):  # type: ignore[no-untyped-def]
    result = run_backtest(make_bars(rows), events(len(rows), {0: target}), config(**overrides))
    assert len(result.trades) == 1
    return result, result.trades[0]


def test_stop_loss_fills_at_its_level_inside_the_bar() -> None:
    rows = [flat(100), (100, 101, 99, 100), (99, 100, 94, 96), flat(96)]
    result, trade = single_trade(rows, stop_loss=0.05)
    assert (trade.entry_bar, trade.entry_price, trade.quantity) == (1, 100.0, 100.0)
    assert trade.exit_reason is ExitReason.STOP_LOSS
    assert (trade.exit_bar, trade.bar_count) == (2, 1)
    assert trade.exit_price == pytest.approx(95.0, rel=1e-15)
    assert trade.exit_time == datetime(2024, 1, 3, tzinfo=UTC)  # the open of the bar that touched the stop
    assert trade.pnl == pytest.approx(-500.0)
    np.testing.assert_allclose(result.equity_curve.equity, [10_000, 10_000, 9_500, 9_500])
    assert result.metrics.exposure == 0.25


def test_a_level_gapped_through_fills_at_the_open() -> None:
    _, stopped = single_trade([flat(100), flat(100), (90, 92, 89, 91), flat(91)], stop_loss=0.05)
    assert (stopped.exit_price, stopped.exit_reason) == (90.0, ExitReason.STOP_LOSS)
    _, taken = single_trade([flat(100), flat(100), (115, 118, 114, 117), flat(117)], take_profit=0.1)
    assert (taken.exit_price, taken.exit_reason) == (115.0, ExitReason.TAKE_PROFIT)


def test_take_profit_fills_at_its_level() -> None:
    _, trade = single_trade([flat(100), flat(100), (101, 112, 100, 111), flat(111)], take_profit=0.1)
    assert trade.exit_reason is ExitReason.TAKE_PROFIT
    assert trade.exit_price == pytest.approx(110.0, rel=1e-15)


def test_stop_and_take_profit_in_one_bar_books_the_stop() -> None:
    _, trade = single_trade([flat(100), flat(100), (100, 111, 94, 100), flat(100)], stop_loss=0.05, take_profit=0.1)
    assert trade.exit_reason is ExitReason.STOP_LOSS
    assert trade.exit_price == pytest.approx(95.0, rel=1e-15)


def test_stop_can_fill_in_the_entry_bar() -> None:
    _, trade = single_trade([flat(100), (100, 101, 94, 99), flat(99)], stop_loss=0.05)
    assert (trade.entry_bar, trade.exit_bar, trade.bar_count) == (1, 1, 0)
    assert trade.exit_price == pytest.approx(95.0, rel=1e-15)


def test_trailing_stop_trails_the_best_price_of_earlier_bars() -> None:
    rows = [flat(100), (100, 105, 99, 104), (104, 120, 103, 118), (118, 130, 107.5, 110), flat(110)]
    _, trade = single_trade(rows, trailing_stop=0.1)
    # Bar 3's own high (130) does not count for bar 3: the level there is 120 × 0.9, touched by the low of 107.5.
    assert (trade.exit_bar, trade.exit_reason) == (3, ExitReason.TRAILING_STOP)
    assert trade.exit_price == pytest.approx(108.0, rel=1e-15)


def test_short_exits_mirror_long_ones() -> None:
    rows = [flat(100), flat(100), (101, 106, 100, 103), flat(103)]
    _, stopped = single_trade(rows, target=-1.0, allow_short=True, stop_loss=0.05)
    assert (stopped.side, stopped.exit_reason) == (-1, ExitReason.STOP_LOSS)
    assert stopped.exit_price == pytest.approx(105.0, rel=1e-15)
    assert stopped.pnl == pytest.approx(-500.0)
    _, taken = single_trade(
        [flat(100), flat(100), (99, 100, 89, 92), flat(92)], -1.0, allow_short=True, take_profit=0.1
    )
    assert taken.exit_price == pytest.approx(90.0, rel=1e-15)
    assert taken.pnl == pytest.approx(1_000.0)
    rows = [flat(100), (100, 101, 90, 91), (91, 100.5, 90.5, 99), flat(99)]
    _, trailed = single_trade(rows, -1.0, allow_short=True, trailing_stop=0.1)
    assert (trailed.exit_bar, trailed.exit_reason) == (2, ExitReason.TRAILING_STOP)
    assert trailed.exit_price == pytest.approx(99.0, rel=1e-15)


def test_signal_bar_close_entries_are_not_stopped_by_their_own_bar() -> None:
    rows = [flat(100), (100, 100, 90, 100), (99, 100, 94, 96), flat(96)]
    signal = events(4, {1: 1.0})
    result = run_backtest(make_bars(rows), signal, config(stop_loss=0.05, fill_timing=FillTiming.SIGNAL_BAR_CLOSE))
    trade = result.trades[0]
    assert (trade.entry_bar, trade.exit_bar) == (1, 2)
    assert trade.exit_price == pytest.approx(95.0, rel=1e-15)
    assert trade.entry_time == datetime(2024, 1, 3, tzinfo=UTC)  # bar 1's close


def test_after_a_stop_only_a_new_target_reenters() -> None:
    rows = [flat(100), flat(100), (99, 100, 94, 96), flat(96), flat(97), flat(98)]
    once = run_backtest(make_bars(rows), events(6, {0: 1.0}), config(stop_loss=0.05))
    assert len(once.trades) == 1
    assert once.equity_curve.position[-1] == 0.0
    repeated = run_backtest(make_bars(rows), np.ones(6), config(stop_loss=0.05, close_at_end=False))
    assert [trade.entry_bar for trade in repeated.trades] == [1]
    assert repeated.open_position > 0  # re-entered at bar 3's open on bar 2's repeated +1
    assert repeated.equity_curve.position[3] == pytest.approx(9_500 / 96)


# --- costs and sizing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fractional", [True, False])
def test_commission_and_slippage_arithmetic(fractional: bool) -> None:
    rows = [flat(100), (100, 106, 99, 105), (110, 111, 109, 110)]
    settings = config(
        commission=CommissionModel(rate=0.001, fixed_per_fill=1.0), slippage_bps=10.0, allow_fractional=fractional
    )
    result = run_backtest(make_bars(rows), events(3, {0: 1.0, 1: 0.0}), settings)
    entry = 100 * 1.001
    quantity = (10_000 - 1) / (entry * 1.001)
    quantity = quantity if fractional else math.floor(quantity)
    entry_fee = quantity * entry * 0.001 + 1
    exit_price = 110 * 0.999
    exit_fee = quantity * exit_price * 0.001 + 1
    pnl = quantity * (exit_price - entry) - entry_fee - exit_fee
    trade = result.trades[0]
    assert trade.entry_price == pytest.approx(entry, rel=1e-15)
    assert trade.exit_price == pytest.approx(exit_price, rel=1e-15)
    assert trade.quantity == pytest.approx(quantity, rel=1e-12)
    assert trade.fees == pytest.approx(entry_fee + exit_fee, rel=1e-12)
    assert trade.pnl == pytest.approx(pnl, rel=1e-12)
    assert trade.return_fraction == pytest.approx(pnl / (quantity * entry), rel=1e-12)
    cash_in_position = 10_000 - quantity * entry - entry_fee
    assert result.equity_curve.cash[1] == pytest.approx(cash_in_position, rel=1e-12)
    assert result.equity_curve.equity[1] == pytest.approx(cash_in_position + quantity * 105, rel=1e-12)
    assert result.metrics.final_equity == pytest.approx(10_000 + pnl, rel=1e-12)
    assert result.metrics.total_fees == pytest.approx(entry_fee + exit_fee, rel=1e-12)


def test_fixed_quantity_sizing_rounds_down_to_lots() -> None:
    rows = [flat(100), flat(100), flat(101), flat(102)]
    signal = events(4, {0: 1.0, 1: -1.0})
    whole = run_backtest(make_bars(rows), signal, config(sizing=FixedQuantity(quantity=2.5), allow_fractional=False))
    assert [trade.quantity for trade in whole.trades] == [2.0]
    lots = config(sizing=FixedQuantity(quantity=2.37), allow_fractional=False, lot_size=0.1, allow_short=True)
    assert [trade.quantity for trade in run_backtest(make_bars(rows), signal, lots).trades] == [
        pytest.approx(2.3),
        pytest.approx(2.3),
    ]
    with pytest.raises(ValueError, match="less than one lot"):
        config(sizing=FixedQuantity(quantity=0.5), allow_fractional=False)


def test_fixed_fraction_sizing_uses_equity_at_the_fill() -> None:
    rows = [flat(100), flat(100), flat(120), flat(120), flat(120)]
    signal = events(5, {0: 1.0, 1: 0.0, 2: 1.0})
    settings = config(
        sizing=FixedFraction(fraction=0.5), commission=CommissionModel(rate=0.002), allow_fractional=False
    )
    first, second = run_backtest(make_bars(rows), signal, settings).trades
    assert first.quantity == math.floor(5_000 / (100 * 1.002)) == 49
    equity = 10_000 + first.pnl
    assert second.quantity == math.floor(equity * 0.5 / (120 * 1.002))


def test_rolling_volatility_is_the_sample_deviation_of_past_returns() -> None:
    close = random_bars(200, seed=3).close
    expected = np.full(200, NAN)
    returns = close[1:] / close[:-1] - 1
    expected[10:] = np.std(np.lib.stride_tricks.sliding_window_view(returns, 10), axis=1, ddof=1)
    np.testing.assert_allclose(rolling_volatility(close, 10), expected, rtol=1e-12)


def test_volatility_target_sizes_from_past_bars_only() -> None:
    bars = random_bars(60, seed=4)
    signal = events(60, {3: 1.0, 30: 1.0})
    settings = config(sizing=VolatilityTarget(annual_volatility=0.2, lookback_bars=10, max_fraction=2.0))
    (trade,) = run_backtest(bars, signal, settings).trades  # the entry signalled on bar 3 has no estimate yet
    window = bars.close[20:31]
    sigma = statistics.stdev((window[1:] / window[:-1] - 1).tolist())
    fraction = min(0.2 / (sigma * math.sqrt(252)), 2.0)
    assert trade.entry_bar == 31
    assert trade.quantity == pytest.approx(10_000 * fraction / bars.open[31], rel=1e-12)
    high, close = bars.high.copy(), bars.close.copy()
    high[31:] *= 1.5
    close[31:] *= 1.3  # prices after the signal bar (the fill bar's close included) change nothing ...
    (again,) = run_backtest(dataclasses.replace(bars, high=high, close=close), signal, settings).trades
    assert again.quantity == trade.quantity
    close[30] *= 1.01  # ... while the signal bar's close is part of the estimate
    high[30] = max(high[30], close[30])
    (moved,) = run_backtest(dataclasses.replace(bars, high=high, close=close), signal, settings).trades
    assert moved.quantity != trade.quantity


def test_long_only_mode_ignores_shorts() -> None:
    bars = random_bars(300, seed=5)
    signal = sma_cross_signal(bars.close, 5, 20)
    long_only = run_backtest(bars, signal, config())
    assert len(long_only.trades) > 5
    assert set(long_only.trades.side.tolist()) == {1}
    assert long_only.equity_curve.position.min() == 0.0
    both = run_backtest(bars, signal, config(allow_short=True))
    np.testing.assert_array_equal(long_only.trades.entry_bar, both.trades.entry_bar[both.trades.side == 1])


# --- look-ahead, edge cases, validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("timing", list(FillTiming))
def test_no_look_ahead(timing: FillTiming) -> None:
    bars = random_bars(400, seed=6)
    rng = np.random.default_rng(7)
    signal = rng.choice([1.0, -1.0, 0.0, NAN, NAN, NAN], size=400)
    settings = config(
        fill_timing=timing, allow_short=True, commission=CommissionModel(rate=0.001, fixed_per_fill=0.5),
        slippage_bps=2.0, stop_loss=0.03, take_profit=0.05, trailing_stop=0.04,
        sizing=VolatilityTarget(annual_volatility=0.1, lookback_bars=12), periods_per_year=24 * 365,
    )  # fmt: skip
    full = run_backtest(bars, signal, settings)
    other = random_bars(400, seed=8)
    for cut in (50, 137, 399):

        def splice(name: str, cut: int = cut) -> Array:
            return np.concatenate((getattr(bars, name)[:cut], getattr(other, name)[cut:]))

        changed = dataclasses.replace(
            bars, open=splice("open"), high=splice("high"), low=splice("low"), close=splice("close")
        )
        changed_signal = np.concatenate((signal[:cut], -np.nan_to_num(signal[cut:], nan=1.0)))
        partial = run_backtest(changed, changed_signal, settings)
        for name in ("equity", "cash", "position"):
            np.testing.assert_array_equal(
                getattr(partial.equity_curve, name)[:cut], getattr(full.equity_curve, name)[:cut]
            )
        done = int(np.sum(full.trades.exit_bar < cut))
        np.testing.assert_array_equal(partial.trades.exit_bar[:done], full.trades.exit_bar[:done])
        np.testing.assert_array_equal(partial.trades.pnl[:done], full.trades.pnl[:done])


def test_empty_signal_means_no_trades_and_flat_equity() -> None:
    bars = random_bars(100, seed=9)
    result = run_backtest(bars, np.full(100, NAN), config())
    assert len(result.trades) == 0
    np.testing.assert_array_equal(result.equity_curve.equity, np.full(100, 10_000.0))
    metrics = result.metrics
    assert (metrics.total_return, metrics.max_drawdown, metrics.exposure, metrics.trade_count) == (0.0, 0.0, 0.0, 0)
    assert metrics.sharpe is metrics.sortino is metrics.win_rate is metrics.profit_factor is None
    assert metrics.buy_and_hold_return == pytest.approx(bars.close[-1] / bars.open[0] - 1)


@pytest.mark.parametrize("cash", [0.0, -100.0, math.nan, math.inf])
def test_non_positive_cash_is_refused(cash: float) -> None:
    with pytest.raises(ValueError, match="initial cash must be a positive amount"):
        BacktestConfig(initial_cash=cash)


def test_invalid_inputs_are_refused() -> None:
    bars = make_bars([flat(100), flat(101)])
    with pytest.raises(ValueError, match=r"bar 1 has 2\.0"):
        run_backtest(bars, [NAN, 2.0], config())
    with pytest.raises(ValueError, match="one value per bar"):
        run_backtest(bars, [1.0], config())
    with pytest.raises(ValueError, match="bar 1 is invalid"):
        make_bars([flat(100), (100, 99, 98, 100)])
    with pytest.raises(ValueError, match="stop_loss"):
        config(stop_loss=1.5)


def test_progress_chunks_and_a_growing_trade_buffer_change_nothing() -> None:
    bars = random_bars(3_000, seed=10)
    signal = np.where(np.arange(3_000) % 2 == 0, 1.0, -1.0)  # a reversal on every bar: ~3,000 trades
    settings = config(allow_short=True, commission=CommissionModel(rate=0.0005))
    calls: list[tuple[int, int]] = []
    chunked = run_backtest(
        bars, signal, settings, progress=lambda done, total: calls.append((done, total)), progress_every=500
    )
    whole = run_backtest(bars, signal, settings)
    assert calls == [(done, 3_000) for done in range(500, 3_001, 500)]
    assert len(whole.trades) == 2_999
    np.testing.assert_array_equal(chunked.trades.pnl, whole.trades.pnl)
    np.testing.assert_array_equal(chunked.equity_curve.equity, whole.equity_curve.equity)


def test_warmup_bars_are_history_only() -> None:
    bars = goog_bars()
    signal = sma_cross_signal(bars.close, 10, 20)
    result = run_backtest(bars, signal, config(allow_short=True), warmup_bars=100)
    assert len(result.equity_curve) == len(bars) - 100
    assert result.trades.entry_bar.min() > 100
    assert result.metrics.buy_and_hold_return == pytest.approx(bars.close[-1] / bars.open[100] - 1)


def test_bars_from_aware_or_naive_datetimes() -> None:
    bars = make_bars([flat(100), flat(101)])
    prices: dict[str, Any] = {name: getattr(bars, name) for name in ("open", "high", "low", "close", "volume")}
    prices["span"] = DAY
    aware = [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, 1, tzinfo=timezone(timedelta(hours=1)))]
    again = BacktestBars.from_datetimes(aware, **prices)
    np.testing.assert_array_equal(again.open_time, bars.open_time)
    naive = [datetime(2024, 1, 1), datetime(2024, 1, 2)]
    np.testing.assert_array_equal(
        BacktestBars.from_datetimes(naive, **prices).open_time,
        bars.open_time,
    )


def test_equity_curve_downsampling_keeps_the_trough_and_the_end() -> None:
    curve = run_backtest(goog_bars(), sma_cross_signal(GOOG.Close.values, 10, 20), config()).equity_curve
    small = curve.downsample(100)
    assert len(small) <= 100
    assert small.drawdown.max() == curve.drawdown.max()
    assert small.equity[-1] == curve.equity[-1]
    assert np.all(np.diff(small.time.astype(np.int64)) > 0)


# --- metrics against hand computations -----------------------------------------------------------------------------


def test_cagr_sharpe_sortino_and_volatility_by_hand() -> None:
    assert cagr(100.0, 121.0, 2.0) == pytest.approx(0.1)
    assert cagr(100.0, 0.0, 1.0) == -1.0
    returns = np.array([0.01, -0.02, 0.03, 0.0, 0.01])
    deviation = statistics.stdev(returns.tolist())
    assert annual_volatility(returns, 252) == pytest.approx(deviation * math.sqrt(252))
    assert sharpe_ratio(returns, 252) == pytest.approx(0.006 / deviation * math.sqrt(252))
    assert sortino_ratio(returns, 252) == pytest.approx(0.006 / math.sqrt(0.02**2 / 5) * math.sqrt(252))
    daily_rf = 1.05 ** (1 / 252) - 1
    assert sharpe_ratio(returns, 252, 0.05) == pytest.approx((0.006 - daily_rf) / deviation * math.sqrt(252))
    assert sharpe_ratio(np.full(5, 0.01), 252) is None
    assert sortino_ratio(np.full(5, 0.01), 252) is None


def test_engine_cagr_uses_calendar_time_from_first_open_to_last_close() -> None:
    result = run_backtest(goog_bars(), sma_cross_signal(GOOG.Close.values, 10, 20), config())
    years = (GOOG.index[-1] + DAY - GOOG.index[0]).total_seconds() / (365.25 * 86_400)
    assert result.metrics.cagr == pytest.approx((result.metrics.final_equity / 10_000) ** (1 / years) - 1, rel=1e-12)


def test_max_drawdown_and_its_duration_by_hand() -> None:
    equity = np.array([110.0, 99.0, 105.0, 111.0, 100.0])
    times = T0 + np.arange(6) * np.timedelta64(1, "D")  # range start, then each bar's close
    np.testing.assert_allclose(drawdowns(equity, 100.0), [0, 0.1, 1 - 105 / 110, 0, 1 - 100 / 111])
    assert max_drawdown_duration(equity, 100.0, times) == (timedelta(days=3), 3)
    assert max_drawdown_duration(np.array([110.0, 99.0, 98.0]), 100.0, times[:4]) == (timedelta(days=2), 2)
    assert max_drawdown_duration(np.array([90.0, 95.0, 101.0]), 100.0, times[:4]) == (timedelta(days=3), 3)
    assert max_drawdown_duration(np.array([101.0, 102.0, 99.0]), 100.0, times[:4]) == (timedelta(days=1), 1)
    assert max_drawdown_duration(np.array([100.0, 101.0]), 100.0, times[:3]) == (timedelta(0), 0)


def test_trade_statistics_by_hand() -> None:
    stats = trade_statistics(np.array([10.0, -5.0, 20.0, -10.0, 0.0]), np.array([0.1, -0.05, 0.2, -0.1, 0.0]))
    assert (stats.win_rate, stats.profit_factor, stats.average_win, stats.average_loss) == (0.4, 2.0, 15.0, -7.5)
    assert (stats.best_trade_return, stats.worst_trade_return) == (0.2, -0.1)
    assert stats.average_trade_return == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("span", "days", "hours", "expected"),
    [
        (timedelta(minutes=1), 365, 24, 525_600),
        (timedelta(minutes=5), 365, 24, 105_120),
        (timedelta(minutes=15), 252, 6.5, 6_552),
        (timedelta(hours=1), 252, 6.5, 1_638),
        (timedelta(days=1), 252, 6.5, 252),
        (timedelta(days=1), 365, 24, 365),
    ],
)
def test_bars_per_year(span: timedelta, days: float, hours: float, expected: float) -> None:
    assert bars_per_year(span, days_per_year=days, hours_per_day=hours) == pytest.approx(expected)


# --- parameter sweep -----------------------------------------------------------------------------------------------


def test_sweep_ranks_by_the_metric_with_undefined_values_last() -> None:
    bars = goog_bars()
    grid = {"fast": [5, 10, 20], "slow": [20, 50]}  # fast = slow = 20 never crosses: no trades, no Sharpe
    settings = config(allow_short=True, commission=CommissionModel(rate=0.002))
    calls: list[int] = []

    def signal_for(parameters: Mapping[str, Any]) -> Array:
        return sma_cross_signal(bars.close, int(parameters["fast"]), int(parameters["slow"]))

    outcome = sweep(
        bars, signal_for, grid, settings, rank_by=BacktestMetric.SHARPE, progress=lambda d, t: calls.append(d)
    )
    sharpes = [result.metrics.sharpe for result in outcome.results]
    assert [result.rank for result in outcome.results] == list(range(1, 7))
    assert outcome.results[-1].parameters == {"fast": 20, "slow": 20}
    assert sharpes[-1] is None
    defined = [value for value in sharpes if value is not None]
    assert defined == sorted(defined, reverse=True)
    assert outcome.best.metrics == outcome.results[0].metrics
    assert calls == [1, 2, 3, 4, 5, 6]

    by_drawdown = sweep(bars, signal_for, grid, settings, rank_by=BacktestMetric.MAX_DRAWDOWN)
    drawdown_order = [result.metrics.max_drawdown for result in by_drawdown.results]
    assert drawdown_order == sorted(drawdown_order)  # lower is better; the no-trade run (0) comes first

    metrics = outcome.results[0].metrics
    assert rank_key(dataclasses.replace(metrics, sharpe=math.nan), BacktestMetric.SHARPE) > rank_key(
        dataclasses.replace(metrics, sharpe=-1e9), BacktestMetric.SHARPE
    )
    with pytest.raises(ValueError, match="more than 4"):
        sweep(bars, signal_for, grid, settings, max_combinations=4)
