"""Persistence of second factors and API keys: TOTP secrets (sealed), recovery codes (hashed), API keys (hashed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Row,
    SmallInteger,
    String,
    Table,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.account.records import ApiKey, TotpCredential
from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import accounts, api_keys, global_metadata
from services.core.errors import Aborted

totp_credentials = Table(
    "totp_credentials",
    global_metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    # Sealed with the data key (AES-GCM bound to the account): a database dump does not reveal it.
    Column("secret", String(255), nullable=False),
    Column("active", SmallInteger, nullable=False, server_default="0"),
    Column("create_time", DateTime(timezone=False), nullable=False),
    # When a pending (unconfirmed) secret lapses; NULL once active.
    Column("expire_time", DateTime(timezone=False), nullable=True),
    Column("last_step", BigInteger, nullable=False, server_default="0"),
    Column("recovery_salt", String(32), nullable=False, server_default=""),
    comment="TOTP secrets, pending or active, with the last accepted time step (no code replays).",
)

recovery_codes = Table(
    "recovery_codes",
    global_metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("code_hash", String(64), primary_key=True),
    Column("use_time", DateTime(timezone=False), nullable=True),
    comment="One-time TOTP recovery codes, salted SHA-256.",
)


def api_key_from_row(row: Row[Any]) -> ApiKey:
    """An ApiKey from a row of the api_keys table."""
    return ApiKey(
        api_key_id=str(row.api_key_id),
        account_id=int(row.account_id),
        name=str(row.name),
        scopes=tuple(scope for scope in str(row.scopes).split(",") if scope),
        prefix=str(row.prefix),
        create_time=row.create_time,
        expire_time=row.expire_time,
        last_use_time=row.last_use_time,
        revoke_time=row.revoke_time,
    )


class CredentialStore:
    """API keys and TOTP in the global database."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def _run(self, work: Any) -> Any:
        return await self._databases.run_global(work)

    # -- API keys ---------------------------------------------------------------------------------------------------

    async def create_api_key(
        self, key: ApiKey, *, secret_hash: str, request_id: str | None, fingerprint: str | None
    ) -> bool:
        """Store a new key; False when the account already has a key with this request id."""

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                insert(api_keys).values(
                    api_key_id=key.api_key_id,
                    account_id=key.account_id,
                    name=key.name,
                    scopes=",".join(key.scopes),
                    prefix=key.prefix,
                    secret_hash=secret_hash,
                    create_time=key.create_time,
                    expire_time=key.expire_time,
                    request_id=request_id,
                    request_fingerprint=fingerprint,
                )
            )

        try:
            await self._run(work)
        except IntegrityError:
            return False
        return True

    async def api_key_by_request(self, account_id: int, request_id: str) -> tuple[ApiKey, str, str] | None:
        """The key created by an earlier call with `request_id`, its secret hash and request fingerprint."""

        async def work(connection: AsyncConnection) -> tuple[ApiKey, str, str] | None:
            row = (
                await connection.execute(
                    select(api_keys).where(
                        and_(api_keys.c.account_id == account_id, api_keys.c.request_id == request_id)
                    )
                )
            ).first()
            if row is None:
                return None
            return api_key_from_row(row), str(row.secret_hash), str(row.request_fingerprint or "")

        result: tuple[ApiKey, str, str] | None = await self._run(work)
        return result

    async def count_active_api_keys(self, account_id: int, now: datetime) -> int:
        async def work(connection: AsyncConnection) -> int:
            rows = await connection.execute(
                select(api_keys.c.api_key_id).where(
                    and_(
                        api_keys.c.account_id == account_id,
                        api_keys.c.revoke_time.is_(None),
                        api_keys.c.expire_time > now,
                    )
                )
            )
            return len(rows.all())

        result: int = await self._run(work)
        return result

    async def list_api_keys(
        self, account_id: int, *, show_revoked: bool, after: tuple[datetime, str] | None, limit: int
    ) -> list[ApiKey]:
        """The account's keys, newest first, after the keyset position `after`."""
        conditions = [api_keys.c.account_id == account_id]
        if not show_revoked:
            conditions.append(api_keys.c.revoke_time.is_(None))
        query = newest_first(api_keys, "api_key_id", conditions, after=after, limit=limit)

        async def work(connection: AsyncConnection) -> list[ApiKey]:
            return [api_key_from_row(row) for row in (await connection.execute(query)).all()]

        result: list[ApiKey] = await self._run(work)
        return result

    async def revoke_api_keys(
        self, account_id: int, *, now: datetime, reason: str, api_key_id: str | None = None
    ) -> tuple[list[ApiKey], list[str]]:
        """Revoke the account's unrevoked keys (or only `api_key_id`): the keys affected and their secret hashes
        (to evict cached lookups)."""
        condition = and_(api_keys.c.account_id == account_id, api_keys.c.revoke_time.is_(None))
        if api_key_id is not None:
            condition = and_(condition, api_keys.c.api_key_id == api_key_id)

        async def work(connection: AsyncConnection) -> tuple[list[ApiKey], list[str]]:
            rows = (await connection.execute(select(api_keys).where(condition))).all()
            if rows:
                await connection.execute(
                    update(api_keys)
                    .where(
                        and_(api_keys.c.api_key_id.in_([r.api_key_id for r in rows]), api_keys.c.revoke_time.is_(None))
                    )
                    .values(revoke_time=now, revoke_reason=reason)
                )
            return [api_key_from_row(row) for row in rows], [str(row.secret_hash) for row in rows]

        result: tuple[list[ApiKey], list[str]] = await self._run(work)
        return result

    async def api_key(self, account_id: int, api_key_id: str) -> ApiKey | None:
        async def work(connection: AsyncConnection) -> ApiKey | None:
            row = (
                await connection.execute(
                    select(api_keys).where(
                        and_(api_keys.c.account_id == account_id, api_keys.c.api_key_id == api_key_id)
                    )
                )
            ).first()
            return None if row is None else api_key_from_row(row)

        result: ApiKey | None = await self._run(work)
        return result

    # -- TOTP -------------------------------------------------------------------------------------------------------

    async def totp(self, account_id: int) -> TotpCredential | None:
        async def work(connection: AsyncConnection) -> TotpCredential | None:
            row = (
                await connection.execute(select(totp_credentials).where(totp_credentials.c.account_id == account_id))
            ).first()
            if row is None:
                return None
            return TotpCredential(
                account_id=int(row.account_id),
                sealed_secret=str(row.secret),
                active=bool(row.active),
                create_time=row.create_time,
                expire_time=row.expire_time,
                last_step=int(row.last_step),
                recovery_salt=str(row.recovery_salt),
            )

        result: TotpCredential | None = await self._run(work)
        return result

    async def put_pending_totp(
        self, account_id: int, sealed_secret: str, *, now: datetime, expire_time: datetime
    ) -> bool:
        """Replace a pending secret (never an active one); False when TOTP is active."""

        async def work(connection: AsyncConnection) -> bool:
            active = await connection.execute(
                select(totp_credentials.c.account_id).where(
                    and_(totp_credentials.c.account_id == account_id, totp_credentials.c.active == 1)
                )
            )
            if active.first() is not None:
                return False
            await connection.execute(delete(totp_credentials).where(totp_credentials.c.account_id == account_id))
            await connection.execute(
                insert(totp_credentials).values(
                    account_id=account_id, secret=sealed_secret, active=0, create_time=now, expire_time=expire_time
                )
            )
            return True

        try:
            result: bool = await self._run(work)
        except IntegrityError:
            raise Aborted("another enrolment of this account ran at the same time; try again") from None
        return result

    async def activate_totp(
        self, account_id: int, *, sealed_secret: str, step: int, salt: str, code_hashes: Sequence[str]
    ) -> bool:
        """Make the pending `sealed_secret` active with its recovery codes; False when it is no longer the pending
        one."""

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(totp_credentials)
                .where(
                    and_(
                        totp_credentials.c.account_id == account_id,
                        totp_credentials.c.secret == sealed_secret,
                        totp_credentials.c.active == 0,
                    )
                )
                .values(active=1, expire_time=None, last_step=step, recovery_salt=salt)
            )
            if result.rowcount != 1:
                return False
            await connection.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
            await connection.execute(
                insert(recovery_codes), [{"account_id": account_id, "code_hash": code} for code in code_hashes]
            )
            await connection.execute(update(accounts).where(accounts.c.account_id == account_id).values(totp_enabled=1))
            return True

        result: bool = await self._run(work)
        return result

    async def accept_step(self, account_id: int, step: int) -> bool:
        """Record that a code of time step `step` was used; False when that step (or a later one) was used already,
        which makes every code single-use."""

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(totp_credentials)
                .where(and_(totp_credentials.c.account_id == account_id, totp_credentials.c.last_step < step))
                .values(last_step=step)
            )
            return bool(result.rowcount == 1)

        result: bool = await self._run(work)
        return result

    async def use_recovery_code(self, account_id: int, code_hash: str, now: datetime) -> bool:
        """Spend one unused recovery code; False when it is unknown or spent."""

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(recovery_codes)
                .where(
                    and_(
                        recovery_codes.c.account_id == account_id,
                        recovery_codes.c.code_hash == code_hash,
                        recovery_codes.c.use_time.is_(None),
                    )
                )
                .values(use_time=now)
            )
            return bool(result.rowcount == 1)

        result: bool = await self._run(work)
        return result

    async def delete_totp(self, account_id: int) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(delete(totp_credentials).where(totp_credentials.c.account_id == account_id))
            await connection.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
            await connection.execute(update(accounts).where(accounts.c.account_id == account_id).values(totp_enabled=0))

        await self._run(work)
