"""Conversions between the signal domain (strategies, parameters, events) and bullant.signal.v1 messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.timeframes import Timeframe
from services.signal.strategies.base import (
    REGISTRY,
    ParamType,
    ParamValue,
    SignalEvent,
    StrategyDef,
    StrategyParam,
)


def naive_utc(stamp: Timestamp) -> datetime:
    """A Timestamp as naive UTC (how the platform stores times)."""
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)


def timestamp(moment: datetime | np.datetime64) -> Timestamp:
    """A naive-UTC datetime or a datetime64 as a Timestamp."""
    stamp = Timestamp()
    if isinstance(moment, np.datetime64):
        stamp.FromNanoseconds(int(moment.astype("datetime64[ns]").astype(np.int64)))
    else:
        stamp.FromDatetime(moment.replace(tzinfo=UTC))
    return stamp


def parameter_value(value: ParamValue) -> common_pb2.ParameterValue:
    """A Python parameter value as a ParameterValue (bool before int: a bool is an int in Python)."""
    if isinstance(value, bool):
        return common_pb2.ParameterValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.ParameterValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.ParameterValue(double_value=value)
    return common_pb2.ParameterValue(string_value=value)


def parameter_values(values: Mapping[str, ParamValue]) -> dict[str, common_pb2.ParameterValue]:
    return {name: parameter_value(value) for name, value in values.items()}


def decode_parameters(
    given: Mapping[str, common_pb2.ParameterValue], *, field: str = "parameters"
) -> dict[str, ParamValue]:
    """A parameter map as Python values; a value with no member set is INVALID_PARAMETER."""
    values: dict[str, ParamValue] = {}
    empty = []
    for name, value in given.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            empty.append(
                FieldViolation(
                    f"{field}.{name}", "has no value: set int_value, double_value, bool_value or string_value"
                )
            )
        else:
            values[name] = getattr(value, kind)
    if empty:
        raise InvalidArgument(empty, reason="INVALID_PARAMETER")
    return values


def _number(param: StrategyParam, value: float) -> common_pb2.ParameterValue:
    if param.type is ParamType.INTEGER:
        return common_pb2.ParameterValue(int_value=int(value))
    return common_pb2.ParameterValue(double_value=float(value))


def parameter_spec(param: StrategyParam) -> common_pb2.ParameterSpec:
    """A strategy parameter's ParameterSpec."""
    spec = common_pb2.ParameterSpec(
        name=param.name,
        description=param.description,
        type=int(param.type),  # type: ignore[arg-type]
        default_value=parameter_value(param.default),
        choices=list(param.choices),
        unit=param.unit,
    )
    if param.minimum is not None:
        spec.min_value.CopyFrom(_number(param, param.minimum))
    if param.maximum is not None:
        spec.max_value.CopyFrom(_number(param, param.maximum))
    if param.step is not None:
        spec.step = param.step
    return spec


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
