"""The account service on its production parts: the store on MariaDB, sessions, revocations, API-key lookups and
throttles in Redis, and two replicas sharing both (what one revokes, the other refuses at once)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as redis
from sqlalchemy import select

from bullant.account.v1 import account_pb2
from services.core.db.schema import api_keys
from services.core.settings import Settings
from tests.account_platform import account_settings, bearer, refusal, running_account_service
from tests.db_support import DatabaseSet, new_prefix

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(mysql_url: str, redis_url: str) -> AsyncIterator[Settings]:
    databases = DatabaseSet("mysql", mysql_url, new_prefix())
    await databases.create(2)
    try:
        yield account_settings(
            database_url=databases.url("global"),
            shard_urls=[databases.url("shard_0"), databases.url("shard_1")],
            db_auto_migrate=True,
            redis_url=redis_url,
            # Keys of this test only: {app}:{env}:{service}:...
            app_name=f"t{uuid.uuid4().hex[:12]}",
            login_lockout_failures=3,
        )
    finally:
        await databases.drop()


async def test_lifecycle_on_mariadb_and_redis(settings: Settings) -> None:
    async with running_account_service(settings) as platform:
        account = await platform.register("Mia@Example.com", display_name="Mia")
        await platform.verify(account.account_id)
        login = await platform.login("mia@example.com")
        rotated = await platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token))
        reused = platform.stub.Refresh(account_pb2.RefreshRequest(refresh_token=login.refresh_token))
        assert await refusal(reused) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
        refused = platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(rotated.access_token))
        assert await refusal(refused) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")

        token = (await platform.login("mia@example.com")).access_token
        profile = await platform.stub.GetProfile(account_pb2.GetProfileRequest(), metadata=bearer(token))
        assert profile.profile.display_name == "Mia"
        created = await platform.stub.CreateApiKey(
            account_pb2.CreateApiKeyRequest(api_key=account_pb2.ApiKey(name="bot", scopes=["read"]), request_id="r1"),
            metadata=bearer(token),
        )
        me = await platform.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=(("x-api-key", created.secret),))
        assert me.api_key_id == created.api_key.api_key_id
        async with platform.deps.databases.global_transaction() as connection:
            stored = (
                await connection.execute(
                    select(api_keys.c.secret_hash, api_keys.c.last_use_time).where(
                        api_keys.c.api_key_id == created.api_key.api_key_id
                    )
                )
            ).one()
        assert created.secret not in stored.secret_hash
        assert stored.last_use_time is not None

        # Revocations and cached lookups are in Redis, under this platform's key space.
        client = redis.Redis.from_url(settings.coordination.redis_url)
        try:
            keys = [
                key.decode() if isinstance(key, bytes) else key for key in await client.keys(f"{settings.app_name}:*")
            ]
        finally:
            await client.aclose()
        assert any(":account:revoked-session:" in key for key in keys)
        assert any(":account:api-key:" in key for key in keys)


async def test_replicas_share_revocations_lockouts_and_key_revocation(settings: Settings) -> None:
    async with running_account_service(settings) as first, running_account_service(settings) as second:
        account = await first.register("noah@example.com")
        await first.verify(account.account_id)
        login = await second.login("noah@example.com")
        token = login.access_token
        key = await first.stub.CreateApiKey(
            account_pb2.CreateApiKeyRequest(api_key=account_pb2.ApiKey(name="bot", scopes=["read"])),
            metadata=bearer(token),
        )
        # The second replica resolves (and caches) the key, then the first revokes it: refused at once on both.
        await second.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=(("x-api-key", key.secret),))
        await first.stub.RevokeApiKey(
            account_pb2.RevokeApiKeyRequest(api_key_id=key.api_key.api_key_id), metadata=bearer(token)
        )
        stale = second.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=(("x-api-key", key.secret),))
        assert await refusal(stale) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")

        await first.stub.Logout(account_pb2.LogoutRequest(), metadata=bearer(token))
        elsewhere = second.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=bearer(token))
        assert await refusal(elsewhere) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")

        # Failures counted on one replica lock the email on the other.
        for replica in (first, second, first):
            wrong = replica.stub.Login(account_pb2.LoginRequest(email="noah@example.com", password="wrong password!"))
            assert await refusal(wrong) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
        locked = second.stub.Login(
            account_pb2.LoginRequest(email="noah@example.com", password="correct horse battery staple")
        )
        assert await refusal(locked) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_LOCKED")
