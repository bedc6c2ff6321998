"""Schema versions: upgrade a database to head, and tell whether one is behind (Alembic, driven from code)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaKind(StrEnum):
    """Which schema a database carries."""

    GLOBAL = "global"
    SHARD = "shard"


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What an upgrade did to one database."""

    name: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        """Whether any migration ran."""
        return self.before != self.after


def alembic_config(kind: SchemaKind) -> Config:
    """An Alembic config for `kind`'s scripts (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS / kind.value))
    return config


def head_revision(kind: SchemaKind) -> str:
    """The newest revision of `kind`'s scripts."""
    head = ScriptDirectory.from_config(alembic_config(kind)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations for the {kind.value} schema")
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision a database is at; None for an empty database."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def upgrade_to_head(engine: AsyncEngine, kind: SchemaKind, name: str) -> Upgrade:
    """Apply every pending migration of `kind` to the database; a database at head is left as it is."""
    config = alembic_config(kind)

    def run(connection: Connection) -> tuple[str | None, str | None]:
        before = _current(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return before, _current(connection)

    async with engine.begin() as connection:
        before, after = await connection.run_sync(run)
    if after is None:
        raise RuntimeError(f"{name}: upgrade left no revision")
    return Upgrade(name, before, after)
