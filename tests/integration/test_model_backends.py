"""The model service on its production parts: registry, jobs and predictions on MariaDB, the scheduler's lease in
Redis; two replicas share the registry (one trains and promotes, the other serves) and only one schedules."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from tests.db_support import DatabaseSet, new_prefix
from tests.signal_platform import StoredSymbol, running_signal_platform

pytestmark = pytest.mark.integration


@pytest.fixture
async def shared(mysql_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    databases = DatabaseSet("mysql", mysql_url, new_prefix())
    await databases.create(2)
    try:
        yield {
            "database_url": databases.url("global"),
            "shard_urls": [databases.url("shard_0"), databases.url("shard_1")],
            "db_auto_migrate": True,
            "redis_url": redis_url,
            "app_name": f"t{uuid.uuid4().hex[:12]}",
            "data_dir": tempfile.mkdtemp(prefix="bullant-model-"),
            "model_dir": str(tmp_path / "models"),
            "services": ("market", "model"),
        }
    finally:
        await databases.drop()


async def test_replicas_share_the_registry_on_mariadb(shared: dict[str, Any]) -> None:
    symbols = (StoredSymbol("DEMO", "SIM-AAPL"),)
    async with (
        running_signal_platform(symbols, days=400, **shared) as first,
        running_signal_platform(symbols, days=400, store=False, **shared) as second,
    ):
        reply = await first.model.TrainModel(
            model_pb2.TrainModelRequest(
                algorithm=model_pb2.ALGORITHM_KALMAN, symbol="DEMO", timeframe=common_pb2.TIMEFRAME_1D
            ),
            metadata=first.admin,
        )
        # The other replica follows the job through the store until it ends.
        watched = second.model.WatchTraining(
            model_pb2.WatchTrainingRequest(job_id=reply.job_id), metadata=second.reader
        )
        messages = [message async for message in watched]
        assert messages[-1].HasField("completed")
        model = messages[-1].completed.model
        assert not model.promotion_gate.passed
        promoted = await second.model.PromoteModel(
            model_pb2.PromoteModelRequest(
                model_id=model.model_id, override_gate=True, override_reason="integration: serve it anyway"
            ),
            metadata=second.admin,
        )
        assert promoted.model.status == model_pb2.MODEL_STATUS_PRODUCTION
        request = model_pb2.PredictRequest(symbol="DEMO", timeframe=common_pb2.TIMEFRAME_1D, horizon_bars=3)
        one = (await first.model.Predict(request, metadata=first.reader)).prediction
        two = (await second.model.Predict(request, metadata=second.reader)).prediction
        assert one.model_id == two.model_id == model.model_id
        assert one.prediction_id == two.prediction_id  # recorded once across replicas (the unique key)
        assert one.confidence == two.confidence
        report = await second.model.GetModelPerformance(
            model_pb2.GetModelPerformanceRequest(model_id=model.model_id), metadata=second.reader
        )
        assert report.performance.pending_prediction_count == 1
