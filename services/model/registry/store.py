"""Persistence of the model registry's versions in the global database (the registry is platform-wide)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
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
    and_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db.databases import Databases
from services.core.db.queries import newest_first
from services.core.db.schema import DOUBLE_PRECISION, global_metadata
from services.core.timeframes import Timeframe
from services.model.columns import dump_json
from services.model.forecasting.base import Algorithm
from services.model.forecasting.evaluation import Gate
from services.model.registry.versions import ModelFilter, ModelStatus, ModelVersion, Override

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


def _gate_json(gate: Gate) -> str:
    return dump_json({"passed": gate.passed, "mase": gate.mase, "threshold": gate.threshold, "detail": gate.detail})


def _override_json(override: Override | None) -> str | None:
    if override is None:
        return None
    return dump_json({"account_id": override.account_id, "reason": override.reason, "time": override.time.isoformat()})


def version_of(row: Row[Any]) -> ModelVersion:
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


def version_row(version: ModelVersion) -> dict[str, Any]:
    return {
        "model_id": version.model_id,
        "algorithm": int(version.algorithm),
        "parameters": dump_json(version.parameters),
        "symbol": version.symbol,
        "timeframe": int(version.timeframe),
        "training_start": version.training_start,
        "training_end": version.training_end,
        "training_bar_count": version.training_bar_count,
        "metrics": dump_json(version.metrics),
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


class VersionStore:
    """Model versions (global database)."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    async def version(self, model_id: str) -> ModelVersion | None:
        async def work(connection: AsyncConnection) -> ModelVersion | None:
            query = select(model_versions).where(model_versions.c.model_id == model_id)
            row = (await connection.execute(query)).first()
            return version_of(row) if row is not None else None

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
            return [version_of(row) for row in (await connection.execute(query)).all()]

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
            series = [version_of(row) for row in (await connection.execute(query)).all()]
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
