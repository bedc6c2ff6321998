"""Decoding of the live methods' requests (each field checked, every violation reported) and encoding of the
signal-performance rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.errors import FieldViolation, InvalidArgument
from services.core.messages import naive_utc, timestamp
from services.core.timeframes import Timeframe
from services.signal.live.performance import PerformanceRow

T = TypeVar("T")


def symbols_of(raw: Sequence[str]) -> list[str]:
    """The symbols of a filter, upper case, without repeats, in first-seen order (their count and spelling are
    declared request rules, checked before the handler)."""
    return list(dict.fromkeys(value.upper() for value in raw))


def timeframes_of(raw: Sequence[int]) -> list[Timeframe]:
    return list(dict.fromkeys(Timeframe(value) for value in raw))


def grades_of(raw: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(int(value) for value in raw))


def strings_of(raw: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(raw))


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
