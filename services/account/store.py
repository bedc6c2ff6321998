"""Persistence of accounts, email tokens, the outbox and profiles (SQLAlchemy Core on the global DB and the shards)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
    Text,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.account.records import Account, AccountState
from services.core.accounts import AccountRef
from services.core.db.databases import Databases
from services.core.db.outbox import OutboxMessage, add_outbox
from services.core.db.schema import accounts, global_metadata, outbox_messages, shard_directory, shard_metadata
from services.core.errors import AlreadyExists

email_tokens = Table(
    "email_tokens",
    global_metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", BigInteger, nullable=False, index=True),
    # "verify_email" or "reset_password".
    Column("purpose", String(16), nullable=False),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("expire_time", DateTime(timezone=False), nullable=False),
    Column("use_time", DateTime(timezone=False), nullable=True),
    # Set when a newer token of the same purpose replaced this one.
    Column("supersede_time", DateTime(timezone=False), nullable=True),
    comment="Single-use tokens sent by email; only their SHA-256 is kept.",
)

profiles = Table(
    "profiles",
    shard_metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    # The profile as a JSON document (services.account.profile), so preferences can grow without migrations.
    Column("document", Text, nullable=False),
    Column("update_time", DateTime(timezone=False), nullable=False),
    comment="Profile and preferences of the accounts on this shard.",
)


class Purpose:
    """What an email token is for."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a token purpose, not a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailToken:
    """A stored email token (without the token itself)."""

    account_id: int
    purpose: str
    expire_time: datetime
    use_time: datetime | None
    supersede_time: datetime | None


def account_from_row(row: Row[Any] | Mapping[str, Any]) -> Account:
    """An Account from a row of the accounts table."""
    values = row._mapping if isinstance(row, Row) else row
    return Account(
        account_id=int(values["account_id"]),
        email=str(values["email"]),
        roles=tuple(role for role in str(values["roles"]).split(",") if role),
        state=AccountState(int(values["state"])),
        totp_enabled=bool(values["totp_enabled"]),
        create_time=values["create_time"],
        verify_time=values["verify_time"],
        last_login_time=values["last_login_time"],
        disable_time=values["disable_time"],
        disable_reason=str(values["disable_reason"] or ""),
    )


