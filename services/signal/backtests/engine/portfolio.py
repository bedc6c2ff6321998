"""Multi-symbol backtests from one shared cash balance, each symbol on its own target-position signal.

Every symbol follows the single engine's rules (engine.py): signal values, fill timings, slippage, commission,
protective exits, shorts, lots, warm-up, close_at_end at its own last bar. What the shared balance adds:

- Timeline: the simulation walks the sorted union of the symbols' bar open times. A symbol acts only on bars it
  has (a NEXT_BAR_OPEN signal fills at the symbol's next bar, however far on the union timeline); between its bars
  its position is marked at its last close. The equity curve has one point per union bar from the first simulated
  bar of the earliest-starting symbol (min over symbols of the open time of bar `warmup_bars[j]`) to the last union
  bar; a symbol still warming up, or past its last bar, simply holds no position (or keeps its marked open one).
- Order within a timestamp: the symbols with a bar there move their mark to the open; NEXT_BAR_OPEN signals fill
  at the open, all exits first (flat targets and the closing legs of reversals) and then all entries, each pass in
  the symbols' input order, so cash freed by one symbol's exit is there for another's entry at the same time;
  protective exits are checked over each bar; the marks move to the close; SIGNAL_BAR_CLOSE signals fill at the
  close, again exits first then entries; end-of-data closes happen last (their cash is usable from the next
  timestamp on). Cash freed by a protective exit is thus usable at the same bar's close or later.
- Sizing: FixedFraction and VolatilityTarget (its fraction computed per symbol from the symbol's own closes, as in
  the single engine) invest that fraction of the current total equity, cash + every position marked at its
  symbol's current price (the open during the open fills, the close during the close fills, the last close for
  symbols without a bar there). A long never spends more than the cash (no leverage): one that needs more buys what
  the cash affords after fees, and is skipped when that is nothing. Shorts are sized on equity alone, as in the
  single engine (proceeds are credited to cash; no margin is modelled). FixedQuantity trades its quantity as in
  the single engine, whatever the cash.

With one symbol every figure equals run_backtest's. With several, VolatilityTarget fractions above 1 are capped by
the cash for longs, which the single engine does not do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from services.signal.backtests.engine import kernel as k
from services.signal.backtests.engine import portfolio_kernel as pk
from services.signal.backtests.engine.config import BacktestConfig
from services.signal.backtests.engine.engine import (
    INITIAL_TRADE_CAPACITY,
    BacktestBars,
    EquityCurve,
    Progress,
    TradeLog,
    kernel_params,
    nanoseconds,
    run_in_chunks,
    trade_log,
    validated_signal,
)
from services.signal.backtests.engine.kernel import Array
from services.signal.backtests.engine.metrics import BacktestMetrics, compute_metrics, drawdowns, trade_statistics
from services.signal.backtests.engine.sizing import entry_sizes


@dataclass(frozen=True, slots=True)
class PortfolioTradeLog(TradeLog):
    """The closed trades of every symbol in entry order (ties, i.e. entries at the same time, in symbol order), as
    TradeLog, plus each trade's `symbol_index` (position in the input). Bars are indices into that symbol's bars."""

    symbol_index: npt.NDArray[np.int64]

    def for_symbol(self, symbol: int) -> TradeLog:
        """The trades of one symbol, in entry order."""
        mine = self.symbol_index == symbol
        return TradeLog(*(getattr(self, field.name)[mine] for field in fields(TradeLog)))


@dataclass(frozen=True, slots=True, kw_only=True)
class SymbolResult:
    """One symbol's share of a portfolio run: the net pnl and count of its closed trades, their win rate (None
    without trades), the symbol's buy-and-hold return from its first simulated open to its last close, and the
    signed quantity still held after its last bar with its unrealised pnl net of the entry fee (both 0 when flat,
    always so with close_at_end). Final equity = initial cash + Σ (pnl + open_pnl)."""

    pnl: float
    trade_count: int
    win_rate: float | None
    buy_and_hold_return: float
    open_position: float
    open_pnl: float


@dataclass(frozen=True, slots=True)
class PortfolioResult:
    """Everything one portfolio simulation produced.

    - `equity_curve`: one point per union bar (see the module docstring). `position_value` is the total marked
      value of the positions; `position` is the symbol's signed quantity with one symbol and NaN with several
      (quantities of different instruments do not add up). `benchmark_equity` is buying and holding the symbols
      equally weighted with the initial cash: each symbol's share is cash until its first simulated bar, then
      bought at that bar's open (no fees) and marked at its last close.
    - `metrics`: as the single engine's over that curve; `buy_and_hold_return` is the benchmark's return (the mean
      of the symbols' buy-and-hold returns) and `exposure` the fraction of union bars with any position open at
      the bar's close (before end-of-data closes).
    - `symbol_results` and `bar_count` (bars simulated after warm-up) per symbol, in input order.
    """

    trades: PortfolioTradeLog
    equity_curve: EquityCurve
    metrics: BacktestMetrics
    symbol_results: tuple[SymbolResult, ...]
    bar_count: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Layout:
    """The symbols' bars concatenated for the kernel, and where each bar sits on the union timeline."""

    union_time: npt.NDArray[np.datetime64]
    union_index: npt.NDArray[np.int64]  # per flat bar
    offsets: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    first: int  # the first simulated union bar

    def local_union_index(self, symbol: int) -> npt.NDArray[np.int64]:
        """Union positions of one symbol's bars."""
        offset = int(self.offsets[symbol])
        return self.union_index[offset : offset + int(self.counts[symbol])]


def run_portfolio(
    bars: Sequence[BacktestBars],
    signals: Sequence[npt.ArrayLike],
    config: BacktestConfig,
    *,
    warmup_bars: Sequence[int],
    progress: Progress | None = None,
    progress_every: int = 100_000,
) -> PortfolioResult:
    """Simulate each symbol's signal on its bars, all from the one cash balance of `config` (semantics in the module
    docstring). `bars`, `signals` and `warmup_bars` are per symbol, in the same order, which is also the order
    symbols are processed in within a timestamp; every symbol must have the same bar span. `progress(done, total)`
    counts union bars: it is called every `progress_every` of them and at the end; an exception raised there aborts
    the run."""
    targets = _validated_inputs(bars, signals, warmup_bars, progress_every)
    layout = _layout(bars, warmup_bars)
    lot = None if config.allow_fractional else config.lot_size
    sizes = np.concatenate(
        [
            entry_sizes(symbol.close, config.sizing, periods_per_year=config.periods_per_year, lot_size=lot)
            for symbol in bars
        ]
    )
    prices = {
        name: np.concatenate([getattr(symbol, name) for symbol in bars]) for name in ("open", "high", "low", "close")
    }
    book = k.new_state(config.initial_cash)
    holdings = pk.new_holdings(len(bars))
    cursor = np.array(
        [np.searchsorted(layout.local_union_index(symbol), layout.first) for symbol in range(len(bars))],
        dtype=np.int64,
    )
    # Marks only matter once a position exists, which needs a bar; 0 keeps 0 × mark finite until then.
    mark = np.array(
        [float(symbol.close[start - 1]) if start else 0.0 for symbol, start in zip(bars, cursor, strict=True)]
    )
    union_count = layout.union_time.shape[0]
    equity, cash, position, position_value = (np.zeros(union_count) for _ in range(4))
    params = kernel_params(config, lot, 0)  # P_START is per symbol here: layout.starts

    def step(trades: Array, begin: int, end: int) -> int:
        return pk.simulate_portfolio(
            prices["open"], prices["high"], prices["low"], prices["close"], targets,
            size=sizes, union_index=layout.union_index, offsets=layout.offsets, counts=layout.counts,
            starts=layout.starts, params=params, book=book, holdings=holdings, cursor=cursor, mark=mark,
            trades=trades, equity=equity, cash=cash, position=position, position_value=position_value,
            begin=begin, end=end,
        )  # fmt: skip

    trades = run_in_chunks(
        step,
        np.zeros((INITIAL_TRADE_CAPACITY, pk.PORTFOLIO_TRADE_COLUMNS)),
        begin=layout.first,
        end=union_count,
        progress=progress,
        every=progress_every,
    )
    first = layout.first
    curve_arrays = (equity[first:], cash[first:], position[first:], position_value[first:])
    return _result(
        bars,
        config,
        layout,
        book=book,
        holdings=holdings,
        rows=trades[: int(book[k.S_TRADE_COUNT])],
        curve=curve_arrays,
    )


def _validated_inputs(
    bars: Sequence[BacktestBars], signals: Sequence[npt.ArrayLike], warmup_bars: Sequence[int], progress_every: int
) -> Array:
    """The signals validated as the single engine does and concatenated, after checking the per-symbol inputs."""
    if len(bars) == 0:
        raise ValueError("a portfolio backtest needs at least one symbol")
    if len(signals) != len(bars) or len(warmup_bars) != len(bars):
        raise ValueError(
            f"one signal and one warm-up per symbol: got {len(bars)} symbols, {len(signals)} signals and "
            f"{len(warmup_bars)} warm-ups"
        )
    if progress_every < 1:
        raise ValueError(f"progress_every must be positive, got {progress_every}")
    targets = []
    for index, (symbol, signal, warmup) in enumerate(zip(bars, signals, warmup_bars, strict=True)):
        if symbol.span != bars[0].span:
            raise ValueError(
                f"every symbol needs the same bar span: symbol {index} has {symbol.span}, not {bars[0].span}"
            )
        if not 0 <= warmup < len(symbol):
            raise ValueError(f"symbol {index}: warmup_bars must be in [0, {len(symbol)}), got {warmup}")
        try:
            targets.append(validated_signal(signal, len(symbol)))
        except ValueError as error:
            raise ValueError(f"symbol {index}: {error}") from error
    return np.concatenate(targets)


def _layout(bars: Sequence[BacktestBars], warmup_bars: Sequence[int]) -> _Layout:
    times = [symbol.open_time for symbol in bars]
    # Each symbol's times ascend, so a stable sort (timsort) merges the runs in O(n log symbols); np.unique's hashing
    # was ~20 times slower on a million bars.
    merged = np.sort(np.concatenate(times), kind="stable")
    union_time = merged[np.concatenate(([True], merged[1:] != merged[:-1]))]
    union_index = np.concatenate([np.searchsorted(union_time, symbol_times) for symbol_times in times]).astype(np.int64)
    counts = np.array([len(symbol) for symbol in bars], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    starts = np.array(warmup_bars, dtype=np.int64)
    first = int(union_index[offsets + starts].min())
    return _Layout(union_time, union_index, offsets, counts, starts, first)


def _result(
    bars: Sequence[BacktestBars],
    config: BacktestConfig,
    layout: _Layout,
    *,
    book: Array,
    holdings: Array,
    rows: Array,
    curve: tuple[Array, Array, Array, Array],
) -> PortfolioResult:
    equity, cash, position, position_value = curve
    logs = [
        trade_log(symbol, config, rows[rows[:, pk.T_SYMBOL] == index, : k.TRADE_COLUMNS])
        for index, symbol in enumerate(bars)
    ]
    trades = _merged(logs)
    starts = [int(start) for start in layout.starts]
    first_opens = [float(symbol.open[start]) for symbol, start in zip(bars, starts, strict=True)]
    buy_and_hold = [float(symbol.close[-1]) / price - 1.0 for symbol, price in zip(bars, first_opens, strict=True)]
    time = layout.union_time[layout.first :]
    equity_curve = EquityCurve(
        time=time,
        equity=equity,
        cash=cash,
        position=position if len(bars) == 1 else np.full(equity.shape[0], math.nan),
        position_value=position_value,
        drawdown=drawdowns(equity, config.initial_cash),
        benchmark_equity=_benchmark(bars, layout, config.initial_cash),
    )
    span = np.timedelta64(nanoseconds(bars[0].span), "ns")
    metrics = compute_metrics(
        equity=equity,
        drawdown=equity_curve.drawdown,
        point_times=np.concatenate((time[:1], time + span)),
        initial_cash=config.initial_cash,
        pnl=trades.pnl,
        return_fraction=trades.return_fraction,
        total_fees=float(book[k.S_FEES]),
        exposed_bars=int(book[k.S_EXPOSED_BARS]),
        buy_and_hold_return=float(np.mean(buy_and_hold)),
        periods_per_year=config.periods_per_year,
        risk_free_rate=config.risk_free_rate,
    )
    results = tuple(
        _symbol_result(log, holdings[index], float(bars[index].close[-1]), buy_and_hold[index])
        for index, log in enumerate(logs)
    )
    bar_count = tuple(int(count - start) for count, start in zip(layout.counts, starts, strict=True))
    return PortfolioResult(trades, equity_curve, metrics, results, bar_count)


def _merged(logs: Sequence[TradeLog]) -> PortfolioTradeLog:
    """The symbols' trade logs as one, in entry order, symbol order breaking ties."""
    symbol_index = np.concatenate([np.full(len(log), index, dtype=np.int64) for index, log in enumerate(logs)])
    columns: dict[str, Any] = {
        field.name: np.concatenate([getattr(log, field.name) for log in logs]) for field in fields(TradeLog)
    }
    order = np.lexsort((symbol_index, columns["entry_time"].astype(np.int64)))
    return PortfolioTradeLog(
        **{name: column[order] for name, column in columns.items()}, symbol_index=symbol_index[order]
    )


def _benchmark(bars: Sequence[BacktestBars], layout: _Layout, initial_cash: float) -> Array:
    """Equal shares of the cash, each held as cash until its symbol's first simulated bar, then bought at that bar's
    open and marked at the symbol's last close on every union bar."""
    points = np.arange(layout.first, layout.union_time.shape[0])
    share = initial_cash / len(bars)
    benchmark = np.zeros(points.shape[0])
    for index, symbol in enumerate(bars):
        positions = layout.local_union_index(index)
        start = int(layout.starts[index])
        last_bar = np.maximum(np.searchsorted(positions, points, side="right") - 1, 0)
        held = share * symbol.close[last_bar] / symbol.open[start]
        benchmark += np.where(points >= positions[start], held, share)
    return benchmark


def _symbol_result(log: TradeLog, holding: Array, last_close: float, buy_and_hold: float) -> SymbolResult:
    quantity = float(holding[k.S_QUANTITY])
    open_pnl = quantity * (last_close - holding[k.S_ENTRY_PRICE]) - holding[k.S_ENTRY_FEE] if quantity else 0.0
    return SymbolResult(
        pnl=float(np.sum(log.pnl)),
        trade_count=len(log),
        win_rate=trade_statistics(log.pnl, log.return_fraction).win_rate,
        buy_and_hold_return=buy_and_hold,
        open_position=quantity,
        open_pnl=float(open_pnl),
    )
