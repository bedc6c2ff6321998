"""Loads every indicator module, so the registry holds the whole catalogue."""

from __future__ import annotations

import importlib

from services.signal.indicators.base import REGISTRY, IndicatorDef

MODULES = ("averages", "bands", "trend", "oscillators", "volume", "channels")


def load_indicators() -> dict[str, IndicatorDef]:
    """The catalogue by name (importing a module registers its indicators; importing twice is a no-op)."""
    for module in MODULES:
        importlib.import_module(f"services.signal.indicators.{module}")
    return REGISTRY
