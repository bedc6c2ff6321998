"""Small conversions between Python values and the shared protobuf types (Timestamp, bullant.common.v1
ParameterValue) that every service's encoding module needs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from services.core.parameters import Param, ParamType, ParamValue


def naive_utc(stamp: Timestamp) -> datetime:
    """A Timestamp as naive UTC (how the platform stores times)."""
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)


def timestamp(moment: datetime | np.datetime64) -> Timestamp:
    """A naive-UTC (or aware) datetime, or a datetime64, as a Timestamp."""
    stamp = Timestamp()
    if isinstance(moment, np.datetime64):
        stamp.FromNanoseconds(int(moment.astype("datetime64[ns]").astype(np.int64)))
    else:
        stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
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


def decode_parameters(given: Mapping[str, common_pb2.ParameterValue]) -> dict[str, ParamValue]:
    """A parameter map as Python values. Every value has a member set: ParameterValue's declared rule (a value
    without one is INVALID_PARAMETER before the request reaches a handler)."""
    return {name: getattr(value, str(value.WhichOneof("kind"))) for name, value in given.items()}


def _bound(param: Param, value: float) -> common_pb2.ParameterValue:
    if param.type is ParamType.INTEGER:
        return common_pb2.ParameterValue(int_value=int(value))
    return common_pb2.ParameterValue(double_value=float(value))


def parameter_spec(param: Param) -> common_pb2.ParameterSpec:
    """A typed parameter's ParameterSpec."""
    spec = common_pb2.ParameterSpec(
        name=param.name,
        description=param.description,
        type=int(param.type),  # type: ignore[arg-type]
        default_value=parameter_value(param.default),
        choices=list(param.choices),
        unit=param.unit,
    )
    if param.minimum is not None:
        spec.min_value.CopyFrom(_bound(param, param.minimum))
    if param.maximum is not None:
        spec.max_value.CopyFrom(_bound(param, param.maximum))
    if param.step is not None:
        spec.step = param.step
    return spec
