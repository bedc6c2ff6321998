"""The performance side of the stored signals (global database, SQLAlchemy Core): the signals whose directional
returns are still pending, the returns the job finds, and the groups and returns GetSignalPerformance reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db.databases import Databases
from services.core.timeframes import Timeframe
from services.signal.live.records import HORIZONS, LiveSignal, SeriesKey
from services.signal.live.signal_store import RETURN_COLUMNS, SignalFilter, signal_from_row, signals


@dataclass(frozen=True, slots=True)
class Outcome:
    """The performance job's finding for one signal: the directional returns known so far."""

    signal_id: str
    returns: dict[int, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalOutcome:
    """What GetSignalPerformance reads of a signal: its bar and its directional returns (None while pending)."""

    signal_id: str
    bar_time: datetime
    returns: dict[int, float | None]
    outcome_time: datetime | None


class OutcomeStore:
    """Signal returns in the global database."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def pending_series(self) -> list[SeriesKey]:
        """Series with signals whose returns are not all known yet."""

        async def work(connection: AsyncConnection) -> list[SeriesKey]:
            rows = await connection.execute(
                select(signals.c.symbol, signals.c.timeframe)
                .where(signals.c.resolved.is_(False))
                .group_by(signals.c.symbol, signals.c.timeframe)
            )
            return sorted(SeriesKey(row.symbol, Timeframe(row.timeframe)) for row in rows)

        return await self._databases.run_global(work)

    async def pending(self, series: SeriesKey, *, limit: int) -> list[LiveSignal]:
        """The series' unresolved signals, oldest bar first."""
        c = signals.c
        query = (
            select(signals)
            .where(c.resolved.is_(False), c.symbol == series.symbol, c.timeframe == int(series.timeframe))
            .order_by(c.bar_time, c.signal_id)
            .limit(limit)
        )

        async def work(connection: AsyncConnection) -> list[LiveSignal]:
            return [signal_from_row(row) for row in await connection.execute(query)]

        return await self._databases.run_global(work)

    async def record_outcomes(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        async def work(connection: AsyncConnection) -> None:
            for outcome in outcomes:
                values: dict[str, Any] = {RETURN_COLUMNS[horizon]: value for horizon, value in outcome.returns.items()}
                values["resolved"] = len(outcome.returns) == len(HORIZONS)
                values["outcome_time"] = now
                await connection.execute(
                    update(signals).where(signals.c.signal_id == outcome.signal_id).values(**values)
                )

        await self._databases.run_global(work)

    async def performance_groups(
        self, where: SignalFilter, *, start: tuple[str, str, int] | None, limit: int
    ) -> list[tuple[str, str, int]]:
        """The (strategy, symbol, timeframe) groups with signals matching `where`, in that order, from `start`
        (inclusive)."""
        c = signals.c
        conditions = where.conditions()
        if start is not None:
            strategy_id, symbol, timeframe = start
            conditions.append(
                or_(
                    c.strategy_id > strategy_id,
                    and_(c.strategy_id == strategy_id, c.symbol > symbol),
                    and_(c.strategy_id == strategy_id, c.symbol == symbol, c.timeframe >= timeframe),
                )
            )
        query = (
            select(c.strategy_id, c.symbol, c.timeframe)
            .where(*conditions)
            .group_by(c.strategy_id, c.symbol, c.timeframe)
            .order_by(c.strategy_id, c.symbol, c.timeframe)
            .limit(limit)
        )

        async def work(connection: AsyncConnection) -> list[tuple[str, str, int]]:
            return [(row.strategy_id, row.symbol, int(row.timeframe)) for row in await connection.execute(query)]

        return await self._databases.run_global(work)

    async def outcomes(self, where: SignalFilter, group: tuple[str, str, int], *, limit: int) -> list[SignalOutcome]:
        """The returns of one group's signals matching `where`, in bar order (GetSignalPerformance)."""
        c = signals.c
        strategy_id, symbol, timeframe = group
        query = (
            select(c.signal_id, c.bar_time, c.outcome_time, *(c[column] for column in RETURN_COLUMNS.values()))
            .where(*where.conditions(), c.strategy_id == strategy_id, c.symbol == symbol, c.timeframe == timeframe)
            .order_by(c.bar_time, c.signal_id)
            .limit(limit)
        )

        async def work(connection: AsyncConnection) -> list[SignalOutcome]:
            return [
                SignalOutcome(
                    signal_id=row.signal_id,
                    bar_time=row.bar_time,
                    returns={horizon: getattr(row, column) for horizon, column in RETURN_COLUMNS.items()},
                    outcome_time=row.outcome_time,
                )
                for row in await connection.execute(query)
            ]

        return await self._databases.run_global(work)
