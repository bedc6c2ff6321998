"""Test-wide fixtures."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncmy
import pytest
import redis
from sqlalchemy.engine import make_url

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


# Real MariaDB and Redis. A URL in BULLANT_TEST_MYSQL_URL / BULLANT_TEST_REDIS_URL is used as given ("off" skips
# that backend); without one, a server answering on its default local port (MariaDB as root without a password,
# Redis database 0) is found and used. A backend neither given nor found skips its tests, unless
# BULLANT_TEST_REQUIRE_BACKENDS=1 (CI sets it): then the run fails instead. The summary says which were tested.


@dataclass
class Backend:
    name: str
    variable: str
    default_url: str
    url: str = ""
    how: str = ""


BACKENDS = (
    Backend("MariaDB/MySQL", "BULLANT_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"),
    Backend("Redis", "BULLANT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
)


def _answers(backend: Backend) -> bool:
    """Whether the default local server lets the tests in (a login, not just an open port)."""
    try:
        if backend.variable == "BULLANT_TEST_REDIS_URL":
            client = redis.Redis.from_url(backend.default_url, socket_timeout=2, socket_connect_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()

        async def login() -> None:
            url = make_url(backend.default_url)
            connection = await asyncio.wait_for(
                asyncmy.connect(host=url.host, port=url.port, user=url.username, password="", connect_timeout=2), 5
            )
            connection.close()

        asyncio.run(login())
        return True
    except Exception:  # any failure means "not usable here"
        return False


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller decided and exported the URLs
        return
    for backend in BACKENDS:
        given = os.environ.get(backend.variable, "").strip()
        if given.lower() == "off":
            backend.how = f"off ({backend.variable}=off)"
            os.environ[backend.variable] = ""
        elif given:
            backend.url, backend.how = given, f"from {backend.variable}"
        elif _answers(backend):
            backend.url, backend.how = backend.default_url, "found on its default port"
            os.environ[backend.variable] = backend.url
        else:
            backend.how = (
                f"nothing answers at {make_url(backend.default_url).render_as_string()}; set {backend.variable}"
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not BACKENDS[0].how:  # a worker, or configure did not run
        return
    terminalreporter.section("backends")
    terminalreporter.write_line("SQLite and the in-memory cache/pub-sub: tested")
    for backend in BACKENDS:
        if backend.url:
            terminalreporter.write_line(f"{backend.name}: tested at {backend.url} ({backend.how})")
        else:
            terminalreporter.write_line(f"{backend.name}: NOT tested – {backend.how}")


def _require() -> bool:
    return os.environ.get("BULLANT_TEST_REQUIRE_BACKENDS", "") not in ("", "0", "false")


def backend_url(variable: str) -> str:
    """The backend's URL, or skip (locally) / fail (in CI) when it is neither given nor found."""
    url = os.environ.get(variable, "").strip()
    if url:
        return url
    why = next((b.how for b in BACKENDS if b.variable == variable and b.how), f"{variable} is not set")
    if _require():
        pytest.fail(f"no {variable} backend ({why}) but BULLANT_TEST_REQUIRE_BACKENDS=1")
    pytest.skip(why)


@pytest.fixture
def mysql_url() -> str:
    """SQLAlchemy URL of the MariaDB/MySQL server under test (mysql+asyncmy://...)."""
    return backend_url("BULLANT_TEST_MYSQL_URL")


@pytest.fixture
def redis_url() -> str:
    """URL of the Redis server under test (redis://...)."""
    return backend_url("BULLANT_TEST_REDIS_URL")
