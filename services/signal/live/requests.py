"""Decoding of the live methods' requests (each field checked, every violation reported) and encoding of the
signal-performance rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.errors import FieldViolation, InvalidArgument
from services.core.messages import naive_utc, timestamp
from services.core.timeframes import Timeframe
from services.signal.backtest_encoding import SYMBOL
from services.signal.live.performance import PerformanceRow

MAX_FILTER_VALUES = 100
T = TypeVar("T")
V = TypeVar("V")
_GRADES = frozenset(value for value in signal_pb2.SignalGrade.values() if value)


def symbols_of(raw: Sequence[str], field: str, violations: list[FieldViolation], *, limit: int) -> list[str]:
    if len(raw) > limit:
        raise InvalidArgument(FieldViolation(field, f"at most {limit} symbols"), reason="TOO_MANY_SYMBOLS")
    return _distinct(
        (value.strip().upper() for value in raw),
        SYMBOL.match,
        str,
        field,
        violations,
        description="1-32 of A-Z 0-9 . _ -",
    )


def timeframes_of(raw: Sequence[int], field: str, violations: list[FieldViolation]) -> list[Timeframe]:
    return _distinct(
        raw,
        Timeframe._value2member_map_.__contains__,
        Timeframe,
        field,
        violations,
        description="one of TIMEFRAME_1M … TIMEFRAME_1D",
    )


def grades_of(raw: Sequence[int], field: str, violations: list[FieldViolation]) -> list[int]:
    return _distinct(
        raw, _GRADES.__contains__, int, field, violations, description="one of SIGNAL_GRADE_STRONG_BUY … STRONG_SELL"
    )


def _distinct(
    raw: Iterable[V],
    valid: Callable[[V], object],
    convert: Callable[[V], T],
    field: str,
    violations: list[FieldViolation],
    *,
    description: str,
) -> list[T]:
    """The valid values, converted, without repeats, in first-seen order; a violation (`field[index]`) for each
    invalid one."""
    found: dict[T, None] = {}
    for index, value in enumerate(raw):
        if valid(value):
            found[convert(value)] = None
        else:
            violations.append(FieldViolation(f"{field}[{index}]", description))
    return list(found)


def strings_of(raw: Sequence[str], field: str, violations: list[FieldViolation]) -> list[str]:
    if len(raw) > MAX_FILTER_VALUES:
        violations.append(FieldViolation(field, f"at most {MAX_FILTER_VALUES} values"))
    return list(dict.fromkeys(value.strip() for value in raw if value.strip()))


def range_of(window: common_pb2.TimeRange, field: str = "range") -> tuple[datetime | None, datetime | None]:
    start = naive_utc(window.start_time) if window.HasField("start_time") else None
    end = naive_utc(window.end_time) if window.HasField("end_time") else None
    if start is not None and end is not None and not start < end:
        raise InvalidArgument(FieldViolation(field, "start_time must be before end_time"), reason="INVALID_RANGE")
    return start, end


def performance_message(row: PerformanceRow) -> signal_pb2.SignalPerformance:
    stats = row.stats
    message = signal_pb2.SignalPerformance(
        strategy_id=row.strategy_id,
        symbol=row.symbol,
        timeframe=int(row.timeframe),  # type: ignore[arg-type]
        horizon_bars=row.horizon,
        signal_count=stats.count,
        pending_count=row.pending,
        win_count=stats.wins,
    )
    for name, value in (
        ("win_rate", stats.win_rate),
        ("average_return", stats.average),
        ("sharpe", stats.sharpe),
        ("max_drawdown", stats.max_drawdown),
        ("best_return", stats.best),
        ("worst_return", stats.worst),
    ):
        if value is not None:
            setattr(message, name, value)
    for name, moment in (
        ("first_signal_time", row.first_signal_time),
        ("last_signal_time", row.last_signal_time),
        ("compute_time", row.compute_time),
    ):
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(moment))
    return message
