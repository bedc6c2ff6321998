"""The global database and the account shards as one component: engines, migrations at start-up, the shard
directory, and units of work: global, routed by an account's ref, or over every shard (admin and batch work)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.core.accounts import AccountRef
from services.core.clock import utc_now
from services.core.db import schema
from services.core.db.engines import EngineOptions, create_engine, create_mysql_database, redacted
from services.core.db.migrate import SchemaKind, Upgrade, current_revision, head_revision, upgrade_to_head
from services.core.db.retry import is_transient, retry_transient
from services.core.errors import NotFound, Unauthenticated
from services.core.settings import Settings
from services.core.startup import StartupError, wait_until_reachable

T = TypeVar("T")
log = logging.getLogger("bullant.db")
GLOBAL = "global"
_DIRECTORY_CACHE_LIMIT = 100_000
_MYSQL_UNKNOWN_DATABASE = 1049


class DatabaseBehind(StartupError):
    """A database's schema is older than this code expects."""


class ShardMisconfigured(StartupError):
    """The configured shard list disagrees with what the databases record."""


class ShardUnknown(Unauthenticated):
    """An account ref names a shard this deployment does not have. Refs made from the shard directory or from rows
    found on a shard cannot (start-up refuses a shard list shorter than the directory's), so such a ref comes from a
    credential this deployment did not issue as it stands: it is refused like an invalid token, and signing in again
    gives a good one."""

    def __init__(self, ref: AccountRef, shard_count: int) -> None:
        super().__init__("the credential names a shard that does not exist: sign in again", reason="TOKEN_INVALID")
        self.ref = ref
        self.shard_count = shard_count


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """Where the databases are and how to treat them."""

    global_url: str
    shard_urls: tuple[str, ...]
    engine: EngineOptions = field(default_factory=EngineOptions)
    auto_migrate: bool = False
    retry_attempts: int = 4
    # How long start() waits for database servers that do not answer yet (0: not at all).
    startup_wait_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseConfig:
        """The configuration a process's settings describe: its database section, over its data directory (the
        embedded databases) and environment, waiting for servers as long as its start-up may."""
        database = settings.database
        return cls(
            global_url=database.global_database_url(settings.data_dir),
            shard_urls=tuple(database.shard_database_urls(settings.data_dir)),
            engine=EngineOptions(
                pool_size=database.db_pool_size,
                max_overflow=database.db_max_overflow,
                pool_recycle_seconds=database.db_pool_recycle_seconds,
                connect_timeout_seconds=database.db_connect_timeout_seconds,
            ),
            auto_migrate=database.auto_migrate(settings.env),
            retry_attempts=database.db_retry_attempts,
            startup_wait_seconds=settings.server.startup_wait_seconds,
        )

    def locations(self) -> list[tuple[str, str, SchemaKind]]:
        """(name, url, schema) of every database: `global`, then `shard_0`, `shard_1`, ..."""
        return [(GLOBAL, self.global_url, SchemaKind.GLOBAL)] + [
            (f"shard_{index}", url, SchemaKind.SHARD) for index, url in enumerate(self.shard_urls)
        ]


