"""The bar-by-bar simulation loop, compiled with numba; engine.py is its validated, typed front door."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

Array = npt.NDArray[np.float64]
F = TypeVar("F", bound=Callable[..., object])

# Settings, packed in one float64 array so the compiled functions take few arguments.
P_RATE, P_FIXED_FEE, P_SLIPPAGE, P_STOP_LOSS, P_TAKE_PROFIT, P_TRAILING_STOP = 0, 1, 2, 3, 4, 5
P_LOT, P_SIZE_IS_QUANTITY, P_NEXT_OPEN, P_ALLOW_SHORT, P_CLOSE_AT_END, P_START = 6, 7, 8, 9, 10, 11
PARAM_COUNT = 12

# State carried between chunks of bars (so a long run can report progress and grow its trade buffer). The helpers
# below read it as two parts: the book (S_CASH, S_TRADE_COUNT, S_EXPOSED_BARS, S_FEES) and one instrument's holding
# (S_QUANTITY, S_ENTRY_PRICE, S_ENTRY_FEE, S_ENTRY_BAR, S_BEST_PRICE). The single-symbol loop passes the same array
# as both; a portfolio (portfolio_kernel.py) has one book and a holding per symbol.
S_CASH, S_QUANTITY, S_ENTRY_PRICE, S_ENTRY_FEE, S_ENTRY_BAR, S_BEST_PRICE = 0, 1, 2, 3, 4, 5
S_TRADE_COUNT, S_EXPOSED_BARS, S_FEES = 6, 7, 8
STATE_SIZE = 9

# Columns of the trade buffer.
T_SIDE, T_QUANTITY, T_ENTRY_BAR, T_EXIT_BAR, T_ENTRY_PRICE, T_EXIT_PRICE, T_ENTRY_FEE, T_EXIT_FEE, T_REASON = range(9)
TRADE_COLUMNS = 9
# Most trades one bar can close: a reversal at the open, a protective exit, then the end-of-data close.
MAX_CLOSES_PER_BAR = 3

# Calls between compiled functions cannot use keyword-only parameters (numba fails to fold them), so the helpers
# below take positional ones and are called with keywords for readability (pyproject.toml exempts this module and
# portfolio_kernel.py from ruff's PLR0917 for that reason).

# ExitReason numbers, repeated as plain ints because compiled code cannot read an IntEnum.
_SIGNAL, _STOP_LOSS, _TAKE_PROFIT, _TRAILING_STOP, _END_OF_DATA = 1, 2, 3, 4, 5
# A long the cash caps below this fraction of equity is skipped (see _open_position).
_DUST = 1e-9


def jit(function: F) -> F:
    """numba's njit, cached on disk and releasing the GIL (runs in worker threads stay parallel), keeping the
    function's type for mypy."""
    return cast(F, njit(cache=True, nogil=True)(function))


@jit
def _close_position(
    book: Array, holding: Array, trades: Array, params: Array, price: float, bar: int, reason: int
) -> None:
    """Close the holding's whole position at `price` moved by slippage against the trader, and record the trade
    in the book's next row of `trades`."""
    quantity = holding[S_QUANTITY]
    side = 1.0 if quantity > 0.0 else -1.0
    fill = price * (1.0 - side * params[P_SLIPPAGE])
    fee = abs(quantity) * fill * params[P_RATE] + params[P_FIXED_FEE]
    book[S_CASH] += quantity * fill - fee
    row = trades[int(book[S_TRADE_COUNT])]
    row[T_SIDE] = side
    row[T_QUANTITY] = abs(quantity)
    row[T_ENTRY_BAR] = holding[S_ENTRY_BAR]
    row[T_EXIT_BAR] = bar
    row[T_ENTRY_PRICE] = holding[S_ENTRY_PRICE]
    row[T_EXIT_PRICE] = fill
    row[T_ENTRY_FEE] = holding[S_ENTRY_FEE]
    row[T_EXIT_FEE] = fee
    row[T_REASON] = reason
    book[S_TRADE_COUNT] += 1.0
    book[S_FEES] += fee
    holding[S_QUANTITY] = 0.0


