"""Alert rules of the accounts, in each owner's shard (SQLAlchemy Core)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.accounts import AccountRef
from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import shard_metadata
from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe

alerts = Table(
    "alerts",
    shard_metadata,
    Column("alert_id", String(32), primary_key=True),
    Column("account_id", BigInteger, nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("request_digest", String(64), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", SmallInteger, nullable=False),
    Column("strategy_id", String(64), nullable=False),
    # Strategy parameters (defaults filled in) and delivery channels as JSON.
    Column("parameters", Text, nullable=False),
    Column("min_grade", SmallInteger, nullable=False),
    Column("channels", Text, nullable=False),
    Column("cooldown_seconds", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("trigger_count", BigInteger, nullable=False, server_default="0"),
    Column("last_trigger_time", DateTime(timezone=False), nullable=True),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("update_time", DateTime(timezone=False), nullable=False),
    UniqueConstraint("account_id", "request_id", name="uq_alerts_account_request"),
    Index("ix_alerts_account_created", "account_id", "create_time", "alert_id"),
    Index("ix_alerts_series", "symbol", "timeframe", "enabled"),
    comment="Alert rules of the accounts on this shard.",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRule:
    """One alert rule (grades and channels are bullant.signal.v1 enum numbers)."""

    alert_id: str
    owner: AccountRef
    display_name: str
    symbol: str
    timeframe: Timeframe
    strategy_id: str
    parameters: dict[str, ParamValue]
    min_grade: int
    channels: tuple[int, ...]
    cooldown_seconds: int
    enabled: bool
    create_time: datetime
    update_time: datetime
    trigger_count: int = 0
    last_trigger_time: datetime | None = None
    request_id: str | None = None
    request_digest: str = ""


def _rule(row: Row[Any], owner: AccountRef) -> AlertRule:
    return AlertRule(
        alert_id=row.alert_id,
        owner=owner,
        display_name=row.display_name,
        symbol=row.symbol,
        timeframe=Timeframe(row.timeframe),
        strategy_id=row.strategy_id,
        parameters=json.loads(row.parameters),
        min_grade=row.min_grade,
        channels=tuple(json.loads(row.channels)),
        cooldown_seconds=row.cooldown_seconds,
        enabled=bool(row.enabled),
        create_time=row.create_time,
        update_time=row.update_time,
        trigger_count=int(row.trigger_count),
        last_trigger_time=row.last_trigger_time,
        request_id=row.request_id,
        request_digest=row.request_digest,
    )


def _settings(rule: AlertRule) -> dict[str, Any]:
    return {
        "display_name": rule.display_name,
        "symbol": rule.symbol,
        "timeframe": int(rule.timeframe),
        "strategy_id": rule.strategy_id,
        "parameters": json.dumps(rule.parameters, sort_keys=True),
        "min_grade": rule.min_grade,
        "channels": json.dumps(list(rule.channels)),
        "cooldown_seconds": rule.cooldown_seconds,
        "enabled": rule.enabled,
        "update_time": rule.update_time,
    }


class AlertStore:
    """Alert rules in each owner's shard."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def insert(self, rule: AlertRule, *, limit: int) -> tuple[AlertRule, bool]:
        """Store a new rule unless its request_id was used (then the first rule and False); the caller checks
        `limit` against count() first, and the count is checked again here in the same transaction."""

        async def work(connection: AsyncConnection) -> tuple[AlertRule, bool]:
            if rule.request_id is not None:
                found = (
                    await connection.execute(
                        select(alerts).where(
                            alerts.c.account_id == rule.owner.account_id, alerts.c.request_id == rule.request_id
                        )
                    )
                ).first()
                if found is not None:
                    return _rule(found, rule.owner), False
            count = (
                await connection.execute(
                    select(func.count()).select_from(alerts).where(alerts.c.account_id == rule.owner.account_id)
                )
            ).scalar_one()
            if count >= limit:
                raise AlertLimitReached(count)
            try:
                async with connection.begin_nested():
                    await connection.execute(
                        insert(alerts).values(
                            alert_id=rule.alert_id,
                            account_id=rule.owner.account_id,
                            request_id=rule.request_id,
                            request_digest=rule.request_digest,
                            trigger_count=0,
                            create_time=rule.create_time,
                            **_settings(rule),
                        )
                    )
            except IntegrityError:  # a concurrent retry with the same request id won
                found = (
                    await connection.execute(
                        select(alerts).where(
                            alerts.c.account_id == rule.owner.account_id, alerts.c.request_id == rule.request_id
                        )
                    )
                ).one()
                return _rule(found, rule.owner), False
            return rule, True

        return await self._databases.run_for(rule.owner, work)

    async def get(self, owner: AccountRef, alert_id: str) -> AlertRule | None:
        async def work(connection: AsyncConnection) -> AlertRule | None:
            row = (
                await connection.execute(
                    select(alerts).where(alerts.c.alert_id == alert_id, alerts.c.account_id == owner.account_id)
                )
            ).first()
            return _rule(row, owner) if row is not None else None

        return await self._databases.run_for(owner, work)

    async def find(
        self,
        owner: AccountRef,
        *,
        symbol: str,
        enabled: bool | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[AlertRule]:
        """The owner's rules newest first after the keyset position (create_time, alert_id)."""
        conditions = [alerts.c.account_id == owner.account_id]
        if symbol:
            conditions.append(alerts.c.symbol == symbol)
        if enabled is not None:
            conditions.append(alerts.c.enabled == enabled)
        query = newest_first(alerts, "alert_id", conditions, after=after, limit=limit)

        async def work(connection: AsyncConnection) -> list[AlertRule]:
            return [_rule(row, owner) for row in (await connection.execute(query)).all()]

        return await self._databases.run_for(owner, work)

    async def enabled_rules(self) -> list[AlertRule]:
        """Every enabled rule on every shard (the live engine's watch list)."""

        async def work(shard: int, connection: AsyncConnection) -> list[AlertRule]:
            rows = await connection.execute(select(alerts).where(alerts.c.enabled.is_(True)))
            return [_rule(row, AccountRef(int(row.account_id), shard)) for row in rows]

        found = await self._databases.each_shard(work)
        return [rule for shard_rules in found for rule in shard_rules]

    async def save(self, rule: AlertRule) -> bool:
        """Write a rule's settings; False when it no longer exists."""

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(alerts)
                .where(alerts.c.alert_id == rule.alert_id, alerts.c.account_id == rule.owner.account_id)
                .values(**_settings(rule))
            )
            return bool(result.rowcount)

        return await self._databases.run_for(rule.owner, work)

    async def delete(self, owner: AccountRef, alert_id: str) -> bool:
        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                delete(alerts).where(alerts.c.alert_id == alert_id, alerts.c.account_id == owner.account_id)
            )
            return bool(result.rowcount)

        return await self._databases.run_for(owner, work)


class AlertLimitReached(Exception):
    """The owner already has the most rules allowed."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} alert rules")
        self.count = count
