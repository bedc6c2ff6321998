"""What database, Redis and upstream addresses must look like (checked when settings load, so a bad one is a
configuration error naming its variable), and how to show a URL without its password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DATABASE_SCHEMES = ("sqlite+aiosqlite", "mysql+asyncmy")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The names `bullant migrate` creates (and may quote safely).
_MYSQL_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")


def _check_scheme(url: str, allowed: tuple[str, ...]) -> None:
    if not url:
        return
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in allowed:
        raise ValueError(f"unsupported URL scheme {scheme or redact_url(url)!r}; use one of {', '.join(allowed)}")


def redact_url(url: str) -> str:
    """`scheme://user:secret@host/db` → `scheme://user:***@host/db`, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _check_port(url: str) -> None:
    try:
        _ = urlsplit(url).port  # parsing the port is the check
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None


def check_database_url(url: str) -> None:
    """A URL create_engine() can use: a supported driver, a numeric port, and for MySQL a host and a database."""
    _check_scheme(url, DATABASE_SCHEMES)
    _check_port(url)
    if url.startswith("mysql+asyncmy://"):
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError("name the MySQL server (mysql+asyncmy://user:password@host/db)")
        database = parts.path.strip("/")
        if not database:
            raise ValueError("name the database after the host (mysql+asyncmy://user:password@host/db)")
        if not _MYSQL_DATABASE_NAME.match(database):
            raise ValueError(f"database name {database!r}: use up to 64 letters, digits, '_', '$' or '-'")


def check_redis_url(url: str) -> None:
    """A URL redis-py can use: redis:// or rediss:// with a numeric port and database, or unix:// with a path."""
    _check_scheme(url, REDIS_SCHEMES)
    _check_port(url)
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("give the socket path (unix:///run/redis.sock)")
        return
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError("the database after the host must be a number (redis://host:6379/0)")


def check_address(address: str) -> None:
    """host:port, as gRPC channels take it."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected host:port with a port from 1 to 65535, got {address!r}")