class AccountStore:
    """Accounts (global database), email tokens, outbox rows and profiles (the account's shard)."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    # -- accounts ---------------------------------------------------------------------------------------------------

    async def create_account(
        self, *, email: str, password_hash: str, request_id: str | None, now: datetime
    ) -> tuple[Account, AccountRef]:
        """Insert a new account and its shard assignment in one transaction; the account and its ref (the directory's
        answer, as it was just written). AlreadyExists EMAIL_TAKEN or REQUEST_ID_TAKEN (a concurrent Register with the
        same request id) on a duplicate."""

        async def work(connection: AsyncConnection) -> tuple[Account, AccountRef]:
            result = await connection.execute(
                insert(accounts).values(
                    email=email,
                    password_hash=password_hash,
                    roles="user",
                    state=int(AccountState.ACTIVE),
                    totp_enabled=0,
                    create_time=now,
                    disable_reason="",
                    register_request_id=request_id,
                )
            )
            account_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            shard = self._databases.choose_shard(account_id)
            await connection.execute(
                insert(shard_directory).values(account_id=account_id, shard_id=shard, assign_time=now)
            )
            row = (await connection.execute(select(accounts).where(accounts.c.account_id == account_id))).one()
            return account_from_row(row), AccountRef(account_id, shard)

        try:
            return await self._databases.run_global(work)
        except IntegrityError:
            if request_id is not None and await self.account_by_register_request(request_id) is not None:
                raise AlreadyExists("request id already used", reason="REQUEST_ID_TAKEN") from None
            raise AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN") from None

    async def account_by_id(self, account_id: int) -> Account | None:
        row = await self._one(select(accounts).where(accounts.c.account_id == account_id))
        return None if row is None else account_from_row(row)

    async def credentials_by_email(self, email: str) -> tuple[Account, str] | None:
        """The account and its password hash, for login."""
        row = await self._one(select(accounts).where(accounts.c.email == email))
        return None if row is None else (account_from_row(row), str(row.password_hash))

    async def credentials_by_id(self, account_id: int) -> tuple[Account, str] | None:
        row = await self._one(select(accounts).where(accounts.c.account_id == account_id))
        return None if row is None else (account_from_row(row), str(row.password_hash))

    async def account_by_register_request(self, request_id: str) -> tuple[Account, str] | None:
        row = await self._one(select(accounts).where(accounts.c.register_request_id == request_id))
        return None if row is None else (account_from_row(row), str(row.password_hash))

    async def update_account(self, account_id: int, **values: Any) -> Account | None:
        """Set columns of one account; the account after the change, None when it does not exist."""

        async def work(connection: AsyncConnection) -> Account | None:
            await connection.execute(update(accounts).where(accounts.c.account_id == account_id).values(**values))
            row = (await connection.execute(select(accounts).where(accounts.c.account_id == account_id))).first()
            return None if row is None else account_from_row(row)

        return await self._databases.run_global(work)

    async def set_role(self, email: str, role: str, *, present: bool) -> Account | None:
        """Add or remove a role of the account with `email` (operators: `bullant admin grant`); None when there is
        no such account. "user" cannot be removed."""

        async def work(connection: AsyncConnection) -> Account | None:
            row = (await connection.execute(select(accounts).where(accounts.c.email == email))).first()
            if row is None:
                return None
            roles = set(account_from_row(row).roles)
            roles = roles | {role} if present else roles - {role}
            await connection.execute(
                update(accounts).where(accounts.c.account_id == row.account_id).values(roles=role_list(list(roles)))
            )
            changed = (await connection.execute(select(accounts).where(accounts.c.account_id == row.account_id))).one()
            return account_from_row(changed)

        return await self._databases.run_global(work)

    async def list_accounts(
        self,
        *,
        after_id: int,
        limit: int,
        email_query: str = "",
        role: str | None = None,
        state: AccountState | None = None,
    ) -> list[Account]:
        """Accounts with ids above `after_id` matching the filters, ascending."""
        query = select(accounts).where(accounts.c.account_id > after_id)
        if email_query:
            escaped = email_query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(accounts.c.email).like(f"%{escaped}%", escape="\\"))
        if role is not None:
            query = query.where(
                (accounts.c.roles == role)
                | accounts.c.roles.like(f"{role},%")
                | accounts.c.roles.like(f"%,{role}")
                | accounts.c.roles.like(f"%,{role},%")
            )
        if state is not None:
            query = query.where(accounts.c.state == int(state))
        query = query.order_by(accounts.c.account_id).limit(limit)

        async def work(connection: AsyncConnection) -> list[Account]:
            return [account_from_row(row) for row in (await connection.execute(query)).all()]

        return await self._databases.run_global(work)

    # -- email tokens -----------------------------------------------------------------------------------------------

    async def issue_email_token(
        self,
        *,
        account_id: int,
        purpose: str,
        token_hash: str,
        now: datetime,
        expire_time: datetime,
        message: OutboxMessage,
    ) -> None:
        """Store a new token (earlier unused ones of the same purpose stop working) and queue its email, together."""

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                update(email_tokens)
                .where(
                    and_(
                        email_tokens.c.account_id == account_id,
                        email_tokens.c.purpose == purpose,
                        email_tokens.c.use_time.is_(None),
                        email_tokens.c.supersede_time.is_(None),
                    )
                )
                .values(supersede_time=now)
            )
            await connection.execute(
                insert(email_tokens).values(
                    token_hash=token_hash,
                    account_id=account_id,
                    purpose=purpose,
                    create_time=now,
                    expire_time=expire_time,
                )
            )
            await add_outbox(connection, message, now)

        await self._databases.run_global(work)

    async def email_token(self, token_hash: str, purpose: str) -> EmailToken | None:
        row = await self._one(
            select(email_tokens).where(and_(email_tokens.c.token_hash == token_hash, email_tokens.c.purpose == purpose))
        )
        if row is None:
            return None
        return EmailToken(
            account_id=int(row.account_id),
            purpose=str(row.purpose),
            expire_time=row.expire_time,
            use_time=row.use_time,
            supersede_time=row.supersede_time,
        )

    async def use_email_token(self, token_hash: str, now: datetime, **account_values: Any) -> Account | None:
        """Mark an unused token used and change its account in one transaction; None when the token was used or
        superseded meanwhile (a concurrent call won)."""

        async def work(connection: AsyncConnection) -> Account | None:
            result = await connection.execute(
                update(email_tokens)
                .where(
                    and_(
                        email_tokens.c.token_hash == token_hash,
                        email_tokens.c.use_time.is_(None),
                        email_tokens.c.supersede_time.is_(None),
                    )
                )
                .values(use_time=now)
            )
            if result.rowcount != 1:
                return None
            account_id = (
                await connection.execute(
                    select(email_tokens.c.account_id).where(email_tokens.c.token_hash == token_hash)
                )
            ).scalar_one()
            if account_values:
                await connection.execute(
                    update(accounts).where(accounts.c.account_id == account_id).values(**account_values)
                )
            row = (await connection.execute(select(accounts).where(accounts.c.account_id == account_id))).one()
            return account_from_row(row)

        return await self._databases.run_global(work)

    async def outbox(self, account_id: int) -> list[dict[str, Any]]:
        """The queued messages of an account, oldest first (for operators and tests)."""

        async def work(connection: AsyncConnection) -> list[dict[str, Any]]:
            rows = await connection.execute(
                select(outbox_messages)
                .where(outbox_messages.c.account_id == account_id)
                .order_by(outbox_messages.c.message_id)
            )
            return [{**row._mapping, "payload": json.loads(row.payload)} for row in rows.all()]

        return await self._databases.run_global(work)

    # -- profiles (the account's shard, reached by its ref) ---------------------------------------------------------

    async def profile_document(self, ref: AccountRef) -> tuple[str, datetime] | None:
        """The stored profile JSON and when it changed, None when the account never set one."""

        async def work(connection: AsyncConnection) -> tuple[str, datetime] | None:
            row = (
                await connection.execute(
                    select(profiles.c.document, profiles.c.update_time).where(profiles.c.account_id == ref.account_id)
                )
            ).first()
            return None if row is None else (str(row.document), row.update_time)

        return await self._databases.run_for(ref, work)

    async def save_profile_document(self, ref: AccountRef, document: str, now: datetime) -> None:
        """Insert or replace the profile of an account."""

        async def work(connection: AsyncConnection) -> None:
            result = await connection.execute(
                update(profiles)
                .where(profiles.c.account_id == ref.account_id)
                .values(document=document, update_time=now)
            )
            if result.rowcount == 0:
                await connection.execute(
                    insert(profiles).values(account_id=ref.account_id, document=document, update_time=now)
                )

        await self._databases.run_for(ref, work)

    # -- helpers ----------------------------------------------------------------------------------------------------

    async def _one(self, query: Any) -> Row[Any] | None:
        async def work(connection: AsyncConnection) -> Row[Any] | None:
            return (await connection.execute(query)).first()

        return await self._databases.run_global(work)


def role_list(roles: Sequence[str]) -> str:
    """The stored form of a set of roles, "user" first."""
    ordered = ["user", *sorted(set(roles) - {"user"})]
    return ",".join(ordered)
