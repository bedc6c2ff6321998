"""The one place that decides which database errors are transient and retries whole transactions on them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.core.backoff import backoff_delay
from services.core.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger("bullant.db")

# MySQL/MariaDB error numbers worth a retry: the transaction lost a race or the connection went away.
MYSQL_TRANSIENT_CODES = frozenset(
    {
        1205,  # lock wait timeout exceeded
        1213,  # deadlock found when trying to get lock
        1040,  # too many connections
        1927,  # connection was killed
        2002,  # can't connect through socket
        2003,  # can't connect to server
        2006,  # server has gone away
        2013,  # lost connection during query
        2055,  # lost connection to server
        4031,  # disconnected by the server because of inactivity
    }
)
SQLITE_TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def is_transient(error: BaseException) -> bool:
    """Whether re-running the whole transaction may succeed: a deadlock, a lock timeout, a lost connection."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    original = error.orig
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int) and args[0] in MYSQL_TRANSIENT_CODES:
        return True
    message = str(original).lower()
    return any(text in message for text in SQLITE_TRANSIENT_MESSAGES) or isinstance(original, ConnectionError)


DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"


def as_unavailable(error: BaseException) -> Unavailable | None:
    """The Unavailable a client gets for a database failure that trying later may cure (unreachable server, lost
    connection, deadlock or lock wait left after the retries, a pool with no free connection); None for anything
    else. The driver's words go into `detail`, which is logged and never sent."""
    if isinstance(error, PoolTimeout):
        detail = f"no free database connection: {error}"
    elif isinstance(error, DBAPIError) and is_transient(error):
        original = error.orig if error.orig is not None else error
        detail = f"{type(original).__name__}: {str(original).splitlines()[0][:300] if str(original) else ''}"
    else:
        return None
    return Unavailable(
        "the database is unavailable for now; try again shortly",
        reason=DATABASE_UNAVAILABLE,
        detail=detail,
        retry_after_seconds=1.0,
    )


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    attempts: int = 4,
    base_seconds: float = 0.05,
    max_seconds: float = 1.0,
    description: str = "database operation",
) -> T:
    """Run `operation` (a whole transaction), again after a transient error, up to `attempts` times in all.

    Anything not transient, and the last transient error, propagates unchanged. One transient failure is INFO (SQLite
    refuses a read transaction's upgrade to a write when another writer got there first, and a busy MariaDB picks
    deadlock victims: the retry is the cure); a transaction that fails again is a WARNING.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except DBAPIError as error:
            if attempt == attempts or not is_transient(error):
                raise
            delay = backoff_delay(attempt - 1, base_seconds, max_seconds)
            log.log(
                logging.INFO if attempt == 1 else logging.WARNING,
                "%s failed transiently (attempt %d of %d), retrying in %.3fs: %s",
                description,
                attempt,
                attempts,
                delay,
                type(error.orig).__name__ if error.orig is not None else type(error).__name__,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
