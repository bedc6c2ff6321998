"""The multi-symbol simulation loop, compiled with numba; portfolio.py is its validated, typed front door.

It walks the sorted union of the symbols' bar open times with one shared book (cash, trade count, fees, exposed
bars) and one holding per symbol, reusing kernel.py's fill, exit and sizing helpers. The symbols' bars are
concatenated into flat arrays: symbol j's local bar i is flat index `offsets[j] + i`, and `union_index` gives each
flat bar's position on the union timeline.

numba's on-disk cache is checked against each function's own source file only: after editing a kernel.py helper,
clear this package's __pycache__ (or touch this file) or the portfolio keeps running the old compiled helper.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from services.signal.backtests.engine.kernel import (
    _END_OF_DATA,
    _SIGNAL,
    MAX_CLOSES_PER_BAR,
    P_ALLOW_SHORT,
    P_CLOSE_AT_END,
    P_NEXT_OPEN,
    P_STOP_LOSS,
    P_TAKE_PROFIT,
    P_TRAILING_STOP,
    S_BEST_PRICE,
    S_CASH,
    S_ENTRY_PRICE,
    S_EXPOSED_BARS,
    S_QUANTITY,
    S_TRADE_COUNT,
    STATE_SIZE,
    TRADE_COLUMNS,
    Array,
    _close_position,
    _open_position,
    _protective_exit,
    _side,
    _wanted_side,
    jit,
)

Indices = npt.NDArray[np.int64]

# The portfolio's trade buffer has kernel.py's columns plus the symbol's index.
T_SYMBOL = TRADE_COLUMNS
PORTFOLIO_TRADE_COLUMNS = TRADE_COLUMNS + 1


@jit
def _equity(book: Array, holdings: Array, mark: Array) -> float:
    """Cash plus every holding marked at its symbol's current mark price (summed in symbol order from the cash, so
    one symbol gives exactly the single engine's cash + quantity × price)."""
    value = 0.0
    for symbol in range(holdings.shape[0]):
        value += holdings[symbol, S_QUANTITY] * mark[symbol]
    return float(book[S_CASH] + value)


@jit
def _close(
    book: Array, holdings: Array, trades: Array, params: Array, symbol: int, price: float, bar: int, reason: int
) -> None:
    """kernel._close_position for one symbol, tagging the trade row with the symbol."""
    row = int(book[S_TRADE_COUNT])
    _close_position(book, holdings[symbol], trades, params, price=price, bar=bar, reason=reason)
    trades[row, T_SYMBOL] = symbol


@jit
def _find_active(
    union_bar: int, union_index: Indices, offsets: Indices, counts: Indices, cursor: Indices, active: Indices,
    flat_bar: Indices,
) -> int:  # fmt: skip
    """Put the symbols with a bar at `union_bar` in `active` (in symbol order) and those bars' flat indices in
    `flat_bar`; return how many there are."""
    count = 0
    for symbol in range(offsets.shape[0]):
        local = cursor[symbol]
        if local < counts[symbol] and union_index[offsets[symbol] + local] == union_bar:
            active[count] = symbol
            flat_bar[count] = offsets[symbol] + local
            count += 1
    return count


@jit
def _pending_signals(
    holdings: Array, signal: Array, allow_short: bool, lag: int, active: Indices, active_count: int,
    flat_bar: Indices, offsets: Indices, starts: Indices, signal_bar: Indices,
) -> bool:  # fmt: skip
    """Set `signal_bar[k]` to the flat index of the signal active symbol k fills now (`lag` bars back: 1 at the
    open, 0 at the close; only signals from simulated bars) when it asks for another side, else to -1; return
    whether any does. Most bars stop here, sparing the fill pass."""
    pending = False
    for k in range(active_count):
        symbol = active[k]
        source = flat_bar[k] - lag
        signal_bar[k] = -1
        if source - offsets[symbol] >= starts[symbol]:
            side = _wanted_side(signal[source], allow_short)
            if not math.isnan(side) and side != _side(holdings[symbol, S_QUANTITY]):
                signal_bar[k] = source
                pending = True
    return pending


@jit
def _fill_signals(
    book: Array, holdings: Array, trades: Array, params: Array, mark: Array, active: Indices, active_count: int,
    flat_bar: Indices, offsets: Indices, signal_bar: Indices, signal: Array, size: Array, price: Array,
) -> None:  # fmt: skip
    """Fill the pending signals (`signal_bar[k]` >= 0) at `price` of the symbols' bars: first every exit (a flat
    target or the closing leg of a reversal), then every entry, each pass in symbol order, so the cash the exits
    free is there for the entries. Entries are sized on the whole equity with the symbols marked at `mark`; a long
    spends at most the cash."""
    allow_short = params[P_ALLOW_SHORT] != 0.0
    for k in range(active_count):
        if signal_bar[k] >= 0 and holdings[active[k], S_QUANTITY] != 0.0:
            symbol, flat = active[k], flat_bar[k]
            _close(
                book, holdings, trades, params, symbol, price=price[flat], bar=flat - offsets[symbol], reason=_SIGNAL
            )
    for k in range(active_count):
        source = signal_bar[k]
        if source < 0:
            continue
        side = _wanted_side(signal[source], allow_short)
        if side != 0.0:  # a pending signal asked for another side, so the holding is flat now
            symbol, flat = active[k], flat_bar[k]
            _open_position(
                book, holdings[symbol], params, side=side, price=price[flat], bar=flat - offsets[symbol],
                size=size[source], equity=_equity(book, holdings, mark), long_budget=book[S_CASH],
            )  # fmt: skip


