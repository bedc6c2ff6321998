"""Alert firings, in the rule owner's shard next to the rule: one row per rule and signal, written with the rule's
trigger count in one transaction that also enforces the cooldown (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    DateTime,
    Index,
    Row,
    SmallInteger,
    String,
    Table,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.accounts import AccountRef
from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import shard_metadata
from services.signal.alerts.store import alerts
from services.signal.live.records import Firing, LiveSignal, firing_id

alert_firings = Table(
    "alert_firings",
    shard_metadata,
    Column("firing_id", String(32), primary_key=True),
    Column("alert_id", String(32), nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("signal_id", String(32), nullable=False),
    # The signal's filterable fields, so ListSignals(alert_id) pages on this shard alone.
    Column("side", SmallInteger, nullable=False),
    Column("grade", SmallInteger, nullable=False),
    Column("technical_only", Boolean, nullable=False),
    Column("bar_time", DateTime(timezone=False), nullable=False),
    Column("trigger_time", DateTime(timezone=False), nullable=False),
    # The outbox row (global database) written for it; NULL until written.
    Column("notification_id", BigInteger, nullable=True),
    Index("ix_alert_firings_alert_bar", "alert_id", "bar_time", "firing_id"),
    Index("ix_alert_firings_account_trigger", "account_id", "trigger_time"),
    Index("ix_alert_firings_account_signal", "account_id", "signal_id"),
    Index("ix_alert_firings_unnotified", "notification_id"),
    comment="Firings of the alert rules on this shard, one per rule and signal.",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FiringFilter:
    """ListSignals filters that apply to one rule's firings; empty values match everything."""

    grades: Sequence[int] = ()
    side: int = 0
    start: datetime | None = None
    end: datetime | None = None
    technical_only: bool | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        c = alert_firings.c
        where: list[ColumnElement[bool]] = []
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


def _firing(row: Row[Any], shard: int) -> Firing:
    return Firing(
        firing_id=row.firing_id,
        alert_id=row.alert_id,
        owner=AccountRef(int(row.account_id), shard),
        signal_id=row.signal_id,
        bar_time=row.bar_time,
        trigger_time=row.trigger_time,
        notification_id=int(row.notification_id or 0),
    )


class FiringStore:
    """Alert firings in each owner's shard."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def fire(
        self, owner: AccountRef, alert_id: str, signal: LiveSignal, now: datetime
    ) -> tuple[Firing, bool] | None:
        """Fire the rule for `signal` unless it is gone, disabled, or within its cooldown of its previous firing
        (measured between the signals' bars, so a re-evaluation after a fail-over decides the same). (firing, True)
        when it fired now, (firing, False) when this signal had already fired it, None when it does not fire."""

        async def work(connection: AsyncConnection) -> tuple[Firing, bool] | None:
            rule = (
                await connection.execute(
                    select(alerts.c.enabled, alerts.c.cooldown_seconds)
                    .where(alerts.c.alert_id == alert_id, alerts.c.account_id == owner.account_id)
                    .with_for_update()
                )
            ).first()
            if rule is None or not rule.enabled:
                return None
            identifier = firing_id(alert_id, signal.signal_id)
            c = alert_firings.c
            latest = (
                await connection.execute(
                    select(c.firing_id, c.bar_time)
                    .where(c.alert_id == alert_id)
                    .order_by(c.bar_time.desc(), c.firing_id.desc())
                    .limit(1)
                )
            ).first()
            if latest is not None and latest.bar_time >= signal.bar_time:
                # Only a bar evaluated again (after a fail-over) gets here: it fired already, or it does not fire.
                existing = (await connection.execute(select(alert_firings).where(c.firing_id == identifier))).first()
                return (_firing(existing, owner.shard), False) if existing is not None else None
            if latest is not None and (signal.bar_time - latest.bar_time).total_seconds() < rule.cooldown_seconds:
                return None
            values = {
                "firing_id": identifier,
                "alert_id": alert_id,
                "account_id": owner.account_id,
                "signal_id": signal.signal_id,
                "side": signal.side,
                "grade": int(signal.grade),
                "technical_only": signal.technical_only,
                "bar_time": signal.bar_time,
                "trigger_time": now,
                "notification_id": None,
            }
            await connection.execute(insert(alert_firings).values(**values))
            await connection.execute(
                update(alerts)
                .where(alerts.c.alert_id == alert_id)
                .values(trigger_count=alerts.c.trigger_count + 1, last_trigger_time=now)
            )
            return _firing_from(values, owner), True

        return await self._databases.run_for(owner, work)

    async def attach(self, firing: Firing, notification_id: int) -> None:
        """Record the outbox row written for a firing."""

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                update(alert_firings)
                .where(alert_firings.c.firing_id == firing.firing_id)
                .values(notification_id=notification_id)
            )

        await self._databases.run_for(firing.owner, work)

    async def unnotified(self, *, limit: int) -> list[Firing]:
        """Firings on every shard whose outbox row was never recorded (a leader stopped in between)."""

        async def work(shard: int, connection: AsyncConnection) -> list[Firing]:
            rows = await connection.execute(
                select(alert_firings)
                .where(alert_firings.c.notification_id.is_(None))
                .order_by(alert_firings.c.trigger_time)
                .limit(limit)
            )
            return [_firing(row, shard) for row in rows]

        found = await self._databases.each_shard(work)
        return [firing for shard_firings in found for firing in shard_firings]

    async def of_alert(
        self, owner: AccountRef, alert_id: str, where: FiringFilter, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[Firing]:
        """One rule's firings, newest bar first, after the keyset position (bar_time, firing_id)."""
        c = alert_firings.c
        conditions = [c.alert_id == alert_id, c.account_id == owner.account_id, *where.conditions()]
        query = newest_first(alert_firings, "firing_id", conditions, after=after, limit=limit, time_column="bar_time")

        async def work(connection: AsyncConnection) -> list[Firing]:
            return [_firing(row, owner.shard) for row in await connection.execute(query)]

        return await self._databases.run_for(owner, work)

    async def since(
        self, owner: AccountRef, since: datetime, *, after: tuple[datetime, str] | None = None, limit: int
    ) -> list[Firing]:
        """The owner's firings after `since`, oldest first, after the keyset position (trigger_time, firing_id)
        (StreamSignals' replay)."""
        c = alert_firings.c
        conditions = [c.account_id == owner.account_id, c.trigger_time > since]
        if after is not None:
            conditions.append(or_(c.trigger_time > after[0], and_(c.trigger_time == after[0], c.firing_id > after[1])))
        query = select(alert_firings).where(*conditions).order_by(c.trigger_time, c.firing_id).limit(limit)

        async def work(connection: AsyncConnection) -> list[Firing]:
            return [_firing(row, owner.shard) for row in await connection.execute(query)]

        return await self._databases.run_for(owner, work)

    async def fired_by(self, owner: AccountRef, signal_id: str) -> bool:
        """Whether the signal fired one of the owner's rules (so the owner may read it)."""

        async def work(connection: AsyncConnection) -> bool:
            found = await connection.scalar(
                select(alert_firings.c.firing_id)
                .where(alert_firings.c.account_id == owner.account_id, alert_firings.c.signal_id == signal_id)
                .limit(1)
            )
            return found is not None

        return await self._databases.run_for(owner, work)


def _firing_from(values: dict[str, Any], owner: AccountRef) -> Firing:
    return Firing(
        firing_id=values["firing_id"],
        alert_id=values["alert_id"],
        owner=owner,
        signal_id=values["signal_id"],
        bar_time=values["bar_time"],
        trigger_time=values["trigger_time"],
    )
