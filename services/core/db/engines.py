"""Async SQLAlchemy engines: SQLite via aiosqlite (embedded default), MySQL/MariaDB via asyncmy (production)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import PrimaryKeyConstraint, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.sql.compiler import DDLCompiler

SQLITE = "sqlite"
# Connections kept per SQLite file, and extra ones opened under load.
_SQLITE_POOL_SIZE, _SQLITE_POOL_OVERFLOW = 4, 16
MYSQL = "mysql"
_MYSQL_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
log = logging.getLogger("bullant.db")
# The drivers log each statement with its parameters at DEBUG, and parameters carry secrets (a TOTP secret, a
# password hash): their loggers never go below INFO, whatever BULLANT_LOG_LEVEL says.
_DRIVER_LOGGERS = ("aiosqlite", "asyncmy")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """Connection pool and timeout choices shared by every engine of a process."""

    pool_size: int = 10
    max_overflow: int = 20
    pool_recycle_seconds: int = 1800
    connect_timeout_seconds: float = 5.0


@compiles(PrimaryKeyConstraint, "mysql")
def _primary_key_without_name(constraint: PrimaryKeyConstraint, compiler: DDLCompiler, **kw: Any) -> str:
    """MySQL and MariaDB call every primary key PRIMARY and warn "Name 'pk_x' ignored for PRIMARY key" about any other
    name (ours follow the naming convention, Alembic's version table has one too): leave the name out of their DDL.
    Nothing changes in a database, which never stored the name."""
    if len(constraint) == 0:
        return ""
    return compiler.define_primary_key_body(constraint, **kw) + compiler.define_constraint_deferrability(constraint)


def dialect_of(url: str | URL) -> str:
    """`sqlite` or `mysql`."""
    return make_url(url).get_dialect().name


def redacted(url: str | URL) -> str:
    """The URL without its password, fit for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(url: str | URL, options: EngineOptions | None = None) -> AsyncEngine:
    """An engine for `url`. Opens no connection yet; SQLite's parent directory is created."""
    options = options or EngineOptions()
    for name in _DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    parsed = make_url(url)
    if parsed.get_dialect().name == SQLITE:
        return _sqlite_engine(parsed, options)
    if parsed.get_dialect().name == MYSQL:
        return _mysql_engine(parsed, options)
    raise ValueError(f"unsupported database {redacted(parsed)}")


def _sqlite_engine(url: URL, options: EngineOptions) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # Pooled: opening an aiosqlite connection (a thread plus the PRAGMAs below) costs about 2 ms, which a per-call
    # transaction would pay every time. dispose() closes the pooled connections, so no file handle outlives stop().
    engine = create_async_engine(
        url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=_SQLITE_POOL_SIZE,
        max_overflow=_SQLITE_POOL_OVERFLOW,
        connect_args={"timeout": options.connect_timeout_seconds},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(options.connect_timeout_seconds * 1000)}")
        cursor.close()

    return engine


def _mysql_engine(url: URL, options: EngineOptions) -> AsyncEngine:
    query = dict(url.query)
    query.setdefault("charset", "utf8mb4")
    return create_async_engine(
        url.set(query=query),
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        # A pooled connection the server closed (restart, wait_timeout) is detected before use, not mid-request.
        pool_pre_ping=True,
        pool_recycle=options.pool_recycle_seconds,
        pool_timeout=options.connect_timeout_seconds,
        connect_args={"connect_timeout": options.connect_timeout_seconds},
    )


def server_url(url: str | URL) -> URL:
    """The same MySQL server without a database, for creating or dropping databases."""
    # URL.set() treats None as "leave unchanged", so the database is dropped with _replace.
    return make_url(url)._replace(database=None)


async def create_mysql_database(url: str, options: EngineOptions) -> None:
    """Create the MySQL database `url` names unless it exists (utf8mb4); nothing for SQLite."""
    if dialect_of(url) != MYSQL:
        return
    name = make_url(url).database
    if not name or not _MYSQL_DATABASE_NAME.match(name):
        raise ValueError(f"cannot create MySQL database {name!r}: use letters, digits, '_', '$' or '-'")
    engine = create_engine(server_url(url), options)
    try:
        async with engine.begin() as connection:
            # Looked up first: CREATE DATABASE IF NOT EXISTS on an existing one makes the server log a warning.
            exists = await connection.execute(
                text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"), {"name": name}
            )
            if exists.first() is None:
                # IF NOT EXISTS still: another replica may be creating it at this moment.
                await connection.execute(
                    text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                )
                log.info("created database %s", redacted(url))
    finally:
        await engine.dispose()
