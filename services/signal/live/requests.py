"""Decoding of the live methods' requests into the queries of services/signal/service/live.py (which checks them)
and encoding of the signal-performance rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from bullant.common.v1 import common_pb2
from bullant.signal.v1 import signal_pb2
from services.core.timeframes import Timeframe
from services.core.timestamps import naive_utc, timestamp
from services.signal.fusion import BUY, SELL
from services.signal.live.performance import PerformanceRow
from services.signal.service.live import PerformanceQuery, SignalQuery, StreamRequest

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


def range_of(window: common_pb2.TimeRange) -> tuple[datetime | None, datetime | None]:
    """A range's ends (each None when absent); the service checks their order."""
    start = naive_utc(window.start_time) if window.HasField("start_time") else None
    end = naive_utc(window.end_time) if window.HasField("end_time") else None
    return start, end


_SIDES = {common_pb2.SIDE_BUY: BUY, common_pb2.SIDE_SELL: SELL}


def stream_request(request: signal_pb2.StreamSignalsRequest) -> StreamRequest:
    return StreamRequest(
        symbols=symbols_of(request.symbols),
        strategy_ids=strings_of(request.strategy_ids),
        timeframes=timeframes_of(request.timeframes),
        grades=grades_of(request.grades),
        alerts_only=request.alerts_only,
        replay_since=naive_utc(request.replay_since_time) if request.HasField("replay_since_time") else None,
    )


def signal_query(request: signal_pb2.ListSignalsRequest) -> SignalQuery:
    start, end = range_of(request.range)
    return SignalQuery(
        symbols=symbols_of(request.symbols),
        strategy_ids=strings_of(request.strategy_ids),
        timeframes=timeframes_of(request.timeframes),
        grades=grades_of(request.grades),
        side=_SIDES.get(request.side, 0),
        start=start,
        end=end,
        technical_only=request.technical_only if request.HasField("technical_only") else None,
        alert_id=request.alert_id,
    )


def performance_query(request: signal_pb2.GetSignalPerformanceRequest) -> PerformanceQuery:
    start, end = range_of(request.range)
    return PerformanceQuery(
        strategy_id=request.strategy_id,
        symbol=request.symbol,
        timeframe=request.timeframe,
        horizons=list(request.horizons),
        grades=grades_of(request.grades),
        start=start,
        end=end,
    )


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
