"""The shard-routing rule over a real channel: login and API keys make the ref the shard directory records, and the
account's shard data is reached by the ref of the caller's credential – the signed shard claim – with no directory
lookup per request; a claim naming a shard that does not exist is refused cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select

from bullant.account.v1 import account_pb2
from services.account.store import profiles
from services.bootstrap import build_authenticator
from services.core.accounts import AccountRef
from services.core.auth.tokens import TokenIssuer, token_policy
from tests.account_platform import AccountPlatform, bearer, refusal, running_account_service

GET_ACCOUNT = "/bullant.account.v1.AccountService/GetAccount"


@pytest.fixture
async def platform() -> AsyncIterator[AccountPlatform]:
    async with running_account_service() as running:
        yield running


def _token(p: AccountPlatform, ref: AccountRef) -> str:
    """An access token the platform signs for `ref` (its shard claim as given)."""
    assert p.deps.signing_keys is not None
    token, _ = TokenIssuer(p.deps.signing_keys, token_policy(p.deps.settings.auth)).issue(
        account_id=ref.account_id, shard=ref.shard, roles=["user"], scopes=["read", "trade"], session_id="0" * 32
    )
    return token


async def _stored_profile_ids(p: AccountPlatform, shard: int) -> list[int]:
    async with p.deps.databases.shard_transaction(shard) as connection:
        return [int(v) for v in (await connection.execute(select(profiles.c.account_id))).scalars()]


async def test_a_session_and_an_api_key_give_the_ref_the_directory_records(platform: AccountPlatform) -> None:
    authenticator = build_authenticator(platform.deps)
    shards: set[int] = set()
    for email in ("first@example.com", "second@example.com"):
        account, token = await platform.signed_up(email)
        recorded = await platform.deps.databases.directory_ref(account.account_id)
        shards.add(recorded.shard)
        by_session = await authenticator.authenticate(GET_ACCOUNT, bearer(token))
        assert by_session is not None
        assert by_session.ref == recorded
        key = await platform.stub.CreateApiKey(
            account_pb2.CreateApiKeyRequest(api_key=account_pb2.ApiKey(name="bot", scopes=["read"])),
            metadata=bearer(token),
        )
        by_key = await authenticator.authenticate(GET_ACCOUNT, (("x-api-key", key.secret),))
        assert by_key is not None
        assert by_key.ref == recorded
        # Sign-up wrote the profile to the same shard.
        assert account.account_id in await _stored_profile_ids(platform, recorded.shard)
    assert shards == {0, 1}


async def test_profile_calls_route_by_the_signed_shard_claim(platform: AccountPlatform) -> None:
    account, _ = await platform.signed_up("claim@example.com")
    recorded = await platform.deps.databases.directory_ref(account.account_id)
    # A token the platform signed naming the other shard: trusted as signed, so the profile is written there.
    elsewhere = AccountRef(account.account_id, 1 - recorded.shard)
    await platform.stub.UpdateProfile(
        account_pb2.UpdateProfileRequest(
            profile=account_pb2.Profile(display_name="Claimed"), update_mask=FieldMask(paths=["display_name"])
        ),
        metadata=bearer(_token(platform, elsewhere)),
    )
    assert account.account_id in await _stored_profile_ids(platform, elsewhere.shard)


async def test_a_claim_naming_a_shard_that_does_not_exist_is_refused_where_a_shard_is_needed(
    platform: AccountPlatform,
) -> None:
    account, _ = await platform.signed_up("nowhere@example.com")
    token = _token(platform, AccountRef(account.account_id, 2))
    assert await refusal(platform.stub.GetProfile(account_pb2.GetProfileRequest(), metadata=bearer(token))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_INVALID",
    )
    # Methods that need no shard answer as before.
    reply = await platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(token))
    assert reply.account.account_id == account.account_id
