"""Builds the coordination backend the settings ask for: Redis for a URL, in-memory for an empty one."""

from __future__ import annotations

import time

from services.core.clock import MonotonicClock
from services.core.coordination.base import Backend
from services.core.coordination.bundle import Coordination
from services.core.coordination.keys import KeySpace
from services.core.coordination.memory import MemoryBackend
from services.core.coordination.redis_backend import RedisBackend
from services.core.coordination.redis_connection import RedisOptions
from services.core.settings import Settings


def build_backend(
    redis_url: str, *, options: RedisOptions | None = None, clock: MonotonicClock = time.monotonic
) -> Backend:
    """A Redis backend for `redis_url`, or the in-memory one when it is empty. Opens nothing.

    Processes hosting several services (`bullant serve all`) build one backend and give each service a view of it
    (`Coordination.for_service`): with the in-memory backend that is what lets one service hear another.
    """
    url = redis_url.strip()
    if not url:
        return MemoryBackend(clock)
    return RedisBackend(url, options, clock)


def build_coordination(
    redis_url: str,
    keyspace: KeySpace,
    *,
    options: RedisOptions | None = None,
    clock: MonotonicClock = time.monotonic,
) -> Coordination:
    """A Coordination bundle owning its own backend (see build_backend)."""
    return Coordination(build_backend(redis_url, options=options, clock=clock), keyspace)


def keyspace_for(settings: Settings, service: str) -> KeySpace:
    """The KeySpace of `service` in the app and environment the settings name."""
    return KeySpace(settings.app_name, settings.env.value, service)
