"""The Redis connections coordination runs on: clients made in start(), closed in stop(), outages as Unavailable."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7 has no maintenance notifications to turn off
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

from services.core.clock import MonotonicClock
from services.core.coordination import redis_scripts
from services.core.errors import Unavailable

if TYPE_CHECKING:
    from services.core.coordination.redis_pubsub import RedisSubscription

# What an outage looks like from redis-py: a refused or dropped connection, a timeout, Redis still loading.
OUTAGES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Connection tuning; the defaults suit a Redis in the same data centre."""

    connect_timeout_seconds: float = 2.0
    command_timeout_seconds: float = 2.0
    max_connections: int = 64
    # An idle subscription pings this often, so a half-open connection (no FIN, e.g. a dead host) is noticed.
    health_check_interval_seconds: float = 5.0
    reconnect_initial_backoff_seconds: float = 0.05
    reconnect_max_backoff_seconds: float = 2.0


# What a client is told during an outage: the reason and when to try again, never the server's address or words.
CACHE_UNAVAILABLE = "CACHE_UNAVAILABLE"
OUTAGE_MESSAGE = "the platform's cache is unavailable for now; try again shortly"
OUTAGE_RETRY_SECONDS = 1.0


def outage(detail: str) -> Unavailable:
    """The Unavailable every Redis failure becomes (gRPC UNAVAILABLE with RetryInfo); `detail` is only logged."""
    return Unavailable(
        OUTAGE_MESSAGE, reason=CACHE_UNAVAILABLE, detail=detail, retry_after_seconds=OUTAGE_RETRY_SECONDS
    )


@contextmanager
def unavailable_on_outage(what: str) -> Iterator[None]:
    """Turn redis-py's connection failures into the domain's Unavailable (gRPC UNAVAILABLE, retryable)."""
    try:
        yield
    except OUTAGES as exc:
        raise outage(f"redis {what}: {exc}") from exc


def milliseconds(seconds: float) -> int:
    """`seconds` as whole milliseconds for PX/PEXPIRE, rounded up so a short TTL never becomes 0."""
    return max(1, math.ceil(seconds * 1000))


def _without_maintenance_notifications() -> dict[str, Any]:
    # With them on ("auto", the default) redis-py skips its check for pooled connections the server has closed, so
    # after a Redis restart every idle pooled connection would fail one command. They serve Redis Enterprise only.
    if MaintNotificationsConfig is None:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


_SCRIPTS = {
    "increment": redis_scripts.INCREMENT,
    "acquire": redis_scripts.ACQUIRE,
    "renew": redis_scripts.RENEW,
    "release": redis_scripts.RELEASE,
    "rate_limit": redis_scripts.RATE_LIMIT,
}


class RedisConnection:
    """Two clients for one Redis URL: one for commands, one whose connections subscriptions hold.

    Commands are not retried by redis-py: retrying a lock or rate-limit script after a lost reply could apply it
    twice. Stale pooled connections (after a Redis restart) are replaced when taken from the pool; any other
    failure reaches the caller as Unavailable. Subscriptions run their own reconnect loop.
    """

    def __init__(self, url: str, options: RedisOptions | None = None, clock: MonotonicClock = time.monotonic) -> None:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {url!r}")
        self.url = url
        self.options = options or RedisOptions()
        self.clock = clock
        self.subscriptions: set[RedisSubscription] = set()
        self._client: aioredis.Redis | None = None
        self._subscriber: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._stopped = False

    def _new_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.options.connect_timeout_seconds,
            socket_timeout=self.options.command_timeout_seconds,
            max_connections=self.options.max_connections,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            **_without_maintenance_notifications(),
        )

    async def start(self) -> None:
        """Create the clients. Connections open on first use, so an unreachable Redis shows in ping(), not here."""
        if self._client is not None:
            return
        self._stopped = False
        self._client = self._new_client()
        self._subscriber = self._new_client()
        self._scripts = {name: self._client.register_script(source) for name, source in _SCRIPTS.items()}

    async def stop(self) -> None:
        """Close every subscription, then the clients. Calls made after this fail as an outage would (Unavailable),
        so a background job finishing late during shutdown meets an ordinary, quiet error."""
        self._stopped = self._client is not None or self._stopped
        for subscription in list(self.subscriptions):
            await subscription.close()
        clients = (self._client, self._subscriber)
        self._client = self._subscriber = None
        for client in clients:
            if client is not None:
                await client.aclose(close_connection_pool=True)

    def _not_open(self) -> Exception:
        if self._stopped:
            return outage("the Redis coordination backend is stopped (the process is shutting down)")
        return RuntimeError("the Redis coordination backend is not started")

    @property
    def client(self) -> aioredis.Redis:
        """The command client; RuntimeError before start(), Unavailable after stop()."""
        if self._client is None:
            raise self._not_open()
        return self._client

    @property
    def subscriber(self) -> aioredis.Redis:
        """The client subscriptions take their connections from; RuntimeError before start(), Unavailable after
        stop()."""
        if self._subscriber is None:
            raise self._not_open()
        return self._subscriber

    async def script(self, name: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run one of our Lua scripts (redis-py loads it again if a restarted Redis forgot it)."""
        if self._client is None:
            raise self._not_open()
        with unavailable_on_outage(name):
            return await self._scripts[name](keys=list(keys), args=list(args))

    async def ping(self, timeout_seconds: float = 2.0) -> str | None:
        """None when Redis answers PING within the timeout, else why not."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self.client.ping()
        except TimeoutError:
            return f"no answer within {timeout_seconds}s"
        except Unavailable as exc:
            return exc.detail or exc.message
        except (redis.exceptions.RedisError, OSError, RuntimeError) as exc:
            return str(exc) or type(exc).__name__
        return None
