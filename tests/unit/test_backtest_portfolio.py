"""Portfolio backtests: one symbol equals the single engine, shared cash, exits first, calendars, accounting."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from services.signal.backtests.engine.config import (
    BacktestConfig,
    CommissionModel,
    FillTiming,
    FixedFraction,
    FixedQuantity,
    VolatilityTarget,
)
from services.signal.backtests.engine.engine import BacktestBars, BacktestResult, run_backtest
from services.signal.backtests.engine.kernel import Array
from services.signal.backtests.engine.portfolio import PortfolioResult, run_portfolio
from tests.unit.test_backtest_engine import (
    DAY,
    NAN,
    T0,
    config,
    events,
    flat,
    goog_bars,
    make_bars,
    random_bars,
    sma_cross_signal,
)

# --- helpers -------------------------------------------------------------------------------------------------------


def bars_on_days(days: list[int], rows: list[tuple[float, float, float, float]]) -> BacktestBars:
    """Daily bars on the given day numbers (a calendar with gaps)."""
    full = make_bars(rows)
    times = T0 + np.array(days) * np.timedelta64(1, "D")
    return BacktestBars(times, full.open, full.high, full.low, full.close, full.volume, DAY)


def subset(bars: BacktestBars, keep: npt.NDArray[np.bool_]) -> BacktestBars:
    """Only the bars where `keep` is true."""
    return BacktestBars(
        bars.open_time[keep], bars.open[keep], bars.high[keep], bars.low[keep], bars.close[keep], bars.volume[keep],
        bars.span,
    )  # fmt: skip


def random_signal(count: int, seed: int, *, density: float = 0.05) -> Array:
    rng = np.random.default_rng(seed)
    values = rng.choice(np.array([1.0, 0.0, -1.0]), count)
    return np.where(rng.random(count) < density, values, NAN)


def assert_same_as_single(portfolio: PortfolioResult, single: BacktestResult) -> None:
    for field in dataclasses.fields(single.trades):
        np.testing.assert_array_equal(getattr(portfolio.trades, field.name), getattr(single.trades, field.name))
    assert np.all(portfolio.trades.symbol_index == 0)
    for field in dataclasses.fields(single.equity_curve):
        np.testing.assert_array_equal(
            getattr(portfolio.equity_curve, field.name), getattr(single.equity_curve, field.name), err_msg=field.name
        )
    assert portfolio.metrics == single.metrics
    assert portfolio.bar_count == (single.bar_count,)
    assert portfolio.symbol_results[0].open_position == single.open_position


# --- one symbol is the single engine -------------------------------------------------------------------------------

GOOG_COSTS: dict[str, Any] = {"commission": CommissionModel(rate=0.002), "allow_short": True}


@pytest.mark.parametrize(
    ("settings", "warmup"),
    [
        pytest.param({**GOOG_COSTS, "allow_fractional": False}, 0, id="next-open-lots"),
        pytest.param(
            {**GOOG_COSTS, "fill_timing": FillTiming.SIGNAL_BAR_CLOSE, "stop_loss": 0.03, "take_profit": 0.05,
             "close_at_end": False},
            0, id="close-stops-open-at-end",
        ),
        pytest.param(
            {"trailing_stop": 0.04, "slippage_bps": 5.0, "commission": CommissionModel(rate=0.001, fixed_per_fill=2.0),
             "allow_short": True},
            100, id="trailing-slippage-fixed-fee-warmup",
        ),
        pytest.param({**GOOG_COSTS, "sizing": FixedQuantity(quantity=7), "allow_fractional": False}, 30, id="quantity"),
        pytest.param({**GOOG_COSTS, "sizing": FixedFraction(fraction=0.4), "stop_loss": 0.02}, 0, id="fraction"),
        pytest.param(
            {**GOOG_COSTS, "sizing": VolatilityTarget(annual_volatility=0.15, lookback_bars=10), "take_profit": 0.1,
             "fill_timing": FillTiming.SIGNAL_BAR_CLOSE},
            50, id="volatility-target",
        ),
        pytest.param({"allow_short": False}, 0, id="long-only"),
    ],
)  # fmt: skip
def test_one_symbol_equals_the_single_engine(settings: dict[str, Any], warmup: int) -> None:
    bars = goog_bars()
    signal = sma_cross_signal(bars.close, 10, 20)
    built = config(**settings)
    assert_same_as_single(
        run_portfolio([bars], [signal], built, warmup_bars=[warmup]),
        run_backtest(bars, signal, built, warmup_bars=warmup),
    )


def test_one_symbol_equals_the_single_engine_over_many_trades() -> None:
    """Reversals on every bar and frequent stops: thousands of trades, a growing trade buffer, progress chunks."""
    bars = random_bars(3_000, seed=3)
    signal = np.where(np.arange(3_000) % 3 == 0, 1.0, -1.0)
    settings = config(allow_short=True, stop_loss=0.01, slippage_bps=2.0, commission=CommissionModel(rate=0.0005))
    portfolio = run_portfolio([bars], [signal], settings, warmup_bars=[10], progress=lambda *_: None, progress_every=7)
    assert len(portfolio.trades) > 1_500
    assert_same_as_single(portfolio, run_backtest(bars, signal, settings, warmup_bars=10))


# --- shared cash ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "second_quantity"), [(0.5, 100.0), (0.6, 80.0)])
def test_fractions_are_of_total_equity_and_longs_are_capped_by_cash(fraction: float, second_quantity: float) -> None:
    """A at 100 and B at 50 both enter at bar 1's open. At 0.5 each gets half the equity; at 0.6 A takes 6,000 and B
    gets the 4,000 left rather than 6,000 (no leverage)."""
    a, b = make_bars([flat(100)] * 4), make_bars([flat(50)] * 4)
    signal = events(4, {0: 1.0})
    result = run_portfolio(
        [a, b], [signal, signal], config(sizing=FixedFraction(fraction=fraction)), warmup_bars=[0, 0]
    )
    assert list(result.trades.symbol_index) == [0, 1]
    assert list(result.trades.quantity) == [fraction * 100.0, second_quantity]
    assert list(result.trades.entry_bar) == [1, 1]
    assert result.equity_curve.cash.min() >= 0.0
    assert result.metrics.final_equity == pytest.approx(10_000.0)


@pytest.mark.parametrize("timing", [FillTiming.NEXT_BAR_OPEN, FillTiming.SIGNAL_BAR_CLOSE])
def test_an_entry_without_cash_is_skipped_until_an_exit_frees_it(timing: FillTiming) -> None:
    """B (listed first) wants in from bar 1 while A holds all the cash; A's exit frees it at the same timestamp as
    B's next fill, and exits go first, so B enters there with the whole equity."""
    b = make_bars([flat(50)] * 5)
    a = make_bars([flat(100), flat(100), flat(110), flat(120), flat(120)])
    b_signal = np.array([NAN, 1.0, 1.0, 1.0, 1.0])
    a_signal = events(5, {0: 1.0, 2: 0.0})
    settings = config(sizing=FixedFraction(fraction=1.0), fill_timing=timing, close_at_end=False)
    result = run_portfolio([b, a], [b_signal, a_signal], settings, warmup_bars=[0, 0])
    a_trades, b_open = result.trades.for_symbol(1), result.symbol_results[0]
    assert len(a_trades) == 1
    assert len(result.trades.for_symbol(0)) == 0  # B's entry stays open
    freed = a_trades.quantity[0] * a_trades.exit_price[0]
    assert freed == (12_000.0 if timing == FillTiming.NEXT_BAR_OPEN else 11_000.0)
    assert b_open.open_position == freed / 50.0
    # B was flat until A's exit: the equity curve's cash is all in A until then, all in B after.
    entry_point, exit_point = int(a_trades.entry_bar[0]), int(a_trades.exit_bar[0])
    assert np.all(result.equity_curve.cash[entry_point:exit_point] <= 1e-9)
    assert result.equity_curve.cash[exit_point] == pytest.approx(0.0, abs=1e-9)
    assert result.metrics.final_equity == pytest.approx(freed)


