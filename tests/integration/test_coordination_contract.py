"""One contract for both coordination backends: the in-memory one and Redis must behave the same.

The memory runs need nothing; the Redis runs use BULLANT_TEST_REDIS_URL (skipped without it, failed in CI). Every
test works in a KeySpace of its own; afterwards every key left in it must be on a short TTL (tombstones of released
locks, rate-limit buckets refilling), never permanent, and the Redis runs delete what is left.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import pytest

from services.core.coordination import (
    Coordination,
    KeySpace,
    LeaderElection,
    Lease,
    MemoryBackend,
    Message,
    Subscription,
    build_coordination,
)
from tests.integration.coordination_helpers import (
    FAST_REDIS,
    SeverableLocks,
    SingletonJob,
    environment_pattern,
    fresh_keyspace,
    redis_delete_all,
    redis_leftovers,
)
from tests.support import eventually

BACKENDS = [pytest.param("memory"), pytest.param("redis", marks=pytest.mark.integration)]


@dataclass
class Cluster:
    """Replicas of one service sharing one store: each replica() is a started Coordination with its own Redis
    connections, or another view of the same MemoryBackend."""

    keyspace: KeySpace
    make: Callable[[KeySpace], Coordination]
    started: list[Coordination] = field(default_factory=list)

    async def replica(self, keyspace: KeySpace | None = None) -> Coordination:
        coordination = self.make(keyspace or self.keyspace)
        await coordination.start()
        self.started.append(coordination)
        return coordination

    async def stop_all(self) -> None:
        for coordination in reversed(self.started):
            await coordination.stop()


class ShiftableClock:
    """time.monotonic, plus an offset a test can move forward to see what would be left once TTLs run out."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


# Everything a test leaves must expire within this; permanent keys are a leak.
MAX_LEFTOVER_TTL = 10.0


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    keyspace = fresh_keyspace()
    # The whole environment of this test, so views of other services' namespaces are checked too.
    everything = environment_pattern(keyspace)
    if request.param == "memory":
        clock = ShiftableClock()
        memory = MemoryBackend(clock)
        result = Cluster(keyspace, lambda ks: Coordination(memory, ks, owns_backend=False))
        yield result
        await result.stop_all()
        await memory.stop()
        clock.offset += MAX_LEFTOVER_TTL
        prefix = everything.removesuffix("*")
        assert [key for key in memory.live_keys() if key.startswith(prefix)] == [], "keys outlived their TTLs"
    else:
        url: str = request.getfixturevalue("redis_url")
        result = Cluster(keyspace, lambda ks: build_coordination(url, ks, options=FAST_REDIS))
        yield result
        await result.stop_all()
        leftovers = await redis_leftovers(url, everything)
        await redis_delete_all(url, everything)
        # A TTL of 0 is a key in its last millisecond (PTTL rounds down); -1 is a key that never expires.
        lasting = {key: ttl for key, ttl in leftovers.items() if not 0 <= ttl <= MAX_LEFTOVER_TTL}
        assert lasting == {}, "keys without a short TTL were left behind"


@pytest.fixture
async def coord(cluster: Cluster) -> Coordination:
    return await cluster.replica()


async def next_message(subscription: Subscription, timeout: float = 5.0) -> Message:
    message = await subscription.get(timeout_seconds=timeout)
    assert message is not None, "no message arrived"
    return message


# --- cache ----------------------------------------------------------------------------------------------------


async def test_cache_stores_deletes_and_reports_ttl(coord: Coordination) -> None:
    cache = coord.cache
    assert await cache.get("absent") is None
    assert await cache.ttl("absent") is None
    await cache.set("quote:AAPL", b"189.5")
    assert await cache.get("quote:AAPL") == b"189.5"
    assert await cache.ttl("quote:AAPL") == math.inf
    await cache.set("quote:AAPL", b"190.0", ttl_seconds=30)
    ttl = await cache.ttl("quote:AAPL")
    assert ttl is not None
    assert 0 < ttl <= 30
    await cache.set("quote:AAPL", b"191.0")
    assert await cache.ttl("quote:AAPL") == math.inf, "a set without TTL makes the key permanent again"
    assert await cache.delete("quote:AAPL") is True
    assert await cache.delete("quote:AAPL") is False
    assert await cache.get("quote:AAPL") is None


