"""Typed parameters (services/core/parameters.py) ⇄ the shared protobuf messages that carry them: ParameterValue
both ways and ParameterSpec, for every service's encoding and decoding modules."""

from __future__ import annotations

from collections.abc import Mapping

from bullant.common.v1 import common_pb2
from services.core.parameters import Param, ParamType, ParamValue


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
