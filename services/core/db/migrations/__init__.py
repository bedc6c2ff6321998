"""Alembic migrations of the global database and of the shard databases (applied by `bullant migrate`)."""
