"""Single-symbol backtest over bar arrays: a strategy's target-position signal in, trades, equity and metrics out.

The signal has one value per bar, decided on that bar's close: +1 long, 0 flat, -1 short, NaN no change. A finite
value is a target the engine moves to (closing and reversing as needed); a target equal to the position's side does
nothing (no re-sizing), so a position closed by a stop stays closed until the signal gives a target again, and a
strategy that repeats +1 every bar re-enters after a stop. With NEXT_BAR_OPEN (default) the order fills at the next
bar's open; with SIGNAL_BAR_CLOSE at the signal bar's close. Signals on the last bar (NEXT_BAR_OPEN) never fill.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from services.signal.backtests.engine import kernel as k
from services.signal.backtests.engine.config import BacktestConfig, ExitReason, FillTiming, FixedQuantity
from services.signal.backtests.engine.kernel import Array
from services.signal.backtests.engine.metrics import BacktestMetrics, compute_metrics, drawdowns
from services.signal.backtests.engine.sizing import entry_sizes

Times = npt.NDArray[np.datetime64]
Progress = Callable[[int, int], None]
INITIAL_TRADE_CAPACITY = 1024


@dataclass(frozen=True, slots=True)
class BacktestBars:
    """Bars of one symbol, ascending: `open_time` as datetime64 in UTC (e.g. a DatetimeIndex's values), stored as
    datetime64[ns]; prices as float64; and the timeframe's `span` (a bar closes at open_time + span)."""

    open_time: Times
    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    span: timedelta

    def __post_init__(self) -> None:
        for name in ("open", "high", "low", "close", "volume"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.float64))
        object.__setattr__(self, "open_time", _datetime64_ns(self.open_time))
        count = self.close.shape[0]
        if count == 0:
            raise ValueError("no bars")
        for name in ("open_time", "open", "high", "low", "close", "volume"):
            if getattr(self, name).shape != (count,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({count},)")
        if self.span <= timedelta(0):
            raise ValueError(f"bar span must be positive, got {self.span}")
        if count > 1 and not bool(np.all(np.diff(self.open_time.astype(np.int64)) > 0)):
            raise ValueError("open times must be strictly increasing")
        # Protective exits read high and low as the bar's range, so a bar outside its own range is refused.
        bad = ~(
            (self.low > 0.0)
            & (self.low <= np.minimum(self.open, self.close))
            & (self.high >= np.maximum(self.open, self.close))
            & np.isfinite(self.high)
        )
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(
                f"bar {first} is invalid (prices must be finite, positive, low <= open, close <= high): "
                f"O={self.open[first]} H={self.high[first]} L={self.low[first]} C={self.close[first]}"
            )

    @classmethod
    def from_datetimes(
        cls,
        open_time: Sequence[datetime],
        *,
        open: Array,
        high: Array,
        low: Array,
        close: Array,
        volume: Array,
        span: timedelta,
    ) -> BacktestBars:
        """Bars whose open times are datetimes (naive ones taken as UTC), e.g. a market_data.BarSeries'."""
        return cls(_datetime64_ns(open_time), open, high, low, close, volume, span)

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @property
    def close_time(self) -> Times:
        """When each bar closes."""
        return self.open_time + np.timedelta64(nanoseconds(self.span), "ns")


@dataclass(frozen=True, slots=True, kw_only=True)
class Trade:
    """One round trip. Prices include slippage; `fees` are entry plus exit; `pnl` is net of fees;
    `return_fraction` is pnl over the entry notional; bars are indices into the input bars."""

    side: int  # +1 long, -1 short
    quantity: float
    entry_bar: int
    entry_time: datetime
    entry_price: float
    exit_bar: int
    exit_time: datetime
    exit_price: float
    gross_pnl: float
    fees: float
    pnl: float
    return_fraction: float
    bar_count: int
    exit_reason: ExitReason


@dataclass(frozen=True, slots=True)
class TradeLog:
    """The closed trades in entry order, one array per field (iterating yields Trade rows). Times follow the
    proto: a fill at an open is stamped with that bar's open time, a fill at a close with its close time, and a
    protective exit with the open time of the bar that touched its level."""

    side: npt.NDArray[np.int8]
    quantity: Array
    entry_bar: npt.NDArray[np.int64]
    entry_time: Times
    entry_price: Array
    exit_bar: npt.NDArray[np.int64]
    exit_time: Times
    exit_price: Array
    gross_pnl: Array
    fees: Array
    pnl: Array
    return_fraction: Array
    bar_count: npt.NDArray[np.int64]
    exit_reason: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.pnl.shape[0])

    def __getitem__(self, index: int) -> Trade:
        return Trade(
            side=int(self.side[index]),
            quantity=float(self.quantity[index]),
            entry_bar=int(self.entry_bar[index]),
            entry_time=_to_datetime(self.entry_time[index]),
            entry_price=float(self.entry_price[index]),
            exit_bar=int(self.exit_bar[index]),
            exit_time=_to_datetime(self.exit_time[index]),
            exit_price=float(self.exit_price[index]),
            gross_pnl=float(self.gross_pnl[index]),
            fees=float(self.fees[index]),
            pnl=float(self.pnl[index]),
            return_fraction=float(self.return_fraction[index]),
            bar_count=int(self.bar_count[index]),
            exit_reason=ExitReason(int(self.exit_reason[index])),
        )

    def __iter__(self) -> Iterator[Trade]:
        return (self[index] for index in range(len(self)))