def test_rounding_dust_left_by_an_all_in_entry_buys_nothing() -> None:
    """Spending all the cash leaves it at ± rounding error; a positive crumb must not buy B a dust position (which
    would then block B's real entry when A exits)."""
    settings = config(sizing=FixedFraction(fraction=1.0), commission=CommissionModel(rate=0.0013), slippage_bps=3.3)
    for price in np.linspace(97.3, 103.7, 25):
        a = make_bars([flat(100), flat(price), flat(price * 1.01), flat(price), flat(price)])
        b = make_bars([flat(50)] * 5)
        result = run_portfolio(
            [b, a], [np.array([NAN, 1.0, 1.0, 1.0, 1.0]), events(5, {0: 1.0, 2: 0.0})], settings, warmup_bars=[0, 0]
        )
        (b_trade,), (a_trade,) = result.trades.for_symbol(0), result.trades.for_symbol(1)
        assert b_trade.entry_bar == 3
        assert b_trade.quantity * b_trade.entry_price == pytest.approx(a_trade.quantity * a_trade.exit_price, rel=0.01)


def test_symbols_on_different_calendars() -> None:
    """B has no bars on days 2 and 3: its position is marked at its day-1 close there, and its signal of day 1
    fills at its next bar, day 4."""
    a = bars_on_days([0, 1, 2, 3, 4, 5], [flat(100)] * 6)
    b = bars_on_days([0, 1, 4, 5], [flat(50), (50, 56, 49, 55), flat(60), flat(65)])
    b_signal = np.array([1.0, 0.0, NAN, NAN])
    settings = config(sizing=FixedFraction(fraction=1.0))
    result = run_portfolio([a, b], [np.full(6, NAN), b_signal], settings, warmup_bars=[0, 0])
    np.testing.assert_array_equal(result.equity_curve.time, T0 + np.arange(6) * np.timedelta64(1, "D"))
    np.testing.assert_array_equal(result.equity_curve.equity, [10_000, 11_000, 11_000, 11_000, 12_000, 12_000])
    np.testing.assert_array_equal(result.equity_curve.position_value, [0, 11_000, 11_000, 11_000, 0, 0])
    assert np.isnan(result.equity_curve.position).all()  # quantities of two instruments do not add up
    (trade,) = result.trades
    assert (trade.entry_bar, trade.exit_bar) == (1, 2)  # local bars of B
    assert (trade.entry_time, trade.exit_time) == (datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 5, tzinfo=UTC))
    assert trade.pnl == 200 * 10
    assert result.metrics.exposure == 3 / 6
    assert result.bar_count == (6, 4)


