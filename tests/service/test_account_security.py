"""Attacks on the account service over a real channel: forged tokens, other users' resources, guessing, enumeration,
hostile input, leaked secrets, unverified accounts and API keys where a session is required."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import argon2
import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.account.v1 import account_pb2
from services.core.auth.keys import SigningKeys
from services.core.auth.tokens import TokenIssuer, TokenPolicy
from tests.account_platform import (
    PASSWORD,
    AccountPlatform,
    account_settings,
    bearer,
    reason_of,
    refusal,
    retry_delay_of,
    running_account_service,
    violations_of,
)
from tests.conftest import RecordingHandler

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
GET_ACCOUNT = account_pb2.GetAccountRequest()
LOCKOUT = {"login_lockout_failures": 3, "login_lockout_seconds": 600, "login_rate_per_email_per_minute": 100}


@pytest.fixture
async def platform() -> AsyncIterator[AccountPlatform]:
    async with running_account_service() as running:
        yield running


async def _failure(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _api_key_metadata(secret: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", secret),)


def _create_key(p: AccountPlatform, metadata: Any, name: str = "bot", scopes: tuple[str, ...] = ("read",)) -> Any:
    key = account_pb2.ApiKey(name=name, scopes=list(scopes))
    return p.stub.CreateApiKey(account_pb2.CreateApiKeyRequest(api_key=key), metadata=metadata)


async def _token_refusal(p: AccountPlatform, token: str) -> tuple[grpc.StatusCode, str]:
    return await refusal(p.stub.GetAccount(GET_ACCOUNT, metadata=bearer(token)))


async def _mint(
    p: AccountPlatform, keys: SigningKeys, account_id: int, policy: TokenPolicy | None = None, **kw: Any
) -> str:
    token, _ = TokenIssuer(keys, policy or TokenPolicy()).issue(
        account_id=account_id,
        shard=(await p.deps.databases.directory_ref(account_id)).shard,
        roles=["user"],
        scopes=["read", "trade"],
        session_id="0" * 32,
        **kw,
    )
    return token


# -- forged and broken access tokens --------------------------------------------------------------------------------


async def test_forged_expired_and_foreign_tokens_are_refused(platform: AccountPlatform) -> None:
    p = platform
    alice, _ = await p.signed_up("alice@example.com")
    bob, _ = await p.signed_up("bob@example.com")
    keys = p.deps.signing_keys
    assert keys is not None
    assert keys.private_key is not None
    # Control: a token minted like the service mints them is accepted, so each refusal below is about its one flaw.
    good = await _mint(p, keys, alice.account_id)
    assert (await p.stub.GetAccount(GET_ACCOUNT, metadata=bearer(good))).account.account_id == alice.account_id

    header, payload, signature = good.split(".")
    claims = json.loads(_unb64(payload))
    as_bob = ".".join([header, _b64(json.dumps({**claims, "sub": str(bob.account_id)}).encode()), signature])
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    pem = keys.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = _b64(json.dumps({"alg": "HS256", "kid": keys.key_id, "typ": "JWT"}).encode())
    hs_signing_input = f"{hs_header}.{payload}"
    hs256 = f"{hs_signing_input}.{_b64(hmac.new(pem, hs_signing_input.encode(), hashlib.sha256).digest())}"
    none_header = _b64(json.dumps({"alg": "none", "kid": keys.key_id, "typ": "JWT"}).encode())
    foreign = SigningKeys.from_private(Ed25519PrivateKey.generate())
    # Control for the re-signing helper: re-signed with our own key the claims are accepted.
    resigned = _swap_kid(good, keys, keys.key_id)
    assert (await p.stub.GetAccount(GET_ACCOUNT, metadata=bearer(resigned))).account.account_id == alice.account_id

    expired = await _mint(p, keys, alice.account_id, now=time.time() - 3600)
    assert await _token_refusal(p, expired) == (UNAUTHENTICATED, "TOKEN_EXPIRED")
    forged = {
        "sub changed, old signature": as_bob,
        "payload byte flipped": f"{header}.{flipped}.{signature}",
        "wrong audience": await _mint(p, keys, alice.account_id, TokenPolicy(audience="other")),
        "wrong issuer": await _mint(p, keys, alice.account_id, TokenPolicy(issuer="other")),
        "foreign key": await _mint(p, foreign, alice.account_id),
        "foreign key, our kid": _swap_kid(good, foreign, keys.key_id),
        "alg none": f"{none_header}.{payload}.",
        "HS256 keyed with the public key": hs256,
    }
    for name, token in forged.items():
        assert await _token_refusal(p, token) == (UNAUTHENTICATED, "TOKEN_INVALID"), name


def _swap_kid(token: str, keys: SigningKeys, kid: str) -> str:
    """Re-sign `token`'s claims with `keys` but a header naming `kid`."""
    assert keys.private_key is not None
    header = _b64(json.dumps({"alg": "EdDSA", "kid": kid, "typ": "JWT"}).encode())
    signing_input = f"{header}.{token.split('.')[1]}"
    return f"{signing_input}.{_b64(keys.private_key.sign(signing_input.encode()))}"


