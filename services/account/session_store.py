"""Persistence of sessions: one per login, each a family of rotated refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Row,
    String,
    Table,
    and_,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.account.records import Session
from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import accounts, global_metadata

sessions = Table(
    "sessions",
    global_metadata,
    Column("session_id", String(32), primary_key=True),
    Column("account_id", BigInteger, nullable=False, index=True),
    Column("device_name", String(128), nullable=False, server_default=""),
    Column("user_agent", String(512), nullable=False, server_default=""),
    Column("ip_address", String(45), nullable=False, server_default=""),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("last_use_time", DateTime(timezone=False), nullable=False),
    Column("expire_time", DateTime(timezone=False), nullable=False),
    Column("revoke_time", DateTime(timezone=False), nullable=True),
    Column("revoke_reason", String(32), nullable=False, server_default=""),
    comment="Sessions: one per login, each a family of rotated refresh tokens.",
)

refresh_tokens = Table(
    "refresh_tokens",
    global_metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(32), nullable=False, index=True),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("expire_time", DateTime(timezone=False), nullable=False),
    # Set when the token was exchanged; presenting it again is theft.
    Column("rotate_time", DateTime(timezone=False), nullable=True),
    comment="Refresh tokens by SHA-256; each belongs to a session (its family).",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshRecord:
    """A stored refresh token and its session."""

    session: Session
    expire_time: datetime
    rotate_time: datetime | None


def _session(row: Row[Any]) -> Session:
    return Session(
        session_id=str(row.session_id),
        account_id=int(row.account_id),
        device_name=str(row.device_name),
        user_agent=str(row.user_agent),
        ip_address=str(row.ip_address),
        create_time=row.create_time,
        last_use_time=row.last_use_time,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
        revoke_reason=str(row.revoke_reason or ""),
    )


class SessionStore:
    """Sessions and their refresh tokens in the global database."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def _run(self, work: Any) -> Any:
        return await self._databases.run_global(work)

    async def start_session(
        self, session: Session, refresh_hash: str, *, login_values: dict[str, Any] | None = None
    ) -> None:
        """Store a new session and its first refresh token, and record the login on the account, together."""

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(insert(sessions).values(**_session_values(session)))
            await connection.execute(
                insert(refresh_tokens).values(
                    token_hash=refresh_hash,
                    session_id=session.session_id,
                    create_time=session.create_time,
                    expire_time=session.expire_time,
                )
            )
            if login_values:
                await connection.execute(
                    update(accounts).where(accounts.c.account_id == session.account_id).values(**login_values)
                )

        await self._run(work)

    async def refresh_record(self, token_hash: str) -> RefreshRecord | None:
        async def work(connection: AsyncConnection) -> RefreshRecord | None:
            row = (
                await connection.execute(
                    select(
                        sessions,
                        refresh_tokens.c.expire_time.label("token_expire_time"),
                        refresh_tokens.c.rotate_time,
                    )
                    .select_from(refresh_tokens.join(sessions, sessions.c.session_id == refresh_tokens.c.session_id))
                    .where(refresh_tokens.c.token_hash == token_hash)
                )
            ).first()
            if row is None:
                return None
            return RefreshRecord(session=_session(row), expire_time=row.token_expire_time, rotate_time=row.rotate_time)

        result: RefreshRecord | None = await self._run(work)
        return result

    async def rotate(
        self, *, old_hash: str, new_hash: str, session_id: str, now: datetime, expire_time: datetime, ip_address: str
    ) -> bool:
        """Exchange a refresh token for a new one in the same session; False when it was rotated meanwhile (another
        call presented it first) or its session was revoked."""

        async def work(connection: AsyncConnection) -> bool:
            used = await connection.execute(
                update(refresh_tokens)
                .where(and_(refresh_tokens.c.token_hash == old_hash, refresh_tokens.c.rotate_time.is_(None)))
                .values(rotate_time=now)
            )
            if used.rowcount != 1:
                return False
            touched = await connection.execute(
                update(sessions)
                .where(and_(sessions.c.session_id == session_id, sessions.c.revoke_time.is_(None)))
                .values(last_use_time=now, expire_time=expire_time, ip_address=ip_address)
            )
            if touched.rowcount != 1:
                return False
            await connection.execute(
                insert(refresh_tokens).values(
                    token_hash=new_hash, session_id=session_id, create_time=now, expire_time=expire_time
                )
            )
            return True

        result: bool = await self._run(work)
        return result

    async def session(self, session_id: str) -> Session | None:
        async def work(connection: AsyncConnection) -> Session | None:
            row = (await connection.execute(select(sessions).where(sessions.c.session_id == session_id))).first()
            return None if row is None else _session(row)

        result: Session | None = await self._run(work)
        return result

    async def revoke_sessions(
        self,
        account_id: int,
        *,
        now: datetime,
        reason: str,
        session_id: str | None = None,
        keep_session_id: str | None = None,
    ) -> list[Session]:
        """Revoke the account's active sessions (only `session_id` when given; all but `keep_session_id` when given);
        the sessions this call revoked."""
        condition = and_(sessions.c.account_id == account_id, sessions.c.revoke_time.is_(None))
        if session_id is not None:
            condition = and_(condition, sessions.c.session_id == session_id)
        if keep_session_id is not None:
            condition = and_(condition, sessions.c.session_id != keep_session_id)

        async def work(connection: AsyncConnection) -> list[Session]:
            found = [_session(row) for row in (await connection.execute(select(sessions).where(condition))).all()]
            if found:
                await connection.execute(
                    update(sessions)
                    .where(
                        and_(sessions.c.session_id.in_([s.session_id for s in found]), sessions.c.revoke_time.is_(None))
                    )
                    .values(revoke_time=now, revoke_reason=reason)
                )
            return found

        result: list[Session] = await self._run(work)
        return result

    async def list_sessions(
        self, account_id: int, *, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Session]:
        """Active, unexpired sessions, most recently used first, after the keyset position `after`."""
        query = newest_first(
            sessions,
            "session_id",
            [sessions.c.account_id == account_id, sessions.c.revoke_time.is_(None), sessions.c.expire_time > now],
            after=after,
            limit=limit,
            time_column="last_use_time",
        )

        async def work(connection: AsyncConnection) -> list[Session]:
            return [_session(row) for row in (await connection.execute(query)).all()]

        result: list[Session] = await self._run(work)
        return result


def _session_values(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "account_id": session.account_id,
        "device_name": session.device_name,
        "user_agent": session.user_agent,
        "ip_address": session.ip_address,
        "create_time": session.create_time,
        "last_use_time": session.last_use_time,
        "expire_time": session.expire_time,
        "revoke_time": session.revoke_time,
        "revoke_reason": session.revoke_reason,
    }
