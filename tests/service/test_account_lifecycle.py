"""The account lifecycle through a real channel: register → verify → login → refresh rotation → reuse detection →
logout, sessions, passwords and the profile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select

from bullant.account.v1 import account_pb2
from services.account.store import profiles
from services.core.db.schema import accounts
from tests.account_platform import (
    PASSWORD,
    AccountPlatform,
    account_settings,
    bearer,
    refusal,
    running_account_service,
    violations_of,
)
from tests.conftest import RecordingHandler

NEW_PASSWORD = "a different long passphrase"


@pytest.fixture
async def platform() -> AsyncIterator[AccountPlatform]:
    async with running_account_service() as running:
        yield running


async def test_register_normalises_the_email_and_queues_a_verification_email(
    platform: AccountPlatform, captured_logs: RecordingHandler
) -> None:
    account = await platform.register("  Alice@Example.COM ", display_name="Alice")
    assert account.email == "alice@example.com"
    assert not account.email_verified
    assert list(account.roles) == [account_pb2.ROLE_USER]
    assert account.state == account_pb2.ACCOUNT_STATE_ACTIVE
    [message] = await platform.outbox(account.account_id)
    assert (message["channel"], message["recipient"], message["template"]) == ("email", account.email, "verify_email")
    assert message["payload"]["link"].startswith("http://localhost:8080/verify-email?token=")
    # The embedded default has no mail server: the link is in the log for the developer.
    assert message["payload"]["link"] in captured_logs.text()
    taken = platform.stub.Register(account_pb2.RegisterRequest(email="ALICE@example.com", password=PASSWORD))
    assert await refusal(taken) == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")


async def test_register_is_idempotent_on_its_request_id(platform: AccountPlatform) -> None:
    first = await platform.register("bob@example.com", request_id="req-1")
    again = await platform.register("bob@example.com", request_id="req-1")
    assert again.account_id == first.account_id
    assert len(await platform.outbox(first.account_id)) == 1
    other = platform.stub.Register(
        account_pb2.RegisterRequest(email="bob@example.com", password="another long password", request_id="req-1")
    )
    assert await refusal(other) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


async def test_verification_tokens_are_single_use_expiring_and_superseded(platform: AccountPlatform) -> None:
    account, token = await platform.signed_up("carol@example.com", verified=False)
    first = await platform.email_token(account.account_id)
    resent = await platform.stub.ResendVerificationEmail(
        account_pb2.ResendVerificationEmailRequest(), metadata=bearer(token)
    )
    assert resent.HasField("expire_time")
    old = platform.stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=first))
    assert await refusal(old) == (grpc.StatusCode.INVALID_ARGUMENT, "VERIFICATION_TOKEN_INVALID")
    current = await platform.email_token(account.account_id)
    platform.clock.advance(hours=49)
    expired = platform.stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=current))
    assert await refusal(expired) == (grpc.StatusCode.FAILED_PRECONDITION, "VERIFICATION_TOKEN_EXPIRED")
    platform.clock.advance(hours=-49)
    verified = await platform.stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=current))
    assert verified.account.email_verified
    assert verified.account.HasField("verify_time")
    # A double-clicked link is harmless.
    again = await platform.stub.VerifyEmail(account_pb2.VerifyEmailRequest(token=current))
    assert again.account.account_id == account.account_id
    unknown = platform.stub.VerifyEmail(account_pb2.VerifyEmailRequest(token="no-such-token"))
    assert await refusal(unknown) == (grpc.StatusCode.INVALID_ARGUMENT, "VERIFICATION_TOKEN_INVALID")
    done = platform.stub.ResendVerificationEmail(account_pb2.ResendVerificationEmailRequest(), metadata=bearer(token))
    assert await refusal(done) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_ALREADY_VERIFIED")


async def test_verification_emails_are_rate_limited(platform: AccountPlatform) -> None:
    _, token = await platform.signed_up("dave@example.com", verified=False)
    for _ in range(3):
        await platform.stub.ResendVerificationEmail(
            account_pb2.ResendVerificationEmailRequest(), metadata=bearer(token)
        )
    flood = platform.stub.ResendVerificationEmail(account_pb2.ResendVerificationEmailRequest(), metadata=bearer(token))
    assert await refusal(flood) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_login_refresh_rotation_reuse_detection_and_logout(platform: AccountPlatform) -> None:
    account, _ = await platform.signed_up("erin@example.com")
    login = await platform.login("Erin@Example.com", device_name="laptop")
    assert login.token_type == "Bearer"
    assert list(login.scopes) == ["read", "trade"]
    me = await platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(login.access_token))
    assert (me.account.account_id, me.session_id, me.api_key_id) == (account.account_id, login.session_id, "")
    assert me.account.HasField("last_login_time")

    rotated = await platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token))
    assert rotated.session_id == login.session_id
    assert rotated.refresh_token != login.refresh_token
    assert rotated.access_token != login.access_token
    await platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(rotated.access_token))

    # The old refresh token again: someone else holds a copy. The whole session dies.
    stolen = platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token))
    assert await refusal(stolen) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    latest = platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=rotated.refresh_token))
    assert await refusal(latest) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    access = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(rotated.access_token))
    assert await refusal(access) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")

    fresh = await platform.login("erin@example.com")
    out = await platform.stub.Logout(account_pb2.LogoutRequest(), metadata=bearer(fresh.access_token))
    assert out.revoked_session_count == 1
    after = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(fresh.access_token))
    assert await refusal(after) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    refresh = platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=fresh.refresh_token))
    assert await refusal(refresh) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
    unknown = platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token="brt_not-a-token"))
    assert await refusal(unknown) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")


async def test_refresh_tokens_expire_and_logout_everywhere_ends_every_session(platform: AccountPlatform) -> None:
    await platform.signed_up("frank@example.com")
    first = await platform.login("frank@example.com")
    second = await platform.login("frank@example.com")
    platform.clock.advance(days=31)
    expired = platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=first.refresh_token))
    assert await refusal(expired) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_EXPIRED")
    platform.clock.advance(days=-31)
    everywhere = await platform.stub.Logout(
        account_pb2.LogoutRequest(all_sessions=True), metadata=bearer(second.access_token)
    )
    assert everywhere.revoked_session_count == 3  # signed_up's session and both logins
    for login in (first, second):
        call = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(login.access_token))
        assert await refusal(call) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


async def test_sessions_list_their_devices_and_can_be_revoked_one_by_one(platform: AccountPlatform) -> None:
    await platform.register("grace@example.com")
    phone = await platform.stub.Login(
        account_pb2.LoginRequest(email="grace@example.com", password=PASSWORD, device_name="phone"),
        metadata=(("x-forwarded-for", "198.51.100.4, 203.0.113.7"),),
    )
    laptop = await platform.login("grace@example.com", device_name="laptop", user_agent="Firefox/130")
    listed = await platform.stub.ListSessions(account_pb2.ListSessionsRequest(), metadata=bearer(laptop.access_token))
    by_device = {session.device_name: session for session in listed.sessions}
    assert set(by_device) == {"phone", "laptop"}
    assert [s.device_name for s in listed.sessions] == ["laptop", "phone"]  # most recently used first
    assert by_device["laptop"].current
    assert not by_device["phone"].current
    assert by_device["laptop"].user_agent == "Firefox/130"
    # The loopback peer is a trusted proxy: the client is the right-most forwarded address.
    assert by_device["phone"].ip_address == "203.0.113.7"
    assert by_device["laptop"].ip_address == "127.0.0.1"

    page = await platform.stub.ListSessions(
        account_pb2.ListSessionsRequest(page_size=1), metadata=bearer(laptop.access_token)
    )
    rest = await platform.stub.ListSessions(
        account_pb2.ListSessionsRequest(page_size=1, page_token=page.next_page_token),
        metadata=bearer(laptop.access_token),
    )
    assert [page.sessions[0].device_name, rest.sessions[0].device_name] == ["laptop", "phone"]
    assert rest.next_page_token == ""

    await platform.stub.RevokeSession(
        account_pb2.RevokeSessionRequest(session_id=phone.session_id), metadata=bearer(laptop.access_token)
    )
    gone = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(phone.access_token))
    assert await refusal(gone) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    left = await platform.stub.ListSessions(account_pb2.ListSessionsRequest(), metadata=bearer(laptop.access_token))
    assert [s.session_id for s in left.sessions] == [laptop.session_id]
    # Revoking a revoked session succeeds.
    await platform.stub.RevokeSession(
        account_pb2.RevokeSessionRequest(session_id=phone.session_id), metadata=bearer(laptop.access_token)
    )
    bad = platform.stub.RevokeSession(
        account_pb2.RevokeSessionRequest(session_id="not an id!"), metadata=bearer(laptop.access_token)
    )
    assert await refusal(bad) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


async def test_change_password_keeps_this_session_and_ends_the_others(platform: AccountPlatform) -> None:
    _, other = await platform.signed_up("heidi@example.com")
    current = await platform.login("heidi@example.com")
    wrong = platform.stub.ChangePassword(
        account_pb2.ChangePasswordRequest(current_password="not my password", new_password=NEW_PASSWORD),
        metadata=bearer(current.access_token),
    )
    assert await refusal(wrong) == (grpc.StatusCode.PERMISSION_DENIED, "INVALID_CREDENTIALS")
    same = platform.stub.ChangePassword(
        account_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=PASSWORD),
        metadata=bearer(current.access_token),
    )
    assert await refusal(same) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_UNCHANGED")
    weak = platform.stub.ChangePassword(
        account_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="short"),
        metadata=bearer(current.access_token),
    )
    assert await refusal(weak) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_TOO_WEAK")
    changed = await platform.stub.ChangePassword(
        account_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(current.access_token),
    )
    assert changed.revoked_session_count == 1
    await platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(current.access_token))
    ended = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(other))
    assert await refusal(ended) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    old = platform.stub.Login(account_pb2.LoginRequest(email="heidi@example.com", password=PASSWORD))
    assert await refusal(old) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    await platform.login("heidi@example.com", NEW_PASSWORD)


async def test_password_reset_by_email_link(platform: AccountPlatform) -> None:
    account, token = await platform.signed_up("ivan@example.com")
    # Unknown emails get the same empty answer and no email.
    await platform.stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email="nobody@example.com"))
    await platform.stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email="IVAN@example.com"))
    reset_token = await platform.email_token(account.account_id, "reset_password")
    weak = platform.stub.ResetPassword(account_pb2.ResetPasswordRequest(token=reset_token, new_password="password123"))
    assert await refusal(weak) == (grpc.StatusCode.INVALID_ARGUMENT, "PASSWORD_TOO_WEAK")
    await platform.stub.ResetPassword(account_pb2.ResetPasswordRequest(token=reset_token, new_password=NEW_PASSWORD))
    ended = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(token))
    assert await refusal(ended) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    again = platform.stub.ResetPassword(account_pb2.ResetPasswordRequest(token=reset_token, new_password=NEW_PASSWORD))
    assert await refusal(again) == (grpc.StatusCode.INVALID_ARGUMENT, "RESET_TOKEN_INVALID")
    await platform.login("ivan@example.com", NEW_PASSWORD)

    await platform.stub.RequestPasswordReset(account_pb2.RequestPasswordResetRequest(email="ivan@example.com"))
    late = await platform.email_token(account.account_id, "reset_password")
    platform.clock.advance(hours=2)
    expired = platform.stub.ResetPassword(account_pb2.ResetPasswordRequest(token=late, new_password=PASSWORD + "!"))
    assert await refusal(expired) == (grpc.StatusCode.FAILED_PRECONDITION, "RESET_TOKEN_EXPIRED")


async def test_login_rehashes_a_password_stored_with_older_parameters() -> None:
    settings = account_settings()
    async with running_account_service(settings) as platform:
        await platform.register("judy@example.com")
    stronger = settings.with_overrides(password_hash_time_cost=2)
    async with running_account_service(stronger) as platform:
        await platform.login("judy@example.com")
        async with platform.deps.databases.global_transaction() as connection:
            stored = (
                await connection.execute(select(accounts.c.password_hash).where(accounts.c.email == "judy@example.com"))
            ).scalar_one()
        assert stored.startswith("$argon2id$")
        assert ",t=2," in stored
        await platform.login("judy@example.com")


async def test_profile_defaults_masked_updates_and_its_shard(platform: AccountPlatform) -> None:
    account, _ = await platform.signed_up("kim@example.com")
    token = (await platform.login("kim@example.com")).access_token
    profile = (await platform.stub.GetProfile(account_pb2.GetProfileRequest(), metadata=bearer(token))).profile
    assert (profile.display_name, profile.timezone, profile.locale) == ("kim", "Asia/Seoul", "en-US")
    assert profile.notification_preferences.email.enabled
    assert not profile.notification_preferences.sms.enabled

    change = account_pb2.Profile(
        timezone="America/New_York",
        locale="ko_kr",
        display_name="ignored: not in the mask",
        notification_preferences=account_pb2.NotificationPreferences(
            sms=account_pb2.SmsChannel(enabled=True, phone_number="+821012345678")
        ),
    )
    mask = FieldMask(paths=["timezone", "locale", "notification_preferences.sms"])
    updated = (
        await platform.stub.UpdateProfile(
            account_pb2.UpdateProfileRequest(profile=change, update_mask=mask), metadata=bearer(token)
        )
    ).profile
    assert (updated.display_name, updated.timezone, updated.locale) == ("kim", "America/New_York", "ko-KR")
    assert updated.notification_preferences.sms.phone_number == "+821012345678"
    assert updated.notification_preferences.email.enabled  # untouched
    assert updated.HasField("update_time")

    # Setting the time zone empty restores the default.
    reset = await platform.stub.UpdateProfile(
        account_pb2.UpdateProfileRequest(profile=account_pb2.Profile(), update_mask=FieldMask(paths=["timezone"])),
        metadata=bearer(token),
    )
    assert reset.profile.timezone == "Asia/Seoul"

    no_number = account_pb2.Profile(
        notification_preferences=account_pb2.NotificationPreferences(telegram=account_pb2.TelegramChannel(enabled=True))
    )
    call = platform.stub.UpdateProfile(
        account_pb2.UpdateProfileRequest(
            profile=no_number, update_mask=FieldMask(paths=["notification_preferences.telegram"])
        ),
        metadata=bearer(token),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "profile.notification_preferences.telegram.chat_id" in violations_of(caught.value)

    # Profiles live in the account's shard.
    ref = await platform.deps.databases.directory_ref(account.account_id)
    async with platform.deps.databases.shard_transaction(ref.shard) as connection:
        stored = (
            await connection.execute(select(profiles.c.document).where(profiles.c.account_id == account.account_id))
        ).scalar_one()
    assert "America/New_York" not in stored
    assert "ko-KR" in stored
