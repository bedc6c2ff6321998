"""TOTP two-factor authentication and API keys over a real channel: enrolment, replay, recovery codes, scopes,
expiry, idempotency, revocation, paging and limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pyotp
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select

from bullant.account.v1 import account_pb2
from services.account.credential_store import recovery_codes, totp_credentials
from tests.account_platform import PASSWORD, AccountPlatform, bearer, refusal, running_account_service

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EMAIL = "alice@example.com"
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def platform() -> AsyncIterator[AccountPlatform]:
    async with running_account_service() as running:
        yield running


@pytest.fixture
async def session(platform: AccountPlatform) -> Metadata:
    """Bearer metadata of a verified account's fresh session."""
    _, token = await platform.signed_up(EMAIL)
    return bearer(token)


def _wrong_code(p: AccountPlatform, secret: str) -> str:
    """A 6-digit code that matches no step near now."""
    near = {p.totp_code(secret, steps_ahead=n) for n in range(-3, 4)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in near)


async def _enroll(p: AccountPlatform, session: Metadata) -> account_pb2.EnrollTotpResponse:
    return await p.stub.EnrollTotp(account_pb2.EnrollTotpRequest(password=PASSWORD), metadata=session)


async def _enable_totp(p: AccountPlatform, session: Metadata) -> tuple[str, list[str]]:
    """Enrol and confirm TOTP; the secret and the recovery codes. The domain clock then moves to the next step, so
    the code spent by the confirmation is not the current one any more."""
    secret = (await _enroll(p, session)).secret
    confirmed = await p.stub.ConfirmTotp(
        account_pb2.ConfirmTotpRequest(totp_code=p.totp_code(secret)), metadata=session
    )
    p.clock.advance(seconds=30)
    return secret, list(confirmed.recovery_codes)


def _login(p: AccountPlatform, **second_factor: str) -> Any:
    return p.stub.Login(account_pb2.LoginRequest(email=EMAIL, password=PASSWORD, **second_factor))


# -- TOTP -----------------------------------------------------------------------------------------------------------


async def test_enrolment_needs_the_password_and_gives_a_usable_secret(
    platform: AccountPlatform, session: Metadata
) -> None:
    p = platform
    wrong = account_pb2.EnrollTotpRequest(password="not the password at all")
    assert await refusal(p.stub.EnrollTotp(wrong, metadata=session)) == (PERMISSION_DENIED, "INVALID_CREDENTIALS")

    enrollment = await _enroll(p, session)
    assert re.fullmatch(r"[A-Z2-7]{16,}=*", enrollment.secret)
    assert enrollment.otpauth_uri.startswith("otpauth://totp/")
    parsed = pyotp.parse_uri(enrollment.otpauth_uri)
    assert (parsed.issuer, parsed.name, parsed.secret) == ("Bullant", EMAIL, enrollment.secret)

    bad = account_pb2.ConfirmTotpRequest(totp_code=_wrong_code(p, enrollment.secret))
    assert await refusal(p.stub.ConfirmTotp(bad, metadata=session)) == (PERMISSION_DENIED, "TOTP_INVALID")
    confirmed = await p.stub.ConfirmTotp(
        account_pb2.ConfirmTotpRequest(totp_code=p.totp_code(enrollment.secret)), metadata=session
    )
    assert len(set(confirmed.recovery_codes)) == 10
    assert confirmed.account.totp_enabled
    assert await refusal(_enroll(p, session)) == (FAILED_PRECONDITION, "TOTP_ALREADY_ENABLED")
    # The database holds the secret sealed and the recovery codes hashed: a dump reveals neither.
    async with p.deps.databases.global_transaction() as connection:
        stored = [
            str(value)
            for table in (totp_credentials, recovery_codes)
            for row in (await connection.execute(select(table))).all()
            for value in row
        ]
    assert stored
    assert not any(enrollment.secret in value for value in stored)
    assert not any(code in value for code in confirmed.recovery_codes for value in stored)