@pytest.mark.parametrize(
    "authorization", ["Bearer not-a-jwt", "Bearer", "Bearer a.b.c", "Basic dXNlcjpwYXNzd29yZA==", "token"]
)
async def test_malformed_authorization_is_unauthenticated(platform: AccountPlatform, authorization: str) -> None:
    code, reason = await refusal(platform.stub.GetAccount(GET_ACCOUNT, metadata=(("authorization", authorization),)))
    assert (code, reason) == (UNAUTHENTICATED, "TOKEN_INVALID")


# -- other accounts' resources --------------------------------------------------------------------------------------


async def test_another_accounts_sessions_and_keys_are_invisible_and_untouchable(platform: AccountPlatform) -> None:
    p = platform
    await p.signed_up("alice@example.com")
    _, bob_token = await p.signed_up("bob@example.com")
    alice_login = await p.login("alice@example.com")
    alice = bearer(alice_login.access_token)
    key = await _create_key(p, alice)
    bob_key = await _create_key(p, bearer(bob_token), "bob bot")

    revoke_session = account_pb2.RevokeSessionRequest(session_id=alice_login.session_id)
    assert await refusal(p.stub.RevokeSession(revoke_session, metadata=bearer(bob_token))) == (
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    revoke_key = account_pb2.RevokeApiKeyRequest(api_key_id=key.api_key.api_key_id)
    assert await refusal(p.stub.RevokeApiKey(revoke_key, metadata=bearer(bob_token))) == (
        grpc.StatusCode.NOT_FOUND,
        "API_KEY_NOT_FOUND",
    )

    assert (await p.stub.GetAccount(GET_ACCOUNT, metadata=alice)).session_id == alice_login.session_id
    await p.stub.Refresh(account_pb2.RefreshRequest(refresh_token=alice_login.refresh_token))
    used = await p.stub.GetAccount(GET_ACCOUNT, metadata=_api_key_metadata(key.secret))
    assert used.api_key_id == key.api_key.api_key_id

    bob_sessions = await p.stub.ListSessions(account_pb2.ListSessionsRequest(), metadata=bearer(bob_token))
    assert len(bob_sessions.sessions) == 1
    assert alice_login.session_id not in {s.session_id for s in bob_sessions.sessions}
    bob_keys = await p.stub.ListApiKeys(account_pb2.ListApiKeysRequest(show_revoked=True), metadata=bearer(bob_token))
    assert [k.api_key_id for k in bob_keys.api_keys] == [bob_key.api_key.api_key_id]


# -- guessing -------------------------------------------------------------------------------------------------------


async def _wrong_logins(p: AccountPlatform, email: str, count: int) -> None:
    for _ in range(count):
        assert await refusal(p.login(email, "not the password at all")) == (UNAUTHENTICATED, "INVALID_CREDENTIALS")


@pytest.mark.parametrize("known", [True, False], ids=["known email", "unknown email"])
async def test_repeated_failures_lock_the_email(known: bool) -> None:
    settings = account_settings(**LOCKOUT)
    async with running_account_service(settings) as p:
        email = "target@example.com"
        if known:
            await p.register(email)
        await _wrong_logins(p, email, 3)
        error = await _failure(p.login(email, PASSWORD))
        assert (error.code(), reason_of(error)) == (EXHAUSTED, "LOGIN_LOCKED")
        assert 0 < retry_delay_of(error) <= 600
        # Another email is not affected.
        await _wrong_logins(p, "bystander@example.com", 1)


async def test_logins_are_rate_limited_per_email() -> None:
    async with running_account_service(account_settings(login_rate_per_email_per_minute=3)) as p:
        await p.register("alice@example.com")
        for _ in range(3):
            await p.login("alice@example.com")
        error = await _failure(p.login("alice@example.com"))
        assert (error.code(), reason_of(error)) == (EXHAUSTED, "RATE_LIMITED")
        assert retry_delay_of(error) > 0


async def test_logins_are_rate_limited_per_ip() -> None:
    async with running_account_service(account_settings(login_rate_per_ip_per_minute=5)) as p:
        for n in range(5):
            await _wrong_logins(p, f"guess{n}@example.com", 1)
        error = await _failure(p.login("guess5@example.com", "not the password at all"))
        assert (error.code(), reason_of(error)) == (EXHAUSTED, "RATE_LIMITED")
        assert retry_delay_of(error) > 0


async def test_a_success_resets_the_failure_count() -> None:
    settings = account_settings(**LOCKOUT)
    async with running_account_service(settings) as p:
        await p.register("alice@example.com")
        await _wrong_logins(p, "alice@example.com", 2)
        await p.login("alice@example.com")
        await _wrong_logins(p, "alice@example.com", 2)
        assert (await p.login("alice@example.com")).access_token


# -- no account enumeration -----------------------------------------------------------------------------------------


def _count_argon2_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every argon2 hash and verification from now on (the slow work an attacker could time)."""
    calls: list[str] = []
    for name in ("hash", "verify"):
        original: Callable[..., Any] = getattr(argon2.PasswordHasher, name)

        def counting(self: argon2.PasswordHasher, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(argon2.PasswordHasher, name, counting)
    return calls


async def test_unknown_email_and_wrong_password_look_and_cost_the_same(
    platform: AccountPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = platform
    await p.register("alice@example.com")
    calls = _count_argon2_work(monkeypatch)
    wrong_password = await _failure(p.login("alice@example.com", "not the password at all"))
    assert calls == ["verify"]
    calls.clear()
    # The first unknown email of the process too: no extra work (e.g. making a dummy hash) on that path.
    unknown_email = await _failure(p.login("nobody@example.com", "not the password at all"))
    assert calls == ["verify"]
    assert unknown_email.code() == wrong_password.code() == UNAUTHENTICATED
    assert reason_of(unknown_email) == reason_of(wrong_password) == "INVALID_CREDENTIALS"
    assert unknown_email.details() == wrong_password.details()


# -- hostile and invalid input --------------------------------------------------------------------------------------


BAD_EMAILS = {
    "missing @": "alice.example.com",
    # One character past the declared 254.
    "255 characters": "a" * 243 + "@example.com",
    "zero-width": "ali\u200bce@example.com",
    "SQL": "x@y.com' OR '1'='1",
}


@pytest.mark.parametrize("case", BAD_EMAILS)
async def test_register_refuses_bad_emails(platform: AccountPlatform, case: str) -> None:
    error = await _failure(platform.register(BAD_EMAILS[case]))
    assert (error.code(), reason_of(error)) == (INVALID_ARGUMENT, "EMAIL_INVALID")
    assert set(violations_of(error)) == {"email"}


async def test_a_10_mb_email_is_refused_by_its_size(platform: AccountPlatform) -> None:
    error = await _failure(platform.register("a" * (10 * 1024 * 1024) + "@example.com"))
    assert (error.code(), reason_of(error)) == (EXHAUSTED, "REQUEST_TOO_LARGE")


@pytest.mark.parametrize(
    "password", ["short pw", "password1234", "carol.smith@example.com"], ids=["short", "common", "the email"]
)
async def test_register_refuses_weak_passwords(platform: AccountPlatform, password: str) -> None:
    error = await _failure(platform.register("carol.smith@example.com", password))
    assert (error.code(), reason_of(error)) == (INVALID_ARGUMENT, "PASSWORD_TOO_WEAK")
    assert set(violations_of(error)) == {"password"}
    assert password not in (error.details() or "")


async def test_register_reports_every_bad_field_at_once(platform: AccountPlatform) -> None:
    # Each value just past its field's declared limit.
    request = account_pb2.RegisterRequest(
        email="a" * 243 + "@example.com",
        password="Quokka-78",
        display_name="d" * 65,
        timezone="T" * 65,
        locale="en-" + "x" * 33,
        request_id="r" * 65,
    )
    error = await _failure(platform.stub.Register(request))
    assert error.code() == INVALID_ARGUMENT
    found = violations_of(error)
    assert set(found) == {"email", "password", "display_name", "timezone", "locale", "request_id"}
    limits = {"email": 254, "display_name": 64, "timezone": 64, "locale": 35, "request_id": 64}
    for field, limit in limits.items():
        assert f"at most {limit}" in found[field], (field, found[field])
    assert "at least 10" in found["password"]


async def test_register_reports_a_bad_email_and_a_weak_password_together(platform: AccountPlatform) -> None:
    error = await _failure(platform.register("not an email", "password1234"))
    assert error.code() == INVALID_ARGUMENT
    assert set(violations_of(error)) == {"email", "password"}


async def test_sql_metacharacters_are_data(platform: AccountPlatform) -> None:
    account = await platform.register("o'brien@example.com")
    assert account.email == "o'brien@example.com"
    login = await platform.login("o'brien@example.com")
    assert login.account.account_id == account.account_id


async def test_a_huge_password_is_refused_before_hashing(
    platform: AccountPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    await platform.register("alice@example.com")
    calls = _count_argon2_work(monkeypatch)
    # One character past the declared 1024: refused by the rules, before the account is looked up.
    error = await _failure(platform.login("alice@example.com", "x" * 1025))
    assert (error.code(), set(violations_of(error))) == (INVALID_ARGUMENT, {"password"})
    assert "at most 1024" in violations_of(error)["password"]
    # A megabyte: refused by its size, before it is even parsed.
    error = await _failure(platform.login("alice@example.com", "x" * 1024 * 1024))
    assert (error.code(), reason_of(error)) == (EXHAUSTED, "REQUEST_TOO_LARGE")
    assert calls == []


@pytest.mark.parametrize(
    ("profile", "paths", "field", "reason"),
    [
        (account_pb2.Profile(timezone="Mars/Olympus_Mons"), ["timezone"], "profile.timezone", "TIMEZONE_INVALID"),
        (account_pb2.Profile(), ["no_such_field"], "update_mask", "UPDATE_MASK_INVALID"),
        (account_pb2.Profile(), [], "update_mask", "UPDATE_MASK_INVALID"),
        (account_pb2.Profile(), ["update_time"], "update_mask", "UPDATE_MASK_INVALID"),
    ],
    ids=["timezone", "unknown path", "empty mask", "output-only path"],
)
async def test_update_profile_refuses_bad_values(
    platform: AccountPlatform, profile: account_pb2.Profile, paths: list[str], field: str, reason: str
) -> None:
    _, token = await platform.signed_up("alice@example.com")
    request = account_pb2.UpdateProfileRequest(profile=profile, update_mask=FieldMask(paths=paths))
    error = await _failure(platform.stub.UpdateProfile(request, metadata=bearer(token)))
    assert (error.code(), reason_of(error)) == (INVALID_ARGUMENT, reason)
    assert field in violations_of(error)


# -- secrets stay out of the logs -----------------------------------------------------------------------------------


async def test_no_secret_reaches_the_logs(platform: AccountPlatform, captured_logs: RecordingHandler) -> None:
    p = platform
    password, wrong_password = "Zebra-Quokka-Lantern-7731", "Walrus-Tangerine-Basalt-4410"
    garbage = "Bearer Garbage-Marmot-Telescope-5521"
    account = await p.register("alice@example.com", password)
    await p.verify(account.account_id)
    login = await p.login("alice@example.com", password)
    refreshed = await p.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token))
    session = bearer(refreshed.access_token)
    enrollment = await p.stub.EnrollTotp(account_pb2.EnrollTotpRequest(password=password), metadata=session)
    code = p.totp_code(enrollment.secret)
    confirmed = await p.stub.ConfirmTotp(account_pb2.ConfirmTotpRequest(totp_code=code), metadata=session)
    key = await _create_key(p, session)
    await p.stub.GetAccount(GET_ACCOUNT, metadata=_api_key_metadata(key.secret))
    await _failure(p.login("alice@example.com", wrong_password))
    await _failure(p.stub.GetAccount(GET_ACCOUNT, metadata=(("authorization", garbage),)))

    logged = captured_logs.text()
    assert "login" in logged  # the flow did log
    secrets = {
        "password": password,
        "wrong password": wrong_password,
        "garbage token": garbage.split()[1],
        "access token": login.access_token,
        "refreshed access token": refreshed.access_token,
        "refresh token": login.refresh_token,
        "rotated refresh token": refreshed.refresh_token,
        "TOTP secret": enrollment.secret,
        "API key secret": key.secret,
        **{f"recovery code {n}": c for n, c in enumerate(confirmed.recovery_codes)},
    }
    leaked = [name for name, secret in secrets.items() if secret in logged]
    assert leaked == []


# -- unverified accounts and API keys -------------------------------------------------------------------------------


async def test_unverified_accounts_read_until_verified(platform: AccountPlatform) -> None:
    p = platform
    account = await p.register("alice@example.com")
    login = await p.login("alice@example.com")
    assert list(login.scopes) == ["read"]
    session = bearer(login.access_token)
    assert await refusal(_create_key(p, session)) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_NOT_VERIFIED")
    update = account_pb2.UpdateProfileRequest(
        profile=account_pb2.Profile(timezone="Europe/Paris"), update_mask=FieldMask(paths=["timezone"])
    )
    # Not "the credential lacks scope trade": the account cannot have it yet, and the refusal says how to get it.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await p.stub.UpdateProfile(update, metadata=session)
    assert (caught.value.code(), reason_of(caught.value)) == (PERMISSION_DENIED, "EMAIL_NOT_VERIFIED")
    assert "ResendVerificationEmail" in (caught.value.details() or "")

    await p.verify(account.account_id)
    refreshed = await p.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token))
    assert "trade" in refreshed.scopes
    updated = await p.stub.UpdateProfile(update, metadata=bearer(refreshed.access_token))
    assert updated.profile.timezone == "Europe/Paris"


async def test_session_only_methods_refuse_api_keys(platform: AccountPlatform) -> None:
    p = platform
    _, token = await p.signed_up("alice@example.com")
    key = await _create_key(p, bearer(token), scopes=("read", "trade"))
    with_key = _api_key_metadata(key.secret)
    calls = [
        p.stub.ChangePassword(
            account_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="an entirely new passphrase"),
            metadata=with_key,
        ),
        _create_key(p, with_key, "child"),
        p.stub.ListSessions(account_pb2.ListSessionsRequest(), metadata=with_key),
    ]
    for call in calls:
        assert await refusal(call) == (PERMISSION_DENIED, "SESSION_REQUIRED")
    who = await p.stub.GetAccount(GET_ACCOUNT, metadata=with_key)
    assert (who.api_key_id, who.session_id) == (key.api_key.api_key_id, "")
    # The password did not change.
    await p.login("alice@example.com")
