"""The Coordination bundle a service receives: cache, pub-sub, locks and rate limits of one KeySpace."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.coordination.base import Backend
from services.core.coordination.keys import KeySpace


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the coordination backend answers, and why not when it does not."""

    backend: str
    ok: bool
    detail: str = ""


class Coordination:
    """Cache, pub-sub, locks and rate limiter of one KeySpace, on one backend; a Component.

    The constructor opens nothing: start() connects and stop() closes subscriptions and connections.
    `for_service` gives views of other services' namespaces on the same connections; views do not own the
    backend, so their start()/stop() do nothing and the bundle that built them must be started first.
    """

    def __init__(self, backend: Backend, keyspace: KeySpace, *, owns_backend: bool = True) -> None:
        self.backend = backend
        self.keyspace = keyspace
        self.cache = backend.cache(keyspace)
        self.pubsub = backend.pubsub(keyspace)
        self.locks = backend.locks(keyspace)
        self.limiter = backend.limiter(keyspace)
        self._owns_backend = owns_backend

    async def start(self) -> None:
        """Connect the backend (when this bundle owns it)."""
        if self._owns_backend:
            await self.backend.start()

    async def stop(self) -> None:
        """Close subscriptions and connections (when this bundle owns the backend)."""
        if self._owns_backend:
            await self.backend.stop()

    async def problem(self, timeout_seconds: float = 2.0) -> str | None:
        """None when the backend answers within the timeout, else why not: the probe for a DependencyMonitor."""
        return await self.backend.ping(timeout_seconds)

    async def ping(self, timeout_seconds: float = 2.0) -> bool:
        """True when the backend answers within the timeout."""
        return await self.backend.ping(timeout_seconds) is None

    async def health(self, timeout_seconds: float = 2.0) -> Health:
        """The backend's health, with the reason when it does not answer (for logs and NOT_SERVING reports)."""
        problem = await self.backend.ping(timeout_seconds)
        return Health(self.backend.name, problem is None, problem or "")

    def for_service(self, service: str) -> Coordination:
        """The same connections in another service's namespace (read its cache, hear its channels)."""
        return Coordination(self.backend, self.keyspace.for_service(service), owns_backend=False)
