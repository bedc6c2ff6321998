"""One runner for the long jobs a replica runs in the background (backtests, training jobs; next the notification
dispatcher's and the trading reconciler's batches), whatever the job computes.

A submitted job is stored QUEUED (with its request id, so a retried request finds it instead of starting another),
waits for one of the runner's slots, and runs as a task of this replica. Its progress reaches local watchers at
once and the store about once a heartbeat. Watchers on other replicas follow the stored job. Cancelling from any
replica marks the stored job finished; the running replica sees it at its next heartbeat (the store refuses the
beat) and stops the work. A job whose heartbeat stops – its replica died – is marked FAILED INTERRUPTED by whoever
reads it next, and a replica restarted with the same identity (services.core.replica) fails its own at once.

The domain supplies the record (`JobRecord`: how a job looks queued, running, failed, cancelled, with progress;
`JobRecordMixin` derives its id, whether it is finished and its last beat), the storage (`JobStore`), and the work
(`JobWork`): a coroutine that computes, reports progress through its `JobControl`, stores its own successful end and
returns it. Its wiring gives the runner's `JobOptions` (slots, the replica's identity, clock, heartbeat). Limits (how
many jobs an account may queue) and request validation stay in the domain's service layer; the runner only counts
what is active for it (`active`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from services.core.clock import WallClock, utc_now
from services.core.errors import AlreadyExists

log = logging.getLogger("bullant.jobs")

ProgressT = TypeVar("ProgressT")
ProgressT_contra = TypeVar("ProgressT_contra", contravariant=True)


class JobRecord(Protocol[ProgressT]):
    """A stored job as the runner sees it; each domain's job record implements it (frozen, changed by copies)."""

    @property
    def record_id(self) -> str:
        """The job's id."""
        ...

    @property
    def request_digest(self) -> str:
        """The digest of the request that submitted it (request-id idempotency compares it)."""
        ...

    @property
    def progress(self) -> ProgressT: ...

    @property
    def is_finished(self) -> bool:
        """True in a final state (succeeded, failed, cancelled): nothing changes it any more."""
        ...

    @property
    def last_beat(self) -> datetime:
        """When its runner last proved it alive: the heartbeat, else the start, else the creation (naive UTC)."""
        ...

    def running(self, now: datetime) -> Self:
        """The job as it starts running at `now`."""
        ...

    def with_progress(self, progress: ProgressT) -> Self: ...

    def failed(self, now: datetime, reason: str, message: str) -> Self:
        """The job FAILED at `now` with `reason` (an upper-case code, e.g. INTERRUPTED) and a message for the user."""
        ...

    def cancelled(self, now: datetime) -> Self: ...


class FinalState(Protocol):
    """A job's state as JobRecordMixin reads it: an enum whose final members say so."""

    @property
    def finished(self) -> bool: ...


class JobRecordMixin:
    """The members of JobRecord every stored job derives the same way, for a frozen dataclass with `state`,
    `create_time`, `start_time` and `heartbeat_time` fields that names its id field in ID_FIELD."""

    __slots__ = ()

    ID_FIELD: ClassVar[str]
    state: FinalState
    create_time: datetime
    start_time: datetime | None
    heartbeat_time: datetime | None

    @property
    def record_id(self) -> str:
        """The job's id: its ID_FIELD."""
        value: str = getattr(self, self.ID_FIELD)
        return value

    @property
    def is_finished(self) -> bool:
        """True in a final state (succeeded, failed, cancelled)."""
        return self.state.finished

    @property
    def last_beat(self) -> datetime:
        """The heartbeat, else the start, else the creation."""
        return self.heartbeat_time or self.start_time or self.create_time


JobT = TypeVar("JobT", bound="JobRecord[Any]")


class JobStore(Protocol[JobT, ProgressT_contra]):
    """Where a kind of job is stored (the owner's shard for backtests, the global database for training)."""

    async def insert(self, job: JobT) -> JobT | None:
        """Store a new job; the stored job instead when another one already holds its request id."""
        ...

    async def reload(self, job: JobT) -> JobT | None:
        """The job as stored now (None when it was deleted)."""
        ...

    async def save_if_active(self, job: JobT) -> bool:
        """Store `job` unless the stored one is already finished (cancelled, interrupted): False then."""
        ...

    async def heartbeat(self, job: JobT, progress: ProgressT_contra, now: datetime) -> bool:
        """Record that the job is alive with `progress`; False when the stored job is no longer active (cancelled
        or declared interrupted elsewhere): the runner stops the work."""
        ...

    async def orphans(self, runner_id: str) -> list[JobT]:
        """The active jobs recorded as run by `runner_id`."""
        ...


