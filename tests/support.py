"""Helpers shared by the tests: waiting for a condition, and a running server on a loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from services.core.db.databases import DatabaseConfig, Databases
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


# Migrated, empty SQLite databases by shard count, made once per test process (see _migrated_databases).
_MIGRATED: dict[int, list[Path]] = {}


def _migrate(config: DatabaseConfig) -> None:
    async def run() -> None:
        databases = Databases(config)
        try:
            await databases.migrate()
        finally:
            await databases.stop()

    asyncio.run(run())


def _migrated_databases(settings: Settings) -> None:
    """Put copies of freshly migrated, empty SQLite databases where `settings`' embedded default keeps them.

    Upgrading a new database through every migration costs about 0.25 s per server start (0.1 s of CPU), and nearly
    every test starts one. The copies are made by the same code (Databases.migrate, each process once) and start-up
    still runs its own migration step, which finds them at head; nothing else is in them (the shard registry and
    each shard's identity are written at start-up, as on a new deployment)."""
    config = DatabaseConfig.from_settings(settings)
    if not config.auto_migrate or not all(url.startswith("sqlite") for _name, url, _kind in config.locations()):
        return
    targets = [make_url(url).database for _name, url, _kind in config.locations()]
    sources = _MIGRATED.get(len(config.shard_urls))
    if sources is None:
        directory = Path(tempfile.mkdtemp(prefix="migrated-", dir=DATA_ROOT))
        sources = [directory / Path(str(target)).name for target in targets]
        urls = [f"sqlite+aiosqlite:///{source}" for source in sources]
        template = dataclasses.replace(config, global_url=urls[0], shard_urls=tuple(urls[1:]))
        # In a thread of its own: make_settings is also called where an event loop is already running.
        with ThreadPoolExecutor(1) as executor:
            executor.submit(_migrate, template).result()
        _MIGRATED[len(config.shard_urls)] = sources
    for source, target in zip(sources, targets, strict=True):
        shutil.copyfile(source, str(target))


def make_settings(**overrides: Any) -> Settings:
    """Settings for an in-process server: loopback, a free port, no /metrics endpoint, short grace, and its own
    empty data directory (SQLite databases at head: migrated copies, see _migrated_databases)."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": -1,
        "grace_seconds": 2.0,
        "db_health_interval_seconds": 0.2,
        # No demo models and no configured live-signal symbols: tests train and watch what they need.
        "model_demo_symbols": [],
        "signal_symbols": [],
    }
    values.update(overrides)
    fresh = "data_dir" not in values
    if fresh:
        values["data_dir"] = fresh_data_dir()
    settings = load_settings(environ={}, **values)
    if fresh:
        _migrated_databases(settings)
    return settings


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
