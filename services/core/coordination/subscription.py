"""A pub-sub subscription: a bounded queue of messages with counts of what was missed, shared by both backends."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Self

from services.core.coordination.base import Message
from services.core.coordination.envelope import GapDetector, unseal
from services.core.coordination.keys import KeySpace


class Subscription(ABC):
    """Messages on some channels and patterns, in the order each publisher sent them.

    Use as an async context manager (live once entered) and an async iterator, which ends when the subscription
    is closed. Counters, for metrics and drop reports:

    - `received`: messages that arrived from the backend;
    - `missed`: messages known lost: sequence gaps (publishes during an outage, messages sent while reconnecting)
      plus `dropped`;
    - `dropped`: messages thrown away because the consumer fell `max_pending` messages behind (oldest go first);
    - `reconnects`: times the subscription was re-established after losing its connection.

    Each Message's `missed_before` says how many were lost just before it, so consumers can report drops in place.
    """

    def __init__(self, keyspace: KeySpace, channels: Sequence[str], patterns: Sequence[str], max_pending: int) -> None:
        if isinstance(channels, str) or isinstance(patterns, str):
            raise TypeError("channels and patterns are sequences of names, not a single string")
        if not channels and not patterns:
            raise ValueError("subscribe to at least one channel or pattern")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.keyspace = keyspace
        self.channels: tuple[str, ...] = tuple(channels)
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.max_pending = max_pending
        self.received = 0
        self.missed = 0
        self.dropped = 0
        self.reconnects = 0
        self._pending: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._gaps = GapDetector()
        self._closed = False
        self._entered = False
        self._failure: BaseException | None = None

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    @property
    def pending(self) -> int:
        """Messages received and not yet consumed."""
        return len(self._pending)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a subscription can be entered once")
        self._entered = True
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:
            raise StopAsyncIteration
        return message

    async def get(self, timeout_seconds: float | None = None) -> Message | None:
        """The next message; None when the subscription is closed or `timeout_seconds` pass without one."""
        if not self._entered:
            raise RuntimeError("enter the subscription (async with) before reading from it")
        loop = asyncio.get_running_loop()
        deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
        while not self._pending:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                return None
            self._arrived.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return None
        return self._pending.popleft()

    async def close(self) -> None:
        """Stop receiving; pending messages are discarded and iteration ends."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._arrived.set()
        if self._entered:
            await self._close()

    def _deliver(self, full_channel: str, raw: bytes, full_pattern: str | None) -> None:
        """Called by the backend for every message that arrives, in arrival order."""
        if self._closed:
            return
        envelope = unseal(raw)
        channel = self.keyspace.relative(full_channel)
        pattern = None if full_pattern is None else self.keyspace.relative(full_pattern)
        missed = 0
        if envelope.publisher is not None:
            gap = self._gaps.observe((pattern, channel, envelope.publisher), envelope.sequence)
            if gap is None:
                return
            missed = gap
        self.received += 1
        self.missed += missed
        self._pending.append(Message(channel, envelope.data, pattern, missed))
        if len(self._pending) > self.max_pending:
            self._drop_oldest()
        self._arrived.set()

    def _drop_oldest(self) -> None:
        # The next message inherits the dropped one's count, so `missed_before` still adds up to `missed`.
        oldest = self._pending.popleft()
        self.dropped += 1
        self.missed += 1
        head = self._pending[0]
        self._pending[0] = replace(head, missed_before=head.missed_before + oldest.missed_before + 1)

    def _fail(self, error: BaseException) -> None:
        """Called by the backend when it cannot go on (a bug, not an outage): readers get the error."""
        self._failure = error
        self._arrived.set()

    @abstractmethod
    async def _open(self) -> None:
        """Start receiving; return once the subscription is live."""

    @abstractmethod
    async def _close(self) -> None:
        """Stop receiving and release what _open took."""
