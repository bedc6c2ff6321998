"""Admin user management over a real channel: who may list users, paging and filters, disabling (with every
credential of the user revoked) and enabling again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from bullant.account.v1 import account_pb2
from tests.account_platform import PASSWORD, AccountPlatform, bearer, refusal, running_account_service

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def platform() -> AsyncIterator[AccountPlatform]:
    async with running_account_service() as running:
        yield running


async def _admin(p: AccountPlatform, email: str = "root@admin.test") -> tuple[int, Metadata]:
    """An admin account and a session started after it became admin."""
    account, _ = await p.signed_up(email)
    await p.make_admin(account.account_id)
    login = await p.login(email)
    assert "admin" in login.scopes
    return account.account_id, bearer(login.access_token)


async def _users(p: AccountPlatform, admin: Metadata, **filters: Any) -> list[account_pb2.Account]:
    """Every page of ListUsers with `filters`."""
    found: list[account_pb2.Account] = []
    token = ""
    while True:
        request = account_pb2.ListUsersRequest(page_token=token, **filters)
        page = await p.stub.ListUsers(request, metadata=admin)
        assert len(page.users) <= (filters.get("page_size") or 50)
        found.extend(page.users)
        token = page.next_page_token
        if not token:
            return found


def _emails(users: list[account_pb2.Account]) -> list[str]:
    return [user.email for user in users]


# -- ListUsers ------------------------------------------------------------------------------------------------------


async def test_only_admins_list_users(platform: AccountPlatform) -> None:
    p = platform
    user, token = await p.signed_up("user@example.com")
    assert await refusal(p.stub.ListUsers(account_pb2.ListUsersRequest(), metadata=bearer(token))) == (
        PERMISSION_DENIED,
        "SCOPE_MISSING",
    )
    await p.make_admin(user.account_id)
    # The old session's token still carries the old scopes; a fresh login gets "admin".
    assert (await refusal(p.stub.ListUsers(account_pb2.ListUsersRequest(), metadata=bearer(token))))[0] == (
        PERMISSION_DENIED
    )
    fresh = bearer((await p.login("user@example.com")).access_token)
    listed = await p.stub.ListUsers(account_pb2.ListUsersRequest(), metadata=fresh)
    assert _emails(list(listed.users)) == ["user@example.com"]
    assert list(listed.users[0].roles) == [account_pb2.ROLE_USER, account_pb2.ROLE_ADMIN]


async def test_users_page_in_ascending_id_order(platform: AccountPlatform) -> None:
    p = platform
    _, admin = await _admin(p)
    ids = [(await p.register(f"user{n}@paging.test")).account_id for n in range(5)]
    paged = await _users(p, admin, page_size=2, email_query="@paging.")
    assert [user.account_id for user in paged] == sorted(ids)
    everyone = await _users(p, admin, page_size=2)
    assert len(everyone) == 6
    assert [user.account_id for user in everyone] == sorted(user.account_id for user in everyone)

    first = await p.stub.ListUsers(account_pb2.ListUsersRequest(page_size=2), metadata=admin)
    for other in ({"email_query": "user"}, {"role": account_pb2.ROLE_ADMIN}, {"page_size": 2, "email_query": "x"}):
        request = account_pb2.ListUsersRequest(page_token=first.next_page_token, **other)
        assert await refusal(p.stub.ListUsers(request, metadata=admin)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAGE_TOKEN_INVALID",
        )
    tampered = account_pb2.ListUsersRequest(page_size=2, page_token=first.next_page_token + "x")
    assert (await refusal(p.stub.ListUsers(tampered, metadata=admin)))[0] == grpc.StatusCode.INVALID_ARGUMENT


async def test_email_query_is_a_literal_case_insensitive_substring(platform: AccountPlatform) -> None:
    p = platform
    _, admin = await _admin(p)
    for email in ("a%b@example.com", "a_b@example.com", "axb@example.com", "aab@example.com", "Mixed.Case@example.com"):
        await p.register(email)
    assert _emails(await _users(p, admin, email_query="A%B")) == ["a%b@example.com"]
    assert _emails(await _users(p, admin, email_query="a_b")) == ["a_b@example.com"]
    assert _emails(await _users(p, admin, email_query="MIXED.case")) == ["mixed.case@example.com"]
    assert _emails(await _users(p, admin, email_query="%")) == ["a%b@example.com"]
    assert _emails(await _users(p, admin, email_query="nobody")) == []


async def test_role_and_state_filters(platform: AccountPlatform) -> None:
    p = platform
    admin_id, admin = await _admin(p)
    alice = await p.register("alice@example.com")
    await p.register("bob@example.com")
    await p.stub.DisableUser(account_pb2.DisableUserRequest(account_id=alice.account_id), metadata=admin)
    assert [u.account_id for u in await _users(p, admin, role=account_pb2.ROLE_ADMIN)] == [admin_id]
    assert len(await _users(p, admin, role=account_pb2.ROLE_USER)) == 3
    disabled = await _users(p, admin, state=account_pb2.ACCOUNT_STATE_DISABLED)
    assert [u.account_id for u in disabled] == [alice.account_id]
    active = await _users(p, admin, state=account_pb2.ACCOUNT_STATE_ACTIVE)
    assert _emails(active) == ["root@admin.test", "bob@example.com"]


# -- DisableUser and EnableUser -------------------------------------------------------------------------------------


@dataclass
class Victim:
    """A user with two sessions and an API key, as an admin finds them."""

    account_id: int
    logins: list[account_pb2.LoginResponse]
    api_key_secret: str


async def _victim(p: AccountPlatform) -> Victim:
    account = await p.register("victim@example.com")
    await p.verify(account.account_id)
    logins = [await p.login("victim@example.com", device_name=device) for device in ("laptop", "phone")]
    key = await p.stub.CreateApiKey(
        account_pb2.CreateApiKeyRequest(api_key=account_pb2.ApiKey(name="bot", scopes=["read"])),
        metadata=bearer(logins[0].access_token),
    )
    return Victim(account.account_id, logins, key.secret)


async def _credentials_refused(p: AccountPlatform, victim: Victim, *, key_refusal: tuple[Any, str]) -> None:
    get = account_pb2.GetAccountRequest()
    for login in victim.logins:
        # Its sessions were ended by the disabling, and their tokens say so (even once the account is enabled
        # again: those sessions stay ended).
        assert await refusal(p.stub.GetAccount(get, metadata=bearer(login.access_token))) == (
            PERMISSION_DENIED,
            "ACCOUNT_DISABLED",
        )
        refused = await refusal(p.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token)))
        assert refused in {(UNAUTHENTICATED, "SESSION_REVOKED"), (PERMISSION_DENIED, "ACCOUNT_DISABLED")}
    assert await refusal(p.stub.GetAccount(get, metadata=(("x-api-key", victim.api_key_secret),))) == key_refusal


async def test_disabling_revokes_everything_and_blocks_login(platform: AccountPlatform) -> None:
    p = platform
    _, admin = await _admin(p)
    victim = await _victim(p)
    # The API key is in use (and cached) when the admin acts.
    await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=(("x-api-key", victim.api_key_secret),))

    request = account_pb2.DisableUserRequest(account_id=victim.account_id, reason="chargeback fraud")
    disabled = await p.stub.DisableUser(request, metadata=admin)
    assert (disabled.revoked_session_count, disabled.revoked_api_key_count) == (2, 1)
    assert disabled.account.state == account_pb2.ACCOUNT_STATE_DISABLED
    assert disabled.account.disable_reason == "chargeback fraud"
    assert disabled.account.HasField("disable_time")
    await _credentials_refused(p, victim, key_refusal=(PERMISSION_DENIED, "ACCOUNT_DISABLED"))

    assert await refusal(p.login("victim@example.com")) == (PERMISSION_DENIED, "ACCOUNT_DISABLED")
    assert await refusal(p.login("victim@example.com", "not the password at all")) == (
        UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    again = await p.stub.DisableUser(request, metadata=admin)
    assert (again.revoked_session_count, again.revoked_api_key_count) == (0, 0)
    assert again.account.disable_time == disabled.account.disable_time


async def test_enabling_lets_the_user_log_in_again_but_revives_nothing(platform: AccountPlatform) -> None:
    p = platform
    _, admin = await _admin(p)
    victim = await _victim(p)
    await p.stub.DisableUser(account_pb2.DisableUserRequest(account_id=victim.account_id), metadata=admin)

    enabled = await p.stub.EnableUser(account_pb2.EnableUserRequest(account_id=victim.account_id), metadata=admin)
    assert enabled.account.state == account_pb2.ACCOUNT_STATE_ACTIVE
    assert not enabled.account.HasField("disable_time")
    # Its key stays revoked.
    await _credentials_refused(p, victim, key_refusal=(UNAUTHENTICATED, "API_KEY_INVALID"))
    login = await p.login("victim@example.com", PASSWORD)
    who = await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(login.access_token))
    assert who.account.state == account_pb2.ACCOUNT_STATE_ACTIVE
    again = await p.stub.EnableUser(account_pb2.EnableUserRequest(account_id=victim.account_id), metadata=admin)
    assert again.account.state == account_pb2.ACCOUNT_STATE_ACTIVE


async def test_admin_mistakes_are_refused(platform: AccountPlatform) -> None:
    p = platform
    admin_id, admin = await _admin(p)
    user, token = await p.signed_up("user@example.com")
    assert await refusal(p.stub.DisableUser(account_pb2.DisableUserRequest(account_id=admin_id), metadata=admin)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CANNOT_DISABLE_SELF",
    )
    missing = admin_id + user.account_id + 1000
    assert await refusal(p.stub.DisableUser(account_pb2.DisableUserRequest(account_id=missing), metadata=admin)) == (
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )
    assert await refusal(p.stub.EnableUser(account_pb2.EnableUserRequest(account_id=missing), metadata=admin)) == (
        grpc.StatusCode.NOT_FOUND,
        "ACCOUNT_NOT_FOUND",
    )
    # A normal user cannot disable anyone, not even with a valid target.
    assert await refusal(
        p.stub.DisableUser(account_pb2.DisableUserRequest(account_id=admin_id), metadata=bearer(token))
    ) == (PERMISSION_DENIED, "SCOPE_MISSING")
    assert (await p.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=admin)).account.state == (
        account_pb2.ACCOUNT_STATE_ACTIVE
    )
