"""Which database errors count as transient, and how the retry loop treats them."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.core.db import retry
from services.core.db.retry import as_unavailable, is_transient, retry_transient


class MySQLError(Exception):
    """Stands in for asyncmy's errors, which carry (errno, message) in args."""


def _wrapped(
    original: Exception, *, invalidated: bool = False, kind: type[DBAPIError] = OperationalError
) -> DBAPIError:
    return kind("SELECT 1", {}, original, connection_invalidated=invalidated)


@pytest.mark.parametrize("code", [1205, 1213, 2006, 2013])
def test_mysql_deadlocks_timeouts_and_lost_connections_are_transient(code: int) -> None:
    assert is_transient(_wrapped(MySQLError(code, "...")))


@pytest.mark.parametrize("code", [1062, 1146, 1064])
def test_mysql_duplicates_missing_tables_and_syntax_errors_are_not(code: int) -> None:
    assert not is_transient(_wrapped(MySQLError(code, "...")))


def test_sqlite_busy_is_transient_and_other_sqlite_errors_are_not() -> None:
    assert is_transient(_wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_transient(_wrapped(sqlite3.OperationalError("no such table: x")))


def test_invalidated_connection_is_transient_and_plain_exceptions_are_not() -> None:
    assert is_transient(_wrapped(Exception("whatever"), invalidated=True))
    assert not is_transient(ValueError("not a database error"))


def test_an_unreachable_database_becomes_an_outage_whose_driver_words_are_only_detail() -> None:
    refused = "Can't connect to MySQL server on 'db.internal' ([Errno 111] Connection refused)"
    outage = as_unavailable(_wrapped(MySQLError(2003, refused)))
    assert outage is not None
    assert outage.reason == "DATABASE_UNAVAILABLE"
    assert "db.internal" not in outage.message
    assert "db.internal" in outage.detail
    assert outage.retry_after_seconds == 1.0
    assert as_unavailable(PoolTimeout("QueuePool limit of size 10 overflow 20 reached")) is not None
    # Anything else is a bug or the request's fault, not an outage.
    assert as_unavailable(_wrapped(MySQLError(1062, "Duplicate entry"), kind=IntegrityError)) is None
    assert as_unavailable(ValueError("no")) is None


async def test_retry_reruns_transient_failures_then_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bullant.db")
    monkeypatch.setattr(retry, "backoff_delay", lambda *args: 0.0)
    calls = 0

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise _wrapped(MySQLError(1213, "Deadlock found"))
        return "done"

    assert await retry_transient(operation, attempts=4) == "done"
    assert calls == 3
    # One transient failure is routine (the retry cures it); failing again is worth a warning.
    assert [record.levelname for record in caplog.records] == ["INFO", "WARNING"]


async def test_retry_gives_up_after_its_attempts_and_never_retries_other_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retry, "backoff_delay", lambda *args: 0.0)
    calls = 0

    async def always_deadlocks() -> None:
        nonlocal calls
        calls += 1
        raise _wrapped(MySQLError(1213, "Deadlock found"))

    with pytest.raises(OperationalError):
        await retry_transient(always_deadlocks, attempts=3)
    assert calls == 3

    calls = 0

    async def duplicate() -> None:
        nonlocal calls
        calls += 1
        raise _wrapped(MySQLError(1062, "Duplicate entry"), kind=IntegrityError)

    with pytest.raises(IntegrityError):
        await retry_transient(duplicate, attempts=3)
    assert calls == 1
