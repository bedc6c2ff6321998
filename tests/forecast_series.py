"""Seeded synthetic close series for the forecasting tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def random_walk(count: int, seed: int, *, sigma: float = 0.01, start: float = 100.0) -> Array:
    """Geometric Brownian motion without drift: log returns i.i.d. N(0, sigma²)."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, sigma, count - 1)
    closes: Array = start * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    return closes


def trending(count: int, seed: int, *, drift: float = 0.002, noise: float = 0.002, start: float = 100.0) -> Array:
    """A strong deterministic trend in log price (`drift` per bar) plus small i.i.d. noise around it."""
    rng = np.random.default_rng(seed)
    closes: Array = start * np.exp(drift * np.arange(count) + rng.normal(0.0, noise, count))
    return closes


def mean_reverting(count: int, seed: int, *, phi: float = 0.7, sigma: float = 0.01, start: float = 100.0) -> Array:
    """AR(1) log prices around log(start): x_t = phi·x_{t-1} + N(0, sigma²), started from the stationary law."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, sigma, count)
    x = np.empty(count)
    x[0] = shocks[0] / np.sqrt(1.0 - phi * phi)
    for t in range(1, count):
        x[t] = phi * x[t - 1] + shocks[t]
    closes: Array = start * np.exp(x)
    return closes
