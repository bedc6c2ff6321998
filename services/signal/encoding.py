"""Conversions between the signal domain (strategies, parameters, events) and bullant.signal.v1 messages."""

from __future__ import annotations

import math

import numpy as np

from bullant.signal.v1 import signal_pb2
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.messages import parameter_spec, timestamp
from services.core.timeframes import Timeframe
from services.signal.strategies.base import (
    REGISTRY,
    SignalEvent,
    StrategyDef,
)


def strategy_message(strategy: StrategyDef) -> signal_pb2.Strategy:
    """ListStrategies' description of a strategy."""
    return signal_pb2.Strategy(
        strategy_id=strategy.strategy_id,
        display_name=strategy.display_name,
        description=strategy.description,
        parameters=[parameter_spec(param) for param in strategy.params],
        timeframes=[int(timeframe) for timeframe in strategy.timeframes],  # type: ignore[misc]
        warmup_bars=strategy.warmup(strategy.defaults),
        tags=list(strategy.tags),
    )


_SIDES = {1: 1, -1: 2}  # +1 → SIDE_BUY, -1 → SIDE_SELL


def event_message(event: SignalEvent, bar_time: np.datetime64) -> signal_pb2.SignalEvent:
    """A strategy event as a SignalEvent."""
    return signal_pb2.SignalEvent(
        bar_time=timestamp(bar_time),
        side=_SIDES[event.side],  # type: ignore[arg-type]
        strength=signal_pb2.SIGNAL_STRENGTH_STRONG if event.strong else signal_pb2.SIGNAL_STRENGTH_WEAK,
        confidence=event.confidence,
        reason=event.reason,
        price=event.price,
        indicator_values={name: value for name, value in event.values.items() if math.isfinite(value)},
    )


def timeframe_of(number: int, field: str = "timeframe") -> Timeframe:
    """A Timeframe from its proto number; INVALID_ARGUMENT when unset or unknown."""
    if number not in Timeframe._value2member_map_:
        raise InvalidArgument(FieldViolation(field, "is required: one of TIMEFRAME_1M … TIMEFRAME_1D"))
    return Timeframe(number)


def find_strategy(strategy_id: str, field: str = "strategy_id") -> StrategyDef:
    """The strategy with this id: INVALID_ARGUMENT when empty, NOT_FOUND STRATEGY_NOT_FOUND when unknown."""
    if not strategy_id:
        raise InvalidArgument(FieldViolation(field, "is required"))
    strategy = REGISTRY.get(strategy_id)
    if strategy is None:
        raise NotFound(
            f"no strategy {strategy_id!r}; ListStrategies names them",
            reason="STRATEGY_NOT_FOUND",
            metadata={"strategy_id": strategy_id},
        )
    return strategy