def test_benchmark_is_equally_weighted_buy_and_hold_from_each_first_simulated_open() -> None:
    a = bars_on_days([0, 1, 2, 3, 4, 5], [flat(100)] * 6)
    b = bars_on_days([0, 1, 4, 5], [flat(50), (50, 56, 49, 55), flat(60), flat(65)])
    signals = [np.full(6, NAN), np.full(4, NAN)]
    result = run_portfolio([a, b], signals, config(), warmup_bars=[0, 0])
    np.testing.assert_allclose(result.equity_curve.benchmark_equity, [10_000, 10_500, 10_500, 10_500, 11_000, 11_500])
    assert result.metrics.buy_and_hold_return == pytest.approx(0.15)
    assert [symbol.buy_and_hold_return for symbol in result.symbol_results] == [0.0, pytest.approx(0.3)]
    # B warming up for two bars starts at day 4's open (60); until then its half is cash. The curve starts at the
    # earliest first simulated bar, A's day 0.
    late = run_portfolio([a, b], signals, config(), warmup_bars=[0, 2])
    np.testing.assert_allclose(late.equity_curve.benchmark_equity, [10_000] * 5 + [5_000 + 5_000 * 65 / 60])
    assert len(late.equity_curve) == 6
    assert late.bar_count == (6, 2)
    later = run_portfolio([a, b], signals, config(), warmup_bars=[3, 2])
    np.testing.assert_array_equal(later.equity_curve.time, a.open_time[3:])


@pytest.mark.parametrize("close_at_end", [True, False])
@pytest.mark.parametrize("allow_short", [True, False])
def test_fees_and_slippage_are_accounted_for(close_at_end: bool, allow_short: bool) -> None:
    """Final equity = initial cash + Σ trade pnl (+ unrealised pnl of open positions), per symbol pnl adds up to the
    total, trades are in entry order, and longs never borrow."""
    base = [random_bars(800, seed=seed) for seed in (1, 2, 3)]
    rng = np.random.default_rng(9)
    bars = [base[0], subset(base[1], rng.random(800) < 0.7), subset(base[2], np.arange(800) >= 200)]
    signals = [random_signal(len(symbol), seed, density=0.1) for seed, symbol in enumerate(bars)]
    for signal in signals:
        signal[-3:] = [1.0, NAN, NAN]  # positions to leave open or close at the end
    settings = config(
        sizing=FixedFraction(fraction=0.5), allow_short=allow_short, allow_fractional=False, lot_size=0.5,
        slippage_bps=10.0, commission=CommissionModel(rate=0.002, fixed_per_fill=1.5), stop_loss=0.03,
        trailing_stop=0.05, close_at_end=close_at_end,
    )  # fmt: skip
    result = run_portfolio(bars, signals, settings, warmup_bars=[20, 0, 5])
    trades, symbols = result.trades, result.symbol_results
    assert len(trades) > 30
    assert any(symbol.open_position != 0.0 for symbol in symbols) != close_at_end
    open_pnl = sum(symbol.open_pnl for symbol in symbols)
    assert result.metrics.final_equity == pytest.approx(10_000.0 + trades.pnl.sum() + open_pnl, rel=1e-12)
    assert sum(symbol.pnl for symbol in symbols) == pytest.approx(trades.pnl.sum(), rel=1e-12)
    assert [symbol.trade_count for symbol in symbols] == [int(np.sum(trades.symbol_index == i)) for i in range(3)]
    assert np.all(np.diff(trades.entry_time.astype(np.int64)) >= 0)
    assert trades.fees.sum() > 0.0
    assert result.metrics.total_fees >= trades.fees.sum() * (1.0 - 1e-12)
    if not allow_short:  # a short covered at a loss may take cash below 0; a long entry never does
        assert result.equity_curve.cash.min() >= -1e-9
    for index, symbol in enumerate(symbols):
        mine = trades.for_symbol(index)
        assert symbol.win_rate == (float(np.mean(mine.pnl > 0.0)) if len(mine) else None)
        assert len(mine) == 0 or mine.exit_bar.max() < len(bars[index])