@jit
def _open_position(
    book: Array,
    holding: Array,
    params: Array,
    side: float,
    price: float,
    bar: int,
    size: float,
    equity: float,
    long_budget: float,
) -> None:
    """Open `side` on the (flat) holding at `price` moved by slippage, sized by `size`: a quantity, or a fraction of
    `equity` of which a long spends at most `long_budget` (math.inf for no cap); fees come out of the same budget.
    Nothing happens when that sizes to no units."""
    fill = price * (1.0 + side * params[P_SLIPPAGE])
    if params[P_SIZE_IS_QUANTITY] != 0.0:
        quantity = size
    else:
        quantity = (equity * size - params[P_FIXED_FEE]) / (fill * (1.0 + params[P_RATE]))
        if side > 0.0:
            affordable = (long_budget - params[P_FIXED_FEE]) / (fill * (1.0 + params[P_RATE]))
            if affordable < quantity:  # False for a NaN size, which stays NaN and is skipped below
                # Cash spent by an earlier entry is left at ± rounding error, which must not buy a dust position.
                quantity = affordable if affordable * fill > _DUST * equity else 0.0
        if params[P_LOT] > 0.0:
            quantity = math.floor(quantity / params[P_LOT]) * params[P_LOT]
    if not quantity > 0.0:  # also skips NaN sizes (volatility not yet known) and exhausted equity
        return
    fee = quantity * fill * params[P_RATE] + params[P_FIXED_FEE]
    book[S_CASH] -= side * quantity * fill + fee
    holding[S_QUANTITY] = side * quantity
    holding[S_ENTRY_PRICE] = fill
    holding[S_ENTRY_FEE] = fee
    holding[S_ENTRY_BAR] = bar
    holding[S_BEST_PRICE] = price
    book[S_FEES] += fee


@jit
def _side(quantity: float) -> float:
    return 0.0 if quantity == 0.0 else math.copysign(1.0, quantity)


@jit
def _wanted_side(target: float, allow_short: bool) -> float:
    """The side a signal value asks for: NaN (no change), 0, +1, or -1 (0 when shorts are not allowed)."""
    if math.isnan(target) or target == 0.0:
        return target
    if target < 0.0 and not allow_short:
        return 0.0
    return math.copysign(1.0, target)


@jit
def _move_to(state: Array, trades: Array, params: Array, side: float, price: float, bar: int, size: float) -> None:
    """Close the position (if any) and open one on `side` (if not flat), both at `price`. The single-symbol state is
    both book and holding; the entry is flat, so its equity is the cash (uncapped, as sizes may exceed 1)."""
    if state[S_QUANTITY] != 0.0:
        _close_position(state, state, trades, params, price=price, bar=bar, reason=_SIGNAL)
    if side != 0.0:
        _open_position(
            state, state, params, side=side, price=price, bar=bar, size=size, equity=state[S_CASH], long_budget=math.inf
        )


@jit
def _protective_exit(
    side: float,
    entry: float,
    best: float,
    open_: float,
    high: float,
    low: float,
    stop_loss: float,
    take_profit: float,
    trailing_stop: float,
) -> tuple[float, int]:
    """The exit price and reason of a position held at this bar's open, or (NaN, 0) when it survives the bar.

    A level already crossed at the open fills at the open; otherwise a touched level fills at the level. When the
    stop and the take-profit are both inside the bar the stop is assumed first (the order within a bar is unknown,
    so the worse outcome is booked). The trailing level comes from `best`, the best price before this bar: the
    bar's own extreme moves it only for the next bar."""
    # Work in "favourable = up" prices: for a short, negate every price so one set of comparisons serves both.
    up_open, up_high, up_low = side * open_, (high if side > 0.0 else -low), (low if side > 0.0 else -high)
    stop, stop_reason = -math.inf, 0
    if not math.isnan(stop_loss):
        stop, stop_reason = side * entry * (1.0 - side * stop_loss), _STOP_LOSS
    if not math.isnan(trailing_stop):
        trail = side * best * (1.0 - side * trailing_stop)
        if trail > stop:
            stop, stop_reason = trail, _TRAILING_STOP
    take = math.inf
    if not math.isnan(take_profit):
        take = side * entry * (1.0 + side * take_profit)
    if up_open <= stop:
        return open_, stop_reason
    if up_open >= take:
        return open_, _TAKE_PROFIT
    if up_low <= stop:
        return side * stop, stop_reason
    if up_high >= take:
        return side * take, _TAKE_PROFIT
    return math.nan, 0


