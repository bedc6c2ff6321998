"""Test-wide fixtures."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from services.core.logging import JsonFormatter
from tests import support


@pytest.fixture(scope="session", autouse=True)
def _data_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Embedded databases made by tests live under pytest's temporary directory, never under ./var."""
    support.DATA_ROOT = tmp_path_factory.mktemp("bullant")


class RecordingHandler(logging.Handler):
    """Keeps formatted JSON log lines and the records themselves."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def captured_logs() -> Iterator[RecordingHandler]:
    """Every log record of the test, formatted as the JSON lines production writes."""
    handler = RecordingHandler()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


# Real MariaDB and Redis, from BULLANT_TEST_MYSQL_URL / BULLANT_TEST_REDIS_URL. Without a URL the tests that need
# one skip, unless BULLANT_TEST_REQUIRE_BACKENDS=1 (CI sets it): then a missing URL fails the run instead.


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
