"""Database fixtures' helpers: fresh SQLite files or fresh MariaDB databases per test, dropped afterwards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from services.core.db.databases import DatabaseConfig
from services.core.db.engines import create_engine, server_url


@dataclass
class DatabaseSet:
    """URLs of one global database and its shards, made for one test; `urls(n)` can grow the shard list."""

    kind: str
    base: str
    prefix: str
    created: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{Path(self.base) / f'{self.prefix}_{name}.db'}"
        return make_url(self.base).set(database=f"{self.prefix}_{name}").render_as_string(hide_password=False)

    def config(self, shards: int = 2, *, auto_migrate: bool = True, **extra: object) -> DatabaseConfig:
        return DatabaseConfig(
            global_url=self.url("global"),
            shard_urls=tuple(self.url(f"shard_{i}") for i in range(shards)),
            auto_migrate=auto_migrate,
            **extra,  # type: ignore[arg-type]
        )

    async def create(self, shards: int) -> None:
        """Create the MySQL databases (SQLite files appear by themselves)."""
        if self.kind != "mysql":
            return
        engine = create_engine(server_url(self.base))
        try:
            async with engine.begin() as connection:
                for name in ["global", *(f"shard_{i}" for i in range(shards))]:
                    database = f"{self.prefix}_{name}"
                    await connection.execute(text(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"))
                    self.created.append(database)
        finally:
            await engine.dispose()

    async def drop(self) -> None:
        """Drop every MySQL database this set made, whoever created it (test or `bullant migrate`)."""
        if self.kind != "mysql":
            return
        engine = create_engine(server_url(self.base))
        try:
            async with engine.begin() as connection:
                rows = await connection.execute(text("SHOW DATABASES LIKE :pattern"), {"pattern": f"{self.prefix}\\_%"})
                for (database,) in rows.all():
                    await connection.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
        finally:
            await engine.dispose()

    async def leftovers(self) -> list[str]:
        if self.kind != "mysql":
            return []
        engine = create_engine(server_url(self.base))
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SHOW DATABASES LIKE :pattern"), {"pattern": f"{self.prefix}\\_%"})
                return [str(row[0]) for row in rows.all()]
        finally:
            await engine.dispose()


def new_prefix() -> str:
    """A name prefix no other test run uses."""
    return f"bt_{uuid.uuid4().hex[:10]}"
