"""Tick fan-out: the feed leader publishes encoded tick batches on pub-sub; every replica's hub receives each batch
once and hands its ticks to the local subscribers' bounded queues, conflating for those that fall behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable

from services.core.auth.identity import Identity
from services.core.auth.service_identity import SERVICE_ROLE
from services.core.coordination import PubSub
from services.core.coordination.follow import follow_channel, until_live
from services.core.errors import ResourceExhausted
from services.market.wire import DATA, SYMBOL, Piece, split_tick_batch

log = logging.getLogger("bullant.market.streaming")

TICKS_CHANNEL = "ticks"
# Messages the hub's pub-sub subscription may hold unread; the hub dispatches synchronously, so this only absorbs
# bursts while the event loop is busy elsewhere.
_HUB_MAX_PENDING = 10_000


class Subscriber:
    """One stream's queue of encoded ticks, bounded by `capacity` (plus one per symbol when conflating).

    Conflating: when the queue overflows, only the newest pending tick of each symbol stays; the others are counted
    as dropped. Not conflating: an overflow marks the subscriber `overflowed` and empties the queue, and the stream
    ends. Either way memory stays bounded however slow the client is.
    """

    def __init__(self, symbols: frozenset[str], *, capacity: int, conflate: bool) -> None:
        self.symbols = symbols
        self.capacity = capacity
        self.conflate = conflate
        self.wake = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self.total_dropped = 0
        self.dropped: dict[str, int] = {}
        self._pending: list[Piece] = []

    def offer(self, pieces: list[Piece]) -> None:
        if self.overflowed or not pieces:
            return
        self._pending.extend(pieces)
        if len(self._pending) > self.capacity:
            if self.conflate:
                self._conflate()
            else:
                self.overflowed = True
                self._pending.clear()
        self.wake.set()

    def _conflate(self) -> None:
        newest: dict[str, Piece] = {}
        for piece in self._pending:
            newest[piece[SYMBOL]] = piece
        dropped = len(self._pending) - len(newest)
        for piece in self._pending:
            if newest[piece[SYMBOL]] is not piece:
                self.dropped[piece[SYMBOL]] = self.dropped.get(piece[SYMBOL], 0) + 1
        self.total_dropped += dropped
        # Keep arrival order among the survivors, so each symbol's ticks stay in sequence order.
        self._pending = [piece for piece in self._pending if newest[piece[SYMBOL]] is piece]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self, limit: int) -> list[bytes]:
        """Up to `limit` queued ticks, oldest first."""
        batch = self._pending[:limit]
        del self._pending[:limit]
        if not self._pending:
            self.wake.clear()
        return [piece[DATA] for piece in batch]

    def take_drops(self) -> dict[str, int]:
        """Drops since the previous call, per symbol."""
        drops, self.dropped = self.dropped, {}
        return drops

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class TickHub:
    """The replica's single pub-sub subscription to ticks, dispatching to local subscribers; a Component."""

    def __init__(self, pubsub: PubSub, draining: asyncio.Event | None = None) -> None:
        self._pubsub = pubsub
        # Set when the server drains: every stream is told to end (clients reconnect elsewhere).
        self._draining = draining
        self._drain_task: asyncio.Task[None] | None = None
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._live = asyncio.Event()
        self.received_batches = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tick-hub")
        if self._draining is not None:
            self._drain_task = asyncio.create_task(self._close_on_drain(self._draining), name="tick-hub-drain")
        # Live before start() returns: a tick published after start-up reaches subscribers of this replica.
        await until_live(self._task, self._live)

    async def _close_on_drain(self, draining: asyncio.Event) -> None:
        await draining.wait()
        self.close_all()

    async def stop(self) -> None:
        self.close_all()
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, symbols: Iterable[str], *, capacity: int, conflate: bool) -> Subscriber:
        subscriber = Subscriber(frozenset(symbols), capacity=capacity, conflate=conflate)
        if self._draining is not None and self._draining.is_set():
            subscriber.close()
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """End every stream (the server is draining)."""
        for subscriber in list(self._subscribers):
            subscriber.close()

    async def publish(self, encoded_batch: bytes) -> None:
        """Send an encoded TickBatch to every replica's subscribers (this one's included)."""
        await self._pubsub.publish(TICKS_CHANNEL, encoded_batch)

    def dispatch(self, encoded_batch: bytes) -> None:
        """Hand the ticks of one batch to the subscribers that want them; one filtering per distinct symbol set."""
        try:
            pieces = split_tick_batch(encoded_batch)
        except (ValueError, UnicodeDecodeError):
            log.warning("dropped a malformed tick batch of %d bytes", len(encoded_batch))
            return
        self.received_batches += 1
        filtered: dict[frozenset[str], list[Piece]] = {}
        for subscriber in self._subscribers:
            wanted = filtered.get(subscriber.symbols)
            if wanted is None:
                symbols = subscriber.symbols
                wanted = [piece for piece in pieces if piece[SYMBOL] in symbols]
                filtered[subscriber.symbols] = wanted
            subscriber.offer(wanted)

    async def _run(self) -> None:
        await follow_channel(
            self._pubsub, TICKS_CHANNEL, self.dispatch, self._live, max_pending=_HUB_MAX_PENDING, what="tick"
        )


class TickStreams:
    """Opens tick subscriptions on the replica's hub with each stream's queue capacity, at most `max_per_account`
    open at a time per account on this server. The limit guards against one user's many streams; the platform's own
    services (the gateway's shared tick streams, the signal engine's) are not limited."""

    def __init__(self, hub: TickHub, *, capacity: int, max_per_account: int) -> None:
        self._hub = hub
        self._capacity = capacity
        self._max_per_account = max_per_account
        self._open: Counter[int] = Counter()

    @contextlib.asynccontextmanager
    async def open(
        self, symbols: Iterable[str], *, identity: Identity | None, conflate: bool
    ) -> AsyncIterator[Subscriber]:
        """A subscriber to `symbols` for as long as the context lasts; RESOURCE_EXHAUSTED TOO_MANY_STREAMS over the
        limit."""
        account = identity.account_id if identity is not None else 0
        limited = identity is None or SERVICE_ROLE not in identity.roles
        if limited and self._open[account] >= self._max_per_account:
            raise ResourceExhausted(
                f"at most {self._max_per_account} tick streams per account on this server",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=5.0,
            )
        subscriber = self._hub.subscribe(symbols, capacity=self._capacity, conflate=conflate)
        self._open[account] += 1
        try:
            yield subscriber
        finally:
            self._hub.unsubscribe(subscriber)
            self._open[account] -= 1
            if self._open[account] <= 0:
                del self._open[account]
