"""Stored live signals and the engine's per-series progress, in the global database (SQLAlchemy Core)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Index,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db.databases import Databases
from services.core.db.group_commit import GroupCommit
from services.core.db.queries import newest_first
from services.core.db.schema import DOUBLE_PRECISION, global_metadata
from services.core.timeframes import Timeframe
from services.signal.fusion import Grade
from services.signal.live.records import HORIZONS, LiveSignal, SeriesKey, Unit

signals = Table(
    "signals",
    global_metadata,
    Column("signal_id", String(32), primary_key=True),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", SmallInteger, nullable=False),
    Column("strategy_id", String(64), nullable=False),
    Column("parameters_key", String(16), nullable=False),
    Column("parameters", Text, nullable=False),
    # Defaults of the strategy: everyone's signal; otherwise seen only through the alerts it fired.
    Column("platform", Boolean, nullable=False),
    Column("side", SmallInteger, nullable=False),
    Column("strong", Boolean, nullable=False),
    Column("technical_confidence", DOUBLE_PRECISION, nullable=False),
    Column("model_confidence", DOUBLE_PRECISION, nullable=True),
    Column("model_agrees", Boolean, nullable=True),
    Column("fused_confidence", DOUBLE_PRECISION, nullable=False),
    Column("grade", SmallInteger, nullable=False),
    Column("technical_only", Boolean, nullable=False),
    Column("technical_only_reason", SmallInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("price", DOUBLE_PRECISION, nullable=False),
    Column("bar_time", DateTime(timezone=False), nullable=False),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("model_prediction_id", String(64), nullable=False),
    Column("model_id", String(64), nullable=False),
    Column("indicator_values", Text, nullable=False),
    Column("return_1", DOUBLE_PRECISION, nullable=True),
    Column("return_5", DOUBLE_PRECISION, nullable=True),
    Column("return_20", DOUBLE_PRECISION, nullable=True),
    # True once every horizon's return is known.
    Column("resolved", Boolean, nullable=False),
    Column("outcome_time", DateTime(timezone=False), nullable=True),
    Index("ix_signals_platform_bar", "platform", "bar_time", "signal_id"),
    Index("ix_signals_unit", "symbol", "timeframe", "strategy_id", "parameters_key", "bar_time"),
    Index("ix_signals_created", "create_time"),
    Index("ix_signals_pending", "resolved", "symbol", "timeframe", "bar_time"),
    Index("ix_signals_performance", "strategy_id", "symbol", "timeframe", "bar_time"),
    comment="Signals of the live engine, one per strategy, parameter set, series and bar.",
)

signal_series = Table(
    "signal_series",
    global_metadata,
    Column("symbol", String(32), primary_key=True),
    Column("timeframe", SmallInteger, primary_key=True),
    # The newest bar the engine has fully processed (signals stored, published, alerts fired).
    Column("last_bar_time", DateTime(timezone=False), nullable=False),
    Column("update_time", DateTime(timezone=False), nullable=False),
    comment="How far the live engine got in each series: a new leader evaluates the bars after it.",
)

RETURN_COLUMNS = {horizon: f"return_{horizon}" for horizon in HORIZONS}


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalFilter:
    """ListSignals / replay filters; empty values match everything. `platform_only` hides the signals of alerts'
    own parameter sets."""

    symbols: Sequence[str] = ()
    strategy_ids: Sequence[str] = ()
    timeframes: Sequence[int] = ()
    grades: Sequence[int] = ()
    side: int = 0
    start: datetime | None = None
    end: datetime | None = None
    technical_only: bool | None = None
    platform_only: bool = True

    def conditions(self) -> list[ColumnElement[bool]]:
        c = signals.c
        where: list[ColumnElement[bool]] = []
        if self.platform_only:
            where.append(c.platform.is_(True))
        if self.symbols:
            where.append(c.symbol.in_(list(self.symbols)))
        if self.strategy_ids:
            where.append(c.strategy_id.in_(list(self.strategy_ids)))
        if self.timeframes:
            where.append(c.timeframe.in_([int(value) for value in self.timeframes]))
        if self.grades:
            where.append(c.grade.in_([int(value) for value in self.grades]))
        if self.side:
            where.append(c.side == self.side)
        if self.start is not None:
            where.append(c.bar_time >= self.start)
        if self.end is not None:
            where.append(c.bar_time < self.end)
        if self.technical_only is not None:
            where.append(c.technical_only.is_(self.technical_only))
        return where


def _row(signal: LiveSignal) -> dict[str, Any]:
    returns = {column: signal.returns.get(horizon) for horizon, column in RETURN_COLUMNS.items()}
    return {
        "signal_id": signal.signal_id,
        "symbol": signal.symbol,
        "timeframe": int(signal.timeframe),
        "strategy_id": signal.strategy_id,
        "parameters_key": signal.parameters_key,
        "parameters": json.dumps(signal.parameters, sort_keys=True),
        "platform": signal.platform,
        "side": signal.side,
        "strong": signal.strong,
        "technical_confidence": signal.technical_confidence,
        "model_confidence": signal.model_confidence,
        "model_agrees": signal.model_agrees,
        "fused_confidence": signal.fused_confidence,
        "grade": int(signal.grade),
        "technical_only": signal.technical_only,
        "technical_only_reason": signal.technical_only_reason,
        "reason": signal.reason,
        "price": signal.price,
        "bar_time": signal.bar_time,
        "create_time": signal.create_time,
        "model_prediction_id": signal.model_prediction_id,
        "model_id": signal.model_id,
        "indicator_values": json.dumps(signal.indicator_values, sort_keys=True),
        **returns,
        "resolved": all(value is not None for value in returns.values()),
        "outcome_time": signal.outcome_time,
    }


def signal_from_row(row: Row[Any]) -> LiveSignal:
    return LiveSignal(
        signal_id=row.signal_id,
        symbol=row.symbol,
        timeframe=Timeframe(row.timeframe),
        strategy_id=row.strategy_id,
        parameters=json.loads(row.parameters),
        parameters_key=row.parameters_key,
        platform=bool(row.platform),
        side=int(row.side),
        strong=bool(row.strong),
        technical_confidence=float(row.technical_confidence),
        model_confidence=None if row.model_confidence is None else float(row.model_confidence),
        model_agrees=None if row.model_agrees is None else bool(row.model_agrees),
        fused_confidence=float(row.fused_confidence),
        grade=Grade(row.grade),
        technical_only_reason=int(row.technical_only_reason),
        reason=row.reason,
        price=float(row.price),
        bar_time=row.bar_time,
        create_time=row.create_time,
        model_prediction_id=row.model_prediction_id,
        model_id=row.model_id,
        indicator_values=json.loads(row.indicator_values),
        returns={horizon: getattr(row, column) for horizon, column in RETURN_COLUMNS.items()},
        outcome_time=row.outcome_time,
    )


async def _add_each(
    connection: AsyncConnection, batch: Sequence[LiveSignal]
) -> tuple[list[LiveSignal], list[LiveSignal]]:
    """Store each signal unless stored (a bar evaluated again after a fail-over)."""
    ids = [signal.signal_id for signal in batch]
    found = {
        row.signal_id: signal_from_row(row)
        for row in await connection.execute(select(signals).where(signals.c.signal_id.in_(ids)))
    }
    new: list[LiveSignal] = []
    for signal in batch:
        if signal.signal_id in found:
            continue
        try:
            async with connection.begin_nested():
                await connection.execute(insert(signals).values(**_row(signal)))
        except IntegrityError:
            row = (await connection.execute(select(signals).where(signals.c.signal_id == signal.signal_id))).one()
            found[signal.signal_id] = signal_from_row(row)
            continue
        new.append(signal)
    return new, [found[signal.signal_id] for signal in batch if signal.signal_id in found]


Split = tuple[list[LiveSignal], list[LiveSignal]]


class SignalStore:
    """Signals and series progress in the global database. Concurrent writes of the series that close a bar at the
    same moment share transactions (group commit)."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases
        self._adds: GroupCommit[Sequence[LiveSignal], Split] = GroupCommit(self._add_batches)
        self._advances: GroupCommit[tuple[SeriesKey, datetime, datetime], None] = GroupCommit(self._advance_batch)

    async def add_split(self, batch: Sequence[LiveSignal]) -> Split:
        """Store the signals not stored yet; (newly stored, stored before – as first stored)."""
        if not batch:
            return [], []
        return await self._adds.submit(batch)

    async def _add_batches(self, batches: Sequence[Sequence[LiveSignal]]) -> list[Split]:
        new, existing = await self._add([signal for batch in batches for signal in batch])
        fresh = {signal.signal_id for signal in new}
        before = {signal.signal_id: signal for signal in existing}
        return [
            (
                [signal for signal in batch if signal.signal_id in fresh],
                [before[signal.signal_id] for signal in batch if signal.signal_id in before],
            )
            for batch in batches
        ]

    async def _add(self, batch: Sequence[LiveSignal]) -> Split:
        rows = [_row(signal) for signal in batch]

        async def fresh(connection: AsyncConnection) -> None:
            await connection.execute(insert(signals), rows)

        try:
            # The usual case, one statement: a bar evaluated for the first time.
            await self._databases.run_global(fresh)
        except IntegrityError:
            return await self._databases.run_global(lambda connection: _add_each(connection, batch))
        return list(batch), []

    async def get(self, signal_id: str) -> LiveSignal | None:
        found = await self.get_many([signal_id])
        return found.get(signal_id)

    async def get_many(self, signal_ids: Sequence[str]) -> dict[str, LiveSignal]:
        if not signal_ids:
            return {}

        async def work(connection: AsyncConnection) -> dict[str, LiveSignal]:
            rows = await connection.execute(select(signals).where(signals.c.signal_id.in_(list(signal_ids))))
            return {row.signal_id: signal_from_row(row) for row in rows}

        return await self._databases.run_global(work)

    async def find(self, where: SignalFilter, *, after: tuple[datetime, str] | None, limit: int) -> list[LiveSignal]:
        """Signals newest bar first (ties by id, descending) after the keyset position (bar_time, signal_id)."""
        query = newest_first(signals, "signal_id", where.conditions(), after=after, limit=limit, time_column="bar_time")

        async def work(connection: AsyncConnection) -> list[LiveSignal]:
            return [signal_from_row(row) for row in await connection.execute(query)]

        return await self._databases.run_global(work)

    async def created_since(
        self, where: SignalFilter, since: datetime, *, after: tuple[datetime, str] | None = None, limit: int
    ) -> list[LiveSignal]:
        """Signals created after `since`, oldest first, after the keyset position (create_time, signal_id)
        (StreamSignals' replay)."""
        c = signals.c
        conditions = [*where.conditions(), c.create_time > since]
        if after is not None:
            conditions.append(or_(c.create_time > after[0], and_(c.create_time == after[0], c.signal_id > after[1])))
        query = select(signals).where(*conditions).order_by(c.create_time, c.signal_id).limit(limit)

        async def work(connection: AsyncConnection) -> list[LiveSignal]:
            return [signal_from_row(row) for row in await connection.execute(query)]

        return await self._databases.run_global(work)

    async def latest(self, unit: Unit, *, before: datetime | None = None) -> LiveSignal | None:
        """The unit's newest signal (before a bar time), for the repeat rule."""
        c = signals.c
        conditions = [
            c.symbol == unit.series.symbol,
            c.timeframe == int(unit.series.timeframe),
            c.strategy_id == unit.strategy_id,
            c.parameters_key == unit.parameters_key,
        ]
        if before is not None:
            conditions.append(c.bar_time < before)
        query = select(signals).where(*conditions).order_by(c.bar_time.desc()).limit(1)

        async def work(connection: AsyncConnection) -> LiveSignal | None:
            row = (await connection.execute(query)).first()
            return signal_from_row(row) if row is not None else None

        return await self._databases.run_global(work)

    # -- series progress --------------------------------------------------------------------------------------------

    async def checkpoint(self, series: SeriesKey) -> datetime | None:
        """The newest bar of the series fully processed by any leader."""

        async def work(connection: AsyncConnection) -> datetime | None:
            found: datetime | None = await connection.scalar(
                select(signal_series.c.last_bar_time).where(
                    signal_series.c.symbol == series.symbol, signal_series.c.timeframe == int(series.timeframe)
                )
            )
            return found

        return await self._databases.run_global(work)

    async def advance(self, series: SeriesKey, bar_time: datetime, now: datetime) -> None:
        """Record that the series is processed up to `bar_time` (never moves back)."""
        await self._advances.submit((series, bar_time, now))

    async def _advance_batch(self, requests: Sequence[tuple[SeriesKey, datetime, datetime]]) -> list[None]:
        async def work(connection: AsyncConnection) -> None:
            for series, bar_time, now in requests:
                result = await connection.execute(
                    update(signal_series)
                    .where(
                        signal_series.c.symbol == series.symbol,
                        signal_series.c.timeframe == int(series.timeframe),
                        signal_series.c.last_bar_time < bar_time,
                    )
                    .values(last_bar_time=bar_time, update_time=now)
                )
                if result.rowcount:
                    continue
                try:
                    async with connection.begin_nested():
                        await connection.execute(
                            insert(signal_series).values(
                                symbol=series.symbol,
                                timeframe=int(series.timeframe),
                                last_bar_time=bar_time,
                                update_time=now,
                            )
                        )
                except IntegrityError:
                    pass  # already at or past bar_time

        await self._databases.run_global(work)
        return [None] * len(requests)