async def test_cache_value_expires_after_its_ttl(coord: Coordination) -> None:
    await coord.cache.set("session", b"x", ttl_seconds=0.4)
    await coord.cache.set("keeper", b"y", ttl_seconds=30)
    assert await coord.cache.get("session") == b"x"

    async def expired() -> bool:
        return await coord.cache.get("session") is None

    await eventually(expired, timeout=3.0)
    assert await coord.cache.ttl("session") is None
    assert await coord.cache.get("keeper") == b"y"
    await coord.cache.delete("keeper")


async def test_set_if_absent_lets_exactly_one_concurrent_writer_win(coord: Coordination) -> None:
    results = await asyncio.gather(*(coord.cache.set_if_absent("job:42", f"w{i}".encode(), 0.5) for i in range(20)))
    assert sum(results) == 1
    winner = results.index(True)
    assert await coord.cache.get("job:42") == f"w{winner}".encode()
    assert await coord.cache.set_if_absent("job:42", b"late", 0.5) is False

    async def free_again() -> bool:
        return await coord.cache.set_if_absent("job:42", b"next", 0.3)

    await eventually(free_again, timeout=3.0)
    assert await coord.cache.get("job:42") == b"next"


async def test_increment_is_atomic_and_keeps_the_ttl_it_was_created_with(coord: Coordination) -> None:
    # TTLs long enough that a stalled machine does not expire the key mid-test, within the fixture's leftover bound.
    totals = await asyncio.gather(*(coord.cache.increment("hits", ttl_seconds=8.0) for _ in range(50)))
    assert sorted(totals) == list(range(1, 51))
    assert await coord.cache.increment("hits", amount=-10, ttl_seconds=600) == 40
    ttl = await coord.cache.ttl("hits")
    assert ttl is not None
    assert 0 < ttl <= 8.0, "later TTLs must not extend a fixed window"
    assert await coord.cache.get("hits") == b"40"
    await coord.cache.set("word", b"not a number", ttl_seconds=8)
    with pytest.raises(ValueError, match="not an integer"):
        await coord.cache.increment("word")
    await coord.cache.delete("hits")


async def test_get_many_and_set_many(coord: Coordination) -> None:
    await coord.cache.set_many({"a": b"1", "b": b"2"}, ttl_seconds=8.0)
    assert await coord.cache.get_many(["a", "missing", "b"]) == [b"1", None, b"2"]
    assert await coord.cache.get_many([]) == []
    ttl = await coord.cache.ttl("b")
    assert ttl is not None
    assert 0 < ttl <= 8.0


async def test_keys_of_other_services_are_separate_until_asked_for(cluster: Cluster, coord: Coordination) -> None:
    market = await cluster.replica(cluster.keyspace.for_service("market"))
    await market.cache.set("quote", b"market's", ttl_seconds=8)
    await coord.cache.set("quote", b"mine", ttl_seconds=8)
    assert await market.cache.get("quote") == b"market's"
    assert await coord.cache.get("quote") == b"mine"
    assert await coord.for_service("market").cache.get("quote") == b"market's"


# --- pub-sub --------------------------------------------------------------------------------------------------


async def test_every_subscriber_gets_every_message_in_order(cluster: Cluster, coord: Coordination) -> None:
    publisher = await cluster.replica()
    async with coord.pubsub.subscribe(["ticks.AAPL"]) as first, coord.pubsub.subscribe(["ticks.AAPL"]) as second:
        sent = [f"tick-{i}".encode() for i in range(100)]
        for data in sent:
            await publisher.pubsub.publish("ticks.AAPL", data)
        for subscription in (first, second):
            received = [await next_message(subscription) for _ in sent]
            assert [m.data for m in received] == sent
            assert {(m.channel, m.pattern, m.missed_before) for m in received} == {("ticks.AAPL", None, 0)}
            assert (subscription.received, subscription.missed, subscription.dropped) == (100, 0, 0)


