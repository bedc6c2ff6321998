"""Persistence runtime: the global database and the account shards, their migrations, retries and health."""