async def test_login_with_totp_accepts_each_code_once(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    secret, recovery_codes = await _enable_totp(p, session)
    assert await refusal(_login(p)) == (UNAUTHENTICATED, "TOTP_REQUIRED")
    assert await refusal(_login(p, totp_code=_wrong_code(p, secret))) == (UNAUTHENTICATED, "TOTP_INVALID")

    code = p.totp_code(secret)
    assert (await _login(p, totp_code=code)).access_token
    assert await refusal(_login(p, totp_code=code)) == (UNAUTHENTICATED, "TOTP_INVALID")
    assert (await _login(p, totp_code=p.totp_code(secret, steps_ahead=1))).access_token

    assert (await _login(p, recovery_code=recovery_codes[0])).access_token
    assert await refusal(_login(p, recovery_code=recovery_codes[0])) == (UNAUTHENTICATED, "RECOVERY_CODE_INVALID")
    typed = recovery_codes[1].upper().replace("-", " ")
    assert (await _login(p, recovery_code=typed)).access_token


async def test_a_pending_secret_expires(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    secret = (await _enroll(p, session)).secret
    p.clock.advance(minutes=16)
    late = account_pb2.ConfirmTotpRequest(totp_code=p.totp_code(secret))
    assert await refusal(p.stub.ConfirmTotp(late, metadata=session)) == (FAILED_PRECONDITION, "TOTP_NOT_ENROLLED")
    assert not (await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=session)).account.totp_enabled


async def test_disabling_totp_needs_password_and_code(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    secret, _ = await _enable_totp(p, session)
    code = p.totp_code(secret)
    wrong_password = account_pb2.DisableTotpRequest(password="not the password at all", totp_code=code)
    assert await refusal(p.stub.DisableTotp(wrong_password, metadata=session)) == (
        PERMISSION_DENIED,
        "INVALID_CREDENTIALS",
    )
    no_code = account_pb2.DisableTotpRequest(password=PASSWORD)
    assert (await refusal(p.stub.DisableTotp(no_code, metadata=session)))[0] == INVALID_ARGUMENT
    wrong_code = account_pb2.DisableTotpRequest(password=PASSWORD, totp_code=_wrong_code(p, secret))
    assert await refusal(p.stub.DisableTotp(wrong_code, metadata=session)) == (PERMISSION_DENIED, "TOTP_INVALID")

    disabled = await p.stub.DisableTotp(
        account_pb2.DisableTotpRequest(password=PASSWORD, totp_code=code), metadata=session
    )
    assert not disabled.account.totp_enabled
    assert (await _login(p)).access_token
    again = account_pb2.DisableTotpRequest(password=PASSWORD, totp_code=code)
    assert await refusal(p.stub.DisableTotp(again, metadata=session)) == (FAILED_PRECONDITION, "TOTP_NOT_ENABLED")


# -- API keys -------------------------------------------------------------------------------------------------------


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.replace(tzinfo=UTC))
    return stamp


def _create(
    p: AccountPlatform, session: Metadata, name: str = "bot", scopes: tuple[str, ...] = ("read",), **fields: Any
) -> Any:
    key = account_pb2.ApiKey(name=name, scopes=list(scopes), **fields.pop("key", {}))
    return p.stub.CreateApiKey(account_pb2.CreateApiKeyRequest(api_key=key, **fields), metadata=session)


def _with_key(secret: str) -> Metadata:
    return (("x-api-key", secret),)


async def _listed(p: AccountPlatform, session: Metadata, *, show_revoked: bool = False) -> list[str]:
    request = account_pb2.ListApiKeysRequest(show_revoked=show_revoked)
    return [key.api_key_id for key in (await p.stub.ListApiKeys(request, metadata=session)).api_keys]


async def test_a_new_key_authenticates_within_its_scopes(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    created = await _create(p, session)
    key = created.api_key
    assert created.secret.startswith(key.prefix)
    assert len(key.prefix) >= 8
    assert key.state == account_pb2.API_KEY_STATE_ACTIVE
    lifetime = key.expire_time.ToDatetime() - key.create_time.ToDatetime()
    assert abs(lifetime - timedelta(days=90)) < timedelta(minutes=1)
    assert not key.HasField("last_use_time")

    read_only = _with_key(created.secret)
    who = await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=read_only)
    assert (who.account.email, who.api_key_id, list(who.scopes)) == (EMAIL, key.api_key_id, ["read"])
    assert (await p.stub.GetProfile(account_pb2.GetProfileRequest(), metadata=read_only)).profile.display_name
    update = account_pb2.UpdateProfileRequest(
        profile=account_pb2.Profile(timezone="Europe/Paris"), update_mask=FieldMask(paths=["timezone"])
    )
    assert await refusal(p.stub.UpdateProfile(update, metadata=read_only)) == (PERMISSION_DENIED, "SCOPE_MISSING")
    trading = await _create(p, session, "trader", ("read", "trade"))
    updated = await p.stub.UpdateProfile(update, metadata=_with_key(trading.secret))
    assert updated.profile.timezone == "Europe/Paris"

    listed = (await p.stub.ListApiKeys(account_pb2.ListApiKeysRequest(), metadata=session)).api_keys
    assert {k.api_key_id: k.HasField("last_use_time") for k in listed} == {
        key.api_key_id: True,
        trading.api_key.api_key_id: True,
    }


async def test_key_requests_are_checked(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    now = p.clock()
    assert await refusal(_create(p, session, scopes=("read", "admin"))) == (PERMISSION_DENIED, "SCOPE_NOT_ALLOWED")
    assert await refusal(_create(p, session, scopes=("read", "withdraw"))) == (INVALID_ARGUMENT, "SCOPE_INVALID")
    for moment in (now - timedelta(minutes=1), now + timedelta(days=366)):
        assert await refusal(_create(p, session, key={"expire_time": _stamp(moment)})) == (
            INVALID_ARGUMENT,
            "EXPIRE_TIME_INVALID",
        )
    chosen = now + timedelta(days=365) - timedelta(minutes=1)
    created = await _create(p, session, key={"expire_time": _stamp(chosen)})
    assert abs(created.api_key.expire_time.ToDatetime() - chosen) < timedelta(seconds=1)
    assert await _listed(p, session, show_revoked=True) == [created.api_key.api_key_id]


async def test_create_with_a_request_id_is_idempotent(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    first = await _create(p, session, request_id="8d0f6f7e-5a0c-4d1b-9a55-1f0b0d1d2e3f")
    retry = await _create(p, session, request_id="8d0f6f7e-5a0c-4d1b-9a55-1f0b0d1d2e3f")
    assert (retry.api_key.api_key_id, retry.secret) == (first.api_key.api_key_id, first.secret)
    assert await _listed(p, session, show_revoked=True) == [first.api_key.api_key_id]
    other = _create(p, session, "another name", request_id="8d0f6f7e-5a0c-4d1b-9a55-1f0b0d1d2e3f")
    assert await refusal(other) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert (await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=_with_key(retry.secret))).api_key_id


async def test_a_revoked_key_stops_at_once(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    created = await _create(p, session)
    kept = await _create(p, session, "kept")
    key_id = created.api_key.api_key_id
    # Used just before: its lookup is cached now.
    for _ in range(2):
        await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=_with_key(created.secret))
    revoke = account_pb2.RevokeApiKeyRequest(api_key_id=key_id)
    revoked = await p.stub.RevokeApiKey(revoke, metadata=session)
    assert revoked.api_key.state == account_pb2.API_KEY_STATE_REVOKED
    assert revoked.api_key.HasField("revoke_time")
    get = account_pb2.GetAccountRequest()
    assert await refusal(p.stub.GetAccount(get, metadata=_with_key(created.secret))) == (
        UNAUTHENTICATED,
        "API_KEY_INVALID",
    )
    again = await p.stub.RevokeApiKey(revoke, metadata=session)
    assert again.api_key.revoke_time == revoked.api_key.revoke_time

    assert await _listed(p, session) == [kept.api_key.api_key_id]
    assert set(await _listed(p, session, show_revoked=True)) == {key_id, kept.api_key.api_key_id}
    assert (await p.stub.GetAccount(get, metadata=_with_key(kept.secret))).api_key_id == kept.api_key.api_key_id


async def _pages(p: AccountPlatform, session: Metadata, size: int) -> list[account_pb2.ApiKey]:
    seen: list[account_pb2.ApiKey] = []
    token = ""
    while True:
        request = account_pb2.ListApiKeysRequest(page_size=size, page_token=token)
        page = await p.stub.ListApiKeys(request, metadata=session)
        assert len(page.api_keys) <= size
        seen.extend(page.api_keys)
        token = page.next_page_token
        if not token:
            return seen


async def test_keys_page_newest_first(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    created = []
    for n in range(5):
        created.append((await _create(p, session, f"key {n}")).api_key.api_key_id)
        p.clock.advance(seconds=1)
    assert [k.api_key_id for k in await _pages(p, session, 2)] == created[::-1]

    first = await p.stub.ListApiKeys(account_pb2.ListApiKeysRequest(page_size=2), metadata=session)
    other_filter = account_pb2.ListApiKeysRequest(page_size=2, page_token=first.next_page_token, show_revoked=True)
    assert await refusal(p.stub.ListApiKeys(other_filter, metadata=session)) == (
        INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    )


async def test_an_account_holds_at_most_25_active_keys(platform: AccountPlatform, session: Metadata) -> None:
    p = platform
    # Created in a burst: many share a creation time, which paging must still walk exactly once.
    created = {(await _create(p, session, f"key {n}")).api_key.api_key_id for n in range(25)}
    assert await refusal(_create(p, session, "one too many")) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "API_KEY_LIMIT_REACHED",
    )
    paged = [k.api_key_id for k in await _pages(p, session, 7)]
    assert sorted(paged) == sorted(created)

    await p.stub.RevokeApiKey(account_pb2.RevokeApiKeyRequest(api_key_id=paged[0]), metadata=session)
    assert (await _create(p, session, "replacement")).secret