async def test_patterns_match_channels_of_their_own_namespace_only(cluster: Cluster, coord: Coordination) -> None:
    stranger = await cluster.replica(cluster.keyspace.for_service("stranger"))
    async with coord.pubsub.subscribe(channels=["news"], patterns=["ticks.*", "bars.[AM]*"]) as subscription:
        await coord.pubsub.publish("ticks.AAPL", b"1")
        await coord.pubsub.publish("quotes.AAPL", b"not subscribed")
        await stranger.pubsub.publish("ticks.AAPL", b"other namespace")
        await coord.pubsub.publish("bars.MSFT", b"2")
        await coord.pubsub.publish("bars.XOM", b"no match")
        await coord.pubsub.publish("ticks.MSFT", b"3")
        # Published last, after every publish above was accepted: anything wrongly delivered arrives before it.
        await coord.pubsub.publish("news", b"end")
        received: list[Message] = []
        while not received or received[-1].data != b"end":
            received.append(await next_message(subscription))
    assert [(m.channel, m.pattern, m.data) for m in received] == [
        ("ticks.AAPL", "ticks.*", b"1"),
        ("bars.MSFT", "bars.[AM]*", b"2"),
        ("ticks.MSFT", "ticks.*", b"3"),
        ("news", None, b"end"),
    ]


async def test_a_view_of_another_service_hears_its_channels(cluster: Cluster, coord: Coordination) -> None:
    market = await cluster.replica(cluster.keyspace.for_service("market"))
    async with coord.for_service("market").pubsub.subscribe(["ticks.AAPL"]) as subscription:
        await market.pubsub.publish("ticks.AAPL", b"from market")
        message = await next_message(subscription)
    assert (message.channel, message.data) == ("ticks.AAPL", b"from market")


async def test_a_slow_consumer_keeps_only_the_newest_messages_and_counts_the_rest(coord: Coordination) -> None:
    async with coord.pubsub.subscribe(["ticks"], max_pending=5) as subscription:
        for i in range(20):
            await coord.pubsub.publish("ticks", str(i).encode())
        await eventually(lambda: subscription.received == 20)
        assert subscription.pending == 5
        assert (subscription.dropped, subscription.missed) == (15, 15)
        kept = [await next_message(subscription) for _ in range(5)]
    assert [m.data for m in kept] == [b"15", b"16", b"17", b"18", b"19"]
    assert [m.missed_before for m in kept] == [15, 0, 0, 0, 0]


async def test_closing_a_subscription_ends_its_iteration(coord: Coordination) -> None:
    subscription = coord.pubsub.subscribe(["events"])
    live = asyncio.Event()
    seen: list[bytes] = []

    async def consume() -> None:
        async with subscription:
            live.set()
            async for message in subscription:
                seen.append(message.data)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(live.wait(), timeout=5)
    await coord.pubsub.publish("events", b"one")
    await eventually(lambda: seen == [b"one"])
    await subscription.close()
    await asyncio.wait_for(consumer, timeout=5)
    assert subscription.closed


# --- locks ----------------------------------------------------------------------------------------------------


async def test_only_one_of_many_concurrent_acquirers_gets_the_lock(cluster: Cluster, coord: Coordination) -> None:
    other = await cluster.replica()
    attempts = [(coord if i % 2 else other).locks.acquire("engine", 1.0, owner=f"o{i}") for i in range(20)]
    leases = [lease for lease in await asyncio.gather(*attempts) if lease is not None]
    assert len(leases) == 1
    holder = await coord.locks.holder("engine")
    assert holder is not None
    assert (holder.owner, holder.token) == (leases[0].owner, leases[0].token)
    assert await coord.locks.acquire("engine", 1.0, owner=leases[0].owner) is None, "locks are not reentrant"
    assert await coord.locks.release(leases[0])
    assert await coord.locks.holder("engine") is None