@jit
def _protective_exits(
    book: Array, holdings: Array, trades: Array, params: Array, active: Indices, active_count: int,
    flat_bar: Indices, offsets: Indices, open_: Array, high: Array, low: Array,
) -> None:  # fmt: skip
    """Check the active symbols' positions against their protective levels over their bars (kernel's rules), closing
    those touched and trailing the best price of the others."""
    stop_loss, take_profit, trailing_stop = params[P_STOP_LOSS], params[P_TAKE_PROFIT], params[P_TRAILING_STOP]
    for k in range(active_count):
        symbol, flat = active[k], flat_bar[k]
        quantity = holdings[symbol, S_QUANTITY]
        if quantity == 0.0:
            continue
        side = _side(quantity)
        best = holdings[symbol, S_BEST_PRICE]
        price, reason = _protective_exit(
            side, holdings[symbol, S_ENTRY_PRICE], best, open_[flat], high[flat], low[flat], stop_loss, take_profit,
            trailing_stop,
        )  # fmt: skip
        if reason != 0:
            _close(book, holdings, trades, params, symbol, price=price, bar=flat - offsets[symbol], reason=reason)
        else:
            holdings[symbol, S_BEST_PRICE] = max(best, high[flat]) if side > 0.0 else min(best, low[flat])


@jit
def simulate_portfolio(
    open_: Array,
    high: Array,
    low: Array,
    close: Array,
    signal: Array,
    *,
    size: Array,
    union_index: Indices,
    offsets: Indices,
    counts: Indices,
    starts: Indices,
    params: Array,
    book: Array,
    holdings: Array,
    cursor: Indices,
    mark: Array,
    trades: Array,
    equity: Array,
    cash: Array,
    position: Array,
    position_value: Array,
    begin: int,
    end: int,
) -> int:
    """Simulate union bars [begin, end) and return the union bar after the last one done: `end`, or earlier when
    the trade buffer could overflow on the next one (the caller grows it and calls again with the same state).

    `cursor[j]` is symbol j's next local bar and `mark[j]` its mark price (its last close), both carried between
    calls. `starts[j]` is its first simulated local bar (after warm-up). Per union bar, over the symbols that have
    a bar there: the marks move to the open; NEXT_BAR_OPEN fills the previous local bar's signals at the open
    (exits, then entries); protective exits are checked over each bar; the marks move to the close;
    SIGNAL_BAR_CLOSE fills this bar's signals at the close (exits, then entries); the bar counts as exposed when
    any symbol holds a position; a symbol at its last bar closes its position (close_at_end); finally equity =
    cash + Σ position × mark, the cash, the sum of the symbols' signed quantities and their marked value are
    recorded at [union bar] of `equity`, `cash`, `position` and `position_value`.
    """
    symbols = holdings.shape[0]
    next_open, allow_short = params[P_NEXT_OPEN] != 0.0, params[P_ALLOW_SHORT] != 0.0
    exits_on = not (
        math.isnan(params[P_STOP_LOSS]) and math.isnan(params[P_TAKE_PROFIT]) and math.isnan(params[P_TRAILING_STOP])
    )
    close_at_end = params[P_CLOSE_AT_END] != 0.0
    active = np.empty(symbols, dtype=np.int64)  # symbols with a bar at this union bar, in symbol order ...
    flat_bar = np.empty(symbols, dtype=np.int64)  # ... the flat index of that bar ...
    signal_bar = np.empty(symbols, dtype=np.int64)  # ... and of the signal filling in this phase (-1: none)
    for union_bar in range(begin, end):
        if book[S_TRADE_COUNT] + symbols * MAX_CLOSES_PER_BAR > trades.shape[0]:
            return union_bar
        count = _find_active(union_bar, union_index, offsets, counts, cursor, active, flat_bar)
        for k in range(count):
            mark[active[k]] = open_[flat_bar[k]]
        if next_open and _pending_signals(
            holdings, signal, allow_short, 1, active, count, flat_bar, offsets, starts, signal_bar
        ):
            _fill_signals(
                book, holdings, trades, params, mark, active, count, flat_bar, offsets, signal_bar, signal, size, open_
            )
        if exits_on:
            _protective_exits(book, holdings, trades, params, active, count, flat_bar, offsets, open_, high, low)
        for k in range(count):
            mark[active[k]] = close[flat_bar[k]]
        if not next_open and _pending_signals(
            holdings, signal, allow_short, 0, active, count, flat_bar, offsets, starts, signal_bar
        ):
            _fill_signals(
                book, holdings, trades, params, mark, active, count, flat_bar, offsets, signal_bar, signal, size, close
            )
        value, quantity_sum, exposed = 0.0, 0.0, False
        for symbol in range(symbols):
            exposed = exposed or holdings[symbol, S_QUANTITY] != 0.0
        book[S_EXPOSED_BARS] += 1.0 if exposed else 0.0
        for k in range(count):
            symbol, local = active[k], flat_bar[k] - offsets[active[k]]
            if close_at_end and local == counts[symbol] - 1 and holdings[symbol, S_QUANTITY] != 0.0:
                _close(book, holdings, trades, params, symbol, price=close[flat_bar[k]], bar=local, reason=_END_OF_DATA)
            cursor[symbol] = local + 1
        for symbol in range(symbols):
            value += holdings[symbol, S_QUANTITY] * mark[symbol]
            quantity_sum += holdings[symbol, S_QUANTITY]
        equity[union_bar] = book[S_CASH] + value
        cash[union_bar] = book[S_CASH]
        position[union_bar] = quantity_sum
        position_value[union_bar] = value
    return end


def new_holdings(symbols: int) -> Array:
    """One flat holding per symbol (rows laid out like kernel.py's state; only the holding fields are used)."""
    return np.zeros((symbols, STATE_SIZE))
