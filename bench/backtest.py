"""An SMA-crossover backtest on 1,000,000 generated bars: Bullant's engine against backtesting.py and vectorbt.

The strategy everywhere: SMA(10) and SMA(30) of the close; when the fast one crosses above the slow one, go long
with all the equity (whole units, commission included); when it crosses below, close. Orders fill at the next
bar's open and pay a commission of 1 bp on each fill. The three runs are checked to make the same trades and end
with the same equity before their times are compared, so the ratio compares the same work.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from unittest import mock

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from backtesting import Backtest, Strategy  # type: ignore[import-untyped]
from backtesting.lib import crossover  # type: ignore[import-untyped]
from backtesting.test import SMA  # type: ignore[import-untyped]

from services.signal.backtests.engine.config import BacktestConfig, CommissionModel, FillTiming, FixedFraction
from services.signal.backtests.engine.engine import BacktestBars, BacktestResult, run_backtest
from services.signal.backtests.engine.kernel import Array
from services.signal.indicators.base import Bars
from services.signal.indicators.catalogue import load_indicators

FAST, SLOW = 10, 30
# ~19.6k round trips at 1 bp leave ~0.01 % of it (still ~100 whole units at prices of 60-175). Not more: vectorbt
# rounds a cash result within 1e-9 of the amount to 0 (vectorbt.utils.math_.add_nb), which throws away the leftover
# under one unit after an all-in buy once the cash exceeds ~1e9, and then sizes later trades a unit differently.
INITIAL_CASH = 1e8
COMMISSION = 0.0001  # 1 bp of the notional on every fill
DAILY_VOLATILITY = 0.005
SEGMENT_BARS = 2_520  # the random walk is pinned back to 100 every 2,520 bars (10 years of daily bars)
SEED = 11
EQUITY_RTOL = 1e-6  # final equities must agree this closely (relative) for the comparison to count

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the runs must agree on: closed trades (with their quantities) and the final equity."""

    trades: int
    final_equity: float
    quantities: Array


@dataclass(frozen=True, slots=True)
class Row:
    engine: str
    bars: int
    seconds: float
    baseline: float  # Bullant's seconds for the same work on the same bars (the ratio's denominator)


def generate_bars(count: int, seed: int = SEED) -> BacktestBars:
    """Daily-like bars: a seeded geometric Brownian motion of the close (0.5 % per bar, no drift), pinned back to 100
    every SEGMENT_BARS bars (a Brownian bridge per segment) so a million bars stay in a 60-175 price range; opens gap
    slightly from the previous close and highs/lows lie outside both. Bars are stamped hourly from 2000 because
    datetime64[ns] cannot hold a million days; the engines read prices only."""
    rng = np.random.default_rng(seed)
    segments = -(-count // SEGMENT_BARS)
    walk = np.cumsum(rng.normal(0.0, DAILY_VOLATILITY, (segments, SEGMENT_BARS)), axis=1)
    walk -= np.arange(1, SEGMENT_BARS + 1) / SEGMENT_BARS * walk[:, -1:]
    close = 100.0 * np.exp(walk.ravel()[:count])
    opens = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0.0, 0.003, count))
    high = np.maximum(opens, close) * np.exp(np.abs(rng.normal(0.0, 0.005, count)))
    low = np.minimum(opens, close) * np.exp(-np.abs(rng.normal(0.0, 0.005, count)))
    times = np.datetime64("2000-01-01T00:00", "ns") + np.arange(count) * np.timedelta64(1, "h")
    return BacktestBars(times, opens, high, low, close, np.ones(count), timedelta(hours=1))


def crossover_signal(fast: Array, slow: Array) -> Array:
    """backtesting.lib.crossover on every bar as an engine signal: +1 (long) where fast crosses above slow, 0 (flat)
    where it crosses below, NaN (no change) elsewhere, including while either average is still NaN."""
    up = np.zeros(fast.shape[0], dtype=bool)
    down = np.zeros(fast.shape[0], dtype=bool)
    up[1:] = (fast[:-1] < slow[:-1]) & (fast[1:] > slow[1:])
    down[1:] = (slow[:-1] < fast[:-1]) & (slow[1:] > fast[1:])
    return np.where(up, 1.0, np.where(down, 0.0, np.nan))


def bullant_signal(bars: BacktestBars) -> Array:
    sma = load_indicators()["sma"]
    prices = Bars(bars.open, bars.high, bars.low, bars.close, bars.volume)
    (fast,) = sma.batch(prices, period=FAST)
    (slow,) = sma.batch(prices, period=SLOW)
    return crossover_signal(fast, slow)


def bullant_config() -> BacktestConfig:
    """backtesting.py's conventions: next-bar-open fills, all-in whole units with the fee included, the position
    still open after the last bar marked to market (not closed)."""
    return BacktestConfig(
        initial_cash=INITIAL_CASH,
        commission=CommissionModel(rate=COMMISSION),
        sizing=FixedFraction(fraction=1.0),
        fill_timing=FillTiming.NEXT_BAR_OPEN,
        allow_short=False,
        allow_fractional=False,
        close_at_end=False,
    )


