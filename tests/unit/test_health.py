"""HealthService state: overall status follows the hosted services; Watch reports every change and ends on shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from services.core.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, DependencyMonitor, HealthService, Readiness
from services.core.startup import DependencyUnreachable

MARKET = "bullant.market.v1.MarketService"
SIGNAL = "bullant.signal.v1.SignalService"


def _watch(health: HealthService, service: str) -> Any:
    no_context: Any = None  # Watch never touches its context
    return health.Watch(health_pb2.HealthCheckRequest(service=service), no_context).__aiter__()


def test_overall_is_serving_only_when_every_service_is() -> None:
    health = HealthService([MARKET, SIGNAL])
    assert health.status() == NOT_SERVING
    health.set(MARKET, SERVING)
    assert health.status() == NOT_SERVING
    health.set(SIGNAL, SERVING)
    assert health.status() == SERVING
    health.set(SIGNAL, NOT_SERVING)
    assert health.status() == NOT_SERVING
    assert health.status("nope") is None


def test_shutdown_is_permanent() -> None:
    health = HealthService([MARKET])
    health.set_all(SERVING)
    health.enter_graceful_shutdown()
    health.set(MARKET, SERVING)
    assert health.status(MARKET) == NOT_SERVING
    assert health.status() == NOT_SERVING


async def test_watch_reports_shutdown_that_happens_while_a_message_is_in_flight() -> None:
    health = HealthService([MARKET])
    health.set_all(SERVING)
    watch = _watch(health, MARKET)
    first = await watch.__anext__()
    assert first.status == SERVING
    # Shutdown begins before the stream asks for its next message.
    health.enter_graceful_shutdown()
    rest = [message.status async for message in watch]
    assert rest == [NOT_SERVING]


async def test_watch_of_unknown_service_says_so() -> None:
    health = HealthService([MARKET])
    watch = _watch(health, "bullant.nope.v1.Nope")
    assert (await watch.__anext__()).status == SERVICE_UNKNOWN
    health.enter_graceful_shutdown()
    assert [m.status async for m in watch] == []


def test_readiness_tells_listeners_about_changes_of_overall_state_only() -> None:
    readiness = Readiness()
    heard: list[bool] = []
    readiness.subscribe(heard.append)
    readiness.report("database", ok=True)
    readiness.report("database", ok=False, detail="refused")
    readiness.report("redis", ok=False, detail="timeout")
    readiness.report("database", ok=True)
    assert readiness.failing == {"redis": "timeout"}
    readiness.report("redis", ok=True)
    assert heard == [False, True]
    assert readiness.ready


async def test_dependency_monitor_reports_failure_and_recovery() -> None:
    readiness = Readiness()
    answers: list[str | Exception | None] = [None, "connection refused", RuntimeError("probe broke"), None]
    timeouts: list[float] = []

    async def probe(timeout: float) -> str | None:
        timeouts.append(timeout)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monitor = DependencyMonitor("database", probe, readiness, interval_seconds=60, timeout_seconds=3)
    assert await monitor.check()
    assert readiness.ready
    assert not await monitor.check()
    assert readiness.failing == {"database": "connection refused"}
    assert not await monitor.check()
    assert readiness.failing == {"database": "RuntimeError: probe broke"}
    assert await monitor.check()
    assert readiness.ready
    assert timeouts == [3, 3, 3, 3]
    assert monitor.checks == 4


async def test_a_probe_gets_its_own_timeout_however_often_it_runs() -> None:
    # Checking every 0.2 s (as tests and impatient operators configure) must not turn a 0.3 s answer on a busy
    # machine into an outage: the probe's bound is the timeout, not the interval.
    timeouts: list[float] = []

    async def probe(timeout: float) -> str | None:
        timeouts.append(timeout)
        return None

    monitor = DependencyMonitor("database", probe, Readiness(), interval_seconds=0.2, timeout_seconds=5)
    assert await monitor.check()
    assert timeouts == [5]


async def test_a_monitor_stops_even_when_a_probe_swallows_the_cancellation() -> None:
    started = asyncio.Event()

    async def stubborn(timeout: float) -> str | None:
        # Like asyncio.timeout on Python 3.11 when a cancellation and the timeout coincide: the cancel is lost.
        if not started.is_set():
            return None
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "cancellation swallowed"
        return None

    monitor = DependencyMonitor("redis", stubborn, Readiness(), interval_seconds=0.01, timeout_seconds=0.01)
    await monitor.start()
    started.set()
    await asyncio.sleep(0.05)  # the loop is now inside the stubborn probe
    await asyncio.wait_for(monitor.stop(), timeout=5)


async def test_a_monitor_with_a_start_up_wait_refuses_to_start_on_a_dependency_that_never_answers() -> None:
    probed = 0

    async def refused(timeout: float) -> str | None:
        nonlocal probed
        probed += 1
        return "Error 111 connecting to 127.0.0.1:1"

    readiness = Readiness()
    monitor = DependencyMonitor(
        "redis", refused, readiness, startup_wait_seconds=0, startup_hint="Check BULLANT_REDIS_URL."
    )
    with pytest.raises(DependencyUnreachable, match="Check BULLANT_REDIS_URL"):
        await monitor.start()
    assert probed == 1
    await monitor.stop()


async def test_a_monitor_with_a_start_up_wait_starts_once_the_dependency_answers() -> None:
    answers = ["Connection refused", None, None]

    async def probe(timeout: float) -> str | None:
        return answers.pop(0) if answers else None

    readiness = Readiness()
    monitor = DependencyMonitor("redis", probe, readiness, interval_seconds=60, startup_wait_seconds=30)
    await monitor.start()
    try:
        assert readiness.ready
    finally:
        await monitor.stop()
