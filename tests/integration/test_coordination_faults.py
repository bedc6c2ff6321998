"""Coordination through Redis outages, on a private redis-server this module kills (SIGKILL) and restarts.

Restarted without persistence, Redis comes back empty: subscriptions must resume and count what they missed, and
a lock Redis forgot must still not be held by two owners at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from services.core.coordination import (
    Coordination,
    LeaderElection,
    Lease,
    Message,
    Subscription,
    build_coordination,
)
from services.core.coordination.redis_pubsub import RedisSubscription
from services.core.errors import Unavailable
from services.core.health import DependencyMonitor, Readiness
from tests.integration.coordination_helpers import (
    FAST_REDIS,
    PrivateRedis,
    SingletonJob,
    fresh_keyspace,
    redis_server_binary,
)
from tests.support import eventually

pytestmark = pytest.mark.integration

Replicas = Callable[[], Awaitable[Coordination]]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(redis_server_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def replicas(private_redis: PrivateRedis) -> AsyncIterator[Replicas]:
    """Makes started Coordination bundles, each with its own connections, all in one test KeySpace."""
    keyspace = fresh_keyspace()
    started: list[Coordination] = []

    async def replica() -> Coordination:
        coordination = build_coordination(private_redis.url, keyspace, options=FAST_REDIS)
        await coordination.start()
        started.append(coordination)
        return coordination

    yield replica
    for coordination in reversed(started):
        await coordination.stop()


async def next_message(subscription: Subscription) -> Message:
    message = await subscription.get(timeout_seconds=5.0)
    assert message is not None, "no message arrived"
    return message


async def test_a_subscriber_resumes_after_a_restart_and_counts_what_it_missed(
    private_redis: PrivateRedis, replicas: Replicas
) -> None:
    subscriber, publisher = await replicas(), await replicas()
    async with subscriber.pubsub.subscribe(["ticks.AAPL"], patterns=["bars.*"]) as subscription:
        assert isinstance(subscription, RedisSubscription)
        for i in range(3):
            await publisher.pubsub.publish("ticks.AAPL", f"before-{i}".encode())
        assert [(await next_message(subscription)).data for _ in range(3)] == [b"before-0", b"before-1", b"before-2"]

        private_redis.kill()
        for i in range(4):
            # The publisher keeps numbering: each failed publish is a message subscribers never got.
            with pytest.raises(Unavailable):
                await publisher.pubsub.publish("ticks.AAPL", f"during-{i}".encode())
        await eventually(lambda: not subscription.live)
        await private_redis.restart()
        await eventually(lambda: subscription.reconnects >= 1, timeout=10.0)

        await publisher.pubsub.publish("ticks.AAPL", b"after")
        await publisher.pubsub.publish("bars.AAPL", b"bar after")
        after, bar = await next_message(subscription), await next_message(subscription)

    assert (after.data, after.missed_before) == (b"after", 4)
    assert (bar.channel, bar.pattern, bar.data) == ("bars.AAPL", "bars.*", b"bar after"), "patterns resubscribed"
    assert (subscription.reconnects, subscription.missed, subscription.dropped) == (1, 4, 0)


async def test_a_lock_redis_forgot_is_not_taken_while_its_lease_may_live(
    private_redis: PrivateRedis, replicas: Replicas
) -> None:
    a, b = await replicas(), await replicas()
    held = await a.locks.acquire("engine", ttl_seconds=3.0, owner="a")
    assert held is not None
    assert await b.locks.acquire("engine", 3.0, owner="b") is None  # b has seen a's lease

    private_redis.kill()
    with pytest.raises(Unavailable):
        await b.locks.acquire("engine", 3.0, owner="b")
    await private_redis.restart()
    assert await a.locks.holder("engine") is None, "a restart without persistence forgets the lease"

    taken: list[tuple[float, Lease]] = []

    async def b_takes_over() -> bool:
        asked_at = b.locks.clock()
        lease = await b.locks.acquire("engine", 3.0, owner="b")
        if lease is not None:
            taken.append((asked_at, lease))
        return lease is not None

    await eventually(b_takes_over, timeout=10.0, interval=0.05)
    asked_at, lease_b = taken[0]
    assert asked_at >= held.expires_at, "b took the lock while a's lease could still have been live"
    assert lease_b.token > held.token, "the new holder's fencing token must be larger"
    assert await a.locks.renew(held) is None
    assert await a.locks.release(held) is False


async def test_leadership_passes_through_a_restart_without_two_leaders(
    private_redis: PrivateRedis, replicas: Replicas
) -> None:
    job = SingletonJob()
    elections = [
        LeaderElection((await replicas()).locks, "live-engine", job, ttl_seconds=1.5, owner=f"replica-{i}")
        for i in range(2)
    ]
    for election in elections:
        await election.start()
    try:
        await eventually(lambda: job.runner is not None)
        first = job.leases[0]
        private_redis.kill()
        await eventually(lambda: any(e.is_leader for e in elections))  # the leader keeps its job while it may
        await private_redis.restart()
        # The leader learns at its next renewal that Redis forgot its lease and stops its job; a new term follows.
        await eventually(lambda: len(job.leases) >= 2 and job.runner is not None, timeout=10.0)
        assert job.overlaps == 0, "two replicas ran the singleton job at once"
        assert job.leases[-1].token > first.token
    finally:
        for election in elections:
            await election.stop()


async def test_health_follows_redis_down_and_back(private_redis: PrivateRedis, replicas: Replicas) -> None:
    coordination = await replicas()
    readiness = Readiness()
    monitor = DependencyMonitor("redis", coordination.problem, readiness, interval_seconds=0.1, timeout_seconds=1.0)
    await monitor.start()
    try:
        assert readiness.ready
        await coordination.cache.set("k", b"v", ttl_seconds=5)
        private_redis.kill()
        await eventually(lambda: not readiness.ready)
        assert readiness.failing["redis"]
        health = await coordination.health(timeout_seconds=1.0)
        assert not health.ok
        assert health.detail
        with pytest.raises(Unavailable):
            await coordination.cache.get("k")
        await private_redis.restart()
        await eventually(lambda: readiness.ready, timeout=10.0)
        assert await coordination.cache.get("k") is None, "Redis came back empty"
        await coordination.cache.set("k", b"again", ttl_seconds=5)
        assert await coordination.cache.get("k") == b"again"
    finally:
        await monitor.stop()


async def test_subscribing_while_redis_is_down_fails_clearly(private_redis: PrivateRedis, replicas: Replicas) -> None:
    coordination = await replicas()
    private_redis.kill()
    with pytest.raises(Unavailable, match="cannot subscribe"):
        async with coordination.pubsub.subscribe(["ticks"]):
            pass
