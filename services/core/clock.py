"""Time as a dependency: the kinds of clock the platform injects, and the system's own, so tests can move time
instead of waiting for it.

- `WallClock` – now as a naive UTC datetime, the way every DateTime column stores a moment; `utc_now` is the
  system's. Services take one as `clock` for what they store, compare with stored times or show.
- `EpochClock` – seconds since the Unix epoch (`time.time`): the lifetimes of tokens and their claims.
- `MonotonicClock` – seconds on a monotonic clock (`time.monotonic`, the event loop's clock), of which only
  differences mean anything: expiries in memory, leases, rate limits, start-up waits, progress.
- `Timer` – a monotonic clock and a way to sleep on it, for code that schedules or paces work (polls, request
  spacing, waiting for data); `SYSTEM_TIMER` is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

WallClock = Callable[[], datetime]
EpochClock = Callable[[], float]
MonotonicClock = Callable[[], float]


def utc_now() -> datetime:
    """Now in UTC, naive, as every DateTime column stores it: the system's WallClock."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_naive_utc(moment: datetime) -> datetime:
    """`moment` as naive UTC: an aware datetime converted, a naive one taken to be UTC already."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


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
