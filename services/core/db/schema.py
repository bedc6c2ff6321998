"""Tables the persistence runtime itself owns; each domain's store adds its own tables to these metadatas."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table

# Stable constraint names, so that migrations can refer to them on every engine.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The global database: accounts, the shard directory, API keys, instruments, bars.
global_metadata = MetaData(naming_convention=NAMING_CONVENTION)
# Every shard database: per-account data.
shard_metadata = MetaData(naming_convention=NAMING_CONVENTION)

shards = Table(
    "shards",
    global_metadata,
    Column("shard_id", Integer, primary_key=True, autoincrement=False),
    # Where the shard was when it was registered (password removed), to catch a reordered shard list.
    Column("location", String(512), nullable=False),
    Column("accepting_accounts", Integer, nullable=False, server_default="1"),
    Column("create_time", DateTime(timezone=False), nullable=False),
    comment="Shard databases known to the platform, in shard order.",
)

shard_directory = Table(
    "shard_directory",
    global_metadata,
    Column("account_id", BigInteger, primary_key=True, autoincrement=False),
    Column("shard_id", Integer, nullable=False, index=True),
    Column("assign_time", DateTime(timezone=False), nullable=False),
    comment="The shard of each account, chosen once at account creation and never moved.",
)

shard_identity = Table(
    "shard_identity",
    shard_metadata,
    Column("shard_id", Integer, primary_key=True, autoincrement=False),
    Column("create_time", DateTime(timezone=False), nullable=False),
    comment="Which shard this database is; checked at start-up against the configured order.",
)
