"""Pacing a ccxt feed's polls: one request budget per exchange, and each symbol's trade cursor."""

from __future__ import annotations

import asyncio
import dataclasses
import math

from services.core.clock import Timer


@dataclasses.dataclass(slots=True)
class TradeCursor:
    """Where a symbol's trade polling stands: the newest trade time emitted and the trades emitted at that time
    (several trades can share a millisecond, and `since` is inclusive, so they come back on the next poll)."""

    since_ms: int
    keys_at_since: set[str] = dataclasses.field(default_factory=set)

    def admit(self, timestamp: int, key: str) -> bool:
        """Whether a trade is new; advances the cursor when it is. Older trades are never new: ticks only go
        forward."""
        if timestamp < self.since_ms or (timestamp == self.since_ms and key in self.keys_at_since):
            return False
        if timestamp > self.since_ms:
            self.since_ms = timestamp
            self.keys_at_since = set()
        self.keys_at_since.add(key)
        return True


class RequestPacer:
    """Spaces an exchange's requests as ccxt's rate limiter would, on a Timer: each request waits until the one
    before it is `cost × rateLimit` milliseconds behind (ccxt weighs every endpoint in units of the exchange's
    `rateLimit`). Unlike ccxt's own limiter (wall time, no burst credit either way here) it runs on the feed's
    Timer, and one pacer serves every exchange instance of a feed, so live polls and history pages share the
    exchange's budget. Requests go in the order they asked."""

    def __init__(self, timer: Timer) -> None:
        self._timer = timer
        self._ready_at = -math.inf
        self._turn = asyncio.Lock()

    async def wait(self, cost: float, unit_seconds: float) -> None:
        """Return when a request of `cost` units (of `unit_seconds` each) may go."""
        async with self._turn:
            wait = self._ready_at - self._timer.now()
            if wait > 0:
                await self._timer.sleep(wait)
            self._ready_at = max(self._timer.now(), self._ready_at) + max(cost, 0.0) * unit_seconds