def _best(run: Callable[[], T], rounds: int) -> tuple[float, T]:
    """The best time of `rounds` calls and the last call's result."""
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    assert result is not None
    return best, result


# --- Bullant -------------------------------------------------------------------------------------------------------


def _bullant_outcome(result: BacktestResult) -> Outcome:
    return Outcome(len(result.trades), result.metrics.final_equity, result.trades.quantity)


def time_bullant(bars: BacktestBars, rounds: int) -> tuple[float, float, Outcome]:
    """(indicators + signal + engine seconds, engine-only seconds, outcome); a first call compiles outside."""
    config = bullant_config()

    def whole() -> BacktestResult:
        return run_backtest(bars, bullant_signal(bars), config)

    whole()  # numba compilation and warm caches
    total, result = _best(whole, rounds)
    signal = bullant_signal(bars)
    engine, _ = _best(lambda: run_backtest(bars, signal, config), rounds)
    return total, engine, _bullant_outcome(result)


# --- backtesting.py ------------------------------------------------------------------------------------------------


class SmaCross(Strategy):  # type: ignore[misc]
    """backtesting.py's canonical SmaCross, long-only: buy all-in on a cross up, close on a cross down."""

    def init(self) -> None:
        self.fast = self.I(SMA, self.data.Close, FAST)
        self.slow = self.I(SMA, self.data.Close, SLOW)

    def next(self) -> None:
        if crossover(self.fast, self.slow):
            if not self.position:
                self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()


def _frame(bars: BacktestBars) -> pd.DataFrame:
    columns = {"Open": bars.open, "High": bars.high, "Low": bars.low, "Close": bars.close, "Volume": bars.volume}
    return pd.DataFrame(columns, index=pd.DatetimeIndex(bars.open_time))


def _run_backtesting_py(frame: pd.DataFrame) -> Outcome:
    # Its progress bar (tqdm, when installed) is switched off: it would cost time and clutter the output.
    with mock.patch("backtesting.backtesting._tqdm", lambda seq, **_: seq), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(frame, SmaCross, cash=INITIAL_CASH, commission=COMMISSION, finalize_trades=False).run()
    return Outcome(
        int(stats["# Trades"]), float(stats["Equity Final [$]"]), stats._trades.Size.to_numpy(dtype=np.float64)
    )


def time_backtesting_py(bars: BacktestBars, rounds: int) -> tuple[float, Outcome]:
    """Seconds of Backtest(...).run() (its SMA indicators, the bar loop and its statistics) and the outcome."""
    frame = _frame(bars)
    return _best(lambda: _run_backtesting_py(frame), rounds)


# --- vectorbt ------------------------------------------------------------------------------------------------------


