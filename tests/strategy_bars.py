"""Realistic synthetic bars for strategy tests: a seeded geometric random walk through regimes (up and down trends,
mean-reverting ranges, quiet and volatile stretches) with valid OHLC and volume that grows with the move."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from services.signal.strategies.base import StrategyBars

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)


def generate(
    count: int,
    *,
    seed: int,
    span: timedelta,
    start: datetime,
    price: float = 100.0,
    volatility: float = 0.015,
    regime_bars: tuple[int, int] = (30, 160),
    drift: float = 0.25,
) -> StrategyBars:
    """`count` bars from `start`, one per `span` (no gaps): per-bar log-return volatility around `volatility`,
    regimes of `regime_bars` bars whose trends drift by up to `drift` volatilities a bar, and ranges that pull the
    price back to where they began."""
    rng = np.random.default_rng(seed)
    sigma = np.empty(count)
    trend = np.empty(count)
    pull = np.empty(count)
    at = 0
    while at < count:
        length = int(rng.integers(*regime_bars))
        kind = rng.choice(["up", "down", "range", "quiet"])
        regime_sigma = volatility * float(rng.uniform(0.5, 1.8))
        sigma[at : at + length] = regime_sigma
        direction = {"up": 1.0, "down": -1.0}.get(str(kind), 0.0)
        trend[at : at + length] = direction * drift * regime_sigma * float(rng.uniform(0.4, 1.0))
        pull[at : at + length] = 0.15 if kind == "range" else 0.0
        at += length
    shocks = rng.standard_normal(count) * sigma
    log_close = np.empty(count)
    level = anchor = float(np.log(price))
    for i in range(count):
        if i == 0 or pull[i] != pull[i - 1] or trend[i] != trend[i - 1]:
            anchor = level  # a new regime: a range reverts to where it starts
        level += trend[i] + shocks[i] - pull[i] * (level - anchor)
        log_close[i] = level
    close = np.exp(log_close)
    previous_close = np.concatenate(([price], close[:-1]))
    open_ = previous_close * np.exp(rng.standard_normal(count) * sigma * 0.2)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(count)) * sigma * 0.6)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(count)) * sigma * 0.6)
    move = np.abs(np.log(close / previous_close)) / sigma
    spikes = np.where(rng.random(count) < 0.03, rng.uniform(2.0, 5.0, count), 1.0)
    volume = 1000.0 * np.exp(rng.standard_normal(count) * 0.35) * (1.0 + 0.6 * move) * spikes
    times = np.datetime64(start.replace(tzinfo=None), "ns") + np.arange(count) * np.timedelta64(span)
    return StrategyBars(times.astype("datetime64[ns]"), open_, high, low, close, volume, span)


def daily_bars(count: int = 2000, *, seed: int = 7, price: float = 100.0) -> StrategyBars:
    """Daily bars from 2015-01-01."""
    return generate(count, seed=seed, span=DAY, start=datetime(2015, 1, 1), price=price)


def minute_bars(days: int = 40, *, seed: int = 6, price: float = 100.0) -> StrategyBars:
    """Round-the-clock minute bars over `days` days, starting 07:13 (so the first day is partial), with regimes
    lasting from hours to days so the daily trend turns."""
    return generate(
        days * 1440,
        seed=seed,
        span=MINUTE,
        start=datetime(2024, 3, 4, 7, 13),
        price=price,
        volatility=0.0009,
        regime_bars=(300, 5000),
        drift=0.015,
    )


def splice(bars: StrategyBars, cut: int, *, seed: int) -> StrategyBars:
    """Bars 0..cut kept and every later bar replaced by other random bars (same times, continuing from the close at
    `cut`): what a strategy decides up to `cut` must not change."""
    other = generate(len(bars), seed=seed, span=bars.span, start=datetime(2000, 1, 1), volatility=0.03)
    scale = bars.close[cut] / other.close[cut]
    keep = slice(0, cut + 1)

    def join(mine: np.ndarray, theirs: np.ndarray, factor: float) -> np.ndarray:
        out = theirs * factor
        out[keep] = mine[keep]
        return out

    return StrategyBars(
        bars.open_time,
        join(bars.open, other.open, scale),
        join(bars.high, other.high, scale),
        join(bars.low, other.low, scale),
        join(bars.close, other.close, scale),
        join(bars.volume, other.volume, 3.0),
        bars.span,
    )
