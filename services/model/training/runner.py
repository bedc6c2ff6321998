"""Training jobs of a model replica: queued, run one at a time per worker slot in a separate process (the server
keeps serving), followed by watchers, cancellable from any replica, and registered as CANDIDATE versions.

Progress reaches local watchers at once and the store about once a second (the heartbeat). Another replica
follows the stored progress. CancelTraining from any replica marks the job CANCELLED; the running replica sees it
at its next heartbeat and kills the worker. A job whose heartbeat stops (its replica died or restarted) is marked
FAILED INTERRUPTED by whoever reads it next, so no job stays RUNNING forever; a replica restarted with the same
identity (services.core.replica) fails its own at once when it starts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.core.db.databases import utc_now
from services.core.errors import AlreadyExists, ResourceExhausted
from services.model.forecasting.evaluation import Gate
from services.model.registry.versions import ModelStatus, ModelVersion
from services.model.training.jobs import JobFilter, JobProgress, JobState, Stage, TrainingJob, TrainingSpec, Trigger
from services.model.training.store import JobStore

log = logging.getLogger("bullant.model.training")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingData:
    """The bars a job trains on: open times (naive UTC) and closes, ascending."""

    times: list[datetime]
    closes: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class Trained:
    """What a worker returns: the artifact, the walk-forward metrics (proto field names) and the gate's verdict."""

    artifact: bytes
    metrics: dict[str, object]
    gate: Gate


