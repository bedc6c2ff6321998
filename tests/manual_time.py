"""A Timer for tests whose time moves only when the test moves it, so schedules and rate limits are checked exactly
and cannot flake under load."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from tests.support import eventually


class ManualTime:
    """A services.core.clock.Timer on a clock the test advances.

    A sleeper wakes when the clock reaches its deadline. `advance(seconds)` moves the clock forward deadline by
    deadline, and after waking each sleeper waits (in wall time, through eventually()) until the code under test has
    come to rest on a sleep again before it moves on, so everything due within the span runs, in order, and nothing
    after it. With `autojump` every sleep moves the clock to its own deadline at once: for tests that only need
    paced code to get through, not to check when.

    `sleeps` lists every duration asked for, in order.
    """

    def __init__(self, start: float = 1000.0, *, autojump: bool = False) -> None:
        self._now = start
        self.autojump = autojump
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.autojump:
            self._now += seconds
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    @property
    def sleeping(self) -> int:
        """How many sleepers wait for the clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float, *, sleepers: int = 1, timeout: float = 10.0) -> None:
        """Move the clock `seconds` forward, running what falls due on the way. `sleepers` is how many tasks sleep
        on this clock when the code under test is at rest (one feed task: 1)."""
        target = self._now + seconds
        while True:
            await eventually(lambda: self.sleeping >= sleepers, timeout=timeout)
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            while (deadline := self.next_deadline()) is not None and deadline <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                future.set_result(None)
        self._now = target
