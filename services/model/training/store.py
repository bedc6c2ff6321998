"""Persistence of training jobs in the global database (the model service's jobs are platform-wide)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import DOUBLE_PRECISION, global_metadata
from services.core.timeframes import Timeframe
from services.model.columns import dump_json
from services.model.forecasting.base import Algorithm
from services.model.registry.store import model_versions, version_row
from services.model.registry.versions import ModelVersion
from services.model.training.jobs import JobFilter, JobProgress, JobState, TrainingJob, TrainingSpec, Trigger

training_jobs = Table(
    "training_jobs",
    global_metadata,
    Column("job_id", String(32), primary_key=True),
    Column("request_id", String(128), nullable=True),
    Column("request_digest", String(64), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("trigger", SmallInteger, nullable=False),
    Column("algorithm", SmallInteger, nullable=False),
    Column("parameters", Text, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", SmallInteger, nullable=False),
    Column("range_start", DateTime(timezone=False), nullable=True),
    Column("range_end", DateTime(timezone=False), nullable=True),
    Column("holdout_fraction", DOUBLE_PRECISION, nullable=False),
    Column("horizon", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("auto_retrain", Boolean, nullable=False),
    Column("parent_model_id", String(32), nullable=False),
    Column("progress", Text, nullable=False),
    Column("model_id", String(32), nullable=False),
    Column("failure_reason", String(64), nullable=False),
    Column("failure_message", String(1024), nullable=False),
    Column("account_id", BigInteger, nullable=False),
    # The replica training it and when it last said so: a job whose heartbeat stops was interrupted.
    Column("runner_id", String(64), nullable=False),
    Column("heartbeat_time", DateTime(timezone=False), nullable=True),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("start_time", DateTime(timezone=False), nullable=True),
    Column("end_time", DateTime(timezone=False), nullable=True),
    UniqueConstraint("request_id", name="uq_training_jobs_request"),
    Index("ix_training_jobs_created", "create_time", "job_id"),
    Index("ix_training_jobs_state", "state"),
    comment="Training jobs of the model service, with their progress.",
)

_ACTIVE = (int(JobState.QUEUED), int(JobState.RUNNING))


def _job(row: Row[Any]) -> TrainingJob:
    return TrainingJob(
        job_id=row.job_id,
        spec=TrainingSpec(
            algorithm=Algorithm(row.algorithm),
            parameters=json.loads(row.parameters),
            symbol=row.symbol,
            timeframe=Timeframe(row.timeframe),
            start=row.range_start,
            end=row.range_end,
            holdout_fraction=float(row.holdout_fraction),
            horizon=int(row.horizon),
            seed=int(row.seed),
            auto_retrain=bool(row.auto_retrain),
            parent_model_id=row.parent_model_id,
        ),
        state=JobState(row.state),
        trigger=Trigger(row.trigger),
        progress=JobProgress.from_json(json.loads(row.progress)),
        account_id=int(row.account_id),
        create_time=row.create_time,
        request_id=row.request_id,
        request_digest=row.request_digest,
        model_id=row.model_id,
        failure_reason=row.failure_reason,
        failure_message=row.failure_message,
        runner_id=row.runner_id,
        heartbeat_time=row.heartbeat_time,
        start_time=row.start_time,
        end_time=row.end_time,
    )


def _job_row(job: TrainingJob) -> dict[str, Any]:
    spec = job.spec
    return {
        "job_id": job.job_id,
        "request_id": job.request_id,
        "request_digest": job.request_digest,
        "state": int(job.state),
        "trigger": int(job.trigger),
        "algorithm": int(spec.algorithm),
        "parameters": dump_json(spec.parameters),
        "symbol": spec.symbol,
        "timeframe": int(spec.timeframe),
        "range_start": spec.start,
        "range_end": spec.end,
        "holdout_fraction": spec.holdout_fraction,
        "horizon": spec.horizon,
        "seed": spec.seed,
        "auto_retrain": spec.auto_retrain,
        "parent_model_id": spec.parent_model_id,
        "progress": dump_json(job.progress.to_json()),
        "model_id": job.model_id,
        "failure_reason": job.failure_reason,
        "failure_message": job.failure_message[:1024],
        "account_id": job.account_id,
        "runner_id": job.runner_id,
        "heartbeat_time": job.heartbeat_time,
        "create_time": job.create_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
    }


class JobStore:
    """Training jobs (global database); a succeeded job's version is registered in the same transaction."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def insert_job(self, job: TrainingJob) -> TrainingJob | None:
        """Store a new job; when its request_id was used before, return that job instead (None when inserted)."""

        async def work(connection: AsyncConnection) -> TrainingJob | None:
            try:
                async with connection.begin_nested():
                    await connection.execute(insert(training_jobs).values(**_job_row(job)))
            except IntegrityError:
                if job.request_id is None:
                    raise
                row = (
                    await connection.execute(select(training_jobs).where(training_jobs.c.request_id == job.request_id))
                ).one()
                return _job(row)
            return None

        return await self._databases.run_global(work)

    async def save_job(self, job: TrainingJob, *, only_if_active: bool = False) -> bool:
        """Write a job's mutable fields; with `only_if_active` only while it is queued or running."""

        async def work(connection: AsyncConnection) -> bool:
            condition = training_jobs.c.job_id == job.job_id
            if only_if_active:
                condition = and_(condition, training_jobs.c.state.in_(_ACTIVE))
            values = _job_row(job)
            for key in ("job_id", "request_id", "request_digest", "create_time"):
                values.pop(key)
            result = await connection.execute(update(training_jobs).where(condition).values(**values))
            return bool(result.rowcount)

        return await self._databases.run_global(work)

    async def heartbeat(self, job_id: str, progress: JobProgress, now: datetime) -> bool:
        """Record a running job's progress; False when it is no longer active (cancelled elsewhere)."""

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(
                update(training_jobs)
                .where(training_jobs.c.job_id == job_id, training_jobs.c.state.in_(_ACTIVE))
                .values(progress=dump_json(progress.to_json()), heartbeat_time=now)
            )
            return bool(result.rowcount)

        return await self._databases.run_global(work)

    async def job(self, job_id: str) -> TrainingJob | None:
        async def work(connection: AsyncConnection) -> TrainingJob | None:
            row = (await connection.execute(select(training_jobs).where(training_jobs.c.job_id == job_id))).first()
            return _job(row) if row is not None else None

        return await self._databases.run_global(work)

    async def job_by_request(self, request_id: str) -> TrainingJob | None:
        async def work(connection: AsyncConnection) -> TrainingJob | None:
            query = select(training_jobs).where(training_jobs.c.request_id == request_id)
            row = (await connection.execute(query)).first()
            return _job(row) if row is not None else None

        return await self._databases.run_global(work)

    async def jobs(self, filters: JobFilter, *, after: tuple[datetime, str] | None, limit: int) -> list[TrainingJob]:
        """Jobs newest first after the keyset position (create_time, job_id)."""
        conditions = []
        if filters.symbol:
            conditions.append(training_jobs.c.symbol == filters.symbol)
        if filters.algorithm is not None:
            conditions.append(training_jobs.c.algorithm == int(filters.algorithm))
        if filters.state is not None:
            conditions.append(training_jobs.c.state == int(filters.state))
        query = newest_first(training_jobs, "job_id", conditions, after=after, limit=limit)

        async def work(connection: AsyncConnection) -> list[TrainingJob]:
            return [_job(row) for row in (await connection.execute(query)).all()]

        return await self._databases.run_global(work)

    async def active_jobs(self) -> list[TrainingJob]:
        """Queued and running jobs."""

        async def work(connection: AsyncConnection) -> list[TrainingJob]:
            rows = await connection.execute(select(training_jobs).where(training_jobs.c.state.in_(_ACTIVE)))
            return [_job(row) for row in rows.all()]

        return await self._databases.run_global(work)

    async def insert_version(self, version: ModelVersion, job: TrainingJob) -> bool:
        """Register a version and mark its job SUCCEEDED in one transaction, unless the job stopped being active
        (cancelled meanwhile): then nothing is written and False is returned."""

        async def work(connection: AsyncConnection) -> bool:
            finished = _job_row(job)
            for key in ("job_id", "request_id", "request_digest", "create_time"):
                finished.pop(key)
            result = await connection.execute(
                update(training_jobs)
                .where(training_jobs.c.job_id == job.job_id, training_jobs.c.state.in_(_ACTIVE))
                .values(**finished)
            )
            if not result.rowcount:
                return False
            await connection.execute(insert(model_versions).values(**version_row(version)))
            return True

        return await self._databases.run_global(work)