@jit
def simulate(
    open_: Array,
    high: Array,
    low: Array,
    close: Array,
    signal: Array,
    *,
    size: Array,
    params: Array,
    state: Array,
    trades: Array,
    equity: Array,
    cash: Array,
    position: Array,
    begin: int,
    end: int,
) -> int:
    """Simulate bars [begin, end) and return the bar after the last one done: `end`, or earlier when the trade
    buffer could overflow on the next bar (the caller grows it and calls again with the same state).

    Per bar: the previous bar's signal fills at the open (NEXT_BAR_OPEN), protective exits are checked over the
    bar, this bar's signal fills at the close (SIGNAL_BAR_CLOSE), the position is marked at the close. `size[s]`
    is the entry size for a signal on bar s: a fraction of equity, or a quantity when P_SIZE_IS_QUANTITY is set.
    """
    last = close.shape[0] - 1
    start = int(params[P_START])
    next_open = params[P_NEXT_OPEN] != 0.0
    allow_short = params[P_ALLOW_SHORT] != 0.0
    stop_loss, take_profit, trailing_stop = params[P_STOP_LOSS], params[P_TAKE_PROFIT], params[P_TRAILING_STOP]
    exits_on = not (math.isnan(stop_loss) and math.isnan(take_profit) and math.isnan(trailing_stop))
    # What changes every bar lives in locals, synced with `state` around the (rare) fills: reading and writing it
    # through the state array (and passing arrays to per-bar helpers) made the loop several times slower.
    quantity, entry, best, exposed = state[S_QUANTITY], state[S_ENTRY_PRICE], state[S_BEST_PRICE], state[S_EXPOSED_BARS]
    for bar in range(begin, end):
        if state[S_TRADE_COUNT] + MAX_CLOSES_PER_BAR > trades.shape[0]:
            state[S_BEST_PRICE], state[S_EXPOSED_BARS] = best, exposed
            return bar
        # A target equal to the current side (or NaN) changes nothing; most bars stop at that test.
        side = _wanted_side(signal[bar - 1], allow_short) if next_open and bar > start else math.nan
        if not math.isnan(side) and side != _side(quantity):
            _move_to(state, trades, params, side=side, price=open_[bar], bar=bar, size=size[bar - 1])
            quantity, entry, best = state[S_QUANTITY], state[S_ENTRY_PRICE], state[S_BEST_PRICE]
        if exits_on and quantity != 0.0:
            side = _side(quantity)
            price, reason = _protective_exit(
                side, entry, best, open_[bar], high[bar], low[bar], stop_loss, take_profit, trailing_stop
            )
            if reason != 0:
                _close_position(state, state, trades, params, price=price, bar=bar, reason=reason)
                quantity = 0.0
            else:
                best = max(best, high[bar]) if side > 0.0 else min(best, low[bar])
        side = math.nan if next_open else _wanted_side(signal[bar], allow_short)
        if not math.isnan(side) and side != _side(quantity):
            _move_to(state, trades, params, side=side, price=close[bar], bar=bar, size=size[bar])
            quantity, entry, best = state[S_QUANTITY], state[S_ENTRY_PRICE], state[S_BEST_PRICE]
        if quantity != 0.0:
            exposed += 1.0
            if bar == last and params[P_CLOSE_AT_END] != 0.0:
                _close_position(state, state, trades, params, price=close[bar], bar=bar, reason=_END_OF_DATA)
                quantity = 0.0
        equity[bar] = state[S_CASH] + quantity * close[bar]
        cash[bar] = state[S_CASH]
        position[bar] = quantity
    state[S_BEST_PRICE], state[S_EXPOSED_BARS] = best, exposed
    return end


def new_state(initial_cash: float) -> Array:
    """State before the first bar: all cash, flat."""
    state = np.zeros(STATE_SIZE)
    state[S_CASH] = initial_cash
    return state
