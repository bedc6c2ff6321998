"""Loads every strategy module, so the registry holds the whole catalogue."""

from __future__ import annotations

import importlib

from services.signal.strategies.base import REGISTRY, StrategyDef

MODULES = ("trend", "reversion", "bollinger", "breakout", "momentum", "volume", "multi_timeframe")


def load_strategies() -> dict[str, StrategyDef]:
    """The catalogue by id (importing a module registers its strategies; importing twice is a no-op)."""
    for module in MODULES:
        importlib.import_module(f"services.signal.strategies.{module}")
    return REGISTRY