async def test_fencing_tokens_strictly_increase_across_holders(cluster: Cluster, coord: Coordination) -> None:
    other = await cluster.replica()
    tokens = []
    for i in range(6):
        lease = await (coord if i % 2 else other).locks.acquire("scheduler", 1.0, owner=f"owner-{i}")
        assert lease is not None
        tokens.append(lease.token)
        assert await (coord if i % 2 else other).locks.release(lease)
    expiring = await coord.locks.acquire("scheduler", 0.2, owner="expires")
    assert expiring is not None

    async def taken() -> bool:
        return await other.locks.acquire("scheduler", 0.5, owner="after-expiry") is not None

    await eventually(taken, timeout=3.0)
    after = await other.locks.holder("scheduler")
    assert after is not None
    assert after.owner == "after-expiry"
    tokens += [expiring.token, after.token]
    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens


async def test_renew_and_release_by_another_owner_or_token_are_refused(coord: Coordination) -> None:
    lease = await coord.locks.acquire("engine", 8.0, owner="rightful")
    assert lease is not None
    impostors = [replace(lease, owner="impostor"), replace(lease, token=lease.token + 1)]
    for impostor in impostors:
        assert await coord.locks.renew(impostor) is None
        assert await coord.locks.release(impostor) is False
    holder = await coord.locks.holder("engine")
    assert holder is not None
    assert (holder.owner, holder.token) == ("rightful", lease.token)
    renewed = await coord.locks.renew(lease, ttl_seconds=9.0)
    assert renewed is not None
    assert renewed.token == lease.token
    assert renewed.ttl_seconds == 9.0
    assert await coord.locks.release(renewed)
    assert await coord.locks.release(renewed) is False


async def test_an_expired_lease_lets_another_take_over_and_fences_the_old_holder(
    cluster: Cluster, coord: Coordination
) -> None:
    other = await cluster.replica()
    old = await coord.locks.acquire("engine", 0.3, owner="old")
    assert old is not None
    new: list[Lease] = []

    async def taken() -> bool:
        lease = await other.locks.acquire("engine", 1.0, owner="new")
        new.extend([lease] if lease else [])
        return lease is not None

    await eventually(taken, timeout=3.0)
    assert new[0].token > old.token
    assert await coord.locks.renew(old) is None
    assert await coord.locks.release(old) is False
    holder = await coord.locks.holder("engine")
    assert holder is not None
    assert holder.owner == "new"
    assert await other.locks.release(new[0])


async def test_renewing_keeps_a_lease_beyond_its_ttl(cluster: Cluster, coord: Coordination) -> None:
    other = await cluster.replica()
    lease = await coord.locks.acquire("engine", 0.4, owner="keeper")
    assert lease is not None
    started = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - started < 1.2:  # three TTLs
        await asyncio.sleep(0.1)
        renewed = await coord.locks.renew(lease)
        assert renewed is not None, "a lease renewed well within its TTL was lost"
        lease = renewed
        assert await other.locks.acquire("engine", 0.4, owner="rival") is None
    assert await coord.locks.release(lease)


# --- leader election ------------------------------------------------------------------------------------------


async def electors(
    cluster: Cluster, job: SingletonJob, count: int, ttl: float = 0.6
) -> list[tuple[LeaderElection, SeverableLocks]]:
    made = []
    for i in range(count):
        locks = SeverableLocks((await cluster.replica()).locks)
        made.append((LeaderElection(locks, "live-engine", job, ttl_seconds=ttl, owner=f"replica-{i}"), locks))
    return made


async def test_exactly_one_elector_runs_the_job(cluster: Cluster) -> None:
    job = SingletonJob()
    candidates = await electors(cluster, job, 3)
    for election, _ in candidates:
        await election.start()
    try:
        await eventually(lambda: job.runner is not None)
        leader = job.runner
        await asyncio.sleep(1.2)  # two lease TTLs: renewals must keep the same leader
        assert job.runner == leader
        assert len(job.leases) == 1
        assert job.overlaps == 0
        assert [e.is_leader for e, _ in candidates].count(True) == 1
    finally:
        for election, _ in candidates:
            await election.stop()
    assert job.running == set()


