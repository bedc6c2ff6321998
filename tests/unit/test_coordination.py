"""Coordination logic without I/O: key namespacing, the publish envelope and gap counting, Redis glob matching, and
the in-memory backend's TTLs, fencing tokens and GCRA arithmetic on a clock the tests move by hand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

import pytest

from services.core.coordination import (
    Holder,
    KeySpace,
    LeaderElection,
    Lease,
    Locks,
    MemoryBackend,
    RedisBackend,
    build_backend,
    build_coordination,
    keyspace_for,
)
from services.core.coordination.envelope import GapDetector, Sequencer, seal, unseal
from services.core.coordination.memory import ExpiringStore, redis_glob_to_regex
from services.core.coordination.tasks import cancel_and_wait
from services.core.errors import Unavailable
from tests.support import make_settings


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- keys -----------------------------------------------------------------------------------------------------


def test_keys_and_channels_are_namespaced_by_app_env_and_service() -> None:
    keyspace = KeySpace("bullant", "prod", "signal")
    assert keyspace.key("quote:AAPL") == "bullant:prod:signal:quote:AAPL"
    assert keyspace.key("lock", "engine") == "bullant:prod:signal:lock:engine"
    assert keyspace.channel("ticks.AAPL") == "bullant:prod:signal:ticks.AAPL"
    assert keyspace.pattern("ticks.*") == "bullant:prod:signal:ticks.*"
    assert keyspace.scan_pattern() == "bullant:prod:signal:*"
    assert keyspace.relative("bullant:prod:signal:ticks.AAPL") == "ticks.AAPL"
    assert keyspace.relative("bullant:prod:market:ticks.AAPL") == "bullant:prod:market:ticks.AAPL"
    assert keyspace.for_service("market").key("x") == "bullant:prod:market:x"


@pytest.mark.parametrize(
    ("app", "env", "service"),
    [("bull:ant", "prod", "signal"), ("bullant", "pr od", "signal"), ("bullant", "prod", ""), ("bullant", "*", "x")],
)
def test_keyspace_parts_may_not_hold_separators_whitespace_or_globs(app: str, env: str, service: str) -> None:
    with pytest.raises(ValueError, match="KeySpace"):
        KeySpace(app, env, service)


def test_empty_key_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        KeySpace("bullant", "prod", "signal").key("")


def test_keyspace_follows_the_settings() -> None:
    settings = make_settings(app_name="bullant", env="dev")
    assert keyspace_for(settings, "market").prefix == "bullant:dev:market"


def test_an_empty_redis_url_means_the_in_memory_backend() -> None:
    assert isinstance(build_backend(""), MemoryBackend)
    assert isinstance(build_backend("  "), MemoryBackend)
    assert isinstance(build_backend("redis://127.0.0.1:6379/0"), RedisBackend)
    with pytest.raises(ValueError, match="not a Redis URL"):
        build_backend("http://127.0.0.1:6379")


async def test_a_redis_bundle_opens_nothing_before_start() -> None:
    coordination = build_coordination("redis://127.0.0.1:1/0", KeySpace("bullant", "local", "market"))
    with pytest.raises(RuntimeError, match="not started"):
        await coordination.cache.get("x")
    assert not await coordination.ping()


async def test_an_unreachable_redis_is_an_outage_whose_detail_stays_out_of_the_message() -> None:
    coordination = build_coordination("redis://127.0.0.1:1/0", KeySpace("bullant", "local", "market"))
    await coordination.start()
    try:
        with pytest.raises(Unavailable) as caught:
            await coordination.cache.get_many(["a", "b"])
    finally:
        await coordination.stop()
    assert caught.value.reason == "CACHE_UNAVAILABLE"
    assert caught.value.message == "the platform's cache is unavailable for now; try again shortly"
    assert "127.0.0.1" not in caught.value.message
    assert "MGET" in caught.value.detail
    assert "127.0.0.1:1" in caught.value.detail
    assert caught.value.retry_after_seconds == 1.0


async def test_calls_after_stop_are_a_quiet_outage_not_a_crash() -> None:
    # A background job finishing late during shutdown meets an ordinary Unavailable, which it handles as an outage.
    coordination = build_coordination("redis://127.0.0.1:1/0", KeySpace("bullant", "local", "market"))
    await coordination.start()
    await coordination.stop()
    with pytest.raises(Unavailable, match="cache is unavailable") as caught:
        await coordination.cache.set("feed:sim", b"{}", ttl_seconds=10)
    assert "stopped" in caught.value.detail
    with pytest.raises(Unavailable):
        await coordination.locks.acquire("feed:sim", 10)
    assert not await coordination.ping()


# --- envelope and gaps ----------------------------------------------------------------------------------------


def test_the_envelope_round_trips_and_passes_foreign_payloads_through() -> None:
    publisher = Sequencer().publisher
    envelope = unseal(seal(publisher, 7, b"payload"))
    assert (envelope.publisher, envelope.sequence, envelope.data) == (publisher, 7, b"payload")
    foreign = unseal(b"plain text from redis-cli")
    assert (foreign.publisher, foreign.data) == (None, b"plain text from redis-cli")


def test_sequences_count_per_channel() -> None:
    sequencer = Sequencer()
    assert [sequencer.next("a"), sequencer.next("a"), sequencer.next("b"), sequencer.next("a")] == [1, 2, 1, 3]
    assert Sequencer().publisher != sequencer.publisher


def test_gaps_are_counted_per_stream_and_duplicates_dropped() -> None:
    gaps = GapDetector()
    stream, other = (None, "ticks", b"p" * 16), (None, "ticks", b"q" * 16)
    assert gaps.observe(stream, 5) == 0, "the first message seen cannot reveal a gap"
    assert gaps.observe(stream, 6) == 0
    assert gaps.observe(stream, 10) == 3
    assert gaps.observe(stream, 10) is None
    assert gaps.observe(stream, 8) is None
    assert gaps.observe(other, 1) == 0


def test_gap_detector_forgets_the_least_recently_seen_streams() -> None:
    gaps = GapDetector(max_streams=2)
    a, b, c = ((None, name, b"p" * 16) for name in "abc")
    gaps.observe(a, 1)
    gaps.observe(b, 1)
    gaps.observe(a, 2)
    gaps.observe(c, 1)  # evicts b
    assert gaps.observe(b, 9) == 0
    assert gaps.observe(a, 3) is not None


# --- Redis glob semantics -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("ticks.*", ["ticks.", "ticks.AAPL", "ticks.a.b"], ["tick.AAPL", "xticks.A"]),
        ("h?llo", ["hello", "hallo"], ["hllo", "heello"]),
        ("h[ae]llo", ["hello", "hallo"], ["hillo"]),
        ("h[^e]llo", ["hallo"], ["hello"]),
        ("h[a-c]llo", ["hbllo"], ["hdllo"]),
        (r"a\*b", ["a*b"], ["axb"]),
        ("bars.[AM]*", ["bars.AAPL", "bars.MSFT"], ["bars.XOM"]),
    ],
)
def test_redis_glob_patterns(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = redis_glob_to_regex(pattern)
    assert all(regex.fullmatch(name) for name in matches)
    assert not any(regex.fullmatch(name) for name in misses)


# --- the in-memory backend on a hand-moved clock --------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock)


KEYSPACE = KeySpace("bullant", "test", "unit")


async def test_cache_entries_expire_exactly_at_their_ttl(clock: FakeClock, memory: MemoryBackend) -> None:
    cache = memory.cache(KEYSPACE)
    await cache.set("k", b"v", ttl_seconds=10)
    clock.advance(9.999)
    assert await cache.get("k") == b"v"
    assert await cache.ttl("k") == pytest.approx(0.001)
    clock.advance(0.001)
    assert await cache.get("k") is None
    assert await cache.set_if_absent("k", b"w") is True
    assert await cache.ttl("k") == math.inf


async def test_increment_keeps_a_fixed_window(clock: FakeClock, memory: MemoryBackend) -> None:
    cache = memory.cache(KEYSPACE)
    assert await cache.increment("n", ttl_seconds=60) == 1
    clock.advance(59)
    assert await cache.increment("n", ttl_seconds=60) == 2
    clock.advance(1)
    assert await cache.increment("n", ttl_seconds=60) == 1, "the window ends 60 s after the first increment"


async def test_invalid_ttls_are_refused(memory: MemoryBackend) -> None:
    cache = memory.cache(KEYSPACE)
    for ttl in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match="ttl_seconds"):
            await cache.set("k", b"v", ttl_seconds=ttl)


def test_expired_entries_are_purged_even_if_never_read_again(clock: FakeClock) -> None:
    store: ExpiringStore[bytes] = ExpiringStore(clock)
    for i in range(1000):
        store.put(f"k{i}", b"v", clock() + 5)
    clock.advance(5)
    store.put("fresh", b"v", None)
    assert store.keys() == ["fresh"]
    for _ in range(1000):
        store.put("same", b"v", clock() + 100)  # re-set many times: stale heap entries must not pile up
    assert len(store._expiries) <= 2 * len(store.keys()) + 64


async def test_lock_leases_expire_on_the_clock_and_tokens_keep_growing(clock: FakeClock, memory: MemoryBackend) -> None:
    locks = memory.locks(KEYSPACE)
    first = await locks.acquire("engine", 10, owner="a")
    assert first is not None
    assert first.expires_at == clock() + 10
    clock.advance(9.9)
    assert await locks.acquire("engine", 10, owner="b") is None
    renewed = await locks.renew(first)
    assert renewed is not None
    assert renewed.expires_at == clock() + 10
    clock.advance(10)
    assert await locks.renew(renewed) is None
    second = await locks.acquire("engine", 10, owner="b")
    assert second is not None
    assert second.token > first.token
    assert await locks.release(second)
    third = await locks.acquire("engine", 10, owner="c")
    assert third is not None
    assert third.token > second.token


async def test_gcra_allows_a_burst_of_limit_then_one_per_interval(clock: FakeClock, memory: MemoryBackend) -> None:
    limiter = memory.limiter(KEYSPACE)
    decisions = [await limiter.hit("user", limit=5, window_seconds=1.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[-1].retry_after_seconds == pytest.approx(0.2)
    clock.advance(0.1)
    refused = await limiter.hit("user", limit=5, window_seconds=1.0)
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.1)
    clock.advance(0.1)
    assert (await limiter.hit("user", limit=5, window_seconds=1.0)).allowed
    clock.advance(1.0)
    idle = await limiter.hit("user", limit=5, window_seconds=1.0)
    assert (idle.allowed, idle.remaining) == (True, 4), "an idle bucket is full again"


async def test_a_big_cost_waits_for_enough_refill(clock: FakeClock, memory: MemoryBackend) -> None:
    limiter = memory.limiter(KEYSPACE)
    assert (await limiter.hit("export", limit=4, window_seconds=8.0, cost=3)).allowed
    refused = await limiter.hit("export", limit=4, window_seconds=8.0, cost=3)
    assert refused.retry_after_seconds == pytest.approx(4.0)  # two more units at 2 s each
    clock.advance(4.0)
    assert (await limiter.hit("export", limit=4, window_seconds=8.0, cost=3)).allowed


async def test_rate_limit_buckets_vanish_once_full_again(clock: FakeClock, memory: MemoryBackend) -> None:
    limiter = memory.limiter(KEYSPACE)
    await limiter.hit("user", limit=10, window_seconds=60)
    assert memory.live_keys() == ["bullant:test:unit:rate:user"]
    clock.advance(6)
    assert memory.live_keys() == []


@pytest.mark.parametrize(("limit", "window", "cost"), [(0, 1.0, 1), (3, 0.0, 1), (3, 1.0, 0), (3, 1.0, 4)])
async def test_impossible_rate_limits_are_refused(memory: MemoryBackend, limit: int, window: float, cost: int) -> None:
    with pytest.raises(ValueError, match=r"limit|window|cost"):
        await memory.limiter(KEYSPACE).hit("k", limit, window, cost)


async def test_subscriptions_check_their_arguments(memory: MemoryBackend) -> None:
    pubsub = memory.pubsub(KEYSPACE)
    with pytest.raises(ValueError, match="at least one"):
        pubsub.subscribe()
    with pytest.raises(TypeError, match="not a single string"):
        pubsub.subscribe("ticks")
    with pytest.raises(ValueError, match="max_pending"):
        pubsub.subscribe(["ticks"], max_pending=0)


async def test_dropped_counts_add_up_in_missed_before(memory: MemoryBackend) -> None:
    pubsub = memory.pubsub(KEYSPACE)
    async with pubsub.subscribe(["t"], max_pending=3) as subscription:
        for i in range(10):
            await pubsub.publish("t", bytes([i]))
        kept = [await subscription.get(timeout_seconds=0) for _ in range(3)]
        assert await subscription.get(timeout_seconds=0) is None
    assert [m.data for m in kept if m] == [bytes([7]), bytes([8]), bytes([9])]
    assert sum(m.missed_before for m in kept if m) == subscription.missed == subscription.dropped == 7


def test_leader_election_refuses_renewals_slower_than_the_lease(memory: MemoryBackend) -> None:
    async def job(_: object) -> None:
        return None

    with pytest.raises(ValueError, match="renew_every_seconds"):
        LeaderElection(memory.locks(KEYSPACE), "engine", job, ttl_seconds=1.0, renew_every_seconds=1.0)


class LossyLocks(Locks):
    """Locks whose renew loses a cancellation, as redis-py's socket writes do under Python 3.11's wait_for."""

    def __init__(self, inner: Locks) -> None:
        self.inner = inner
        self.clock = inner.clock
        self.renewing = asyncio.Event()

    async def acquire(self, name: str, ttl_seconds: float, owner: str | None = None) -> Lease | None:
        return await self.inner.acquire(name, ttl_seconds, owner)

    async def renew(self, lease: Lease, ttl_seconds: float | None = None) -> Lease | None:
        self.renewing.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost on the way, not re-raised
            await asyncio.sleep(0.05)
        return await self.inner.renew(lease, ttl_seconds)

    async def release(self, lease: Lease) -> bool:
        return await self.inner.release(lease)

    async def holder(self, name: str) -> Holder | None:
        return await self.inner.holder(name)


async def test_a_leader_stops_even_when_a_cancellation_is_lost() -> None:
    memory = MemoryBackend()
    locks = LossyLocks(memory.locks(KEYSPACE))
    running: list[int] = []

    async def job(lease: Lease) -> None:
        running.append(lease.token)
        try:
            await asyncio.Event().wait()
        finally:
            running.remove(lease.token)

    election = LeaderElection(locks, "engine", job, ttl_seconds=0.4)
    await election.start()
    await asyncio.wait_for(locks.renewing.wait(), timeout=5)
    await asyncio.wait_for(election.stop(), timeout=5)  # guards against a hang, not a speed check
    assert running == []
    assert not election.is_leader
    assert await locks.holder("engine") is None, "the lease was released"


async def test_stop_returns_only_once_the_job_has_ended_even_when_the_job_loses_a_cancellation() -> None:
    # The job's last steps use stores the process stops right after the elector: it must not outlive stop().
    memory = MemoryBackend()
    started = asyncio.Event()
    cancellations = 0
    ended = False

    async def job(lease: Lease) -> None:
        nonlocal cancellations, ended
        started.set()
        try:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    cancellations += 1
                    if cancellations > 1:  # the first is lost, as redis-py's wait_for can lose one on 3.11
                        raise
        finally:
            ended = True

    election = LeaderElection(memory.locks(KEYSPACE), "feed:sim", job, ttl_seconds=10.0)
    await election.start()
    await asyncio.wait_for(started.wait(), timeout=5)
    await asyncio.wait_for(election.stop(), timeout=60)  # a hang guard, not a speed check
    assert ended, "the job was still running after stop() returned"
    assert cancellations == 2
    assert await memory.locks(KEYSPACE).holder("feed:sim") is None, "the lease was released"


async def test_cancel_and_wait_repeats_a_lost_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    cancellations = 0

    async def stubborn() -> None:
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations > 3:
                    raise

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.INFO, logger="bullant.coordination"):
        await cancel_and_wait(task, patience_seconds=0.05, warn_after_seconds=0.1)
    assert task.cancelled()
    assert cancellations == 4
    # Slow to stop is INFO; a task that outlives warn_after_seconds is a WARNING.
    assert [(r.levelname, "0s after" in r.getMessage()) for r in caplog.records] == [
        ("INFO", True),
        ("WARNING", True),
        ("WARNING", True),
    ]
