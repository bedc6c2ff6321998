"""The request rules every part of the signal domain shares: a known strategy, a supported timeframe, a range in
order, a bounded number of bars. Each raises the domain error the contract names (mapped to a status by the error
interceptor)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.timeframes import Timeframe
from services.signal.strategies.base import REGISTRY, StrategyDef


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


def range_problem(start: datetime | None, end: datetime | None) -> str | None:
    """What is wrong with a range's order (a start, when given, before its end), None when nothing is."""
    if start is not None and end is not None and not start < end:
        return "start_time must be before end_time"
    return None


@dataclass(frozen=True, slots=True)
class BarRange:
    """Stored bars from `start` (inclusive; None: from the first, where a request may leave it open) to `end`
    (exclusive; None: up to the latest bar); INVALID_RANGE when the start is not before the end."""

    start: datetime | None
    end: datetime | None = None
    field: str = "range"

    def __post_init__(self) -> None:
        problem = range_problem(self.start, self.end)
        if problem is not None:
            raise InvalidArgument(FieldViolation(self.field, problem), reason="INVALID_RANGE")


def too_large(count: int, limit: int, field: str = "range") -> None:
    """RANGE_TOO_LARGE when a call would read more than `limit` bars."""
    if count > limit:
        raise InvalidArgument(
            FieldViolation(field, f"at most {limit} bars per call; narrow the range"), reason="RANGE_TOO_LARGE"
        )