def load_vectorbt() -> tuple[Any, str]:
    """(the vectorbt module or None, why it is missing). It is optional: `pip install -e '.[bench]'`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("vectorbt"), ""
    except ImportError as error:  # not installed, or a dependency of it is broken
        return None, f"{type(error).__name__}: {error}"


def time_vectorbt(vbt: Any, bars: BacktestBars, rounds: int) -> tuple[float, float, Outcome]:
    """(MA + crossovers + from_signals + results seconds, from_signals + final value seconds, outcome).

    vectorbt fills a signal at `price` on the signal's own bar, so the entries and exits are shifted one bar and
    filled at that bar's open: the next-bar-open fill. size=inf with size_granularity=1 is all-in in whole units
    (fees included), fees=COMMISSION on each fill, long only, no adding to a position."""
    close, opens = pd.Series(bars.close), pd.Series(bars.open)

    def portfolio(entries: pd.Series, exits: pd.Series) -> Any:
        return vbt.Portfolio.from_signals(
            close, entries, exits, price=opens, fees=COMMISSION, init_cash=INITIAL_CASH, size=np.inf,
            size_granularity=1, direction="longonly", accumulate=False,
        )  # fmt: skip

    def signals() -> tuple[pd.Series, pd.Series]:
        fast, slow = vbt.MA.run(close, FAST), vbt.MA.run(close, SLOW)
        up, down = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
        return up.shift(1, fill_value=False), down.shift(1, fill_value=False)

    def whole() -> Outcome:
        result = portfolio(*signals())
        closed = result.trades.closed
        sizes = closed.records_readable["Size"].to_numpy(dtype=np.float64)
        return Outcome(int(closed.count()), float(result.final_value()), sizes)

    whole()  # numba compilation (cached on disk after the first run) and warm caches
    total, outcome = _best(whole, rounds)
    entries, exits = signals()
    engine, _ = _best(lambda: portfolio(entries, exits).final_value(), rounds)
    return total, engine, outcome


# --- report --------------------------------------------------------------------------------------------------------


def check(name: str, bars: int, ours: Outcome, theirs: Outcome) -> bool:
    """Print whether `theirs` made the same trades and ended with the same equity as Bullant; True when it did."""
    difference = abs(theirs.final_equity - ours.final_equity) / abs(ours.final_equity)
    same = theirs.trades == ours.trades and difference <= EQUITY_RTOL
    detail = ""
    if theirs.quantities.shape == ours.quantities.shape:
        off = np.abs(theirs.quantities - ours.quantities)
        if off.any():
            detail = f"; {int(np.count_nonzero(off)):,} trade(s) sized differently (at most {off.max():g} unit)"
    print(
        f"check {name} vs Bullant on {bars:,} bars: trades {theirs.trades:,} vs {ours.trades:,}, final equity "
        f"{theirs.final_equity:,.2f} vs {ours.final_equity:,.2f} (relative difference {difference:.1e}){detail}: "
        + ("OK" if same else f"MISMATCH (tolerance {EQUITY_RTOL:g}): the times below do not compare the same work")
    )
    return same


def print_table(rows: list[Row]) -> None:
    print(f"{'engine':<52}{'bars':>11}{'seconds':>10}{'bars/s':>14}{'x Bullant':>11}")
    for row in rows:
        ratio = (row.seconds / row.bars) / (row.baseline / row.bars)
        print(f"{row.engine:<52}{row.bars:>11,}{row.seconds:>10.3f}{row.bars / row.seconds:>14,.0f}{ratio:>10.1f}x")
    print(
        "(x Bullant = seconds per bar / Bullant's seconds per bar for the same part on the same bars: above 1 is "
        "slower than Bullant; engine-only rows are against Bullant's engine-only time; best of several runs, the "
        "first (compiling) call excluded)"
    )


def _backtesting_py_size(bars: BacktestBars, probe: int, budget: float) -> tuple[int, float]:
    """Times one backtesting.py run on the first `probe` bars; returns the size to measure it on (all the bars when
    the probe's per-bar rate says that takes at most `budget` seconds, else the probe size) and the probe time."""
    count = len(bars)
    probe = min(probe, count)
    seconds, _ = time_backtesting_py(_head(bars, probe), 1)
    projected = seconds * count / probe
    if projected <= budget:
        return count, seconds
    print(
        f"backtesting.py: {probe:,} bars took {seconds:.1f} s ({probe / seconds:,.0f} bars/s); {count:,} bars "
        f"would take about {projected:.0f} s (> {budget:.0f} s), so it is MEASURED ON {probe:,} BARS ONLY and "
        f"compared per bar with Bullant on the same {probe:,} bars"
    )
    return probe, seconds


def _head(bars: BacktestBars, count: int) -> BacktestBars:
    if count == len(bars):
        return bars
    return BacktestBars(
        bars.open_time[:count], bars.open[:count], bars.high[:count], bars.low[:count], bars.close[:count],
        bars.volume[:count], bars.span,
    )  # fmt: skip


def run(quick: bool = False) -> None:
    """Print the SMA-crossover backtest on 1M bars (100k with quick): Bullant vs backtesting.py vs vectorbt."""
    count = 100_000 if quick else 1_000_000
    rounds = 2 if quick else 5
    slow_rounds = 1 if quick else 2
    bars = generate_bars(count)
    print(
        f"== SMA({FAST})/SMA({SLOW}) crossover backtest on {count:,} generated daily-like bars: long-only, all-in "
        f"whole units, next-bar-open fills, {COMMISSION * 1e4:g} bp commission per fill, cash {INITIAL_CASH:,.0f} =="
    )
    total, engine, ours = time_bullant(bars, rounds)
    rows = [
        Row("Bullant (SMA batch + signal + run_backtest)", count, total, total),
        Row("Bullant engine only (run_backtest)", count, engine, engine),
    ]

    size, _ = _backtesting_py_size(bars, probe=count // 10, budget=10.0 if quick else 60.0)
    subset = _head(bars, size)
    reference_total, _, reference = time_bullant(subset, rounds) if size < count else (total, engine, ours)
    seconds, outcome = time_backtesting_py(subset, slow_rounds)
    check("backtesting.py", size, reference, outcome)
    rows.append(Row("backtesting.py (Backtest.run: SMA + loop + stats)", size, seconds, reference_total))

    vbt, missing = load_vectorbt()
    if vbt is None:
        print(f"vectorbt: not installed ({missing}); `pip install -e '.[bench]'` adds it")
    else:
        print(
            f"vectorbt {vbt.__version__}: fills at the signal bar's price by default, so its entries/exits are shifted "
            "one bar and priced at that bar's open (= next-bar-open); size=inf with size_granularity=1 (all-in, whole "
            "units, fee included); its MA is its own rolling mean (differences of a cumulative sum)"
        )
        vbt_total, vbt_engine, vbt_outcome = time_vectorbt(vbt, bars, slow_rounds + 1)
        check("vectorbt", count, ours, vbt_outcome)
        rows.append(Row("vectorbt (MA + crossovers + from_signals + results)", count, vbt_total, total))
        rows.append(Row("vectorbt engine only (from_signals + final_value)", count, vbt_engine, engine))
    print_table(rows)
