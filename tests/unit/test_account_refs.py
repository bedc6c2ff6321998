"""One shard-routing rule: an AccountRef made from the authenticated identity (or, where none exists yet, from the
shard directory), and `Databases.run_for(ref, work)` that takes the work to the ref's shard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.account.store import AccountStore, profiles
from services.core.accounts import AccountRef
from services.core.auth.identity import Credential, Identity
from services.core.clock import utc_now
from services.core.db import schema
from services.core.db.databases import Databases, ShardUnknown
from services.core.errors import Unauthenticated
from services.core.grpc_errors import status_code_of
from tests.db_support import DatabaseSet, new_prefix

NOW = datetime(2026, 1, 5, 12, 0)


@pytest.fixture
async def databases(tmp_path: Path) -> AsyncIterator[Databases]:
    found = Databases(DatabaseSet("sqlite", str(tmp_path), new_prefix()).config(2))
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


async def _which_shard(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(schema.shard_identity.c.shard_id))).scalar_one())


def _identity(account_id: int, shard: int, credential: Credential = Credential.SESSION) -> Identity:
    return Identity(account_id=account_id, shard=shard, roles=("user",), scopes=("read",), credential=credential)


def test_an_identity_refs_its_account_in_the_shard_its_credential_names() -> None:
    assert _identity(7, 1).ref == AccountRef(7, 1)
    assert _identity(7, 0, Credential.API_KEY).ref == AccountRef(7, 0)


async def test_run_for_takes_the_work_to_the_refs_shard_without_asking_the_directory(databases: Databases) -> None:
    # Account 5 has no directory row: the ref alone decides, as a signed claim does.
    for shard in (0, 1):
        assert await databases.run_for(AccountRef(5, shard), _which_shard) == shard
    assert await databases.accounts_per_shard() == {}


@pytest.mark.parametrize("shard", [2, 17, -1])
async def test_a_ref_to_a_shard_that_does_not_exist_is_refused_before_any_work(
    databases: Databases, shard: int
) -> None:
    ran: list[int] = []

    async def work(connection: AsyncConnection) -> int:
        ran.append(1)
        return 0

    with pytest.raises(ShardUnknown) as caught:
        await databases.run_for(AccountRef(5, shard), work)
    assert ran == []
    # Refused like a token this deployment cannot honour: the client signs in again, nothing is retried.
    assert isinstance(caught.value, Unauthenticated)
    assert caught.value.reason == "TOKEN_INVALID"
    assert status_code_of(caught.value) is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.ref == AccountRef(5, shard)


async def test_the_directory_ref_of_a_new_account_equals_the_one_its_identity_gives(databases: Databases) -> None:
    store = AccountStore(databases)
    made: list[AccountRef] = []
    for number in range(4):
        account, ref = await store.create_account(
            email=f"user{number}@example.com", password_hash="x", request_id=None, now=NOW
        )
        assert ref == AccountRef(account.account_id, account.account_id % 2)
        made.append(ref)
    assert {ref.shard for ref in made} == {0, 1}
    for ref in made:
        # Sign-up's ref, the directory's answer (remembered or read afresh), and the ref of an identity whose
        # credential carries the directory's shard (what login signs into the token) are one value.
        assert await databases.directory_ref(ref.account_id) == ref
        assert _identity(ref.account_id, (await databases.directory_ref(ref.account_id)).shard).ref == ref
    fresh = Databases(databases.config)
    await fresh.start()
    try:
        assert [await fresh.directory_ref(ref.account_id) for ref in made] == made
    finally:
        await fresh.stop()
    assert await databases.assign_shard(made[0].account_id) == made[0], "an account keeps its first shard"


async def test_an_account_store_method_on_the_shard_routes_by_the_ref_it_is_given(databases: Databases) -> None:
    store = AccountStore(databases)
    account, ref = await store.create_account(email="a@example.com", password_hash="x", request_id=None, now=NOW)
    await store.save_profile_document(ref, '{"display_name":"a"}', utc_now())
    assert await store.profile_document(ref) is not None
    other = AccountRef(ref.account_id, 1 - ref.shard)
    assert await store.profile_document(other) is None, "read from the ref's shard, not the directory's"

    async def stored(connection: AsyncConnection) -> list[int]:
        return [int(v) for v in (await connection.execute(select(profiles.c.account_id))).scalars()]

    assert await databases.each_shard(lambda shard, c: stored(c)) == (
        [[account.account_id], []] if ref.shard == 0 else [[], [account.account_id]]
    )
