"""Alembic environment of the global database."""

from services.core.db.migrations.environment import run
from services.core.db.schema import global_metadata

run(global_metadata)
