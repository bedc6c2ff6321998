"""Indicators on 1,000,000 bars: each batch form against TA-Lib's C implementation (the ratio is the figure; the
target is at most 2x), and the cost of one incremental update (what a live tick pays per indicator)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import talib

from services.market.feeds.sim import SimulatedFeed
from services.market.records import Timeframe
from services.signal.indicators.base import Bars, IndicatorDef
from services.signal.indicators.catalogue import load_indicators

# TA-Lib equivalents with the same parameters (None: TA-Lib has no such indicator).
TALIB: dict[str, Callable[[Bars, dict[str, Any]], object] | None] = {
    "sma": lambda b, p: talib.SMA(b.close, p["period"]),
    "ema": lambda b, p: talib.EMA(b.close, p["period"]),
    "wma": lambda b, p: talib.WMA(b.close, p["period"]),
    "dema": lambda b, p: talib.DEMA(b.close, p["period"]),
    "tema": lambda b, p: talib.TEMA(b.close, p["period"]),
    "macd": lambda b, p: talib.MACD(b.close, p["fast"], p["slow"], p["signal"]),
    "bbands": lambda b, p: talib.BBANDS(b.close, p["period"], p["k"], p["k"]),
    "atr": lambda b, p: talib.ATR(b.high, b.low, b.close, p["period"]),
    "adx": lambda b, p: (
        talib.ADX(b.high, b.low, b.close, p["period"]),
        talib.PLUS_DI(b.high, b.low, b.close, p["period"]),
        talib.MINUS_DI(b.high, b.low, b.close, p["period"]),
    ),
    "sar": lambda b, p: talib.SAR(b.high, b.low, p["acceleration"], p["maximum"]),
    "rsi": lambda b, p: talib.RSI(b.close, p["period"]),
    "stoch": lambda b, p: talib.STOCH(
        b.high,
        b.low,
        b.close,
        fastk_period=p["fastk_period"],
        slowk_period=p["slowk_period"],
        slowd_period=p["slowd_period"],
    ),
    "cci": lambda b, p: talib.CCI(b.high, b.low, b.close, p["period"]),
    "willr": lambda b, p: talib.WILLR(b.high, b.low, b.close, p["period"]),
    "roc": lambda b, p: talib.ROC(b.close, p["period"]),
    "mfi": lambda b, p: talib.MFI(b.high, b.low, b.close, b.volume, p["period"]),
    "obv": lambda b, p: talib.OBV(b.close, b.volume),
    "donchian": lambda b, p: (talib.MAX(b.high, p["period"]), talib.MIN(b.low, p["period"])),
}


def _bars(count: int) -> Bars:
    """Real-looking minute bars from the simulator (repeated to `count` if needed)."""
    feed = SimulatedFeed(seed=3, clock=lambda: datetime(2026, 6, 1))
    start = datetime(2026, 5, 1)
    bars = feed.bars("SIM-BTC-USDT", Timeframe.M1, start, start + timedelta(minutes=min(count, 30 * 1440)))
    columns = [np.array([getattr(bar, name) for bar in bars]) for name in ("open", "high", "low", "close", "volume")]
    repeats = -(-count // len(bars))
    return Bars(*[np.tile(column, repeats)[:count].astype(np.float64) for column in columns])


def _best(run: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _incremental_cost(definition: IndicatorDef, params: dict[str, Any], bars: Bars, updates: int) -> float:
    state = definition.incremental(**params)
    o, h, lo, c, v = (
        bars.open.tolist(),
        bars.high.tolist(),
        bars.low.tolist(),
        bars.close.tolist(),
        bars.volume.tolist(),
    )
    started = time.perf_counter()
    for i in range(updates):
        state.update(o[i], h[i], lo[i], c[i], v[i])
    return (time.perf_counter() - started) / updates


def run(quick: bool = False) -> None:
    """Print per indicator: batch time, TA-Lib time and ratio on 1M bars, and µs per incremental update."""
    count = 200_000 if quick else 1_000_000
    rounds = 1 if quick else 3
    bars = _bars(count)
    catalogue = load_indicators()
    print(f"== indicators on {count:,} bars: Bullant batch vs TA-Lib (C), and one incremental update ==")
    print(f"{'indicator':<12}{'bullant ms':>12}{'ta-lib ms':>12}{'ratio':>9}{'update us':>12}")
    for name in sorted(catalogue):
        definition = catalogue[name]
        params = definition.resolve({})
        definition.batch(bars, **params)  # compile (numba) and warm caches outside the timing
        ours = _best(functools.partial(definition.batch, bars, **params), rounds)
        reference = TALIB.get(name)
        theirs = _best(functools.partial(reference, bars, params), rounds) if reference else float("nan")
        ratio = f"{ours / theirs:8.2f}x" if reference else "      n/a"
        update = _incremental_cost(definition, params, bars, 20_000 if quick else 100_000)
        print(f"{name:<12}{ours * 1000:>12.1f}{theirs * 1000:>12.1f}{ratio:>9}{update * 1e6:>12.2f}")
    print("(ratio = Bullant time / TA-Lib time, target <= 2.00x; n/a: TA-Lib has no such indicator)")