async def test_another_elector_takes_over_when_the_leader_stops(cluster: Cluster) -> None:
    job = SingletonJob()
    candidates = await electors(cluster, job, 2)
    for election, _ in candidates:
        await election.start()
    try:
        await eventually(lambda: job.runner is not None)
        leader = next(e for e, _ in candidates if e.owner == job.runner)
        await leader.stop()
        await eventually(lambda: job.runner not in (None, leader.owner), timeout=5.0)
        assert job.overlaps == 0
        assert job.leases[-1].token > job.leases[0].token
    finally:
        for election, _ in candidates:
            await election.stop()


async def test_another_elector_takes_over_when_the_leader_loses_the_store(cluster: Cluster) -> None:
    job = SingletonJob()
    candidates = await electors(cluster, job, 2)
    for election, _ in candidates:
        await election.start()
    try:
        await eventually(lambda: job.runner is not None)
        leader, leader_locks = next((e, locks) for e, locks in candidates if e.owner == job.runner)
        first = job.leases[0]
        leader_locks.severed = True  # it can neither renew nor release: its lease must run out
        await eventually(lambda: job.runner not in (None, leader.owner), timeout=5.0)
        assert job.overlaps == 0, "the old leader's job still ran when the new one started"
        assert not leader.is_leader
        assert job.leases[-1].token > first.token
        leader_locks.severed = False
    finally:
        for election, _ in candidates:
            await election.stop()


async def test_a_failing_job_gives_up_leadership_and_runs_again(cluster: Cluster) -> None:
    runs: list[int] = []

    async def flaky(lease: Lease) -> None:
        runs.append(lease.token)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        await asyncio.Event().wait()

    election = LeaderElection((await cluster.replica()).locks, "flaky", flaky, ttl_seconds=0.6)
    await election.start()
    try:
        await eventually(lambda: len(runs) == 2, timeout=5.0)
        assert runs[1] > runs[0]
    finally:
        await election.stop()


# --- rate limits ----------------------------------------------------------------------------------------------


async def test_rate_limiter_allows_the_limit_then_says_how_long_to_wait(cluster: Cluster, coord: Coordination) -> None:
    other = await cluster.replica()
    limit, window = 3, 1.5
    decisions = [await (coord if i % 2 else other).limiter.hit("user:7", limit, window) for i in range(limit)]
    assert [(d.allowed, d.remaining, d.retry_after_seconds) for d in decisions] == [
        (True, 2, 0),
        (True, 1, 0),
        (True, 0, 0),
    ]
    refused = await coord.limiter.hit("user:7", limit, window)
    assert not refused.allowed
    assert refused.remaining == 0
    # One request's worth of the bucket refills every window / limit seconds.
    assert 0 < refused.retry_after_seconds <= window / limit + 0.01
    assert (await coord.limiter.hit("user:8", limit, window)).allowed, "keys are limited separately"
    await asyncio.sleep(refused.retry_after_seconds)
    again = await other.limiter.hit("user:7", limit, window)
    assert again.allowed
    assert again.remaining == 0


async def test_rate_limiter_charges_the_cost_and_refuses_without_charging(coord: Coordination) -> None:
    first = await coord.limiter.hit("export", limit=3, window_seconds=1.0, cost=2)
    assert (first.allowed, first.remaining) == (True, 1)
    too_big = await coord.limiter.hit("export", limit=3, window_seconds=1.0, cost=2)
    assert not too_big.allowed
    assert 0 < too_big.retry_after_seconds <= 1.0 / 3 + 0.01
    fits = await coord.limiter.hit("export", limit=3, window_seconds=1.0, cost=1)
    assert (fits.allowed, fits.remaining) == (True, 0), "the refused hit must not have spent anything"
    with pytest.raises(ValueError, match="cost"):
        await coord.limiter.hit("export", limit=3, window_seconds=1.0, cost=4)


async def test_health_reports_a_reachable_backend(coord: Coordination) -> None:
    assert await coord.ping()
    health = await coord.health()
    assert health.ok
    assert health.backend in ("memory", "redis")
    assert health.detail == ""