@dataclass(frozen=True, slots=True)
class EquityCurve:
    """Per simulated bar, at its close: equity = cash + position value (position × close, negative when short),
    the fall from the running peak as a positive fraction, and the equity of buying at the first bar's open with
    the same cash (no fees). `time` is the bar's open time."""

    time: Times
    equity: Array
    cash: Array
    position: Array
    position_value: Array
    drawdown: Array
    benchmark_equity: Array

    def __len__(self) -> int:
        return int(self.equity.shape[0])

    def downsample(self, max_points: int) -> EquityCurve:
        """At most `max_points` points: per bucket of consecutive bars its deepest drawdown point and its last point
        (so the maximum drawdown and the final equity survive)."""
        count = len(self)
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        if count <= max_points:
            return self
        bucket = math.ceil(count / (max_points // 2))
        starts = np.arange(0, count, bucket)
        padded = np.pad(self.drawdown, (0, starts.shape[0] * bucket - count), constant_values=-np.inf)
        troughs = starts + np.argmax(padded.reshape(-1, bucket), axis=1)
        lasts = np.minimum(starts + bucket - 1, count - 1)
        keep = np.unique(np.concatenate((troughs, lasts)))
        return EquityCurve(*(getattr(self, field.name)[keep] for field in fields(self)))


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Everything one simulation produced. `open_position` is the signed quantity still held after the last bar
    (only non-zero when close_at_end is off)."""

    trades: TradeLog
    equity_curve: EquityCurve
    metrics: BacktestMetrics
    bar_count: int
    open_position: float


def run_backtest(
    bars: BacktestBars,
    signal: npt.ArrayLike,
    config: BacktestConfig,
    *,
    warmup_bars: int = 0,
    progress: Progress | None = None,
    progress_every: int = 100_000,
) -> BacktestResult:
    """Simulate `signal` over `bars`. The first `warmup_bars` bars are history only (indicator and volatility
    warm-up): no signal on them fills and they are not in the equity curve or metrics. `progress(done, total)` is
    called every `progress_every` bars and at the end; an exception raised there aborts the run."""
    targets = validated_signal(signal, len(bars))
    if not 0 <= warmup_bars < len(bars):
        raise ValueError(f"warmup_bars must be in [0, {len(bars)}), got {warmup_bars}")
    if progress_every < 1:
        raise ValueError(f"progress_every must be positive, got {progress_every}")
    lot = None if config.allow_fractional else config.lot_size
    sizes = entry_sizes(bars.close, config.sizing, periods_per_year=config.periods_per_year, lot_size=lot)
    params = kernel_params(config, lot, warmup_bars)
    state = k.new_state(config.initial_cash)
    equity, cash, position = (np.zeros(len(bars)) for _ in range(3))

    def step(trades: Array, begin: int, end: int) -> int:
        return k.simulate(
            bars.open, bars.high, bars.low, bars.close, targets,
            size=sizes, params=params, state=state, trades=trades,
            equity=equity, cash=cash, position=position, begin=begin, end=end,
        )  # fmt: skip

    trades = run_in_chunks(
        step,
        np.zeros((INITIAL_TRADE_CAPACITY, k.TRADE_COLUMNS)),
        begin=warmup_bars,
        end=len(bars),
        progress=progress,
        every=progress_every,
    )
    return _result(
        bars, config, start=warmup_bars, state=state, buffer=trades, equity=equity, cash=cash, position=position
    )


def run_in_chunks(
    step: Callable[[Array, int, int], int],
    trades: Array,
    *,
    begin: int,
    end: int,
    progress: Progress | None,
    every: int,
) -> Array:
    """Drive a compiled loop over bars [begin, end): `step(trades, first, stop)` simulates from `first` towards
    `stop` and returns where it stopped, which is early only when the trade buffer is nearly full; the buffer is then
    doubled and the loop resumed from the same state. With `progress`, runs in chunks of `every` bars and reports
    (done, total) after each; an exception raised there aborts the run. Returns the (possibly grown) buffer."""
    total, bar = end - begin, begin
    chunk = every if progress is not None else total
    while bar < end:
        chunk_end = min(end, bar + chunk)
        while bar < chunk_end:
            bar = step(trades, bar, chunk_end)
            if bar < chunk_end:
                trades = np.concatenate((trades, np.zeros_like(trades)))
        if progress is not None:
            progress(bar - begin, total)
    return trades


def validated_signal(signal: npt.ArrayLike, count: int) -> Array:
    """The signal as float64, one value per bar, each +1, 0, -1 or NaN (ValueError otherwise)."""
    targets = np.ascontiguousarray(signal, dtype=np.float64)
    if targets.shape != (count,):
        raise ValueError(f"signal has shape {targets.shape}, expected ({count},): one value per bar")
    bad = ~(np.isnan(targets) | (targets == 1.0) | (targets == 0.0) | (targets == -1.0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"signal values must be +1, 0, -1 or NaN; bar {first} has {targets[first]}")
    return targets


def kernel_params(config: BacktestConfig, lot: float | None, warmup_bars: int) -> Array:
    """The settings packed for the compiled loop (see kernel.P_*)."""
    params = np.zeros(k.PARAM_COUNT)
    params[k.P_RATE] = config.commission.rate
    params[k.P_FIXED_FEE] = config.commission.fixed_per_fill
    params[k.P_SLIPPAGE] = config.slippage
    params[k.P_STOP_LOSS] = math.nan if config.stop_loss is None else config.stop_loss
    params[k.P_TAKE_PROFIT] = math.nan if config.take_profit is None else config.take_profit
    params[k.P_TRAILING_STOP] = math.nan if config.trailing_stop is None else config.trailing_stop
    params[k.P_LOT] = 0.0 if lot is None else lot
    params[k.P_SIZE_IS_QUANTITY] = float(isinstance(config.sizing, FixedQuantity))
    params[k.P_NEXT_OPEN] = float(config.fill_timing == FillTiming.NEXT_BAR_OPEN)
    params[k.P_ALLOW_SHORT] = float(config.allow_short)
    params[k.P_CLOSE_AT_END] = float(config.close_at_end)
    params[k.P_START] = warmup_bars
    return params


def _result(
    bars: BacktestBars,
    config: BacktestConfig,
    *,
    start: int,
    state: Array,
    buffer: Array,
    equity: Array,
    cash: Array,
    position: Array,
) -> BacktestResult:
    trades = trade_log(bars, config, buffer[: int(state[k.S_TRADE_COUNT])])
    equity, cash, position = equity[start:], cash[start:], position[start:]
    close = bars.close[start:]
    first_price = float(bars.open[start])
    curve = EquityCurve(
        time=bars.open_time[start:],
        equity=equity,
        cash=cash,
        position=position,
        position_value=position * close,
        drawdown=drawdowns(equity, config.initial_cash),
        benchmark_equity=config.initial_cash * close / first_price,
    )
    metrics = compute_metrics(
        equity=equity,
        drawdown=curve.drawdown,
        point_times=np.concatenate((bars.open_time[start : start + 1], bars.close_time[start:])),
        initial_cash=config.initial_cash,
        pnl=trades.pnl,
        return_fraction=trades.return_fraction,
        total_fees=float(state[k.S_FEES]),
        exposed_bars=int(state[k.S_EXPOSED_BARS]),
        buy_and_hold_return=float(close[-1]) / first_price - 1.0,
        periods_per_year=config.periods_per_year,
        risk_free_rate=config.risk_free_rate,
    )
    return BacktestResult(trades, curve, metrics, len(curve), float(state[k.S_QUANTITY]))


def trade_log(bars: BacktestBars, config: BacktestConfig, rows: Array) -> TradeLog:
    """The kernel's trade rows as a TradeLog, with fill times stamped by the fill-timing convention."""
    side = rows[:, k.T_SIDE]
    quantity = rows[:, k.T_QUANTITY]
    entry_bar = rows[:, k.T_ENTRY_BAR].astype(np.int64)
    exit_bar = rows[:, k.T_EXIT_BAR].astype(np.int64)
    entry_price, exit_price = rows[:, k.T_ENTRY_PRICE], rows[:, k.T_EXIT_PRICE]
    reason = rows[:, k.T_REASON].astype(np.int8)
    gross = side * quantity * (exit_price - entry_price)
    fees = rows[:, k.T_ENTRY_FEE] + rows[:, k.T_EXIT_FEE]
    pnl = gross - fees
    at_close = config.fill_timing == FillTiming.SIGNAL_BAR_CLOSE
    exit_at_close = (reason == ExitReason.END_OF_DATA) | ((reason == ExitReason.SIGNAL) & at_close)
    span = np.timedelta64(nanoseconds(bars.span), "ns")
    return TradeLog(
        side=side.astype(np.int8),
        quantity=quantity,
        entry_bar=entry_bar,
        entry_time=bars.open_time[entry_bar] + (span if at_close else np.timedelta64(0, "ns")),
        entry_price=entry_price,
        exit_bar=exit_bar,
        exit_time=bars.open_time[exit_bar] + np.where(exit_at_close, span, np.timedelta64(0, "ns")),
        exit_price=exit_price,
        gross_pnl=gross,
        fees=fees,
        pnl=pnl,
        return_fraction=pnl / (quantity * entry_price),
        bar_count=exit_bar - entry_bar,
        exit_reason=reason,
    )


def _datetime64_ns(times: Times | Sequence[datetime]) -> Times:
    if isinstance(times, np.ndarray) and times.dtype.kind == "M":
        return times.astype("datetime64[ns]")
    # numpy warns on aware datetimes and would misread offsets, so go through microseconds since the epoch.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    aware = (time if time.tzinfo else time.replace(tzinfo=UTC) for time in times)
    micros = [(time - epoch) // timedelta(microseconds=1) for time in aware]
    return np.array(micros, dtype="datetime64[us]").astype("datetime64[ns]")


def nanoseconds(span: timedelta) -> int:
    """A timedelta in whole nanoseconds."""
    return (span.days * 86_400 + span.seconds) * 1_000_000_000 + span.microseconds * 1000


def _to_datetime(stamp: np.datetime64) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        microseconds=int(stamp.astype("datetime64[ns]").astype(np.int64)) // 1000
    )
