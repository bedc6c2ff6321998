"""Backtests: the numba engine (engine/), simulation of a plan, the job runner, storage and encoding."""
