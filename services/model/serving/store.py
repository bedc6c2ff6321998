"""Persistence of served predictions in the global database, kept to score them when their horizon passes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
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
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.db.databases import Databases
from services.core.db.schema import DOUBLE_PRECISION, global_metadata
from services.core.timeframes import Timeframe
from services.model.columns import dump_json
from services.model.forecasting.base import Algorithm
from services.model.serving.predictions import Prediction, ServingArm

predictions = Table(
    "model_predictions",
    global_metadata,
    Column("prediction_id", String(32), primary_key=True),
    Column("model_id", String(32), nullable=False),
    Column("algorithm", SmallInteger, nullable=False),
    # services.model.serving.predictions.ServingArm.
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
                            path=dump_json(
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
