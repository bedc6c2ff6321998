"""Real MariaDB and Redis for integration tests, from BULLANT_TEST_MYSQL_URL / BULLANT_TEST_REDIS_URL.

Without a URL the tests skip, unless BULLANT_TEST_REQUIRE_BACKENDS=1 (CI sets it): then a missing URL or an
unreachable server fails the run instead of passing it quietly.
"""

from __future__ import annotations

import os

import pytest


def _require() -> bool:
    return os.environ.get("BULLANT_TEST_REQUIRE_BACKENDS", "") not in ("", "0", "false")


def backend_url(variable: str) -> str:
    """The URL in `variable`, or skip (locally) / fail (in CI) when it is not set."""
    url = os.environ.get(variable, "").strip()
    if url:
        return url
    if _require():
        pytest.fail(f"{variable} is not set but BULLANT_TEST_REQUIRE_BACKENDS=1")
    pytest.skip(f"{variable} is not set")


@pytest.fixture
def mysql_url() -> str:
    """SQLAlchemy URL of the MariaDB/MySQL server under test (mysql+asyncmy://...)."""
    return backend_url("BULLANT_TEST_MYSQL_URL")


@pytest.fixture
def redis_url() -> str:
    """URL of the Redis server under test (redis://...)."""
    return backend_url("BULLANT_TEST_REDIS_URL")
