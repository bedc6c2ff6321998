"""The database layer on both engines (SQLite files, real MariaDB): migrations, shard routing and the directory,
transient-error retries, and health that follows the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Column, Connection, Integer, MetaData, Table, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from services.bootstrap import build_server
from services.core.accounts import AccountRef
from services.core.clock import utc_now
from services.core.db import schema
from services.core.db.databases import DatabaseBehind, Databases, ShardMisconfigured
from services.core.db.engines import create_engine
from services.core.db.migrate import SchemaKind, head_revision
from services.core.errors import NotFound
from tests.db_support import DatabaseSet, new_prefix
from tests.proxy import TcpProxy
from tests.support import eventually, fresh_data_dir, make_settings

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "mysql"])
async def dbset(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseSet]:
    """Fresh, empty databases on the engine under test; MySQL ones are dropped afterwards."""
    if request.param == "sqlite":
        yield DatabaseSet("sqlite", str(fresh_data_dir()), new_prefix())
        return
    databases = DatabaseSet("mysql", request.getfixturevalue("mysql_url"), new_prefix())
    try:
        yield databases
    finally:
        await databases.drop()
        assert await databases.leftovers() == []


async def _started(config_databases: Databases) -> Databases:
    await config_databases.start()
    return config_databases


async def _which_shard(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(schema.shard_identity.c.shard_id))).scalar_one())


async def test_migrations_from_empty_to_head_twice(dbset: DatabaseSet) -> None:
    databases = Databases(dbset.config(shards=2, auto_migrate=False))
    try:
        first = await databases.migrate(create_databases=True)
        assert [(u.name, u.before, u.after) for u in first] == [
            ("global", None, head_revision(SchemaKind.GLOBAL)),
            ("shard_0", None, head_revision(SchemaKind.SHARD)),
            ("shard_1", None, head_revision(SchemaKind.SHARD)),
        ]
        second = await databases.migrate(create_databases=True)
        assert not any(u.changed for u in second)
        assert await databases.behind_head() == []
        await databases.check_at_head()
    finally:
        await databases.stop()


async def test_a_database_behind_head_is_refused_with_the_command_to_run(dbset: DatabaseSet) -> None:
    await dbset.create(shards=1)
    databases = Databases(dbset.config(shards=1, auto_migrate=False))
    try:
        with pytest.raises(DatabaseBehind) as caught:
            await databases.start()
        message = str(caught.value)
        assert "global" in message
        assert "shard_0" in message
        assert "none (empty)" in message
        assert "run `bullant migrate`" in message
    finally:
        await databases.stop()


async def test_accounts_spread_over_shards_and_units_of_work_route_by_account(dbset: DatabaseSet) -> None:
    databases = await _started(Databases(dbset.config(shards=2)))
    try:
        for account_id in range(1, 41):
            assert await databases.assign_shard(account_id) == AccountRef(account_id, account_id % 2)
        assert await databases.accounts_per_shard() == {0: 20, 1: 20}
        for account_id in (7, 8):
            ref = await databases.directory_ref(account_id)
            assert await databases.run_for(ref, _which_shard) == account_id % 2
        assert await databases.each_shard(lambda shard, c: _which_shard(c)) == [0, 1]
        with pytest.raises(NotFound):
            await databases.directory_ref(999)
        # Assigning again keeps the first answer.
        assert await databases.assign_shard(7) == AccountRef(7, 1)
    finally:
        await databases.stop()


async def test_directory_survives_restart_and_an_added_shard_takes_new_accounts_only(dbset: DatabaseSet) -> None:
    databases = await _started(Databases(dbset.config(shards=2)))
    try:
        before = {account_id: (await databases.assign_shard(account_id)).shard for account_id in range(30)}
    finally:
        await databases.stop()

    await dbset.create(shards=3)
    grown = await _started(Databases(dbset.config(shards=3)))
    try:
        for account_id, shard in before.items():
            assert (await grown.directory_ref(account_id)).shard == shard, "an existing account moved"
        after = {account_id: (await grown.assign_shard(account_id)).shard for account_id in range(30, 60)}
        assert set(after.values()) == {0, 1, 2}
        per_shard = await grown.accounts_per_shard()
        assert per_shard[2] == sum(1 for shard in after.values() if shard == 2)
        assert per_shard[0] + per_shard[1] + per_shard[2] == 60
    finally:
        await grown.stop()


async def test_reordered_or_removed_shards_are_refused(dbset: DatabaseSet) -> None:
    databases = await _started(Databases(dbset.config(shards=2)))
    await databases.assign_shard(1)
    await databases.stop()

    config = dbset.config(shards=2)
    swapped = type(config)(global_url=config.global_url, shard_urls=tuple(reversed(config.shard_urls)))
    reordered = Databases(swapped)
    with pytest.raises(ShardMisconfigured, match="out of order"):
        await reordered.start()
    await reordered.stop()

    shrunk = Databases(dbset.config(shards=1))
    with pytest.raises(ShardMisconfigured, match=r"knows shard\(s\) \[1\]"):
        await shrunk.start()
    await shrunk.stop()


async def test_transaction_rolls_back_on_error(dbset: DatabaseSet) -> None:
    databases = await _started(Databases(dbset.config(shards=1)))
    try:
        with pytest.raises(RuntimeError):
            async with databases.global_transaction() as connection:
                await connection.execute(
                    schema.shard_directory.insert().values(account_id=5, shard_id=0, assign_time=utc_now())
                )
                raise RuntimeError("abort the unit of work")
        with pytest.raises(NotFound):
            await databases.directory_ref(5)
    finally:
        await databases.stop()


async def test_deadlock_is_retried_as_a_whole_transaction(mysql_url: str) -> None:
    dbset = DatabaseSet("mysql", mysql_url, new_prefix())
    databases = await _started(Databases(dbset.config(shards=1, retry_attempts=5)))
    table = Table("test_pair", MetaData(), Column("id", Integer, primary_key=True), Column("value", Integer))
    try:
        async with databases.global_transaction() as connection:
            await connection.execute(text("CREATE TABLE test_pair (id INT PRIMARY KEY, value INT) ENGINE=InnoDB"))
            await connection.execute(table.insert(), [{"id": 1, "value": 0}, {"id": 2, "value": 0}])
        both_hold_one_lock = asyncio.Barrier(2)
        attempts = {"a": 0, "b": 0}

        def transfer(name: str, first: int, second: int) -> object:
            async def work(connection: AsyncConnection) -> None:
                attempts[name] += 1
                await connection.execute(update(table).where(table.c.id == first).values(value=table.c.value + 1))
                if attempts[name] == 1:
                    # Only the first attempts meet, each holding the row the other needs next: a real deadlock.
                    await asyncio.wait_for(both_hold_one_lock.wait(), 10)
                await connection.execute(update(table).where(table.c.id == second).values(value=table.c.value + 1))

            return work

        await asyncio.gather(
            databases.run_global(transfer("a", 1, 2)),  # type: ignore[arg-type]
            databases.run_global(transfer("b", 2, 1)),  # type: ignore[arg-type]
        )
        assert sorted(attempts.values()) == [1, 2], "exactly one side was chosen as the deadlock victim and retried"
        async with databases.global_transaction() as connection:
            values = dict((await connection.execute(select(table.c.id, table.c.value))).all())
        assert values == {1: 2, 2: 2}, "each transfer applied exactly once"
    finally:
        await databases.stop()
        await dbset.drop()


async def test_a_non_transient_error_is_not_retried(dbset: DatabaseSet) -> None:
    databases = await _started(Databases(dbset.config(shards=1)))
    calls = 0

    async def broken(connection: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await connection.execute(text("SELECT * FROM no_such_table"))

    try:
        with pytest.raises(Exception, match="no_such_table"):
            await databases.run_global(broken)
        assert calls == 1
    finally:
        await databases.stop()


async def test_health_follows_the_database_and_recovers(mysql_url: str) -> None:
    url = make_url(mysql_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 3306)
    await proxy.start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    dbset = DatabaseSet("mysql", through_proxy, new_prefix())
    await dbset.create(shards=1)
    settings = make_settings(
        database_url=dbset.url("global"),
        shard_urls=[dbset.url("shard_0")],
        db_auto_migrate=True,
        db_health_interval_seconds=0.2,
        db_connect_timeout_seconds=1,
    )
    server = build_server(settings, ["market"])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status() -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service="bullant.market.v1.MarketService"))
                return int(reply.status)

            assert await status() == health_pb2.HealthCheckResponse.SERVING
            await proxy.cut()
            await eventually(lambda: _is(status, health_pb2.HealthCheckResponse.NOT_SERVING), timeout=15)
            await proxy.restore()
            await eventually(lambda: _is(status, health_pb2.HealthCheckResponse.SERVING), timeout=15)
    finally:
        await server.stop(grace=0.5)
        await proxy.stop()
        await DatabaseSet("mysql", mysql_url, dbset.prefix).drop()


async def _is(status: object, expected: int) -> bool:
    return await status() == expected  # type: ignore[operator,no-any-return]


async def test_sqlite_is_in_wal_mode_with_foreign_keys() -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{fresh_data_dir() / 'x.db'}")
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_mysql_connections_use_utf8mb4(mysql_url: str) -> None:
    engine = create_engine(mysql_url)
    try:
        async with engine.connect() as connection:
            charset = (await connection.execute(text("SELECT @@character_set_connection"))).scalar_one()
            assert charset == "utf8mb4"
            emoji = (await connection.execute(text("SELECT :v"), {"v": "bull 🐂"})).scalar_one()
            assert emoji == "bull 🐂"
    finally:
        await engine.dispose()


async def test_migrations_match_the_tables_in_code(dbset: DatabaseSet) -> None:
    """A table or column added in code without a migration (scripts/new_migration.py) fails here, on both engines."""
    databases = await _started(Databases(dbset.config(shards=1)))
    try:
        for name, metadata in (("global", schema.global_metadata), ("shard_0", schema.shard_metadata)):

            def differences(sync: Connection, metadata: MetaData = metadata) -> list[object]:
                return list(compare_metadata(MigrationContext.configure(sync), metadata))

            async with databases._engine(name).connect() as connection:
                found = await connection.run_sync(differences)
            assert found == [], f"{name}: {found}"
    finally:
        await databases.stop()
