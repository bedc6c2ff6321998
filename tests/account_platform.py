"""A running account service for tests: the real registration, authenticator, databases and coordination backend
behind a loopback gRPC server, a movable clock, and helpers that act like a user (register, verify, log in)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pyotp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select, update

from bullant.account.v1 import account_pb2, account_pb2_grpc
from services.account import wiring as account_wiring
from services.bootstrap import build_authenticator, build_dependencies
from services.core.clock import utc_now
from services.core.db.schema import accounts, outbox_messages
from services.core.dependencies import Dependencies
from services.core.grpc_errors import error_reason
from services.core.server import GrpcServer
from services.core.settings import Settings
from tests.support import make_settings

PASSWORD = "correct horse battery staple"
# argon2id at its cheapest: the tests exercise the flows, not the hashing cost.
CHEAP_HASHING: dict[str, Any] = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 64,
    "password_hash_parallelism": 1,
}


class Clock:
    """The account domain's clock (naive UTC): real time plus an offset tests can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utc_now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), reason_of(error)
    raise AssertionError("the call succeeded")


def reason_of(error: grpc.aio.AioRpcError) -> str:
    return error_reason(error)


def violations_of(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """Field → description of the BadRequest detail."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, str] = {}
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def retry_delay_of(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return -1.0


class AccountPlatform:
    """The running service, its stub and the platform objects behind it."""

    def __init__(self, server: GrpcServer, channel: grpc.aio.Channel, deps: Dependencies, clock: Clock) -> None:
        self.server = server
        self.channel = channel
        self.stub = account_pb2_grpc.AccountServiceStub(channel)
        self.deps = deps
        self.clock = clock

    async def register(self, email: str, password: str = PASSWORD, **fields: Any) -> account_pb2.Account:
        reply = await self.stub.Register(account_pb2.RegisterRequest(email=email, password=password, **fields))
        return reply.account

    async def outbox(self, account_id: int, template: str | None = None) -> list[dict[str, Any]]:
        async with self.deps.databases.global_transaction() as connection:
            rows = await connection.execute(
                select(outbox_messages)
                .where(outbox_messages.c.account_id == account_id)
                .order_by(outbox_messages.c.message_id)
            )
            found = [{**row._mapping, "payload": json.loads(row.payload)} for row in rows.all()]
        return [row for row in found if template is None or row["template"] == template]

    async def email_token(self, account_id: int, template: str = "verify_email") -> str:
        """The token of the newest email of `template` sent to the account (as the user would click it)."""
        messages = await self.outbox(account_id, template)
        assert messages, f"no {template} email for account {account_id}"
        link = messages[-1]["payload"]["link"]
        return str(urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0])

    async def verify(self, account_id: int) -> None:
        await self.stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=await self.email_token(account_id)))

    async def login(self, email: str, password: str = PASSWORD, **fields: Any) -> account_pb2.LoginResponse:
        return await self.stub.Login(account_pb2.LoginRequest(email=email, password=password, **fields))

    async def signed_up(self, email: str, *, verified: bool = True) -> tuple[account_pb2.Account, str]:
        """A registered (and by default verified) account and an access token of a fresh session."""
        account = await self.register(email)
        if verified:
            await self.verify(account.account_id)
        return account, (await self.login(email)).access_token

    async def make_admin(self, account_id: int) -> None:
        async with self.deps.databases.global_transaction() as connection:
            await connection.execute(
                update(accounts).where(accounts.c.account_id == account_id).values(roles="user,admin")
            )

    def totp_code(self, secret: str, *, steps_ahead: int = 0) -> str:
        moment = self.clock() + timedelta(seconds=30 * steps_ahead)
        # pyotp reads naive datetimes as local time: hand it an aware one.
        return pyotp.TOTP(secret).at(moment.replace(tzinfo=UTC))


def account_settings(**overrides: Any) -> Settings:
    return make_settings(**{**CHEAP_HASHING, **overrides})


@asynccontextmanager
async def running_account_service(
    settings: Settings | None = None, *, extra: Sequence[Any] = ()
) -> AsyncIterator[AccountPlatform]:
    """The account service with authentication on, over SQLite and the in-memory backend unless `settings` say
    otherwise."""
    settings = settings or account_settings()
    deps = build_dependencies(settings)
    clock = Clock()
    server = GrpcServer(
        settings.server,
        [account_wiring.build(deps, clock=clock), *extra],
        components=(deps.databases, deps.coordination),
        authenticator=build_authenticator(deps),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield AccountPlatform(server, channel, deps, clock)
    finally:
        await server.stop(grace=0.5)
