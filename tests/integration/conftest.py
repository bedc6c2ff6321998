"""Integration tests run against real MariaDB and Redis (fixtures `mysql_url` and `redis_url` in tests/conftest.py)."""
