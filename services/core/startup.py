"""Errors that stop a process from starting, with the exit code the `bullant` command ends with, and the bounded
wait for a dependency (database, Redis) that does not answer yet."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ClassVar

from services.core.backoff import backoff_delay
from services.core.clock import MonotonicClock

log = logging.getLogger("bullant.startup")

# Exit codes of `bullant` (README, Running services).
EXIT_STARTUP_FAILED = 1
EXIT_CONFIGURATION = 2
# sysexits.h EX_UNAVAILABLE: what the process needs did not answer; trying again later may work.
EXIT_DEPENDENCY_UNREACHABLE = 69

# Pauses between attempts: 0.5 s doubling to 5 s, so a dependency that comes up is found within seconds.
_FIRST_PAUSE_SECONDS = 0.5
_LONGEST_PAUSE_SECONDS = 5.0


class StartupError(Exception):
    """The process cannot start as configured; the message says what to do about it."""

    exit_code: ClassVar[int] = EXIT_STARTUP_FAILED


class ConfigurationError(StartupError):
    """What was asked for cannot be served as configured (e.g. a service that is not built); exit code 2, like a bad
    setting."""

    exit_code = EXIT_CONFIGURATION


class DependencyUnreachable(StartupError):
    """A dependency did not answer within BULLANT_STARTUP_WAIT_SECONDS; exit code 69."""

    exit_code = EXIT_DEPENDENCY_UNREACHABLE


async def wait_until_reachable(
    dependency: str,
    probe: Callable[[], Awaitable[str | None]],
    *,
    wait_seconds: float,
    hint: str,
    clock: MonotonicClock = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Return once `probe()` answers None (reachable). Until then log one line per failed attempt, saying why and
    how long is left, and try again with backoff; after `wait_seconds` (0: no second attempt) raise
    DependencyUnreachable with the last reason and `hint` (which setting to check)."""
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        problem = await probe()
        if problem is None:
            if attempt > 1:
                log.info("%s answers (attempt %d)", dependency, attempt)
            return
        left = wait_seconds - (clock() - started)
        if left <= 0:
            waited = f"within {wait_seconds:g}s" if wait_seconds else "(BULLANT_STARTUP_WAIT_SECONDS=0: no waiting)"
            raise DependencyUnreachable(f"{dependency} did not answer {waited}: {problem}. {hint}")
        pause = min(backoff_delay(attempt - 1, _FIRST_PAUSE_SECONDS, _LONGEST_PAUSE_SECONDS, jitter_floor=0.5), left)
        log.warning(
            "waiting for %s (attempt %d, giving up in %.0fs): %s",
            dependency,
            attempt,
            left,
            problem,
            extra={"dependency": dependency, "attempt": attempt},
        )
        await sleep(pause)
