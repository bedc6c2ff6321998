"""The in-process backend for one process (`bullant serve all` on a laptop): same semantics as Redis, no server.

Every operation runs without awaiting in between, so each is atomic under asyncio concurrency, as a Lua script is
in Redis. Time comes from an injectable monotonic clock, so tests can move it instead of sleeping.
"""

from __future__ import annotations

import heapq
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.core.clock import MonotonicClock
from services.core.coordination.base import (
    DEFAULT_MAX_PENDING,
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
from services.core.coordination.envelope import Sequencer
from services.core.coordination.keys import KeySpace
from services.core.coordination.subscription import Subscription

V = TypeVar("V")


class ExpiringStore(Generic[V]):
    """A dict whose entries may expire; expired entries vanish on read and are purged on every write."""

    def __init__(self, clock: MonotonicClock) -> None:
        self._clock = clock
        self._data: dict[str, tuple[V, float | None]] = {}
        self._expiries: list[tuple[float, str]] = []

    def get(self, key: str) -> tuple[V, float | None] | None:
        """(value, expires_at) of a live entry, or None."""
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= self._clock():
            del self._data[key]
            return None
        return entry

    def put(self, key: str, value: V, expires_at: float | None) -> None:
        """Store an entry; `expires_at` None keeps it until deleted."""
        self.purge()
        self._data[key] = (value, expires_at)
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, key))

    def delete(self, key: str) -> bool:
        """Remove a live entry; True when there was one."""
        found = self.get(key) is not None
        self._data.pop(key, None)
        return found

    def keys(self) -> list[str]:
        """Every live key."""
        self.purge()
        return list(self._data)

    def purge(self) -> None:
        """Drop expired entries, so keys nobody reads again do not hold memory forever."""
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiries)
            entry = self._data.get(key)
            if entry is not None and entry[1] == expires_at:
                del self._data[key]
        # Keys re-set many times leave stale heap entries behind; rebuild before they outgrow the data.
        if len(self._expiries) > 2 * len(self._data) + 64:
            self._expiries = [(e, k) for k, (_, e) in self._data.items() if e is not None]
            heapq.heapify(self._expiries)


