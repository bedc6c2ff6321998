"""Typed parameters, as strategies and forecasting algorithms declare theirs and ParameterSpec describes them:
INTEGER, NUMBER, BOOLEAN or CHOICE values with defaults, inclusive bounds or choices; checked as one set."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from services.core.errors import FieldViolation, InvalidArgument

ParamValue = int | float | bool | str
Params = Mapping[str, ParamValue]


class ParamType(IntEnum):
    """Numbers of bullant.common.v1.ParameterType."""

    INTEGER = 1
    NUMBER = 2
    BOOLEAN = 3
    CHOICE = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One typed parameter with its default and bounds (inclusive), or its choices for CHOICE."""

    name: str
    description: str
    type: ParamType
    default: ParamValue
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    step: float | None = None

    def check(self, value: ParamValue) -> tuple[ParamValue, str | None]:
        """The value as the parameter's Python type, or a problem description. An integer is accepted for a
        NUMBER; a float is not accepted for an INTEGER, nor a bool for either."""
        if self.type is ParamType.BOOLEAN:
            return (value, None) if isinstance(value, bool) else (value, "must be a boolean")
        if self.type is ParamType.CHOICE:
            if not isinstance(value, str) or value not in self.choices:
                return value, f"must be one of {', '.join(self.choices)}"
            return value, None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, "must be a number" if self.type is ParamType.NUMBER else "must be a whole number"
        if self.type is ParamType.INTEGER and not isinstance(value, int):
            return value, "must be a whole number (int_value)"
        number: int | float = value if self.type is ParamType.INTEGER else float(value)
        if not math.isfinite(number):
            return value, "must be a finite number"
        if self.minimum is not None and number < self.minimum:
            return value, f"must be at least {self.minimum:g}"
        if self.maximum is not None and number > self.maximum:
            return value, f"must be at most {self.maximum:g}"
        return number, None


def resolve_params(
    params: Sequence[Param], given: Params, *, owner: str, field: str = "parameters"
) -> dict[str, ParamValue]:
    """Every parameter's value (defaults filled in). InvalidArgument with a violation per problem (field paths
    `<field>.<name>`): reason UNKNOWN_PARAMETER when a name is unknown, else INVALID_PARAMETER."""
    known = {param.name: param for param in params}
    unknown = [
        FieldViolation(f"{field}.{name}", f"unknown parameter of {owner}; known: {', '.join(known) or 'none'}")
        for name in given
        if name not in known
    ]
    violations: list[FieldViolation] = []
    values: dict[str, ParamValue] = {}
    for param in params:
        value, problem = param.check(given.get(param.name, param.default))
        if problem:
            violations.append(FieldViolation(f"{field}.{param.name}", problem))
        values[param.name] = value
    if unknown or violations:
        raise InvalidArgument(unknown + violations, reason="UNKNOWN_PARAMETER" if unknown else "INVALID_PARAMETER")
    return values


def integer(name: str, description: str, default: int, minimum: int, maximum: int, *, unit: str = "") -> Param:
    """An INTEGER parameter (periods, orders, sizes, counts)."""
    return Param(
        name=name,
        description=description,
        type=ParamType.INTEGER,
        default=default,
        minimum=minimum,
        maximum=maximum,
        unit=unit,
        step=1,
    )


def number(
    name: str,
    description: str,
    default: float,
    minimum: float,
    maximum: float,
    *,
    unit: str = "",
    step: float | None = None,
) -> Param:
    """A NUMBER parameter (multipliers, thresholds, rates)."""
    return Param(
        name=name,
        description=description,
        type=ParamType.NUMBER,
        default=float(default),
        minimum=minimum,
        maximum=maximum,
        unit=unit,
        step=step,
    )


def boolean(name: str, description: str, default: bool) -> Param:
    """A BOOLEAN parameter (switches)."""
    return Param(name=name, description=description, type=ParamType.BOOLEAN, default=default)


def choice(name: str, description: str, default: str, choices: Sequence[str]) -> Param:
    """A CHOICE parameter (e.g. a moving-average kind, or a Timeframe proto name)."""
    return Param(name=name, description=description, type=ParamType.CHOICE, default=default, choices=tuple(choices))