def test_shorts_and_fixed_quantities_across_symbols() -> None:
    a, b = make_bars([flat(100), flat(100), flat(90), flat(90)]), make_bars([flat(50), flat(50), flat(55), flat(55)])
    signals = [events(4, {0: -1.0}), events(4, {0: 1.0})]
    result = run_portfolio(
        [a, b], signals, config(sizing=FixedQuantity(quantity=10), allow_short=True), warmup_bars=[0, 0]
    )
    assert [symbol.pnl for symbol in result.symbol_results] == [100.0, 50.0]
    assert result.metrics.final_equity == 10_150.0


# --- progress and validation ---------------------------------------------------------------------------------------


def test_progress_counts_union_bars_and_an_exception_aborts() -> None:
    a = make_bars([flat(100)] * 10)
    b = bars_on_days([0, 2, 4, 6, 8, 10, 11], [flat(50)] * 7)  # 12 union days
    signals = [events(10, {1: 1.0, 5: 0.0}), events(7, {0: 1.0})]
    calls: list[tuple[int, int]] = []
    chunked = run_portfolio(
        [a, b], signals, config(sizing=FixedFraction(fraction=0.5)), warmup_bars=[1, 0],
        progress=lambda done, total: calls.append((done, total)), progress_every=5,
    )  # fmt: skip
    assert calls == [(5, 12), (10, 12), (12, 12)]
    whole = run_portfolio([a, b], signals, config(sizing=FixedFraction(fraction=0.5)), warmup_bars=[1, 0])
    np.testing.assert_array_equal(chunked.equity_curve.equity, whole.equity_curve.equity)

    def cancel(done: int, total: int) -> None:
        raise RuntimeError(f"cancelled at {done}/{total}")

    with pytest.raises(RuntimeError, match="cancelled at 5/12"):
        run_portfolio([a, b], signals, config(), warmup_bars=[0, 0], progress=cancel, progress_every=5)


def test_invalid_inputs_are_refused() -> None:
    a, b = make_bars([flat(100)] * 3), make_bars([flat(50)] * 2)
    settings: BacktestConfig = config()
    with pytest.raises(ValueError, match="at least one symbol"):
        run_portfolio([], [], settings, warmup_bars=[])
    with pytest.raises(ValueError, match="2 symbols, 1 signals and 2 warm-ups"):
        run_portfolio([a, b], [np.ones(3)], settings, warmup_bars=[0, 0])
    with pytest.raises(ValueError, match="2 symbols, 2 signals and 1 warm-ups"):
        run_portfolio([a, b], [np.ones(3), np.ones(2)], settings, warmup_bars=[0])
    with pytest.raises(ValueError, match=r"symbol 1: warmup_bars must be in \[0, 2\), got 2"):
        run_portfolio([a, b], [np.ones(3), np.ones(2)], settings, warmup_bars=[0, 2])
    with pytest.raises(ValueError, match="symbol 1: signal has shape"):
        run_portfolio([a, b], [np.ones(3), np.ones(3)], settings, warmup_bars=[0, 0])
    with pytest.raises(ValueError, match=r"symbol 0: signal values must be \+1, 0, -1 or NaN; bar 2 has 0\.5"):
        run_portfolio([a, b], [[1.0, 1.0, 0.5], np.ones(2)], settings, warmup_bars=[0, 0])
    hourly = BacktestBars(b.open_time, b.open, b.high, b.low, b.close, b.volume, DAY / 24)
    with pytest.raises(ValueError, match="same bar span"):
        run_portfolio([a, hourly], [np.ones(3), np.ones(2)], settings, warmup_bars=[0, 0])
    with pytest.raises(ValueError, match="progress_every"):
        run_portfolio([a], [np.ones(3)], settings, warmup_bars=[0], progress_every=0)
    assert math.isfinite(run_portfolio([a], [np.ones(3)], settings, warmup_bars=[2]).metrics.final_equity)