def redis_glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching what the Redis glob `pattern` matches (`*`, `?`, `[abc]`, `[^a-z]`, `\\` escapes)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            escaped = "".join("\\" + c if c in "\\[]^" else c for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


class MemoryBackend(Backend):
    """Shared in-process state: build several Coordination bundles on one MemoryBackend to play several replicas."""

    name = "memory"

    def __init__(self, clock: MonotonicClock = time.monotonic) -> None:
        self.clock = clock
        self.values: ExpiringStore[bytes] = ExpiringStore(clock)
        self.buckets: ExpiringStore[float] = ExpiringStore(clock)
        self.leases: ExpiringStore[tuple[str, int]] = ExpiringStore(clock)
        # Survives lease expiry on purpose: fencing tokens must keep increasing for the life of the process.
        self.last_tokens: dict[str, int] = {}
        self.subscriptions: set[MemorySubscription] = set()

    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Close every open subscription."""
        for subscription in list(self.subscriptions):
            await subscription.close()

    async def ping(self, timeout_seconds: float = 2.0) -> str | None:
        """Always reachable."""
        return None

    def live_keys(self) -> list[str]:
        """Every key that holds state now (values, rate buckets, held locks); for tests and debugging."""
        return sorted({*self.values.keys(), *self.buckets.keys(), *self.leases.keys()})

    def cache(self, keyspace: KeySpace) -> Cache:
        return MemoryCache(self, keyspace)

    def pubsub(self, keyspace: KeySpace) -> PubSub:
        return MemoryPubSub(self, keyspace)

    def locks(self, keyspace: KeySpace) -> Locks:
        return MemoryLocks(self, keyspace)

    def limiter(self, keyspace: KeySpace) -> RateLimiter:
        return MemoryRateLimiter(self, keyspace)


def _expiry(clock: MonotonicClock, ttl_seconds: float | None) -> float | None:
    check_ttl(ttl_seconds)
    return None if ttl_seconds is None else clock() + ttl_seconds


class MemoryCache(Cache):
    """Cache on a MemoryBackend."""

    def __init__(self, backend: MemoryBackend, keyspace: KeySpace) -> None:
        self._store = backend.values
        self._clock = backend.clock
        self._keyspace = keyspace

    async def get(self, key: str) -> bytes | None:
        entry = self._store.get(self._keyspace.key(key))
        return None if entry is None else entry[0]

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        self._store.put(self._keyspace.key(key), bytes(value), _expiry(self._clock, ttl_seconds))

    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None = None) -> bool:
        expires_at = _expiry(self._clock, ttl_seconds)
        full = self._keyspace.key(key)
        if self._store.get(full) is not None:
            return False
        self._store.put(full, bytes(value), expires_at)
        return True

    async def delete(self, key: str) -> bool:
        return self._store.delete(self._keyspace.key(key))

    async def ttl(self, key: str) -> float | None:
        entry = self._store.get(self._keyspace.key(key))
        if entry is None:
            return None
        return math.inf if entry[1] is None else max(0.0, entry[1] - self._clock())

    async def increment(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        check_ttl(ttl_seconds)
        full = self._keyspace.key(key)
        entry = self._store.get(full)
        current, expires_at = (b"0", None) if entry is None else entry
        try:
            value = int(current) + amount
        except ValueError:
            raise ValueError(f"value of {key!r} is not an integer") from None
        if expires_at is None and ttl_seconds is not None:
            expires_at = self._clock() + ttl_seconds
        self._store.put(full, str(value).encode(), expires_at)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float | None = None) -> None:
        expires_at = _expiry(self._clock, ttl_seconds)
        for key, value in values.items():
            self._store.put(self._keyspace.key(key), bytes(value), expires_at)


class MemorySubscription(Subscription):
    """A subscription registered with a MemoryBackend; publish() hands it messages directly."""

    def __init__(
        self,
        backend: MemoryBackend,
        keyspace: KeySpace,
        channels: Sequence[str],
        patterns: Sequence[str],
        max_pending: int,
    ) -> None:
        super().__init__(keyspace, channels, patterns, max_pending)
        self._backend = backend
        self.full_channels = frozenset(keyspace.channel(c) for c in self.channels)
        self.full_patterns = [(keyspace.pattern(p), redis_glob_to_regex(keyspace.pattern(p))) for p in self.patterns]

    def offer(self, full_channel: str, raw: bytes) -> None:
        """Take the message if this subscription wants it (once per matching channel or pattern, as Redis does)."""
        if full_channel in self.full_channels:
            self._deliver(full_channel, raw, None)
        for full_pattern, regex in self.full_patterns:
            if regex.fullmatch(full_channel):
                self._deliver(full_channel, raw, full_pattern)

    async def _open(self) -> None:
        self._backend.subscriptions.add(self)

    async def _close(self) -> None:
        self._backend.subscriptions.discard(self)


class MemoryPubSub(PubSub):
    """Pub-sub on a MemoryBackend: publish delivers to every matching subscription before returning."""

    def __init__(self, backend: MemoryBackend, keyspace: KeySpace) -> None:
        self._backend = backend
        self._keyspace = keyspace
        self._sequencer = Sequencer()

    async def publish(self, channel: str, data: bytes) -> None:
        full = self._keyspace.channel(channel)
        raw = self._sequencer.seal(channel, data)
        for subscription in list(self._backend.subscriptions):
            subscription.offer(full, raw)

    def subscribe(
        self,
        channels: Sequence[str] = (),
        patterns: Sequence[str] = (),
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> Subscription:
        return MemorySubscription(self._backend, self._keyspace, channels, patterns, max_pending)


class MemoryLocks(Locks):
    """Locks on a MemoryBackend; fencing tokens count up per lock name for the life of the backend."""

    def __init__(self, backend: MemoryBackend, keyspace: KeySpace) -> None:
        self._backend = backend
        self._keyspace = keyspace
        self.clock = backend.clock

    async def acquire(self, name: str, ttl_seconds: float, owner: str | None = None) -> Lease | None:
        check_ttl(ttl_seconds)
        full = self._keyspace.key("lock", name)
        if self._backend.leases.get(full) is not None:
            return None
        owner = owner or uuid.uuid4().hex
        token = self._backend.last_tokens.get(full, 0) + 1
        self._backend.last_tokens[full] = token
        expires_at = self.clock() + ttl_seconds
        self._backend.leases.put(full, (owner, token), expires_at)
        return Lease(name, owner, token, ttl_seconds, expires_at)

    async def renew(self, lease: Lease, ttl_seconds: float | None = None) -> Lease | None:
        ttl = lease.ttl_seconds if ttl_seconds is None else ttl_seconds
        check_ttl(ttl)
        full = self._keyspace.key("lock", lease.name)
        entry = self._backend.leases.get(full)
        if entry is None or entry[0] != (lease.owner, lease.token):
            return None
        expires_at = self.clock() + ttl
        self._backend.leases.put(full, entry[0], expires_at)
        return Lease(lease.name, lease.owner, lease.token, ttl, expires_at)

    async def release(self, lease: Lease) -> bool:
        full = self._keyspace.key("lock", lease.name)
        entry = self._backend.leases.get(full)
        if entry is None or entry[0] != (lease.owner, lease.token):
            return False
        return self._backend.leases.delete(full)

    async def holder(self, name: str) -> Holder | None:
        entry = self._backend.leases.get(self._keyspace.key("lock", name))
        if entry is None:
            return None
        (owner, token), expires_at = entry
        remaining = math.inf if expires_at is None else max(0.0, expires_at - self.clock())
        return Holder(owner, token, remaining)


@dataclass(frozen=True, slots=True)
class Gcra:
    """The GCRA arithmetic both backends share (Redis runs the same steps in Lua, in microseconds).

    The bucket's state is its theoretical arrival time `tat`: when it would be full again. A hit of `cost` moves it
    `cost` emission intervals (window / limit) later, and is allowed if the new tat is at most one window ahead.
    """

    limit: int
    window: float

    @property
    def interval(self) -> float:
        return self.window / self.limit

    def hit(self, now: float, tat: float | None, cost: int) -> tuple[Decision, float | None]:
        """The decision and the new tat to store (None when nothing changes)."""
        start = now if tat is None or tat < now else tat
        new_tat = start + cost * self.interval
        allow_at = new_tat - self.window
        # A millionth of an interval absorbs float rounding (five hits of 0.2 s must fit in 1 s).
        if allow_at - now > self.interval * 1e-6:
            return Decision(False, self._fits(now, start), allow_at - now), None
        return Decision(True, self._fits(now, new_tat), 0.0), new_tat

    def _fits(self, now: float, tat: float) -> int:
        # The same tolerance keeps float rounding (1.9999999) from costing a whole request.
        return max(0, math.floor((now + self.window - tat) / self.interval + 1e-6))


class MemoryRateLimiter(RateLimiter):
    """Rate limits on a MemoryBackend."""

    def __init__(self, backend: MemoryBackend, keyspace: KeySpace) -> None:
        self._store = backend.buckets
        self._clock = backend.clock
        self._keyspace = keyspace

    async def hit(self, key: str, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        check_rate(limit, window_seconds, cost)
        full = self._keyspace.key("rate", key)
        now = self._clock()
        entry = self._store.get(full)
        decision, new_tat = Gcra(limit, window_seconds).hit(now, None if entry is None else entry[0], cost)
        if new_tat is not None:
            self._store.put(full, new_tat, new_tat)
        return decision
