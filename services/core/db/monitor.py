"""Watches the databases and reports them to Readiness, so a service without its database reports NOT_SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.core.db.databases import Databases
from services.core.health import Readiness

log = logging.getLogger("bullant.db")
DEPENDENCY = "database"


class DatabaseMonitor:
    """Pings every database each `interval_seconds`; reports failure at once and recovery when all answer again."""

    def __init__(self, databases: Databases, readiness: Readiness, interval_seconds: float = 5.0) -> None:
        self._databases = databases
        self._readiness = readiness
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self.checks = 0

    async def start(self) -> None:
        """Check once now (so start-up reflects reality), then keep checking in the background."""
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="database-monitor")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> bool:
        """Ping every database once and report the result; True when all answered."""
        results = await self._databases.ping(timeout_seconds=min(self._interval, 5.0))
        failing = {name: why for name, why in results.items() if why is not None}
        was_ready = DEPENDENCY not in self._readiness.failing
        self._readiness.report(DEPENDENCY, not failing, "; ".join(f"{n}: {w}" for n, w in failing.items()))
        self.checks += 1
        if failing and was_ready:
            log.error("database unreachable, reporting NOT_SERVING: %s", failing)
        elif not failing and not was_ready:
            log.info("databases answer again, reporting SERVING")
        return not failing

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:
                log.exception("database health check failed")
