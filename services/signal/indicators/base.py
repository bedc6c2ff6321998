"""What every indicator is: typed parameters, named outputs, a vectorised batch form over arrays and an incremental
form with O(1) state per bar; the two must agree exactly (same float operations in the same order)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.core.errors import FieldViolation, InvalidArgument

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A numeric parameter: integer (periods) or real (multipliers), with bounds and a default."""

    name: str
    description: str
    default: float
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = True
    unit: str = ""
    step: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Output:
    """One output series; `display_offset_bars` tells charts how to shift it (values are never shifted)."""

    name: str
    description: str
    display_offset_bars: int = 0


@dataclass(frozen=True, slots=True)
class Bars:
    """Input arrays of equal length (float64). Indicators over one price series read `close` (the caller puts the
    chosen price source there)."""

    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array

    def __len__(self) -> int:
        return len(self.close)


class Incremental(Protocol):
    """Live form: one update per closed bar, returning one value per output (NaN while warming up)."""

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IndicatorDef:
    """An indicator: description, parameters, outputs, and its two forms.

    `batch(bars, **params)` returns one array per output, each as long as the input, with TA-Lib's warm-up NaNs.
    `incremental(**params)` returns an Incremental whose k-th update returns the k-th values of `batch`.
    """

    name: str
    display_name: str
    description: str
    params: tuple[Param, ...]
    outputs: tuple[Output, ...]
    inputs: tuple[str, ...]
    accepts_source: bool
    overlay: bool
    batch: Callable[..., tuple[Array, ...]]
    incremental: Callable[..., Incremental]

    def resolve(self, given: Mapping[str, float], *, field: str = "parameters") -> dict[str, float]:
        """Every parameter's value (defaults filled in); INVALID_ARGUMENT naming each unknown or out-of-range one."""
        known = {param.name: param for param in self.params}
        violations = [
            FieldViolation(f"{field}.{name}", f"unknown parameter of {self.name}; known: {', '.join(known) or 'none'}")
            for name in given
            if name not in known
        ]
        values: dict[str, float] = {}
        for param in self.params:
            value = float(given.get(param.name, param.default))
            problem = None
            if not np.isfinite(value):
                problem = "must be a finite number"
            elif param.integer and value != int(value):
                problem = "must be a whole number"
            elif param.minimum is not None and value < param.minimum:
                problem = f"must be at least {param.minimum:g}"
            elif param.maximum is not None and value > param.maximum:
                problem = f"must be at most {param.maximum:g}"
            if problem:
                violations.append(FieldViolation(f"{field}.{param.name}", problem))
            values[param.name] = int(value) if param.integer and problem is None else value
        if violations:
            raise InvalidArgument(violations, reason="PARAMETER_INVALID")
        return values


REGISTRY: dict[str, IndicatorDef] = {}


def register(definition: IndicatorDef) -> IndicatorDef:
    """Add an indicator to the registry (each indicator module registers its own at import)."""
    if definition.name in REGISTRY:
        raise ValueError(f"indicator {definition.name} registered twice")
    REGISTRY[definition.name] = definition
    return definition
