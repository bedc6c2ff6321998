"""Persistence of backtests in the owner's shard (SQLAlchemy Core): what was asked, progress, the encoded report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.accounts import AccountRef
from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import shard_metadata
from services.core.jobs import JobRecordMixin

# Reports with long equity curves and many trades exceed MySQL's 64 KiB BLOB.
_Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

backtests = Table(
    "backtests",
    shard_metadata,
    Column("backtest_id", String(32), primary_key=True),
    Column("account_id", BigInteger, nullable=False),
    # The client's idempotency key and a digest of what it asked (a reused key with another request is refused).
    Column("request_id", String(128), nullable=True),
    Column("request_digest", String(64), nullable=False),
    Column("strategy_id", String(64), nullable=False),
    # "|AAPL|MSFT|": the symbols between bars, so a LIKE finds a whole symbol.
    Column("symbols", String(1700), nullable=False),
    # services.signal.backtests.store.BacktestState.
    Column("state", SmallInteger, nullable=False),
    # The normalised config as backtests/encoding.py writes it (proto3 JSON).
    Column("config", Text, nullable=False),
    # Progress as JSON (fraction, bars, combinations, message).
    Column("progress", Text, nullable=False),
    # The report without trades, equity curve and sweep results (the BASIC view), and the whole report compressed.
    Column("summary", _Blob, nullable=True),
    Column("detail", _Blob, nullable=True),
    Column("failure_reason", String(64), nullable=True),
    Column("failure_message", String(1024), nullable=True),
    # The replica running it (and when it last said so): a run whose heartbeat stops was interrupted.
    Column("runner_id", String(64), nullable=True),
    Column("heartbeat_time", DateTime(timezone=False), nullable=True),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("start_time", DateTime(timezone=False), nullable=True),
    Column("end_time", DateTime(timezone=False), nullable=True),
    UniqueConstraint("account_id", "request_id", name="uq_backtests_account_request"),
    Index("ix_backtests_account_created", "account_id", "create_time", "backtest_id"),
    comment="Backtests of the accounts on this shard, with their reports.",
)


class BacktestState(IntEnum):
    """Numbers of bullant.signal.v1.BacktestState."""

    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        return self in {BacktestState.SUCCEEDED, BacktestState.FAILED, BacktestState.CANCELLED}


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far a run has got."""

    fraction: float = 0.0
    bars_processed: int = 0
    bars_total: int = 0
    combinations_completed: int = 0
    combinations_total: int = 1
    message: str = "queued"

    def to_json(self) -> str:
        return json.dumps(
            [
                self.fraction,
                self.bars_processed,
                self.bars_total,
                self.combinations_completed,
                self.combinations_total,
                self.message,
            ]
        )

    @classmethod
    def from_json(cls, text: str) -> Progress:
        fraction, processed, total, completed, combinations, message = json.loads(text)
        return cls(
            fraction=float(fraction),
            bars_processed=int(processed),
            bars_total=int(total),
            combinations_completed=int(completed),
            combinations_total=int(combinations),
            message=str(message),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestRecord(JobRecordMixin):
    """One stored backtest. `summary` and `detail` are the report as backtests/report_codec.py encodes it (None
    until it succeeds; `detail` is only read for the full view)."""

    backtest_id: str
    owner: AccountRef
    request_id: str | None
    request_digest: str
    strategy_id: str
    symbols: tuple[str, ...]
    state: BacktestState
    config: str
    progress: Progress
    create_time: datetime
    summary: bytes | None = None
    detail: bytes | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    runner_id: str | None = None
    heartbeat_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    # -- as the job runner sees it (services.core.jobs.JobRecord) ---------------------------------------------------

    ID_FIELD = "backtest_id"

    def running(self, now: datetime) -> BacktestRecord:
        return replace(
            self,
            state=BacktestState.RUNNING,
            start_time=now,
            heartbeat_time=now,
            progress=replace(self.progress, message="starting"),
        )

    def with_progress(self, progress: Progress) -> BacktestRecord:
        return replace(self, progress=progress)

    def failed(self, now: datetime, reason: str, message: str) -> BacktestRecord:
        return self.finished(BacktestState.FAILED, now, failure=(reason, message))

    def cancelled(self, now: datetime) -> BacktestRecord:
        return self.finished(BacktestState.CANCELLED, now)

    def finished(
        self,
        state: BacktestState,
        now: datetime,
        *,
        failure: tuple[str, str] | None = None,
        summary: bytes | None = None,
        detail: bytes | None = None,
        progress: Progress | None = None,
    ) -> BacktestRecord:
        """This backtest ended in `state` at `now`."""
        return replace(
            self,
            state=state,
            end_time=now,
            failure_reason=failure[0] if failure else None,
            failure_message=failure[1][:1024] if failure else None,
            summary=summary,
            detail=detail,
            progress=progress or self.progress,
            heartbeat_time=None,
        )


def _symbols_column(symbols: Sequence[str]) -> str:
    return "|" + "|".join(symbols) + "|"


def _record(row: Row[Any], owner: AccountRef, *, with_detail: bool) -> BacktestRecord:
    return BacktestRecord(
        backtest_id=row.backtest_id,
        owner=owner,
        request_id=row.request_id,
        request_digest=row.request_digest,
        strategy_id=row.strategy_id,
        symbols=tuple(item for item in row.symbols.split("|") if item),
        state=BacktestState(row.state),
        config=row.config,
        progress=Progress.from_json(row.progress),
        summary=row.summary,
        detail=row.detail if with_detail else None,
        failure_reason=row.failure_reason,
        failure_message=row.failure_message,
        runner_id=row.runner_id,
        heartbeat_time=row.heartbeat_time,
        create_time=row.create_time,
        start_time=row.start_time,
        end_time=row.end_time,
    )


_BASIC_COLUMNS = [column for column in backtests.columns if column.name != "detail"]
_ACTIVE = (BacktestState.QUEUED, BacktestState.RUNNING)


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestFilter:
    """ListBacktests filters; empty values match everything."""

    strategy_id: str = ""
    symbol: str = ""
    state: BacktestState | None = None


class BacktestStore:
    """Backtests in each owner's shard."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def insert(self, record: BacktestRecord) -> BacktestRecord | None:
        """Store a new backtest; when the owner already used its request_id, return that one instead (None when
        inserted)."""

        async def work(connection: AsyncConnection) -> BacktestRecord | None:
            try:
                async with connection.begin_nested():
                    await connection.execute(insert(backtests).values(**self._row(record)))
            except IntegrityError:
                if record.request_id is None:
                    raise
                found = await connection.execute(
                    select(*_BASIC_COLUMNS).where(
                        backtests.c.account_id == record.owner.account_id, backtests.c.request_id == record.request_id
                    )
                )
                return _record(found.one(), record.owner, with_detail=False)
            return None

        return await self._databases.run_for(record.owner, work)

    async def save(self, record: BacktestRecord, *, only_if_active: bool = False) -> bool:
        """Write the record's mutable fields; with `only_if_active`, only while it is still queued or running
        (so a cancellation is never overwritten). Whether a row changed."""

        async def work(connection: AsyncConnection) -> bool:
            condition = backtests.c.backtest_id == record.backtest_id
            if only_if_active:
                condition = and_(condition, backtests.c.state.in_([int(state) for state in _ACTIVE]))
            values = self._row(record)
            for key in ("backtest_id", "account_id", "request_id", "request_digest", "create_time"):
                values.pop(key)
            result = await connection.execute(update(backtests).where(condition).values(**values))
            return bool(result.rowcount)

        return await self._databases.run_for(record.owner, work)

    async def heartbeat(self, owner: AccountRef, backtest_id: str, progress: Progress, now: datetime) -> bool:
        """Record progress of a queued or running backtest; False when it is no longer active (cancelled
        elsewhere, or marked interrupted)."""

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(backtests)
                .where(
                    backtests.c.backtest_id == backtest_id,
                    backtests.c.state.in_([int(state) for state in _ACTIVE]),
                )
                .values(progress=progress.to_json(), heartbeat_time=now)
            )
            return bool(result.rowcount)

        return await self._databases.run_for(owner, work)

    async def get(self, owner: AccountRef, backtest_id: str, *, with_detail: bool) -> BacktestRecord | None:
        """The owner's backtest, None when there is none (or it is another account's)."""
        columns = list(backtests.columns) if with_detail else _BASIC_COLUMNS

        async def work(connection: AsyncConnection) -> BacktestRecord | None:
            row = (
                await connection.execute(
                    select(*columns).where(
                        backtests.c.backtest_id == backtest_id, backtests.c.account_id == owner.account_id
                    )
                )
            ).one_or_none()
            return _record(row, owner, with_detail=with_detail) if row is not None else None

        return await self._databases.run_for(owner, work)

    async def find(
        self,
        owner: AccountRef,
        filters: BacktestFilter,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        with_detail: bool,
        request_id: str | None = None,
    ) -> list[BacktestRecord]:
        """The owner's backtests, newest first, after the keyset position (create_time, backtest_id); with
        `request_id`, the one submitted with that idempotency key."""
        columns = list(backtests.columns) if with_detail else _BASIC_COLUMNS
        conditions = [backtests.c.account_id == owner.account_id]
        if filters.strategy_id:
            conditions.append(backtests.c.strategy_id == filters.strategy_id)
        if filters.symbol:
            conditions.append(backtests.c.symbols.contains(f"|{filters.symbol}|", autoescape=True))
        if filters.state is not None:
            conditions.append(backtests.c.state == int(filters.state))
        if request_id is not None:
            conditions.append(backtests.c.request_id == request_id)
        query = newest_first(backtests, "backtest_id", conditions, after=after, limit=limit).with_only_columns(*columns)

        async def work(connection: AsyncConnection) -> list[BacktestRecord]:
            rows = (await connection.execute(query)).all()
            return [_record(row, owner, with_detail=with_detail) for row in rows]

        return await self._databases.run_for(owner, work)

    async def active(self, owner: AccountRef) -> list[BacktestRecord]:
        """The owner's queued and running backtests (BASIC columns)."""

        async def work(connection: AsyncConnection) -> list[BacktestRecord]:
            rows = await connection.execute(
                select(*_BASIC_COLUMNS).where(
                    backtests.c.account_id == owner.account_id, backtests.c.state.in_([int(state) for state in _ACTIVE])
                )
            )
            return [_record(row, owner, with_detail=False) for row in rows.all()]

        return await self._databases.run_for(owner, work)

    async def active_of_runner(self, runner_id: str) -> list[BacktestRecord]:
        """The queued and running backtests a runner took, on every shard (BASIC columns): a restarted replica's
        orphans."""

        async def work(shard: int, connection: AsyncConnection) -> list[BacktestRecord]:
            rows = await connection.execute(
                select(*_BASIC_COLUMNS).where(
                    backtests.c.runner_id == runner_id, backtests.c.state.in_([int(state) for state in _ACTIVE])
                )
            )
            return [_record(row, AccountRef(account_id=row.account_id, shard=shard), with_detail=False) for row in rows]

        return [record for records in await self._databases.each_shard(work) for record in records]

    @staticmethod
    def _row(record: BacktestRecord) -> dict[str, Any]:
        return {
            "backtest_id": record.backtest_id,
            "account_id": record.owner.account_id,
            "request_id": record.request_id,
            "request_digest": record.request_digest,
            "strategy_id": record.strategy_id,
            "symbols": _symbols_column(record.symbols),
            "state": int(record.state),
            "config": record.config,
            "progress": record.progress.to_json(),
            "summary": record.summary,
            "detail": record.detail,
            "failure_reason": record.failure_reason,
            "failure_message": record.failure_message,
            "runner_id": record.runner_id,
            "heartbeat_time": record.heartbeat_time,
            "create_time": record.create_time,
            "start_time": record.start_time,
            "end_time": record.end_time,
        }
