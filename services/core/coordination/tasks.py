"""Stopping background tasks reliably, even when a library loses the cancellation on the way."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("bullant.coordination")


async def cancel_and_wait(
    task: asyncio.Task[Any], *, patience_seconds: float = 5.0, warn_after_seconds: float = 30.0
) -> None:
    """Cancel `task` and return once it has finished, whatever it ended with.

    Python 3.11's asyncio.wait_for, which redis-py wraps around socket writes, drops a cancellation that arrives as
    the write completes, and the task carries on as if never cancelled. So the cancellation is repeated every
    `patience_seconds` until the task is done; loops that must stop should also check a flag of their own. A task
    that is only slow to wind down (its clean-up on a busy machine) is not a fault: the repeats are logged at INFO,
    and a WARNING only once the task has outlived `warn_after_seconds`.
    """
    task.cancel()
    waited = 0.0
    while not task.done():
        await asyncio.wait({task}, timeout=patience_seconds)
        if not task.done():
            waited += patience_seconds
            level = logging.WARNING if waited >= warn_after_seconds else logging.INFO
            log.log(
                level,
                "task %s is still running %.0fs after its cancellation; cancelling it again",
                task.get_name(),
                waited,
            )
            task.cancel()
