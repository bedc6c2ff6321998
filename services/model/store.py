"""Persistence of the model registry and training jobs in the global database (the registry is platform-wide)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from services.model.forecasting.base import Algorithm
from services.model.forecasting.evaluation import Gate
from services.model.records import (
    JobProgress,
    JobState,
    ModelStatus,
    ModelVersion,
    Override,
    Prediction,
    ServingArm,
    TrainingJob,
    TrainingSpec,
    Trigger,
)

model_versions = Table(
    "model_versions",
    global_metadata,
    Column("model_id", String(32), primary_key=True),
    Column("algorithm", SmallInteger, nullable=False),
    # Parameters, walk-forward metrics, gate and override as JSON documents.
    Column("parameters", Text, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", SmallInteger, nullable=False),
    Column("training_start", DateTime(timezone=False), nullable=False),
    Column("training_end", DateTime(timezone=False), nullable=False),
    Column("training_bar_count", Integer, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("artifact_path", String(255), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("gate", Text, nullable=False),
    Column("override", Text, nullable=True),
    Column("auto_retrain", Boolean, nullable=False),
    Column("traffic_fraction", DOUBLE_PRECISION, nullable=False),
    Column("description", String(1024), nullable=False),
    Column("job_id", String(32), nullable=False),
    Column("parent_model_id", String(32), nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("update_time", DateTime(timezone=False), nullable=False),
    Column("promoted_time", DateTime(timezone=False), nullable=True),
    Column("archived_time", DateTime(timezone=False), nullable=True),
    # The current drift episode: when it was first flagged and the retraining it scheduled.
    Column("drift_detect_time", DateTime(timezone=False), nullable=True),
    Column("retrain_job_id", String(32), nullable=False, server_default=""),
    Index("ix_model_versions_series", "symbol", "timeframe", "status"),
    Index("ix_model_versions_created", "create_time", "model_id"),
    comment="Trained model versions (the registry): metrics, artifact and status.",
)

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


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _gate_json(gate: Gate) -> str:
    return _dump({"passed": gate.passed, "mase": gate.mase, "threshold": gate.threshold, "detail": gate.detail})


def _override_json(override: Override | None) -> str | None:
    if override is None:
        return None
    return _dump({"account_id": override.account_id, "reason": override.reason, "time": override.time.isoformat()})


def _version(row: Row[Any]) -> ModelVersion:
    override = json.loads(row.override) if row.override else None
    return ModelVersion(
        model_id=row.model_id,
        algorithm=Algorithm(row.algorithm),
        parameters=json.loads(row.parameters),
        symbol=row.symbol,
        timeframe=Timeframe(row.timeframe),
        training_start=row.training_start,
        training_end=row.training_end,
        training_bar_count=row.training_bar_count,
        metrics=json.loads(row.metrics),
        artifact_path=row.artifact_path,
        artifact_sha256=row.artifact_sha256,
        status=ModelStatus(row.status),
        gate=Gate(**json.loads(row.gate)),
        override=Override(
            account_id=override["account_id"],
            reason=override["reason"],
            time=datetime.fromisoformat(override["time"]),
        )
        if override
        else None,
        auto_retrain=bool(row.auto_retrain),
        traffic_fraction=float(row.traffic_fraction),
        description=row.description,
        job_id=row.job_id,
        parent_model_id=row.parent_model_id,
        seed=int(row.seed),
        create_time=row.create_time,
        update_time=row.update_time,
        promoted_time=row.promoted_time,
        archived_time=row.archived_time,
        drift_detect_time=row.drift_detect_time,
        retrain_job_id=row.retrain_job_id,
    )


def _version_row(version: ModelVersion) -> dict[str, Any]:
    return {
        "model_id": version.model_id,
        "algorithm": int(version.algorithm),
        "parameters": _dump(version.parameters),
        "symbol": version.symbol,
        "timeframe": int(version.timeframe),
        "training_start": version.training_start,
        "training_end": version.training_end,
        "training_bar_count": version.training_bar_count,
        "metrics": _dump(version.metrics),
        "artifact_path": version.artifact_path,
        "artifact_sha256": version.artifact_sha256,
        "status": int(version.status),
        "gate": _gate_json(version.gate),
        "override": _override_json(version.override),
        "auto_retrain": version.auto_retrain,
        "traffic_fraction": version.traffic_fraction,
        "description": version.description,
        "job_id": version.job_id,
        "parent_model_id": version.parent_model_id,
        "seed": version.seed,
        "create_time": version.create_time,
        "update_time": version.update_time,
        "promoted_time": version.promoted_time,
        "archived_time": version.archived_time,
        "drift_detect_time": version.drift_detect_time,
        "retrain_job_id": version.retrain_job_id,
    }


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
        "parameters": _dump(spec.parameters),
        "symbol": spec.symbol,
        "timeframe": int(spec.timeframe),
        "range_start": spec.start,
        "range_end": spec.end,
        "holdout_fraction": spec.holdout_fraction,
        "horizon": spec.horizon,
        "seed": spec.seed,
        "auto_retrain": spec.auto_retrain,
        "parent_model_id": spec.parent_model_id,
        "progress": _dump(job.progress.to_json()),
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFilter:
    """ListModels filters; empty values match everything."""

    symbol: str = ""
    timeframe: Timeframe | None = None
    algorithm: Algorithm | None = None
    status: ModelStatus | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """ListTrainingJobs filters; empty values match everything."""

    symbol: str = ""
    algorithm: Algorithm | None = None
    state: JobState | None = None


class ModelStore:
    """Model versions and training jobs (global database)."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    # -- training jobs ----------------------------------------------------------------------------------------------

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
                .values(progress=_dump(progress.to_json()), heartbeat_time=now)
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

    # -- model versions ---------------------------------------------------------------------------------------------

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
            await connection.execute(insert(model_versions).values(**_version_row(version)))
            return True

        return await self._databases.run_global(work)

    async def version(self, model_id: str) -> ModelVersion | None:
        async def work(connection: AsyncConnection) -> ModelVersion | None:
            query = select(model_versions).where(model_versions.c.model_id == model_id)
            row = (await connection.execute(query)).first()
            return _version(row) if row is not None else None

        return await self._databases.run_global(work)

    async def versions(
        self, filters: ModelFilter, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[ModelVersion]:
        """Versions newest first after the keyset position (create_time, model_id)."""
        conditions = []
        if filters.symbol:
            conditions.append(model_versions.c.symbol == filters.symbol)
        if filters.timeframe is not None:
            conditions.append(model_versions.c.timeframe == int(filters.timeframe))
        if filters.algorithm is not None:
            conditions.append(model_versions.c.algorithm == int(filters.algorithm))
        if filters.status is not None:
            conditions.append(model_versions.c.status == int(filters.status))
        query = newest_first(model_versions, "model_id", conditions, after=after, limit=limit)

        async def work(connection: AsyncConnection) -> list[ModelVersion]:
            return [_version(row) for row in (await connection.execute(query)).all()]

        return await self._databases.run_global(work)

    async def update_series(
        self, symbol: str, timeframe: Timeframe, change: Callable[[list[ModelVersion]], Sequence[ModelVersion]]
    ) -> list[ModelVersion]:
        """Apply `change` to every version of one symbol and timeframe in one transaction, the rows locked (FOR
        UPDATE, so two promotions cannot both win), and write the versions it returns; what it raises rolls back.
        Returns the changed versions."""

        async def work(connection: AsyncConnection) -> list[ModelVersion]:
            query = (
                select(model_versions)
                .where(model_versions.c.symbol == symbol, model_versions.c.timeframe == int(timeframe))
                .with_for_update()
            )
            series = [_version(row) for row in (await connection.execute(query)).all()]
            changed = list(change(series))
            for version in changed:
                await connection.execute(
                    update(model_versions)
                    .where(model_versions.c.model_id == version.model_id)
                    .values(
                        status=int(version.status),
                        override=_override_json(version.override),
                        auto_retrain=version.auto_retrain,
                        traffic_fraction=version.traffic_fraction,
                        description=version.description,
                        update_time=version.update_time,
                        promoted_time=version.promoted_time,
                        archived_time=version.archived_time,
                    )
                )
            return changed

        return await self._databases.run_global(work)

    async def set_drift(self, model_id: str, *, detected: datetime | None, retrain_job_id: str | None = None) -> bool:
        """Start a drift episode (only when none is open: True when this call started it), end it (`detected`
        None), or record the episode's retraining job (`retrain_job_id`)."""
        values: dict[str, Any] = {}
        condition = model_versions.c.model_id == model_id
        if retrain_job_id is not None:
            values["retrain_job_id"] = retrain_job_id
        elif detected is not None:
            values.update(drift_detect_time=detected, retrain_job_id="")
            condition = and_(condition, model_versions.c.drift_detect_time.is_(None))
        else:
            values.update(drift_detect_time=None, retrain_job_id="")
            condition = and_(condition, model_versions.c.drift_detect_time.is_not(None))

        async def work(connection: AsyncConnection) -> bool:
            result = await connection.execute(update(model_versions).where(condition).values(**values))
            return bool(result.rowcount)

        return await self._databases.run_global(work)


predictions = Table(
    "model_predictions",
    global_metadata,
    Column("prediction_id", String(32), primary_key=True),
    Column("model_id", String(32), nullable=False),
    Column("algorithm", SmallInteger, nullable=False),
    # services.model.records.ServingArm.
    Column("serving_arm", SmallInteger, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", SmallInteger, nullable=False),
    Column("horizon", Integer, nullable=False),
    Column("base_time", DateTime(timezone=False), nullable=False),
    Column("base_price", DOUBLE_PRECISION, nullable=False),
    Column("interval_level", DOUBLE_PRECISION, nullable=False),
    Column("direction", SmallInteger, nullable=False),
    Column("confidence", DOUBLE_PRECISION, nullable=False),
    # The path as JSON: {"mean": [...], "lower": [...], "upper": [...]}.
    Column("path", Text, nullable=False),
    Column("create_time", DateTime(timezone=False), nullable=False),
    # One recorded prediction per version, base bar, horizon and level: repeats and retries do not skew tracking.
    UniqueConstraint("model_id", "base_time", "horizon", "interval_level", name="uq_model_predictions_key"),
    Index("ix_model_predictions_model_base", "model_id", "base_time"),
    comment="Served predictions, kept to score them when their horizon has passed.",
)


def _prediction(row: Row[Any]) -> Prediction:
    path = json.loads(row.path)
    return Prediction(
        prediction_id=row.prediction_id,
        model_id=row.model_id,
        algorithm=Algorithm(row.algorithm),
        serving_arm=ServingArm(row.serving_arm),
        symbol=row.symbol,
        timeframe=Timeframe(row.timeframe),
        horizon=int(row.horizon),
        base_time=row.base_time,
        base_price=float(row.base_price),
        interval_level=float(row.interval_level),
        direction=int(row.direction),
        confidence=float(row.confidence),
        mean=tuple(path["mean"]),
        lower=tuple(path["lower"]),
        upper=tuple(path["upper"]),
        create_time=row.create_time,
    )


class PredictionStore:
    """Recorded predictions (global database)."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def record(self, prediction: Prediction) -> Prediction:
        """Store the prediction unless one with its key exists; returns the stored one (the first, on a repeat)."""

        async def work(connection: AsyncConnection) -> Prediction:
            try:
                async with connection.begin_nested():
                    await connection.execute(
                        insert(predictions).values(
                            prediction_id=prediction.prediction_id,
                            model_id=prediction.model_id,
                            algorithm=int(prediction.algorithm),
                            serving_arm=int(prediction.serving_arm),
                            symbol=prediction.symbol,
                            timeframe=int(prediction.timeframe),
                            horizon=prediction.horizon,
                            base_time=prediction.base_time,
                            base_price=prediction.base_price,
                            interval_level=prediction.interval_level,
                            direction=prediction.direction,
                            confidence=prediction.confidence,
                            path=_dump(
                                {
                                    "mean": list(prediction.mean),
                                    "lower": list(prediction.lower),
                                    "upper": list(prediction.upper),
                                }
                            ),
                            create_time=prediction.create_time,
                        )
                    )
            except IntegrityError:
                query = select(predictions).where(
                    predictions.c.model_id == prediction.model_id,
                    predictions.c.base_time == prediction.base_time,
                    predictions.c.horizon == prediction.horizon,
                    predictions.c.interval_level == prediction.interval_level,
                )
                return _prediction((await connection.execute(query)).one())
            return prediction

        return await self._databases.run_global(work)

    async def for_model(self, model_id: str, *, min_horizon: int, limit: int) -> list[Prediction]:
        """The version's latest predictions reaching at least `min_horizon` bars, newest base first."""
        query = (
            select(predictions)
            .where(predictions.c.model_id == model_id, predictions.c.horizon >= min_horizon)
            .order_by(predictions.c.base_time.desc(), predictions.c.create_time.desc())
            .limit(limit)
        )

        async def work(connection: AsyncConnection) -> list[Prediction]:
            return [_prediction(row) for row in (await connection.execute(query)).all()]

        return await self._databases.run_global(work)
