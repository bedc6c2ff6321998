"""The coordination ports every service codes against: cache, pub-sub, locks with leases, rate limits."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.core.clock import MonotonicClock
from services.core.coordination.keys import KeySpace

if TYPE_CHECKING:
    from services.core.coordination.subscription import Subscription

DEFAULT_MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class Message:
    """One pub-sub message as a subscriber sees it.

    `channel` and `pattern` are relative to the subscriber's KeySpace. `missed_before` counts messages known lost
    just before this one: sequence gaps from this message's publisher on this channel (a reconnect, Redis dropping
    a slow client) plus messages dropped from the subscriber's own full queue. Consumers that must report drops
    (tick streams) check it; the running totals are on the Subscription.
    """

    channel: str
    data: bytes
    pattern: str | None = None
    missed_before: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of holding lock `name` until `expires_at` (on the holder's clock, measured before the request was
    sent, so it never outlives the lease the store granted). `token` is the fencing token: strictly larger for each
    new grant of the same lock, so a resource that remembers the largest token it has seen can refuse a stale
    holder."""

    name: str
    owner: str
    token: int
    ttl_seconds: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lock now, as the store sees it."""

    owner: str
    token: int
    ttl_seconds: float


@dataclass(frozen=True, slots=True)
class Decision:
    """A rate limiter's answer: whether this request may go ahead, how many more would fit right now, and how long
    to wait before this request would be allowed (0 when allowed)."""

    allowed: bool
    remaining: int
    retry_after_seconds: float


def check_ttl(ttl_seconds: float | None) -> None:
    """Reject TTLs a store cannot honour (zero, negative, not finite)."""
    if ttl_seconds is not None and not (ttl_seconds > 0 and math.isfinite(ttl_seconds)):
        raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")


def check_rate(limit: int, window_seconds: float, cost: int) -> None:
    """Reject rate limits that could never allow anything."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not (window_seconds > 0 and math.isfinite(window_seconds)):
        raise ValueError(f"window_seconds must be a positive finite number, got {window_seconds!r}")
    if not 1 <= cost <= limit:
        raise ValueError(f"cost must be between 1 and limit ({limit}), got {cost}")


class Cache(ABC):
    """Bytes under keys of one KeySpace, optionally expiring. Keys are relative to the KeySpace."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or None when the key is absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        """Store `value`; without a TTL the key never expires (and loses any TTL it had)."""

    @abstractmethod
    async def set_if_absent(self, key: str, value: bytes, ttl_seconds: float | None = None) -> bool:
        """Store `value` only when the key is absent; True when this call stored it."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the key; True when it existed."""

    @abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds until the key expires; math.inf when it never does; None when it is absent."""

    @abstractmethod
    async def increment(self, key: str, amount: int = 1, ttl_seconds: float | None = None) -> int:
        """Add `amount` to the integer under `key` (absent counts as 0) and return the result. `ttl_seconds`
        applies only while the key has no expiry, i.e. when this call creates it: a fixed-window counter.
        Raises ValueError when the stored value is not an integer."""

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of `keys`, in order, None for absent ones; one round trip."""

    @abstractmethod
    async def set_many(self, values: Mapping[str, bytes], ttl_seconds: float | None = None) -> None:
        """Store every value atomically, each with the same TTL; one round trip."""


class PubSub(ABC):
    """Fire-and-forget messages on channels of one KeySpace, fanned out to every subscriber of every replica.

    Each published payload is wrapped in a small envelope (publisher id, sequence number per publisher and channel),
    so a subscriber can count what it missed across reconnects without any help from the store.
    """

    @abstractmethod
    async def publish(self, channel: str, data: bytes) -> None:
        """Send `data` to the current subscribers of `channel`. A failed publish still uses up its sequence number,
        so subscribers count it as missed if it never arrives."""

    @abstractmethod
    def subscribe(
        self,
        channels: Sequence[str] = (),
        patterns: Sequence[str] = (),
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> Subscription:
        """A subscription to `channels` and glob `patterns` (Redis syntax: `*`, `?`, `[a-z]`). Use it as
        `async with pubsub.subscribe(["ticks.AAPL"]) as sub: async for message in sub: ...`; it is live once
        entered. At most `max_pending` unread messages are kept: beyond that the oldest are dropped and counted."""


class Locks(ABC):
    """Locks with a lease and a fencing token, for leader election and singleton jobs. Not reentrant: a second
    acquire by the same owner fails while the first lease lasts."""

    clock: MonotonicClock
    """The clock `Lease.expires_at` is measured on."""

    @abstractmethod
    async def acquire(self, name: str, ttl_seconds: float, owner: str | None = None) -> Lease | None:
        """Take lock `name` for `ttl_seconds`, or None when someone else holds it. `owner` defaults to a new
        unique id per call."""

    @abstractmethod
    async def renew(self, lease: Lease, ttl_seconds: float | None = None) -> Lease | None:
        """Extend a lease still held (by the same owner and token) to `ttl_seconds` (default: its own) from now;
        None when it was lost (expired, taken over, or forgotten by the store)."""

    @abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Give up a lease; False when it was no longer held by it."""

    @abstractmethod
    async def holder(self, name: str) -> Holder | None:
        """Who holds `name` now, or None when nobody does."""


class RateLimiter(ABC):
    """A token bucket (GCRA) per key: up to `limit` requests at once, refilling at `limit` per `window_seconds`.

    Atomic per key across replicas; state expires once a key's bucket is full again.
    """

    @abstractmethod
    async def hit(self, key: str, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        """Spend `cost` units of `key`'s bucket if they are there. A refused hit spends nothing, and its
        `retry_after_seconds` says when the same hit would be allowed."""


class Backend(ABC):
    """The connections shared by every component built on them; nothing is opened before start()."""

    name: str

    @abstractmethod
    async def start(self) -> None:
        """Open connections."""

    @abstractmethod
    async def stop(self) -> None:
        """Close subscriptions and connections."""

    @abstractmethod
    async def ping(self, timeout_seconds: float = 2.0) -> str | None:
        """None when the backend answers within the timeout, else why not."""

    @abstractmethod
    def cache(self, keyspace: KeySpace) -> Cache:
        """A cache in `keyspace`."""

    @abstractmethod
    def pubsub(self, keyspace: KeySpace) -> PubSub:
        """A publisher/subscriber in `keyspace`, with its own publisher id."""

    @abstractmethod
    def locks(self, keyspace: KeySpace) -> Locks:
        """Locks named in `keyspace`."""

    @abstractmethod
    def limiter(self, keyspace: KeySpace) -> RateLimiter:
        """Rate limits keyed in `keyspace`."""