class Databases:
    """Engines for the global database and every shard. Nothing opens until start().

    Units of work take the whole transaction as a function and re-run it after a transient error (deadlock, lost
    connection): `run_global(work)` on the global database, and `run_for(ref, work)` on the shard of an account's
    `AccountRef` – the one way a request's work reaches an account's data. Refs come from the caller's `Identity.ref`
    or, where no identity of the account exists yet, from the shard directory (`directory_ref`). Admin and batch work
    that is about shards rather than one account iterates them explicitly with `each_shard`;
    `global_transaction()` and `shard_transaction(shard_id)` are the bare transactions under these (start-up,
    operators' tools, tests), never a way to route an account's work.
    """

    def __init__(self, config: DatabaseConfig) -> None:
        if not config.shard_urls:
            raise ValueError("at least one shard database is required")
        self.config = config
        self._engines: dict[str, AsyncEngine] = {}
        self._directory: dict[int, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open engines, wait (a bounded time) for servers that do not answer yet, migrate (embedded default) or refuse
        a database behind head, check the shard list."""
        await self.wait_until_reachable()
        try:
            await self._start()
        except DBAPIError as error:
            raise StartupError(f"cannot use the databases: {describe_error(error)}") from None

    async def wait_until_reachable(self) -> None:
        """Return once every database server answers. Until then log one line per attempt; after
        `startup_wait_seconds` raise DependencyUnreachable. A refusal that waiting cannot cure (a wrong password, say)
        raises StartupError at once."""
        self._open_engines()
        await wait_until_reachable(
            "the database",
            self._unreachable,
            wait_seconds=self.config.startup_wait_seconds,
            hint="Check BULLANT_DATABASE_URL and BULLANT_SHARD_URLS, and that the database server is up "
            "(BULLANT_STARTUP_WAIT_SECONDS sets how long to wait).",
        )

    async def _unreachable(self) -> str | None:
        timeout = self.config.engine.connect_timeout_seconds
        urls = {name: url for name, url, _kind in self.config.locations()}

        async def one(name: str) -> str | None:
            try:
                async with asyncio.timeout(timeout):
                    async with self._engine(name).connect() as connection:
                        await connection.execute(text("SELECT 1"))
            except TimeoutError:
                return f"{name} ({redacted(urls[name])}): no answer within {timeout:g}s"
            except DBAPIError as error:
                if _error_code(error) == _MYSQL_UNKNOWN_DATABASE:
                    return None  # the server answers; migrate creates the database, or start-up says to
                if not is_transient(error):
                    raise StartupError(
                        f"cannot use the database {name} ({redacted(urls[name])}): {describe_error(error)}"
                    ) from None
                return f"{name} ({redacted(urls[name])}): {describe_error(error)}"
            except OSError as error:
                return f"{name} ({redacted(urls[name])}): {type(error).__name__}: {error}"
            return None

        names = list(urls)
        problems = [problem for problem in await asyncio.gather(*(one(name) for name in names)) if problem]
        return "; ".join(problems) or None

    async def _start(self) -> None:
        self._open_engines()
        if self.config.auto_migrate:
            for upgrade in await self.migrate(create_databases=True):
                if upgrade.changed:
                    log.info("migrated %s from %s to %s", upgrade.name, upgrade.before or "empty", upgrade.after)
        else:
            await self.check_at_head()
        await self._register_shards()

    async def stop(self) -> None:
        """Close every pooled connection."""
        engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            await engine.dispose()

    def _open_engines(self) -> None:
        if self._engines:
            return
        for name, url, _kind in self.config.locations():
            self._engines[name] = create_engine(url, self.config.engine)

    def _engine(self, name: str) -> AsyncEngine:
        if not self._engines:
            raise RuntimeError("Databases.start() has not run")
        return self._engines[name]

    @property
    def shard_count(self) -> int:
        """How many shard databases are configured."""
        return len(self.config.shard_urls)

    # -- schema ---------------------------------------------------------------------------------------------------

    async def migrate(self, *, create_databases: bool = False) -> list[Upgrade]:
        """Upgrade every database to head; idempotent. `create_databases` first creates missing MySQL databases."""
        if create_databases:
            for _name, url, _kind in self.config.locations():
                await create_mysql_database(url, self.config.engine)
        self._open_engines()
        upgrades = []
        for name, _url, kind in self.config.locations():
            upgrades.append(
                await retry_transient(
                    lambda name=name, kind=kind: upgrade_to_head(self._engine(name), kind, name),  # type: ignore[misc]
                    attempts=self.config.retry_attempts,
                    description=f"migrating {name}",
                )
            )
        return upgrades

    async def behind_head(self) -> list[tuple[str, str | None, str]]:
        """(name, current, head) of every database that is not at head."""
        self._open_engines()
        behind = []
        for name, url, kind in self.config.locations():
            try:
                current = await current_revision(self._engine(name))
            except DBAPIError as error:
                if _error_code(error) != _MYSQL_UNKNOWN_DATABASE:
                    raise
                log.info("database %s does not exist yet", redacted(url))
                current = None
            head = head_revision(kind)
            if current != head:
                behind.append((name, current, head))
        return behind

    async def check_at_head(self) -> None:
        """Raise DatabaseBehind, naming each database and the command to run, unless all are at head."""
        behind = await self.behind_head()
        if behind:
            urls = {name: url for name, url, _ in self.config.locations()}
            lines = [
                f"{name} ({redacted(urls[name])}) is at revision {current or 'none (empty)'}, code expects {head}"
                for name, current, head in behind
            ]
            raise DatabaseBehind(
                "database schema is behind this version of Bullant:\n  "
                + "\n  ".join(lines)
                + "\nrun `bullant migrate` (with the same BULLANT_* settings) and start again"
            )

    async def _register_shards(self) -> None:
        """Record each shard in the global registry and in itself, and refuse a list that lost or reordered shards."""
        async with self.global_transaction() as connection:
            known = dict((await connection.execute(select(schema.shards.c.shard_id, schema.shards.c.location))).all())
        missing = sorted(shard for shard in known if shard >= self.shard_count)
        if missing:
            raise ShardMisconfigured(
                f"the shard directory knows shard(s) {missing} but only {self.shard_count} are configured; accounts "
                "there would be unreachable. Shards can be added at the end of BULLANT_SHARD_URLS, never removed."
            )
        for shard_id, url in enumerate(self.config.shard_urls):
            recorded = await self._shard_identity(shard_id)
            if not recorded:
                # A new, empty shard learns who it is; a replica racing to do the same hits the primary key.
                row = {"shard_id": shard_id, "create_time": utc_now()}
                await _insert_unless_present(self._engine(f"shard_{shard_id}"), schema.shard_identity, row)
                recorded = await self._shard_identity(shard_id)
            if recorded != [shard_id]:
                raise ShardMisconfigured(
                    f"shard database #{shard_id} ({redacted(url)}) identifies itself as shard(s) {recorded}: "
                    "BULLANT_SHARD_URLS is out of order, or two entries name the same database"
                )
            if shard_id not in known:
                row = {"shard_id": shard_id, "location": redacted(url)[:512], "create_time": utc_now()}
                if await _insert_unless_present(self._engine(GLOBAL), schema.shards, row):
                    log.info("registered shard %d at %s", shard_id, redacted(url))

    async def _shard_identity(self, shard_id: int) -> list[int]:
        async with self.shard_transaction(shard_id) as connection:
            return [int(v) for v in (await connection.execute(select(schema.shard_identity.c.shard_id))).scalars()]

    # -- units of work --------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def global_transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection to the global database in a transaction, committed on success."""
        async with self._engine(GLOBAL).begin() as connection:
            yield connection

    @asynccontextmanager
    async def shard_transaction(self, shard_id: int) -> AsyncIterator[AsyncConnection]:
        """A connection to one shard, by number, in a transaction committed on success (start-up, operators' tools and
        tests; an account's work goes through `run_for`)."""
        if not 0 <= shard_id < self.shard_count:
            raise ValueError(f"no shard {shard_id}; there are {self.shard_count}")
        async with self._engine(f"shard_{shard_id}").begin() as connection:
            yield connection

    async def run_global(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a global transaction, re-running it after a transient error."""

        async def attempt() -> T:
            async with self.global_transaction() as connection:
                return await work(connection)

        return await retry_transient(attempt, attempts=self.config.retry_attempts, description="global transaction")

    async def run_for(self, ref: AccountRef, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a transaction on the shard of `ref`'s account, re-running it after a transient error. A ref
        naming a shard that does not exist is refused (ShardUnknown, UNAUTHENTICATED TOKEN_INVALID) before any
        connection is taken."""
        if not 0 <= ref.shard < self.shard_count:
            log.warning(
                "refused a ref to shard %d of account %d: there are %d shards",
                ref.shard,
                ref.account_id,
                self.shard_count,
                extra={"account_id": ref.account_id},
            )
            raise ShardUnknown(ref, self.shard_count)
        return await self._run_on_shard(ref.shard, work)

    async def each_shard(self, work: Callable[[int, AsyncConnection], Awaitable[T]]) -> list[T]:
        """Run `work(shard_id, connection)` on every shard concurrently, each in a transaction re-run after a
        transient error; results in shard order. For admin and batch work that is about shards, not one account
        (orphaned jobs, undelivered firings, every enabled rule); a row it finds is routed on by the ref made from
        its account id and the shard it was found in."""
        return list(
            await asyncio.gather(
                *(self._run_on_shard(shard, lambda c, s=shard: work(s, c)) for shard in range(self.shard_count))  # type: ignore[misc]
            )
        )

    async def _run_on_shard(self, shard_id: int, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def attempt() -> T:
            async with self.shard_transaction(shard_id) as connection:
                return await work(connection)

        return await retry_transient(
            attempt, attempts=self.config.retry_attempts, description=f"transaction on shard {shard_id}"
        )

    # -- shard directory ------------------------------------------------------------------------------------------
    # The source of truth of where an account lives: written once per account (`assign_shard`, or the account
    # store's sign-up transaction with `choose_shard`), never changed, read where no identity of the account exists
    # yet (`directory_ref`).

    def choose_shard(self, account_id: int) -> int:
        """The shard a new account goes to: account_id % shard_count."""
        return account_id % self.shard_count

    async def assign_shard(self, account_id: int) -> AccountRef:
        """Record the shard of a new account and return its ref (idempotent: an account keeps the shard it was first
        given)."""
        if account_id < 0:
            raise ValueError("account ids are not negative")
        chosen = self.choose_shard(account_id)
        row = {"account_id": account_id, "shard_id": chosen, "assign_time": utc_now()}
        inserted = await retry_transient(
            lambda: _insert_unless_present(self._engine(GLOBAL), schema.shard_directory, row),
            attempts=self.config.retry_attempts,
            description="assigning a shard",
        )
        if not inserted:
            return await self.directory_ref(account_id)
        self._remember(account_id, chosen)
        return AccountRef(account_id, chosen)

    async def directory_ref(self, account_id: int) -> AccountRef:
        """The account's ref as the shard directory records it (remembered: assignments never change); NotFound
        ACCOUNT_NOT_FOUND when it has none. For the flows where no identity of the account exists yet – login,
        refresh, email links, API-key authentication, an admin acting on another account; an authenticated caller's
        own ref is `Identity.ref`."""
        cached = self._directory.get(account_id)
        if cached is not None:
            return AccountRef(account_id, cached)

        async def lookup(connection: AsyncConnection) -> int | None:
            result = await connection.execute(
                select(schema.shard_directory.c.shard_id).where(schema.shard_directory.c.account_id == account_id)
            )
            value = result.scalar_one_or_none()
            return None if value is None else int(value)

        shard = await self.run_global(lookup)
        if shard is None:
            raise NotFound(f"account {account_id} has no shard", reason="ACCOUNT_NOT_FOUND")
        self._remember(account_id, shard)
        return AccountRef(account_id, shard)

    async def accounts_per_shard(self) -> dict[int, int]:
        """How many accounts the directory has on each shard."""

        async def count(connection: AsyncConnection) -> dict[int, int]:
            column = schema.shard_directory.c.shard_id
            rows = await connection.execute(select(column, func.count()).group_by(column))
            return {int(shard): int(total) for shard, total in rows.all()}

        return await self.run_global(count)

    def _remember(self, account_id: int, shard: int) -> None:
        # Assignments never change, so the cache is never stale; it is only bounded.
        if len(self._directory) >= _DIRECTORY_CACHE_LIMIT:
            self._directory.clear()
        self._directory[account_id] = shard

    # -- health ---------------------------------------------------------------------------------------------------

    async def ping(self, timeout_seconds: float | None = None) -> dict[str, str | None]:
        """Each database's name → None when it answers `SELECT 1`, else why not."""
        timeout = timeout_seconds or self.config.engine.connect_timeout_seconds

        async def one(engine: AsyncEngine) -> str | None:
            try:
                async with asyncio.timeout(timeout):
                    async with engine.connect() as connection:
                        await connection.execute(text("SELECT 1"))
            except TimeoutError:
                return f"no answer within {timeout:.1f}s"
            except Exception as error:
                return f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            return None

        names = list(self._engines)
        results = await asyncio.gather(*(one(self._engines[name]) for name in names))
        return dict(zip(names, results, strict=True))

    async def problem(self, timeout_seconds: float | None = None) -> str | None:
        """None when every database answers, else which ones do not and why (a DependencyMonitor probe)."""
        failing = {name: why for name, why in (await self.ping(timeout_seconds)).items() if why is not None}
        return "; ".join(f"{name}: {why}" for name, why in failing.items()) or None


def _error_code(error: DBAPIError) -> int | None:
    args = getattr(error.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def describe_error(error: DBAPIError) -> str:
    """The driver's own message of a database error, on one line, without the SQL statement."""
    original = error.orig if error.orig is not None else error
    return f"{type(original).__name__}: {str(original).splitlines()[0][:300]}"


async def _insert_unless_present(engine: AsyncEngine, table: Table, row: dict[str, object]) -> bool:
    """Insert `row` in a transaction of its own; False when its key exists already (e.g. another replica got there
    first). Its own transaction, because a failed INSERT must not poison a caller's transaction."""
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(table).values(**row))
    except IntegrityError:
        return False
    return True
