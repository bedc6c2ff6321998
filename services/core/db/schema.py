"""Tables the platform runtime itself owns (shards, the identity that authentication reads in every service, the
outbox); each domain's store adds its own tables to these metadatas."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import DOUBLE

# Stable constraint names, so that migrations can refer to them on every engine.
# float64 on every engine (MySQL FLOAT is 32-bit): prices and ratios round-trip exactly.
DOUBLE_PRECISION = Float(precision=53).with_variant(DOUBLE(asdecimal=False), "mysql")

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

# SQLite gives auto-increment only to an INTEGER PRIMARY KEY; everywhere else ids are 64-bit.
AUTO_ID = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    global_metadata,
    Column("account_id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    # Comma-separated role names ("user", "user,admin"): read with the account on every login and key lookup.
    Column("roles", String(64), nullable=False, server_default="user"),
    # 1 active, 2 disabled (bullant.account.v1.AccountState).
    Column("state", SmallInteger, nullable=False, server_default="1"),
    Column("totp_enabled", SmallInteger, nullable=False, server_default="0"),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("verify_time", DateTime(timezone=False), nullable=True),
    Column("last_login_time", DateTime(timezone=False), nullable=True),
    Column("disable_time", DateTime(timezone=False), nullable=True),
    Column("disable_reason", String(500), nullable=False, server_default=""),
    # Register's idempotency key: a retried Register finds the account it created.
    Column("register_request_id", String(64), nullable=True, unique=True),
    comment="Identity of every account. Authentication in every service reads it (API keys); the account service "
    "writes it.",
)

api_keys = Table(
    "api_keys",
    global_metadata,
    Column("api_key_id", String(32), primary_key=True),
    Column("account_id", BigInteger, nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    # SHA-256 of the secret: the secret has 192 random bits, so a fast hash is enough and lookups stay O(1).
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("expire_time", DateTime(timezone=False), nullable=False),
    Column("last_use_time", DateTime(timezone=False), nullable=True),
    Column("revoke_time", DateTime(timezone=False), nullable=True),
    Column("revoke_reason", String(32), nullable=False, server_default=""),
    Column("request_id", String(64), nullable=True),
    Column("request_fingerprint", String(64), nullable=True),
    UniqueConstraint("account_id", "request_id"),
    comment="API keys: only a hash of each secret is kept.",
)

outbox_messages = Table(
    "outbox_messages",
    global_metadata,
    Column("message_id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("account_id", BigInteger, nullable=True, index=True),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("template", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("deliver_time", DateTime(timezone=False), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(500), nullable=False, server_default=""),
    # Set when the cause lives in another database (an alert firing in a shard): queueing twice is a no-op.
    Column("dedup_key", String(64), nullable=True, unique=True),
    Index(None, "deliver_time", "message_id"),
    comment="Messages written in the same transaction as the change that caused them, delivered later by the "
    "notification service.",
)