class WorkerFailed(Exception):
    """The worker reported a failure: `reason` is the job's failure reason."""

    def __init__(self, reason: str, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        # What went wrong inside the worker (a traceback), for the log only: never stored on the job.
        self.detail = detail


class Worker(Protocol):
    """Trains one job: calls `progress` as it goes, returns the result, raises WorkerFailed, and stops promptly
    when cancelled (asyncio cancellation)."""

    def __call__(
        self, spec: TrainingSpec, data: TrainingData, progress: Callable[[JobProgress], None]
    ) -> Awaitable[Trained]: ...


def new_id(prefix: str) -> str:
    return f"{prefix}_" + secrets.token_hex(12)


@dataclass(slots=True)
class _Run:
    job: TrainingJob
    data: TrainingData
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    cancelled: bool = False

    def publish(self, job: TrainingJob) -> None:
        self.job = job
        self.changed.set()


class TrainingRunner:
    """The replica's training jobs (a Component: stop() ends local jobs as FAILED INTERRUPTED)."""

    def __init__(
        self,
        store: JobStore,
        worker: Worker,
        *,
        model_dir: Path,
        workers: int = 1,
        max_queued: int = 10,
        clock: Callable[[], datetime] = utc_now,
        heartbeat_seconds: float = 1.0,
        stale_seconds: float = 30.0,
        runner_id: str = "",
    ) -> None:
        self._store = store
        self._worker = worker
        self._model_dir = model_dir
        self._slots = asyncio.Semaphore(workers)
        self._max_queued = max_queued
        self._clock = clock
        self._heartbeat = heartbeat_seconds
        self._stale = timedelta(seconds=stale_seconds)
        self._runs: dict[str, _Run] = {}
        # The replica's identity across restarts (services.core.replica), or one of this runner only.
        self.runner_id = runner_id or "trainer-" + secrets.token_hex(6)

    async def start(self) -> None:
        """Fail at once the jobs this replica's previous run left queued or running (it was killed: nobody will
        finish them); mark the jobs other replicas stopped beating for as interrupted."""
        for job in await self._store.active_jobs():
            if job.runner_id == self.runner_id:
                await self._interrupt(job, "the service was restarted while the job was queued or running; train again")
            else:
                await self._settled(job)

    async def stop(self) -> None:
        runs = list(self._runs.values())
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        for run in runs:
            if run.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run.task
            await self._interrupt(run.job, "the service stopped while the job was running; train again")

    # -- submitting -------------------------------------------------------------------------------------------------

    async def by_request(self, request_id: str, digest: str) -> TrainingJob | None:
        """The job submitted with `request_id`, None when there is none; REQUEST_ID_REUSED for another request."""
        job = await self._store.job_by_request(request_id)
        if job is None:
            return None
        if job.request_digest != digest:
            raise AlreadyExists("this request id was used for a different training job", reason="REQUEST_ID_REUSED")
        return await self._settled(job)

    async def submit(
        self,
        spec: TrainingSpec,
        data: TrainingData,
        *,
        trigger: Trigger,
        account_id: int,
        request_id: str | None = None,
        digest: str = "",
    ) -> TrainingJob:
        """Store the job QUEUED and start it when a worker slot frees; TRAINING_LIMIT_EXCEEDED when too many wait."""
        waiting = [job for job in await self._store.active_jobs() if not (await self._settled(job)).state.finished]
        if len(waiting) >= self._max_queued:
            raise ResourceExhausted(
                f"{len(waiting)} training jobs are queued or running; wait for one to finish",
                reason="TRAINING_LIMIT_EXCEEDED",
                retry_after_seconds=30.0,
            )
        now = self._clock()
        job = TrainingJob(
            job_id=new_id("job"),
            spec=spec,
            state=JobState.QUEUED,
            trigger=trigger,
            progress=JobProgress(),
            account_id=account_id,
            create_time=now,
            request_id=request_id,
            request_digest=digest,
            runner_id=self.runner_id,
            heartbeat_time=now,
        )
        existing = await self._store.insert_job(job)
        if existing is not None:
            if existing.request_digest != digest:
                raise AlreadyExists("this request id was used for a different training job", reason="REQUEST_ID_REUSED")
            return existing
        run = _Run(job, data)
        self._runs[job.job_id] = run
        run.task = asyncio.create_task(self._execute(run), name=f"training {job.job_id}")
        return job

    # -- reading ----------------------------------------------------------------------------------------------------

    async def job(self, job_id: str) -> TrainingJob | None:
        run = self._runs.get(job_id)
        if run is not None:
            return run.job
        job = await self._store.job(job_id)
        return await self._settled(job) if job is not None else None

    async def jobs(self, filters: JobFilter, *, after: tuple[datetime, str] | None, limit: int) -> list[TrainingJob]:
        """Jobs newest first (see JobStore.jobs), the abandoned ones marked interrupted."""
        return [await self._settled(job) for job in await self._store.jobs(filters, after=after, limit=limit)]

    async def watch(self, job_id: str, *, quiet_seconds: float = 15.0) -> AsyncIterator[TrainingJob | None]:
        """The job at once, again at each change (None when quiet for `quiet_seconds`: a heartbeat), and last in
        its finished state."""
        while True:
            run = self._runs.get(job_id)
            if run is not None:
                run.changed.clear()
                # The job as yielded: run.job may move on (even finish) while the caller holds this one, and then
                # the loop yields the finished job next instead of returning unseen.
                current = run.job
                yield current
                if current.state.finished:
                    return
                try:
                    await asyncio.wait_for(_either(run.changed, run.done), quiet_seconds)
                except TimeoutError:
                    yield None
                continue
            job = await self.job(job_id)
            if job is None:
                return
            yield job
            if job.state.finished:
                return
            await self._follow_stored(job, quiet_seconds)

    async def _follow_stored(self, job: TrainingJob, quiet_seconds: float) -> None:
        """Wait until a job run elsewhere changes (polling the store) or goes quiet."""
        waited = 0.0
        step = min(self._heartbeat, 0.5)
        while waited < quiet_seconds and job.job_id not in self._runs:
            await asyncio.sleep(step)
            waited += step
            current = await self._store.job(job.job_id)
            if current is None or current.progress != job.progress or current.state != job.state:
                return

    # -- cancelling -------------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> TrainingJob | None:
        """Cancel a queued or running job (a finished one is returned unchanged)."""
        job = await self.job(job_id)
        if job is None or job.state.finished:
            return job
        now = self._clock()
        cancelled = replace(job, state=JobState.CANCELLED, end_time=now, heartbeat_time=None)
        if not await self._store.save_job(cancelled, only_if_active=True):
            return await self._store.job(job_id)
        run = self._runs.get(job_id)
        if run is not None and run.task is not None:
            run.cancelled = True
            run.task.cancel()
        return cancelled

    # -- running ----------------------------------------------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        try:
            async with self._slots:
                now = self._clock()
                progress = JobProgress(stage=Stage.LOADING_DATA, fraction=0.0, message="data loaded")
                running = replace(
                    run.job, state=JobState.RUNNING, start_time=now, heartbeat_time=now, progress=progress
                )
                if not await self._store.save_job(running, only_if_active=True):
                    return  # cancelled while queued
                run.publish(running)
                await self._train(run)
        except asyncio.CancelledError:
            if run.cancelled:
                current = await self._store.job(run.job.job_id)
                if current is not None:
                    run.publish(current)
                return
            raise
        except WorkerFailed as failure:
            if failure.detail:
                log.error("training job %s failed: %s\n%s", run.job.job_id, failure.message, failure.detail)
            await self._fail(run, failure.reason, failure.message)
        except Exception:
            log.exception("training job %s failed", run.job.job_id)
            await self._fail(run, "INTERNAL", "training failed; the error is logged")
        finally:
            self._runs.pop(run.job.job_id, None)
            run.done.set()
            run.changed.set()

    async def _fail(self, run: _Run, reason: str, message: str) -> None:
        failed = replace(
            run.job,
            state=JobState.FAILED,
            end_time=self._clock(),
            failure_reason=reason,
            failure_message=message,
            heartbeat_time=None,
        )
        if await self._store.save_job(failed, only_if_active=True):
            run.publish(failed)

    async def _train(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()

        def progress(update: JobProgress) -> None:
            elapsed = loop.time() - started
            remaining = elapsed * (1.0 - update.fraction) / update.fraction if update.fraction > 0.02 else None
            run.publish(replace(run.job, progress=replace(update, remaining_seconds=remaining)))

        work = asyncio.ensure_future(self._worker(run.job.spec, run.data, progress))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self._heartbeat)
                if not work.done() and not await self._store.heartbeat(run.job.job_id, run.job.progress, self._clock()):
                    run.cancelled = True  # cancelled (or declared interrupted) elsewhere
                    work.cancel()
            trained = work.result()
        except asyncio.CancelledError:
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            raise
        saving = JobProgress(stage=Stage.SAVING, fraction=0.99, message="writing the artifact")
        run.publish(replace(run.job, progress=saving))
        await self._register(run, trained)

    async def _register(self, run: _Run, trained: Trained) -> None:
        job, spec = run.job, run.job.spec
        model_id = new_id("mdl")
        relative = Path(spec.symbol) / f"{model_id}.bin"
        path = self._model_dir / relative
        await asyncio.to_thread(_write_atomically, path, trained.artifact)
        now = self._clock()
        version = ModelVersion(
            model_id=model_id,
            algorithm=spec.algorithm,
            parameters=spec.parameters,
            symbol=spec.symbol,
            timeframe=spec.timeframe,
            training_start=run.data.times[0],
            training_end=run.data.times[-1] + spec.timeframe.delta,
            training_bar_count=len(run.data.times),
            metrics=trained.metrics,
            artifact_path=str(relative),
            artifact_sha256=hashlib.sha256(trained.artifact).hexdigest(),
            status=ModelStatus.CANDIDATE,
            gate=trained.gate,
            job_id=job.job_id,
            seed=spec.seed,
            create_time=now,
            update_time=now,
            auto_retrain=spec.auto_retrain,
            parent_model_id=spec.parent_model_id,
        )
        done = JobProgress(stage=Stage.SAVING, fraction=1.0, message="registered " + model_id)
        succeeded = replace(
            job, state=JobState.SUCCEEDED, model_id=model_id, end_time=now, heartbeat_time=None, progress=done
        )
        if await self._store.insert_version(version, succeeded):
            run.publish(succeeded)
        else:  # cancelled at the last moment: the version is not registered
            path.unlink(missing_ok=True)

    # -- interruption -----------------------------------------------------------------------------------------------

    async def _settled(self, job: TrainingJob) -> TrainingJob:
        if job.state.finished or job.job_id in self._runs:
            return job
        beat = job.heartbeat_time or job.start_time or job.create_time
        if self._clock() - beat <= self._stale:
            return job
        return await self._interrupt(job, "the service running the job stopped; train again")

    async def _interrupt(self, job: TrainingJob, message: str) -> TrainingJob:
        failed = replace(
            job,
            state=JobState.FAILED,
            end_time=self._clock(),
            failure_reason="INTERRUPTED",
            failure_message=message,
            heartbeat_time=None,
        )
        if await self._store.save_job(failed, only_if_active=True):
            return failed
        return await self._store.job(job.job_id) or failed


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_bytes(data)
    scratch.replace(path)
