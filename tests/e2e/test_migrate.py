"""`bullant migrate` on the embedded SQLite default and on real MariaDB, and a server refusing a database behind
head."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.db.migrate import SchemaKind, head_revision
from tests.db_support import DatabaseSet, new_prefix
from tests.e2e.platform import BULLANT

pytestmark = pytest.mark.e2e


def _bullant(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULLANT_")}
    environment.update(env)
    return subprocess.run([BULLANT, *args], capture_output=True, text=True, timeout=120, env=environment, check=False)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return {"BULLANT_DATA_DIR": str(tmp_path), "BULLANT_SHARD_COUNT": "3"}


@pytest.fixture
def mysql_env(mysql_url: str) -> Iterator[dict[str, str]]:
    dbset = DatabaseSet("mysql", mysql_url, new_prefix())
    yield {
        "BULLANT_DATABASE_URL": dbset.url("global"),
        "BULLANT_SHARD_URLS": ",".join(dbset.url(f"shard_{i}") for i in range(2)),
    }
    asyncio.run(dbset.drop())
    assert asyncio.run(dbset.leftovers()) == []


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_migrate_upgrades_every_database_and_is_idempotent(backend: str, request: pytest.FixtureRequest) -> None:
    env = request.getfixturevalue(f"{backend}_env")
    shards = 3 if backend == "sqlite" else 2
    check = _bullant("migrate", "--check", env=env)
    if backend == "sqlite":
        # Empty SQLite files are behind head; MySQL databases do not exist yet, which --check also reports.
        assert check.returncode == 1, check.stdout + check.stderr
    first = _bullant("migrate", env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"global: empty -> {head_revision(SchemaKind.GLOBAL)}"
    assert lines[1:] == [f"shard_{i}: empty -> {head_revision(SchemaKind.SHARD)}" for i in range(shards)]
    second = _bullant("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert all(line.endswith("(head), nothing to do") for line in second.stdout.splitlines())
    assert len(second.stdout.splitlines()) == 1 + shards
    check = _bullant("migrate", "--check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "all databases at head"


def test_a_server_refuses_a_database_behind_head(tmp_path: Path) -> None:
    result = _bullant(
        "serve",
        "market",
        "--port",
        "0",
        "--metrics-port",
        "-1",
        env={"BULLANT_DATA_DIR": str(tmp_path), "BULLANT_DB_AUTO_MIGRATE": "false"},
    )
    assert result.returncode == 1
    assert "database schema is behind" in result.stderr
    assert "run `bullant migrate`" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_waited_for_within_the_bound_then_a_clear_error(tmp_path: Path) -> None:
    env = {
        "BULLANT_DATA_DIR": str(tmp_path),
        "BULLANT_DATABASE_URL": "mysql+asyncmy://root:topsecret@127.0.0.1:1/nowhere",
        "BULLANT_SHARD_URLS": "mysql+asyncmy://root:topsecret@127.0.0.1:1/nowhere_shard",
        "BULLANT_DB_CONNECT_TIMEOUT_SECONDS": "2",
        "BULLANT_STARTUP_WAIT_SECONDS": "1",
        "BULLANT_LOG_FORMAT": "text",
    }
    for args in (("serve", "market", "--port", "0", "--metrics-port", "-1"), ("migrate",)):
        result = _bullant(*args, env=env)
        assert result.returncode == 69, result.stderr
        lines = result.stderr.strip().splitlines()
        assert any("waiting for the database" in line and "Can't connect" in line for line in lines), result.stderr
        assert lines[-1].startswith("bullant: the database did not answer within 1s: "), result.stderr
        assert "BULLANT_DATABASE_URL" in lines[-1]
        assert "Traceback" not in result.stderr
        assert "topsecret" not in result.stderr


def test_migrate_on_mariadb_twice_logs_nothing_alarming(mysql_env: dict[str, str]) -> None:
    # MariaDB used to warn "Name 'pk_alerts' ignored for PRIMARY key" on the first run and "Can't create database
    # ...; database exists" on every later one.
    env = {**mysql_env, "BULLANT_LOG_FORMAT": "text"}
    for run in ("first", "second"):
        result = _bullant("migrate", env=env)
        assert result.returncode == 0, result.stderr
        alarming = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
        assert alarming == [], f"{run} run: {alarming}"
