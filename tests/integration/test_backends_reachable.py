"""The real backends CI promises are there and speak their protocols: MariaDB through asyncmy, Redis through
redis.asyncio. Every later integration suite stands on these connections."""

from __future__ import annotations

import uuid

import asyncmy
import pytest
import redis.asyncio as redis
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.integration


async def test_mariadb_answers_through_asyncmy(mysql_url: str) -> None:
    url = make_url(mysql_url)
    assert url.drivername == "mysql+asyncmy", "the production driver is asyncmy"
    connection = await asyncmy.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        connect_timeout=10,
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT VERSION(), @@character_set_server")
            version, _charset = await cursor.fetchone()
    finally:
        connection.close()
    major = int(str(version).split(".", 1)[0])
    assert major >= 10, version


async def test_redis_answers_and_keeps_nothing_behind(redis_url: str) -> None:
    client = redis.from_url(redis_url, socket_connect_timeout=5)
    key = f"bullant:test:{uuid.uuid4().hex}"
    try:
        assert await client.ping()
        await client.set(key, "v", ex=30)
        assert await client.get(key) == b"v"
    finally:
        await client.delete(key)
        await client.aclose()
    client = redis.from_url(redis_url)
    try:
        assert await client.exists(key) == 0
    finally:
        await client.aclose()
