"""Alembic environment of the shard databases (every shard has the same schema)."""

from services.core.db.migrations.environment import run
from services.core.db.schema import shard_metadata

run(shard_metadata)
