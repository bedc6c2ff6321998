"""Training jobs of a model replica on the platform's job runner (services/core/jobs.py: queue slots, heartbeat,
cancellation from any replica, abandoned jobs marked FAILED INTERRUPTED, request-id idempotency).

What is training's own: a job runs its worker in a separate process (the server keeps serving; cancelling kills
it), its progress carries an estimate of the time left, the replica may hold at most `max_queued` queued or running
jobs, and a trained model is written as an artifact and registered as a CANDIDATE version in the same transaction
that marks the job SUCCEEDED."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.core.clock import WallClock, utc_now
from services.core.errors import ResourceExhausted
from services.core.jobs import JobControl, JobFailed, JobMessages, JobRunner, JobWork
from services.model.forecasting.evaluation import Gate
from services.model.registry.versions import ModelStatus, ModelVersion
from services.model.training.jobs import JobFilter, JobProgress, JobState, Stage, TrainingJob, TrainingSpec, Trigger
from services.model.training.store import JobStore

MESSAGES = JobMessages(
    restarted="the service was restarted while the job was queued or running; train again",
    shut_down="the service stopped while the job was running; train again",
    abandoned="the service running the job stopped; train again",
    failed="training failed; the error is logged",
)


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


class WorkerFailed(JobFailed):
    """The worker reported a failure: `reason` is the job's failure reason, `detail` (a traceback from the worker
    process) goes to the log only, never onto the job."""


class Worker(Protocol):
    """Trains one job: calls `progress` as it goes, returns the result, raises WorkerFailed, and stops promptly
    when cancelled (asyncio cancellation)."""

    def __call__(
        self, spec: TrainingSpec, data: TrainingData, progress: Callable[[JobProgress], None]
    ) -> Awaitable[Trained]: ...


def new_id(prefix: str) -> str:
    return f"{prefix}_" + secrets.token_hex(12)


class _Jobs:
    """The training job store as the job runner's store port."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    async def insert(self, job: TrainingJob) -> TrainingJob | None:
        return await self._store.insert_job(job)

    async def reload(self, job: TrainingJob) -> TrainingJob | None:
        return await self._store.job(job.job_id)

    async def save_if_active(self, job: TrainingJob) -> bool:
        return await self._store.save_job(job, only_if_active=True)

    async def heartbeat(self, job: TrainingJob, progress: JobProgress, now: datetime) -> bool:
        return await self._store.heartbeat(job.job_id, progress, now)

    async def orphans(self, runner_id: str) -> list[TrainingJob]:
        return [job for job in await self._store.active_jobs() if job.runner_id == runner_id]


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
        clock: WallClock = utc_now,
        heartbeat_seconds: float = 1.0,
        stale_seconds: float = 30.0,
        runner_id: str = "",
    ) -> None:
        self._store = store
        self._worker = worker
        self._model_dir = model_dir
        self._max_queued = max_queued
        self._clock = clock
        # The replica's identity across restarts (services.core.replica), or one of this runner only.
        self.runner_id = runner_id or "trainer-" + secrets.token_hex(6)
        self._jobs: JobRunner[TrainingJob, JobProgress] = JobRunner(
            _Jobs(store),
            MESSAGES,
            name="training job",
            slots=workers,
            runner_id=self.runner_id,
            clock=clock,
            heartbeat_seconds=heartbeat_seconds,
            stale_seconds=stale_seconds,
        )

    async def start(self) -> None:
        """Fail at once the jobs this replica's previous run left queued or running (it was killed: nobody will
        finish them); mark the jobs other replicas stopped beating for as interrupted."""
        await self._jobs.start()
        for job in await self._store.active_jobs():
            await self._jobs.settled(job)

    async def stop(self) -> None:
        await self._jobs.stop()

    # -- submitting -------------------------------------------------------------------------------------------------

    async def by_request(self, request_id: str, digest: str) -> TrainingJob | None:
        """The job submitted with `request_id`, None when there is none; REQUEST_ID_REUSED for another request."""
        return await self._jobs.same_request(await self._store.job_by_request(request_id), digest, "training job")

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
        waiting = await self._jobs.active(await self._store.active_jobs())
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
        return await self._jobs.submit(job, self._work(data), what="training job")

    # -- reading ----------------------------------------------------------------------------------------------------

    async def job(self, job_id: str) -> TrainingJob | None:
        local = self._jobs.local(job_id)
        if local is not None:
            return local
        job = await self._store.job(job_id)
        return await self._jobs.settled(job) if job is not None else None

    async def jobs(self, filters: JobFilter, *, after: tuple[datetime, str] | None, limit: int) -> list[TrainingJob]:
        """Jobs newest first (see JobStore.jobs), the abandoned ones marked interrupted."""
        return [await self._jobs.settled(job) for job in await self._store.jobs(filters, after=after, limit=limit)]

    async def watch(self, job_id: str, *, quiet_seconds: float = 15.0) -> AsyncIterator[TrainingJob | None]:
        """The job at once, again at each change (None when quiet for `quiet_seconds`: a heartbeat), and last in
        its finished state."""
        job = await self.job(job_id)
        if job is None:
            return
        async for update in self._jobs.watch(job, quiet_seconds=quiet_seconds):
            yield update

    # -- cancelling -------------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> TrainingJob | None:
        """Cancel a queued or running job (a finished one is returned unchanged)."""
        job = await self.job(job_id)
        return await self._jobs.cancel(job) if job is not None else None

    # -- running ----------------------------------------------------------------------------------------------------

    def _work(self, data: TrainingData) -> JobWork[TrainingJob, JobProgress]:
        async def train(job: TrainingJob, control: JobControl[JobProgress]) -> TrainingJob | None:
            loop = asyncio.get_running_loop()
            started = loop.time()

            def progress(update: JobProgress) -> None:
                elapsed = loop.time() - started
                remaining = elapsed * (1.0 - update.fraction) / update.fraction if update.fraction > 0.02 else None
                control.report(replace(update, remaining_seconds=remaining))

            trained = await self._worker(job.spec, data, progress)
            control.report(JobProgress(stage=Stage.SAVING, fraction=0.99, message="writing the artifact"))
            return await self._register(job, data, trained)

        return train

    async def _register(self, job: TrainingJob, data: TrainingData, trained: Trained) -> TrainingJob | None:
        """Write the artifact and register the version with the job SUCCEEDED; None when the job was cancelled at
        the last moment (nothing is registered then)."""
        spec = job.spec
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
            training_start=data.times[0],
            training_end=data.times[-1] + spec.timeframe.delta,
            training_bar_count=len(data.times),
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
            return succeeded
        path.unlink(missing_ok=True)
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_bytes(data)
    scratch.replace(path)
