"""What every indicator is: typed parameters (services.core.parameters' Param, INTEGER or NUMBER), named outputs,
a vectorised batch form over arrays and an incremental form with O(1) state per bar; the two must agree exactly
(same float operations in the same order)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.core.errors import FieldViolation, InvalidArgument
from services.core.parameters import Param, ParamType

Array = npt.NDArray[np.float64]


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


# A recursive indicator counts as converged at a bar once the state it started from weighs less than this in the
# value (see Memory): the values then equal those computed from any earlier start to about 1e-9 relative. The
# margin of 1000 covers a start that was off by more than the value itself (a seed far from a price that has since
# moved, a difference of averages near zero) and the nonlinear steps (ratios) after the smoothing.
CONVERGED_WEIGHT = 1e-12


class MemoryKind(Enum):
    """How an indicator's value at a bar depends on the bars before it."""

    WINDOW = "window"  # on the last `bars` bars only: any start at least that far back gives the same value
    DECAYING = "decaying"  # on every earlier bar, with weights that fall geometrically (EMA, Wilder smoothing)
    PATH = "path"  # on where it started, until its state is reset by the data (the parabolic SAR's reversals)
    CUMULATIVE = "cumulative"  # on every bar since its start, without ever forgetting (OBV, anchored VWAP)


@dataclass(frozen=True, slots=True)
class Memory:
    """How far back a value reaches. `bars` is the history before a bar that determines its value: exactly for a
    WINDOW; to within CONVERGED_WEIGHT of the starting state's weight for DECAYING (derived from its recursion);
    a first guess, to be verified, for PATH; nothing for CUMULATIVE, whose origin the caller defines."""

    kind: MemoryKind
    bars: int = 0

    @classmethod
    def window(cls, bars: int) -> Memory:
        return cls(MemoryKind.WINDOW, max(0, bars))

    @classmethod
    def decaying(cls, seed_bars: int, poles: Sequence[float]) -> Memory:
        """A recursion seeded after `seed_bars` bars and then run through first-order smoothing stages with these
        poles (the factor each stage keeps of its previous value: 1 - 2/(n+1) for an EMA, 1 - 1/n for Wilder's),
        chained in this order (parallel stages may be listed as a chain: that bound is larger)."""
        return cls(MemoryKind.DECAYING, max(0, seed_bars) + bars_to_converge(poles))


def bars_to_converge(poles: Sequence[float], weight: float = CONVERGED_WEIGHT) -> int:
    """The fewest bars t after which a chain of first-order stages y = r·y' + (1-r)·x has forgotten its starting
    states to below `weight`.

    A difference d in a stage's starting state decays as r^t; fed into the next stage it adds at most
    (1-r)·(t+1)·R^t·d, R being the largest pole. By induction the last of m stages keeps at most
    R^t · P_m(t) of a unit difference, with P_1 = 1 and P_k(t) = 1 + q·(t+1)·P_{k-1}(t), q the largest 1-r: the
    answer is the least t with that bound below `weight` (found by bisection on its logarithm)."""
    if not poles:
        return 0
    largest = max(poles)
    if largest <= 0.0:  # every stage copies its input (an EMA of period 1)
        return 0
    if largest >= 1.0:
        raise ValueError(f"a pole of {largest} never forgets its start")
    step = max(1.0 - pole for pole in poles)

    def log_bound(t: int) -> float:
        chain = 1.0
        for _ in poles[1:]:
            chain = 1.0 + step * (t + 1) * chain
        return t * math.log(largest) + math.log(chain)

    target = math.log(weight)
    high = 1
    while log_bound(high) >= target:
        high *= 2
    low = high // 2
    while low + 1 < high:  # log_bound(low) >= target > log_bound(high), or low is 0
        middle = (low + high) // 2
        if log_bound(middle) < target:
            high = middle
        else:
            low = middle
    return high


class Incremental(Protocol):
    """Live form: one update per closed bar, returning one value per output (NaN while warming up)."""

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> tuple[float, ...]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IndicatorDef:
    """An indicator: description, parameters, outputs, and its two forms.

    `batch(bars, **params)` returns one array per output, each as long as the input, with TA-Lib's warm-up NaNs.
    `incremental(**params)` returns an Incremental whose k-th update returns the k-th values of `batch`.
    `memory(**params)`, given every parameter (resolved), says how far back a value reaches; ComputeIndicators'
    extend_for_warmup reads that much history before the range.
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
    memory: Callable[..., Memory]

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
            elif param.type is ParamType.INTEGER and value != int(value):
                problem = "must be a whole number"
            elif param.minimum is not None and value < param.minimum:
                problem = f"must be at least {param.minimum:g}"
            elif param.maximum is not None and value > param.maximum:
                problem = f"must be at most {param.maximum:g}"
            if problem:
                violations.append(FieldViolation(f"{field}.{param.name}", problem))
            values[param.name] = int(value) if param.type is ParamType.INTEGER and problem is None else value
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
