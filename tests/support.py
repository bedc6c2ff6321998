"""Helpers shared by the tests: waiting for a condition, and a running server on a loopback port."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services.core.server import GrpcServer, ServiceRegistration
from services.core.settings import Settings, load_settings


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Wait until `condition()` is true; fail with AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


# Set by the session fixture in tests/conftest.py to a directory pytest cleans up.
DATA_ROOT: Path | None = None


def fresh_data_dir() -> Path:
    """An empty directory for one test's embedded databases."""
    return Path(tempfile.mkdtemp(prefix="data-", dir=DATA_ROOT))


def make_settings(**overrides: Any) -> Settings:
    """Settings for an in-process server: loopback, a free port, no /metrics endpoint, short grace, and its own
    empty data directory (SQLite databases migrated at start-up)."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": -1,
        "grace_seconds": 2.0,
        "data_dir": fresh_data_dir(),
        "db_health_interval_seconds": 0.2,
        # No demo models and no configured live-signal symbols: tests train and watch what they need.
        "model_demo_symbols": [],
        "signal_symbols": [],
    }
    values.update(overrides)
    return load_settings(environ={}, **values)


@asynccontextmanager
async def running_server(
    registrations: Sequence[ServiceRegistration], settings: Settings | None = None
) -> AsyncIterator[GrpcServer]:
    """A started GrpcServer on a free loopback port, stopped on exit."""
    # No authenticator: these servers test other runtime concerns; tests/service/test_authentication.py covers it.
    server = GrpcServer((settings or make_settings()).server, registrations, authenticator=None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.5)
