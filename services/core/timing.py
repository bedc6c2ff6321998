"""Time as a dependency: a monotonic clock and a way to sleep on it, for code that schedules or paces work (polls,
request spacing, waiting for data), so tests can move time instead of waiting for it."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Timer(Protocol):
    """Seconds on a monotonic clock, and sleeping until some of them have passed."""

    def now(self) -> float:
        """The clock's reading in seconds (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` on this clock (at once, but after letting other tasks run, when not positive)."""
        ...


class SystemTimer:
    """The real clock: time.monotonic (the event loop's clock) and asyncio.sleep."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_TIMER: Timer = SystemTimer()
