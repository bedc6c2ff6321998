"""The Redis backend: cache on strings, locks and rate limits in Lua scripts, pub-sub from redis_pubsub."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence

import redis.exceptions

from services.core.clock import MonotonicClock
from services.core.coordination.base import (
    Backend,
    Cache,
    Decision,
    Holder,
    Lease,
    Locks,
    PubSub,
    RateLimiter,
    check_rate,
    check_ttl,
)
from services.core.coordination.keys import KeySpace
from services.core.coordination.redis_connection import (
    RedisConnection,
    RedisOptions,
    milliseconds,
    unavailable_on_outage,
)
from services.core.coordination.redis_pubsub import RedisPubSub
from services.core.errors import Unavailable


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # Our clients never decode responses; the str case exists only in redis-py's types.
    return value.encode() if isinstance(value, str) else value


class RedisBackend(Backend):
    """Coordination on one Redis server (URL `redis://host:port/db`), connected in start(), closed in stop()."""

    name = "redis"

    def __init__(self, url: str, options: RedisOptions | None = None, clock: MonotonicClock = time.monotonic) -> None:
        self.connection = RedisConnection(url, options, clock)

    async def start(self) -> None:
        await self.connection.start()

    async def stop(self) -> None:
        await self.connection.stop()

    async def ping(self, timeout_seconds: float = 2.0) -> str | None:
        return await self.connection.ping(timeout_seconds)

    def cache(self, keyspace: KeySpace) -> Cache:
        return RedisCache(self.connection, keyspace)

    def pubsub(self, keyspace: KeySpace) -> PubSub:
        return RedisPubSub(self.connection, keyspace)

    def locks(self, keyspace: KeySpace) -> Locks:
        return RedisLocks(self.connection, keyspace)

    def limiter(self, keyspace: KeySpace) -> RateLimiter:
        return RedisRateLimiter(self.connection, keyspace)


class RedisCache(Cache):
    """Cache on Redis strings."""

    def __init__(self, connection: RedisConnection, keyspace: KeySpace) -> None:
        self._connection = connection
        self._keyspace = keyspace

    async def get(self, key: str) -> bytes | None:
        with unavailable_on_outage("GET"):
            value = await self._connection.client.get(self._keyspace.key(key))
        return _as_bytes(value)

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)
        px = None if ttl_seconds is None else milliseconds(ttl_seconds)
        with unavailable_on_outage("SET"):
            await self._connection.client.set(self._keyspace.key(key), value, px=px)

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None = None) -> bool:
        check_ttl(ttl_seconds)
        px = None if ttl_seconds is None else milliseconds(ttl_seconds)
        with unavailable_on_outage("SET NX"):
            return bool(await self._connection.client.set(self._keyspace.key(key), value, px=px, nx=True))

    async def delete(self, key: str) -> bool:
        with unavailable_on_outage("DEL"):
            return bool(await self._connection.client.delete(self._keyspace.key(key)))

    async def ttl(self, key: str) -> float | None:
        with unavailable_on_outage("PTTL"):
            pttl = int(await self._connection.client.pttl(self._keyspace.key(key)))
        if pttl == -2:
            return None
        return math.inf if pttl == -1 else pttl / 1000

    async def increment(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        check_ttl(ttl_seconds)
        px = "" if ttl_seconds is None else milliseconds(ttl_seconds)
        try:
            return int(await self._connection.script("increment", [self._keyspace.key(key)], [amount, px]))
        except redis.exceptions.ResponseError as exc:
            if "not an integer" in str(exc):
                raise ValueError(f"value of {key!r} is not an integer") from None
            raise

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with unavailable_on_outage("MGET"):
            values = await self._connection.client.mget([self._keyspace.key(k) for k in keys])
        return [_as_bytes(value) for value in values]

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float | None = None) -> None:
        check_ttl(ttl_seconds)
        if not values:
            return
        px = None if ttl_seconds is None else milliseconds(ttl_seconds)
        with unavailable_on_outage("SET (many)"):
            async with self._connection.client.pipeline(transaction=True) as pipeline:
                for key, value in values.items():
                    pipeline.set(self._keyspace.key(key), value, px=px)
                await pipeline.execute()


class RedisLocks(Locks):
    """Locks as Redis keys changed only by Lua scripts.

    Redis may forget a held lock: a restart without persistence, a failover to a replica that missed the write.
    The old holder learns it at its next renewal; until then nobody else may take the lock. So each RedisLocks
    remembers, per lock it found held by someone else, until when that lease may still be live: the remaining TTL
    it saw, extended by the holder's full TTL whenever Redis cannot be reached (the holder may have renewed just
    before). Until then it refuses a lock whose key is missing. Released locks leave a tombstone, so a release is
    never mistaken for a loss and the next holder need not wait. A replica that never saw the lock held cannot
    know; fencing tokens remain the last line of defence.
    """

    def __init__(self, connection: RedisConnection, keyspace: KeySpace) -> None:
        self._connection = connection
        self._keyspace = keyspace
        self.clock = connection.clock
        # lock key -> (held elsewhere at most until, the holder's TTL)
        self._held_elsewhere: dict[str, tuple[float, float]] = {}

    async def acquire(self, name: str, ttl_seconds: float, owner: str | None = None) -> Lease | None:
        check_ttl(ttl_seconds)
        owner = owner or uuid.uuid4().hex
        full = self._keyspace.key("lock", name)
        started = self.clock()
        until, holder_ttl = self._held_elsewhere.get(full, (0.0, 0.0))
        strict = "1" if until > started else "0"
        try:
            acquired, value, holder_ttl_ms = await self._connection.script(
                "acquire", [full], [owner, milliseconds(ttl_seconds), strict]
            )
        except Unavailable:
            if holder_ttl:
                self._held_elsewhere[full] = (max(until, self.clock() + holder_ttl), holder_ttl)
            raise
        if int(acquired) == 1:
            self._held_elsewhere.pop(full, None)
            return Lease(name, owner, int(value), ttl_seconds, started + ttl_seconds)
        if int(value) >= 0:
            # Rounded up a millisecond, so this never ends before the holder's own view of its lease does.
            self._held_elsewhere[full] = (self.clock() + (int(value) + 1) / 1000, int(holder_ttl_ms) / 1000)
        return None

    async def renew(self, lease: Lease, ttl_seconds: float | None = None) -> Lease | None:
        ttl = lease.ttl_seconds if ttl_seconds is None else ttl_seconds
        check_ttl(ttl)
        started = self.clock()
        full = self._keyspace.key("lock", lease.name)
        renewed = await self._connection.script("renew", [full], [lease.owner, str(lease.token), milliseconds(ttl)])
        if int(renewed) != 1:
            return None
        return Lease(lease.name, lease.owner, lease.token, ttl, started + ttl)

    async def release(self, lease: Lease) -> bool:
        full = self._keyspace.key("lock", lease.name)
        return int(await self._connection.script("release", [full], [lease.owner, str(lease.token)])) == 1

    async def holder(self, name: str) -> Holder | None:
        full = self._keyspace.key("lock", name)
        with unavailable_on_outage("GET lock"):
            async with self._connection.client.pipeline(transaction=True) as pipeline:
                pipeline.get(full)
                pipeline.pttl(full)
                value, pttl = await pipeline.execute()
        if value is None:
            return None
        token, _, rest = value.decode().partition(":")
        _, _, owner = rest.partition(":")
        if not owner:
            return None
        return Holder(owner, int(token), max(0, int(pttl)) / 1000)


class RedisRateLimiter(RateLimiter):
    """GCRA rate limits in one Lua script, on Redis server time."""

    def __init__(self, connection: RedisConnection, keyspace: KeySpace) -> None:
        self._connection = connection
        self._keyspace = keyspace

    async def hit(self, key: str, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        check_rate(limit, window_seconds, cost)
        full = self._keyspace.key("rate", key)
        window_us = repr(window_seconds * 1_000_000)
        allowed, remaining, retry_us = await self._connection.script("rate_limit", [full], [limit, window_us, cost])
        return Decision(int(allowed) == 1, max(0, int(remaining)), int(retry_us) / 1_000_000)