class JobFailed(Exception):
    """The work failed for a reason the user is told: `reason` and `message` are stored on the job; `detail`
    (a traceback from a worker process, say) goes to the log only."""

    def __init__(self, reason: str, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.detail = detail


class JobControl(Generic[ProgressT]):
    """What a running job's work holds: progress reporting (from the event loop or from a worker thread) and the
    stop request (set when the job is cancelled, interrupted or the replica stops; a thread checks `stop`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, publish: Callable[[ProgressT], None]) -> None:
        self._loop = loop
        self._publish = publish
        self.stop = threading.Event()

    def report(self, progress: ProgressT) -> None:
        """Publish `progress` to watchers (thread-safe; the next heartbeat stores the latest)."""
        if _running_loop() is self._loop:
            self._publish(progress)
        else:
            self._loop.call_soon_threadsafe(self._publish, progress)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class JobWork(Protocol[JobT, ProgressT]):
    """Runs one job: reports progress through `control`, stops promptly when cancelled (asyncio cancellation, and
    `control.stop` for work in a thread), stores the job's successful end with `JobStore.save_if_active` (with
    whatever else it stores in the same transaction) and returns it – or None when the store refused it because the
    job was cancelled at the last moment. Raises JobFailed for a failure the user should read."""

    def __call__(self, job: JobT, control: JobControl[ProgressT], /) -> Awaitable[JobT | None]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMessages:
    """What users read on a job that did not finish by itself ('backtest', 'run it again'; 'training', 'train
    again')."""

    restarted: str
    shut_down: str
    abandoned: str
    failed: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """How a replica runs one kind of job, given by its wiring: `slots` jobs at once, as `runner_id` (the replica's
    identity across restarts, services.core.replica; empty: a fresh one of this runner only), on `clock`, each
    running job beating every `heartbeat_seconds`; an active job that has not beaten for `stale_seconds` is
    abandoned."""

    slots: int = 1
    runner_id: str = ""
    clock: WallClock = utc_now
    heartbeat_seconds: float = 1.0
    stale_seconds: float = 30.0


@dataclass(slots=True)
class _Run(Generic[JobT]):
    job: JobT
    control: JobControl[Any]
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stopped: bool = False  # the runner stopped it (cancelled, interrupted elsewhere, shutting down)

    def publish(self, job: JobT) -> None:
        self.job = job
        self.changed.set()


class JobRunner(Generic[JobT, ProgressT]):
    """A replica's jobs of one kind (a Component: start() fails this replica's orphans, stop() ends local jobs as
    FAILED INTERRUPTED)."""

    def __init__(
        self, store: JobStore[JobT, ProgressT], messages: JobMessages, *, name: str, options: JobOptions
    ) -> None:
        self._store = store
        self._messages = messages
        self._name = name
        self._slots = asyncio.Semaphore(options.slots)
        self.runner_id = options.runner_id or "runner-" + secrets.token_hex(6)
        self._clock = options.clock
        self._heartbeat = options.heartbeat_seconds
        self._stale = timedelta(seconds=options.stale_seconds)
        self._runs: dict[str, _Run[JobT]] = {}

    async def start(self) -> None:
        """Fail at once the jobs this replica's previous run left queued or running (it was killed: nobody will
        finish them); other replicas' abandoned jobs are marked when read."""
        for job in await self._store.orphans(self.runner_id):
            await self.interrupt(job, self._messages.restarted)

    async def stop(self) -> None:
        """Stop the local jobs; each is recorded FAILED INTERRUPTED."""
        runs = list(self._runs.values())
        for run in runs:
            self._stop(run)
        for run in runs:
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
            await self.interrupt(run.job, self._messages.shut_down)

    # -- submitting -------------------------------------------------------------------------------------------------

    async def same_request(self, found: JobT | None, digest: str, what: str) -> JobT | None:
        """The job already submitted with a request id (`found`, from the store), settled; REQUEST_ID_REUSED when
        it was submitted for another request (`what`: 'backtest', 'training job')."""
        if found is None:
            return None
        if found.request_digest != digest:
            raise AlreadyExists(f"this request id was used for a different {what}", reason="REQUEST_ID_REUSED")
        return await self.settled(found)

    async def active(self, jobs: list[JobT]) -> list[JobT]:
        """Those of `jobs` (stored as queued or running) still active once abandoned ones are marked."""
        return [job for job in [await self.settled(job) for job in jobs] if not job.is_finished]

    async def submit(self, job: JobT, work: JobWork[JobT, ProgressT], *, what: str) -> JobT:
        """Store `job` (queued) and start `work` on it when a slot frees; the job already stored under its request
        id instead when a concurrent retry won the insert (REQUEST_ID_REUSED when that was another request)."""
        existing = await self._store.insert(job)
        if existing is not None:
            if existing.request_digest != job.request_digest:
                raise AlreadyExists(f"this request id was used for a different {what}", reason="REQUEST_ID_REUSED")
            return existing
        loop = asyncio.get_running_loop()
        run: _Run[JobT] = _Run(job, JobControl(loop, lambda progress: run.publish(run.job.with_progress(progress))))
        self._runs[job.record_id] = run
        run.task = asyncio.create_task(self._execute(run, work), name=f"{self._name} {job.record_id}")
        return job

    # -- reading ----------------------------------------------------------------------------------------------------

    def local(self, job_id: str) -> JobT | None:
        """The job as this replica runs it now (None when it does not run here)."""
        run = self._runs.get(job_id)
        return run.job if run is not None else None

    async def settled(self, job: JobT) -> JobT:
        """`job`, marked FAILED INTERRUPTED first when it is active but nobody has run it for a while."""
        if job.is_finished or job.record_id in self._runs:
            return job
        if self._clock() - job.last_beat <= self._stale:
            return job
        return await self.interrupt(job, self._messages.abandoned)

    async def interrupt(self, job: JobT, message: str) -> JobT:
        """Finish `job` as FAILED INTERRUPTED with `message` (the stored job when it finished meanwhile)."""
        failed = job.failed(self._clock(), "INTERRUPTED", message)
        if await self._store.save_if_active(failed):
            return failed
        return await self._store.reload(job) or failed

    async def watch(self, job: JobT, *, quiet_seconds: float | None = None) -> AsyncIterator[JobT | None]:
        """The job at once, again at each change, and last in its finished state. A job run here is followed in
        memory (None after `quiet_seconds` without a change: a heartbeat for the caller's stream), one run elsewhere
        through the store (yielded again after `quiet_seconds` without a change); an abandoned one is marked
        FAILED INTERRUPTED as it is read. Ends early only when the job is deleted."""
        known = job
        while True:
            run = self._runs.get(known.record_id)
            if run is not None:
                run.changed.clear()
                # The job as yielded: run.job may move on (even finish) while the caller holds this one, and then
                # the loop yields the finished job next instead of returning unseen.
                known = run.job
                yield known
                if known.is_finished:
                    return
                try:
                    async with asyncio.timeout(quiet_seconds):
                        await _either(run.changed, run.done)
                except TimeoutError:
                    yield None
                continue
            stored = await self._store.reload(known)
            if stored is None:
                return
            known = await self.settled(stored)
            yield known
            if known.is_finished:
                return
            await self._follow_stored(known, quiet_seconds)

    async def _follow_stored(self, job: JobT, quiet_seconds: float | None) -> None:
        """Wait until a job run elsewhere changes in the store, starts running here, is deleted, goes stale, or has
        been quiet for `quiet_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = None if quiet_seconds is None else loop.time() + quiet_seconds
        step = min(self._heartbeat, 0.5)
        while deadline is None or loop.time() < deadline:
            await asyncio.sleep(step)
            if job.record_id in self._runs:
                return
            current = await self._store.reload(job)
            if current is None or current.progress != job.progress or current.is_finished:
                return
            if self._clock() - current.last_beat > self._stale:
                return

    # -- cancelling -------------------------------------------------------------------------------------------------

    async def cancel(self, job: JobT) -> JobT:
        """Cancel `job` (queued or running, here or elsewhere); a finished one is returned unchanged."""
        job = await self.settled(job)
        if job.is_finished:
            return job
        cancelled = job.cancelled(self._clock())
        if not await self._store.save_if_active(cancelled):
            return await self._store.reload(job) or job  # it finished meanwhile
        run = self._runs.get(job.record_id)
        if run is not None:
            self._stop(run)
        return cancelled

    def _stop(self, run: _Run[JobT]) -> None:
        run.stopped = True
        run.control.stop.set()
        if run.task is not None:
            run.task.cancel()

    # -- running ----------------------------------------------------------------------------------------------------

    async def _execute(self, run: _Run[JobT], work: JobWork[JobT, ProgressT]) -> None:
        job_id = run.job.record_id
        try:
            async with self._slots:
                running = run.job.running(self._clock())
                if run.stopped or not await self._store.save_if_active(running):
                    return  # cancelled while queued
                run.publish(running)
                await self._run(run, work)
        except asyncio.CancelledError:
            if not run.stopped:
                raise
            current = await self._store.reload(run.job)
            if current is not None:
                run.publish(current)
        except JobFailed as failure:
            if failure.detail:
                log.error("%s %s failed: %s\n%s", self._name, job_id, failure.message, failure.detail)
            await self._fail(run, failure.reason, failure.message)
        except Exception:
            log.exception("%s %s failed", self._name, job_id)
            await self._fail(run, "INTERNAL", self._messages.failed)
        finally:
            self._runs.pop(job_id, None)
            run.done.set()
            run.changed.set()

    async def _run(self, run: _Run[JobT], work: JobWork[JobT, ProgressT]) -> None:
        task = asyncio.ensure_future(work(run.job, run.control))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self._heartbeat)
                if not task.done() and not await self._store.heartbeat(run.job, run.job.progress, self._clock()):
                    # Cancelled (or declared interrupted) elsewhere: stop the work and end as the store says.
                    run.stopped = True
                    run.control.stop.set()
                    task.cancel()
            finished = task.result()
        except BaseException:
            run.control.stop.set()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        if finished is not None:
            run.publish(finished)
        else:  # the store refused the end: cancelled at the last moment
            current = await self._store.reload(run.job)
            if current is not None:
                run.publish(current)

    async def _fail(self, run: _Run[JobT], reason: str, message: str) -> None:
        failed = run.job.failed(self._clock(), reason, message)
        if await self._store.save_if_active(failed):
            run.publish(failed)
        else:
            current = await self._store.reload(run.job)
            if current is not None:
                run.publish(current)


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
