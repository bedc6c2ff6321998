"""The job runner (services/core/jobs.py) on an in-memory store: slots, progress, request-id idempotency,
cancellation from this and another replica, failures, abandoned and orphaned jobs, shutdown, thread work; and the
record members every domain's job derives alike (JobRecordMixin)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Self

import pytest

from services.core.errors import AlreadyExists
from services.core.jobs import JobControl, JobFailed, JobMessages, JobOptions, JobRecordMixin, JobRunner
from tests.support import eventually

MESSAGES = JobMessages(
    restarted="restarted; again", shut_down="shut down; again", abandoned="abandoned; again", failed="it failed"
)
START = datetime(2026, 1, 5, 9, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    record_id: str
    request_digest: str = ""
    request_id: str | None = None
    state: str = "QUEUED"
    progress: int = 0
    runner_id: str = ""
    create_time: datetime = START
    start_time: datetime | None = None
    heartbeat_time: datetime | None = None
    end_time: datetime | None = None
    failure: tuple[str, str] | None = None

    @property
    def is_finished(self) -> bool:
        return self.state in {"SUCCEEDED", "FAILED", "CANCELLED"}

    @property
    def last_beat(self) -> datetime:
        return self.heartbeat_time or self.start_time or self.create_time

    def running(self, now: datetime) -> Self:
        return replace(self, state="RUNNING", start_time=now, heartbeat_time=now)

    def with_progress(self, progress: int) -> Self:
        return replace(self, progress=progress)

    def failed(self, now: datetime, reason: str, message: str) -> Self:
        return replace(self, state="FAILED", end_time=now, failure=(reason, message))

    def cancelled(self, now: datetime) -> Self:
        return replace(self, state="CANCELLED", end_time=now)

    def succeeded(self, now: datetime) -> Self:
        return replace(self, state="SUCCEEDED", end_time=now)


class Store:
    """One store shared by every runner of a test, as a database is shared by replicas."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.beats: list[tuple[str, int]] = []

    async def insert(self, job: Job) -> Job | None:
        for stored in self.jobs.values():
            if job.request_id is not None and stored.request_id == job.request_id:
                return stored
        self.jobs[job.record_id] = job
        return None

    async def reload(self, job: Job) -> Job | None:
        return self.jobs.get(job.record_id)

    async def save_if_active(self, job: Job) -> bool:
        stored = self.jobs.get(job.record_id)
        if stored is None or stored.is_finished:
            return False
        self.jobs[job.record_id] = job
        return True

    async def heartbeat(self, job: Job, progress: int, now: datetime) -> bool:
        stored = self.jobs.get(job.record_id)
        if stored is None or stored.is_finished:
            return False
        self.beats.append((job.record_id, progress))
        self.jobs[job.record_id] = replace(stored, progress=progress, heartbeat_time=now)
        return True

    async def orphans(self, runner_id: str) -> list[Job]:
        return [job for job in self.jobs.values() if job.runner_id == runner_id and not job.is_finished]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Gate:
    """Work that reports the progress it is handed and finishes when told (or fails as told)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.steps: asyncio.Queue[int | BaseException | None] = asyncio.Queue()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, job: Job, control: JobControl[int]) -> Job | None:
        self.started.append(job.record_id)
        try:
            while True:
                step = await self.steps.get()
                if step is None:
                    break
                if isinstance(step, BaseException):
                    raise step
                control.report(step)
        except asyncio.CancelledError:
            self.cancelled.append(job.record_id)
            raise
        done = job.with_progress(100).succeeded(self.clock())
        return done if await self.store.save_if_active(done) else None


def runner(
    store: Store, clock: Clock, *, slots: int = 1, runner_id: str = "r1", beat: float = 0.01
) -> JobRunner[Job, int]:
    options = JobOptions(slots=slots, runner_id=runner_id, clock=clock, heartbeat_seconds=beat)
    return JobRunner(store, MESSAGES, name="job", options=options)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def collect(jobs: JobRunner[Job, int], job: Job, into: list[Job | None]) -> None:
    async for item in jobs.watch(job):
        into.append(item)


async def test_a_job_runs_reports_progress_and_ends_succeeded(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)
    work = Gate(store, clock)
    job = await jobs.submit(Job(record_id="a", runner_id="r1"), work, what="job")
    assert store.jobs["a"].state == "QUEUED"
    seen: list[Job | None] = []
    watcher = asyncio.create_task(collect(jobs, job, seen))
    await eventually(lambda: work.started == ["a"])
    await work.steps.put(40)
    await eventually(lambda: any(item is not None and item.progress == 40 for item in seen))
    await eventually(lambda: ("a", 40) in store.beats)  # the heartbeat stores the latest progress
    await work.steps.put(None)
    await asyncio.wait_for(watcher, 5)
    final = seen[-1]
    assert final is not None
    assert final.state == "SUCCEEDED"
    assert final.progress == 100
    assert [item.state for item in seen if item is not None][:1] in (["QUEUED"], ["RUNNING"])
    assert store.jobs["a"].state == "SUCCEEDED"
    assert jobs.local("a") is None


async def test_slots_bound_the_jobs_running_at_once(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock, slots=1)
    work = Gate(store, clock)
    await jobs.submit(Job(record_id="a"), work, what="job")
    await jobs.submit(Job(record_id="b"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    for _ in range(50):  # every step b could take without a slot (the store answers at once)
        await asyncio.sleep(0)
    assert work.started == ["a"]
    assert store.jobs["b"].state == "QUEUED"
    await work.steps.put(None)
    await eventually(lambda: work.started == ["a", "b"])
    await work.steps.put(None)
    await eventually(lambda: store.jobs["b"].state == "SUCCEEDED")


async def test_a_request_id_finds_its_job_and_refuses_another_request(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)
    work = Gate(store, clock)
    first = await jobs.submit(Job(record_id="a", request_id="r", request_digest="d1"), work, what="widget")
    again = await jobs.submit(Job(record_id="b", request_id="r", request_digest="d1"), work, what="widget")
    assert again.record_id == first.record_id
    assert set(store.jobs) == {"a"}
    with pytest.raises(AlreadyExists) as refused:
        await jobs.submit(Job(record_id="c", request_id="r", request_digest="d2"), work, what="widget")
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert "different widget" in str(refused.value)
    assert await jobs.same_request(None, "d1", "widget") is None
    found = await jobs.same_request(store.jobs["a"], "d1", "widget")
    assert found is not None
    assert found.record_id == "a"
    with pytest.raises(AlreadyExists):
        await jobs.same_request(store.jobs["a"], "d2", "widget")
    await work.steps.put(None)
    await eventually(lambda: store.jobs["a"].is_finished)


async def test_cancelling_a_running_job_stops_its_work(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)
    work = Gate(store, clock)
    job = await jobs.submit(Job(record_id="a"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    seen: list[Job | None] = []
    watcher = asyncio.create_task(collect(jobs, job, seen))
    cancelled = await jobs.cancel(store.jobs["a"])
    assert cancelled.state == "CANCELLED"
    await asyncio.wait_for(watcher, 5)
    assert work.cancelled == ["a"]
    last = seen[-1]
    assert last is not None
    assert last.state == "CANCELLED"
    assert store.jobs["a"].state == "CANCELLED"
    # A finished job is returned unchanged.
    assert (await jobs.cancel(store.jobs["a"])).state == "CANCELLED"


async def test_a_job_cancelled_while_queued_never_starts(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock, slots=1)
    work = Gate(store, clock)
    await jobs.submit(Job(record_id="a"), work, what="job")
    queued = await jobs.submit(Job(record_id="b"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    await jobs.cancel(queued)
    await work.steps.put(None)
    await eventually(lambda: jobs.local("b") is None)
    assert work.started == ["a"]
    assert store.jobs["b"].state == "CANCELLED"


async def test_a_job_cancelled_on_another_replica_stops_at_the_next_heartbeat(store: Store, clock: Clock) -> None:
    here = runner(store, clock, runner_id="here")
    there = runner(store, clock, runner_id="there")
    work = Gate(store, clock)
    job = await here.submit(Job(record_id="a", runner_id="here"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    seen: list[Job | None] = []
    watcher = asyncio.create_task(collect(there, job, seen))  # followed through the store
    await eventually(lambda: any(item is not None and item.state == "RUNNING" for item in seen))
    assert (await there.cancel(store.jobs["a"])).state == "CANCELLED"
    await eventually(lambda: work.cancelled == ["a"])
    await eventually(lambda: here.local("a") is None)
    assert store.jobs["a"].state == "CANCELLED"
    await asyncio.wait_for(watcher, 5)
    last = seen[-1]
    assert last is not None
    assert last.state == "CANCELLED"


async def test_failures_are_stored_with_the_users_words(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = runner(store, clock, slots=2)
    work = Gate(store, clock)
    await jobs.submit(Job(record_id="a"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    await work.steps.put(JobFailed("NOT_ENOUGH_DATA", "too few bars", detail="Traceback: secret internals"))
    await eventually(lambda: store.jobs["a"].is_finished)
    assert store.jobs["a"].state == "FAILED"
    assert store.jobs["a"].failure == ("NOT_ENOUGH_DATA", "too few bars")
    assert "secret internals" in caplog.text
    await jobs.submit(Job(record_id="b"), work, what="job")
    await eventually(lambda: work.started == ["a", "b"])
    await work.steps.put(ZeroDivisionError("boom"))
    await eventually(lambda: store.jobs["b"].is_finished)
    assert store.jobs["b"].failure == ("INTERNAL", "it failed")
    assert "ZeroDivisionError" in caplog.text


async def test_an_abandoned_job_is_interrupted_when_read_and_an_orphan_at_start(store: Store, clock: Clock) -> None:
    store.jobs["mine"] = Job(record_id="mine", runner_id="r1", state="RUNNING", start_time=START)
    store.jobs["theirs"] = Job(record_id="theirs", runner_id="r2", state="RUNNING", start_time=START)
    jobs = runner(store, clock, runner_id="r1")
    await jobs.start()
    assert store.jobs["mine"].failure == ("INTERRUPTED", "restarted; again")
    assert store.jobs["theirs"].state == "RUNNING"
    clock.now = START + timedelta(seconds=30)
    assert (await jobs.settled(store.jobs["theirs"])).state == "RUNNING"  # 30 s without a beat is not yet stale
    clock.now = START + timedelta(seconds=31)
    settled = await jobs.settled(store.jobs["theirs"])
    assert settled.failure == ("INTERRUPTED", "abandoned; again")
    assert store.jobs["theirs"] == settled
    assert await jobs.active([store.jobs["mine"], store.jobs["theirs"]]) == []


async def test_a_watcher_of_a_job_whose_runner_died_sees_it_interrupted(store: Store, clock: Clock) -> None:
    store.jobs["a"] = Job(record_id="a", runner_id="gone", state="RUNNING", start_time=START, heartbeat_time=START)
    jobs = runner(store, clock)
    seen: list[Job | None] = []
    watcher = asyncio.create_task(collect(jobs, store.jobs["a"], seen))
    await eventually(lambda: len(seen) >= 1)
    clock.now = START + timedelta(minutes=5)
    await asyncio.wait_for(watcher, 5)
    last = seen[-1]
    assert last is not None
    assert last.failure == ("INTERRUPTED", "abandoned; again")


async def test_stop_interrupts_local_jobs(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)
    work = Gate(store, clock)
    await jobs.submit(Job(record_id="a"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    await jobs.stop()
    assert work.cancelled == ["a"]
    assert store.jobs["a"].failure == ("INTERRUPTED", "shut down; again")


async def test_quiet_local_jobs_give_watchers_a_heartbeat(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)
    work = Gate(store, clock)
    job = await jobs.submit(Job(record_id="a"), work, what="job")
    await eventually(lambda: work.started == ["a"])
    items = jobs.watch(job, quiet_seconds=0.01)
    first = await anext(items)
    assert first is not None
    assert first.state == "RUNNING"
    assert await anext(items) is None
    await work.steps.put(None)
    rest = [item async for item in items]
    last = rest[-1]
    assert last is not None
    assert last.state == "SUCCEEDED"


async def test_work_in_a_thread_reports_and_stops_on_cancel(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)
    reported = threading.Event()

    async def spin(job: Job, control: JobControl[int]) -> Job | None:
        def loop() -> None:
            step = 0
            while not control.stop.is_set():
                step += 1
                reported.set()  # before reporting: the test sees the progress only after this
                control.report(step)
                control.stop.wait(0.001)

        thread = asyncio.ensure_future(asyncio.to_thread(loop))
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            control.stop.set()
            await thread
            raise
        return None

    job = await jobs.submit(Job(record_id="a"), spin, what="job")
    await eventually(lambda: (local := jobs.local("a")) is not None and local.progress > 0)
    assert reported.is_set()
    await jobs.cancel(job)
    await eventually(lambda: jobs.local("a") is None)
    assert store.jobs["a"].state == "CANCELLED"


async def test_an_end_the_store_refuses_leaves_the_stored_state(store: Store, clock: Clock) -> None:
    jobs = runner(store, clock)

    async def lose_the_race(job: Job, control: JobControl[int]) -> Job | None:
        store.jobs[job.record_id] = job.cancelled(clock())  # cancelled elsewhere just before the end is written
        return None

    job = await jobs.submit(Job(record_id="a"), lose_the_race, what="job")
    seen = [item async for item in jobs.watch(job)]
    last = seen[-1]
    assert last is not None
    assert last.state == "CANCELLED"


class WidgetState(IntEnum):
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3

    @property
    def finished(self) -> bool:
        return self is WidgetState.SUCCEEDED


@dataclass(frozen=True, slots=True, kw_only=True)
class Widget(JobRecordMixin):
    ID_FIELD = "widget_id"

    widget_id: str
    state: WidgetState
    create_time: datetime
    start_time: datetime | None = None
    heartbeat_time: datetime | None = None


def test_a_record_derives_its_id_its_end_and_its_last_beat_from_its_fields() -> None:
    queued = Widget(widget_id="w1", state=WidgetState.QUEUED, create_time=START)
    assert queued.record_id == "w1"
    assert not queued.is_finished
    assert queued.last_beat == START  # never started: its creation
    started = replace(queued, state=WidgetState.RUNNING, start_time=START + timedelta(seconds=5))
    assert started.last_beat == START + timedelta(seconds=5)  # not beaten yet: its start
    beaten = replace(started, heartbeat_time=START + timedelta(seconds=9))
    assert beaten.last_beat == START + timedelta(seconds=9)
    assert replace(beaten, state=WidgetState.SUCCEEDED).is_finished
    assert not hasattr(queued, "__dict__")  # the mixin keeps a slotted record slotted


def test_a_runner_without_a_replica_identity_gets_one_of_its_own(store: Store) -> None:
    first = JobRunner(store, MESSAGES, name="job", options=JobOptions())
    second = JobRunner(store, MESSAGES, name="job", options=JobOptions())
    assert first.runner_id.startswith("runner-")
    assert first.runner_id != second.runner_id
    assert JobRunner(store, MESSAGES, name="job", options=JobOptions(runner_id="host:50051")).runner_id == "host:50051"
