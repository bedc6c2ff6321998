"""grpc.health.v1 with a status per service name and overall, whose Watch streams end when the server drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.core.startup import wait_until_reachable

_log = logging.getLogger("bullant.health")
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
OVERALL = ""
# HealthCheckResponse.ServingStatus values are plain ints at run time.
ServingStatus: TypeAlias = int
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Health of each hosted service by its full name ("bullant.market.v1.MarketService") and of the server ("").

    The overall status is SERVING only while every hosted service is. After `enter_graceful_shutdown` every status
    is NOT_SERVING for good, and open Watch streams send that and end, so a draining server is not held open by
    its own health watchers.
    """

    def __init__(self, service_names: Iterable[str]) -> None:
        self._statuses: dict[str, ServingStatus] = {name: NOT_SERVING for name in service_names}
        self._statuses[OVERALL] = NOT_SERVING
        self._changed = asyncio.Event()
        self._version = 0
        self._shutting_down = False

    def status(self, service: str = OVERALL) -> ServingStatus | None:
        """The current status of a service, or None when it is not hosted here."""
        return self._statuses.get(service)

    def set(self, service: str, status: ServingStatus) -> None:
        """Set one service's status (ignored once shutting down); the overall status follows."""
        if self._shutting_down or service == OVERALL:
            return
        if service not in self._statuses:
            raise KeyError(f"service {service!r} is not hosted on this server")
        self._statuses[service] = status
        hosted = [s for name, s in self._statuses.items() if name != OVERALL]
        self._statuses[OVERALL] = SERVING if all(s == SERVING for s in hosted) else NOT_SERVING
        self._notify()

    def set_all(self, status: ServingStatus) -> None:
        """Set every hosted service's status at once."""
        for name in [n for n in self._statuses if n != OVERALL]:
            self.set(name, status)

    def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service, permanently; Watch streams report it and end."""
        if self._shutting_down:
            return
        for name in self._statuses:
            self._statuses[name] = NOT_SERVING
        self._shutting_down = True
        self._notify()

    def _notify(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: ServingStatus | None = None
        while True:
            changed = self._changed
            status = self._statuses.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
                # The status may have changed while the message was being sent: look again before waiting or ending.
                continue
            if self._shutting_down:
                return
            await changed.wait()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        response = health_pb2.HealthListResponse()
        for name, status in self._statuses.items():
            response.statuses[name].status = status
        return response


class Readiness:
    """Which dependencies (database, Redis, ...) are failing right now; the server serves only while none is.

    Monitors report into it; the server listens and turns every hosted service NOT_SERVING while anything fails.
    """

    def __init__(self) -> None:
        self._failing: dict[str, str] = {}
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def ready(self) -> bool:
        """True while no dependency fails."""
        return not self._failing

    @property
    def failing(self) -> dict[str, str]:
        """Failing dependency → why."""
        return dict(self._failing)

    def report(self, dependency: str, ok: bool, detail: str = "") -> None:
        """Record a dependency's state; listeners hear about changes of overall readiness only."""
        was_ready = self.ready
        if ok:
            self._failing.pop(dependency, None)
        else:
            self._failing[dependency] = detail or "failing"
        if self.ready != was_ready:
            for listener in list(self._listeners):
                listener(self.ready)

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call `listener(ready)` whenever overall readiness changes."""
        self._listeners.append(listener)


class DependencyMonitor:
    """Probes one dependency every `interval_seconds` and reports it to Readiness: failure at once, recovery as soon
    as it answers again. `probe(timeout)` returns None when healthy, else why not. A probe may take
    `timeout_seconds` whatever the interval: checking often does not make a slow answer (a busy machine) an outage.

    With `startup_wait_seconds`, start() first waits that long at most for the dependency to answer (a log line per
    attempt), then raises DependencyUnreachable (its message ending with `startup_hint`): a process does not start
    serving on a dependency it never reached."""

    def __init__(
        self,
        dependency: str,
        probe: Callable[[float], Awaitable[str | None]],
        readiness: Readiness,
        *,
        interval_seconds: float = 5.0,
        timeout_seconds: float = 2.0,
        startup_wait_seconds: float | None = None,
        startup_hint: str = "",
    ) -> None:
        self.dependency = dependency
        self._probe = probe
        self._readiness = readiness
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._startup_wait = startup_wait_seconds
        self._startup_hint = startup_hint
        self._task: asyncio.Task[None] | None = None
        self._healthy: bool | None = None
        self._stopped = False
        self.checks = 0

    async def start(self) -> None:
        """Check once now (so start-up reflects reality), then keep checking in the background."""
        if self._startup_wait is not None:
            await wait_until_reachable(
                self.dependency,
                lambda: self._probe(self._timeout),
                wait_seconds=self._startup_wait,
                hint=self._startup_hint,
            )
        await self.check()
        self._stopped = False
        self._task = asyncio.create_task(self._loop(), name=f"{self.dependency}-monitor")

    async def stop(self) -> None:
        """Stop checking. A cancellation that lands just as a probe's own timeout fires can be swallowed
        (asyncio.timeout on Python 3.11), so the loop also checks a flag, and the task is cancelled until it ends."""
        self._stopped = True
        task, self._task = self._task, None
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()

    async def check(self) -> bool:
        """Probe once and report the result; True when the dependency answered."""
        try:
            problem = await self._probe(self._timeout)
        except Exception as error:  # a probe that breaks is itself a failure to report
            problem = f"{type(error).__name__}: {error}"
        healthy = problem is None
        self._readiness.report(self.dependency, healthy, problem or "")
        self.checks += 1
        if not healthy and self._healthy is not False:
            _log.error("%s unreachable, reporting NOT_SERVING: %s", self.dependency, problem)
        elif healthy and self._healthy is False:
            _log.info("%s answers again, reporting SERVING", self.dependency)
        self._healthy = healthy
        return healthy

    async def _loop(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self._interval)
            if not self._stopped:
                await self.check()
