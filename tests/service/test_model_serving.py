"""Predict through real channels: the production version serves, recorded once per version, base bar, horizon
and level; the A/B split sends the configured share to a candidate, the same key always to the same arm; pinned
versions; models survive a restart (loaded from the registry and the artifact directory); bad inputs."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from tests.account_platform import refusal
from tests.signal_platform import SignalPlatform, StoredSymbol, running_signal_platform, stamp, store_trend

pytestmark = pytest.mark.timeout(300)
SYMBOLS = (StoredSymbol("DEMO", "SIM-AAPL"), StoredSymbol("OTHER", "SIM-AAPL", seed=12))
OVERRIDE = "serving tests: promote although naive is as good"


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[SignalPlatform]:
    async with running_signal_platform(
        SYMBOLS, days=400, services=("market", "model"), model_dir=str(tmp_path / "models")
    ) as running:
        yield running


async def _train(platform: SignalPlatform, algorithm: int, symbol: str = "DEMO") -> model_pb2.Model:
    reply = await platform.model.TrainModel(
        model_pb2.TrainModelRequest(algorithm=algorithm, symbol=symbol, timeframe=common_pb2.TIMEFRAME_1D),  # type: ignore[arg-type]
        metadata=platform.admin,
    )
    call = platform.model.WatchTraining(model_pb2.WatchTrainingRequest(job_id=reply.job_id), metadata=platform.reader)
    messages = [message async for message in call]
    assert messages[-1].HasField("completed"), messages[-1]
    return messages[-1].completed.model


async def _production(platform: SignalPlatform, algorithm: int, symbol: str = "DEMO") -> model_pb2.Model:
    model = await _train(platform, algorithm, symbol)
    reply = await platform.model.PromoteModel(
        model_pb2.PromoteModelRequest(model_id=model.model_id, override_gate=True, override_reason=OVERRIDE),
        metadata=platform.admin,
    )
    return reply.model


def _predict(**extra: Any) -> model_pb2.PredictRequest:
    values: dict[str, Any] = {"symbol": "DEMO", "timeframe": common_pb2.TIMEFRAME_1D, "horizon_bars": 5}
    values.update(extra)
    return model_pb2.PredictRequest(**values)


async def test_predict_without_a_model_says_how_to_train_one(platform: SignalPlatform) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await platform.model.Predict(_predict(), metadata=platform.reader)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "TrainModel" in (refused.value.details() or "")
    assert await refusal(platform.model.Predict(_predict(), metadata=platform.reader)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MODEL_NOT_TRAINED",
    )
    assert await refusal(platform.model.Predict(_predict(symbol="NOPE"), metadata=platform.reader)) == (
        grpc.StatusCode.NOT_FOUND,
        "SYMBOL_NOT_FOUND",
    )


async def test_the_production_version_serves_and_each_prediction_is_recorded_once(platform: SignalPlatform) -> None:
    model = await _production(platform, model_pb2.ALGORITHM_KALMAN)
    first = (await platform.model.Predict(_predict(request_key="a"), metadata=platform.reader)).prediction
    bars = platform.bars["DEMO"]
    assert first.model_id == model.model_id
    assert first.algorithm == model_pb2.ALGORITHM_KALMAN
    assert first.serving_arm == model_pb2.SERVING_ARM_PRODUCTION
    assert first.base_price == bars.close[-1]
    assert first.base_time.ToDatetime() == bars.open_time[-1].astype("datetime64[us]").item()
    assert len(first.points) == 5
    for step, point in enumerate(first.points, start=1):
        assert (point.time.ToSeconds() - first.base_time.ToSeconds()) == step * 86_400
        assert point.lower < point.price < point.upper
    widths = [point.upper - point.lower for point in first.points]
    assert widths == sorted(widths)  # uncertainty grows with the horizon
    assert 0.0 <= first.confidence <= 1.0
    assert first.direction in (model_pb2.DIRECTION_UP, model_pb2.DIRECTION_DOWN, model_pb2.DIRECTION_FLAT)
    assert first.interval_level == pytest.approx(0.8)
    assert first.expected_return == pytest.approx(first.points[-1].price / first.base_price - 1.0)
    again = (await platform.model.Predict(_predict(request_key="b"), metadata=platform.reader)).prediction
    assert again.prediction_id == first.prediction_id  # same version, base bar, horizon and level
    wider = (
        await platform.model.Predict(_predict(request_key="a", interval_level=0.95), metadata=platform.reader)
    ).prediction
    assert wider.prediction_id != first.prediction_id
    assert wider.points[-1].upper > first.points[-1].upper


async def test_the_ab_split_follows_the_traffic_fraction_and_keys_keep_their_arm(platform: SignalPlatform) -> None:
    production = await _production(platform, model_pb2.ALGORITHM_KALMAN)
    candidate = await _train(platform, model_pb2.ALGORITHM_DRIFT)
    await platform.model.UpdateModel(
        model_pb2.UpdateModelRequest(
            model=model_pb2.Model(model_id=candidate.model_id, traffic_fraction=0.3),
            update_mask=FieldMask(paths=["traffic_fraction"]),
        ),
        metadata=platform.admin,
    )
    arms: dict[str, int] = {}
    for index in range(600):
        key = f"account-{index}"
        reply = await platform.model.Predict(
            _predict(request_key=key, horizon_bars=1 + index % 3), metadata=platform.reader
        )
        served = reply.prediction.model_id
        assert served in (production.model_id, candidate.model_id)
        arms[key] = reply.prediction.serving_arm
        assert (served == candidate.model_id) == (arms[key] == model_pb2.SERVING_ARM_CANDIDATE)
    share = sum(arm == model_pb2.SERVING_ARM_CANDIDATE for arm in arms.values()) / len(arms)
    assert 0.24 <= share <= 0.36, share
    for key in list(arms)[:50]:  # the same key always gets the same arm
        horizon = 1 + int(key.split("-")[1]) % 3
        reply = await platform.model.Predict(_predict(request_key=key, horizon_bars=horizon), metadata=platform.reader)
        assert reply.prediction.serving_arm == arms[key]
    pinned = await platform.model.Predict(
        _predict(model_id=candidate.model_id, horizon_bars=7), metadata=platform.reader
    )
    assert pinned.prediction.serving_arm == model_pb2.SERVING_ARM_PINNED
    assert pinned.prediction.model_id == candidate.model_id


async def test_pinned_versions_must_fit_the_request(platform: SignalPlatform) -> None:
    await _production(platform, model_pb2.ALGORITHM_KALMAN)
    other = await _production(platform, model_pb2.ALGORITHM_NAIVE, symbol="OTHER")
    archived = await _train(platform, model_pb2.ALGORITHM_DRIFT)
    await platform.model.ArchiveModel(
        model_pb2.ArchiveModelRequest(model_id=archived.model_id), metadata=platform.admin
    )
    for request, expected in (
        (_predict(model_id=other.model_id), (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_MISMATCH")),
        (
            _predict(model_id=other.model_id, require_passed_gate=True),
            (grpc.StatusCode.INVALID_ARGUMENT, "MODEL_SELECTOR_CONFLICT"),
        ),
        (_predict(model_id=archived.model_id), (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_ARCHIVED")),
        (_predict(model_id="mdl_000000000000000000000000"), (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")),
        (_predict(model_id="not an id!"), (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")),
        (_predict(horizon_bars=0), (grpc.StatusCode.INVALID_ARGUMENT, "HORIZON_OUT_OF_RANGE")),
        (_predict(horizon_bars=501), (grpc.StatusCode.INVALID_ARGUMENT, "HORIZON_OUT_OF_RANGE")),
        (_predict(interval_level=1.0), (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INTERVAL_LEVEL")),
        (_predict(interval_level=0.0), (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INTERVAL_LEVEL")),
        (_predict(timeframe=0), (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")),
        (_predict(symbol=""), (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")),
        (_predict(request_key="k" * 300), (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")),
    ):
        assert await refusal(platform.model.Predict(request, metadata=platform.reader)) == expected
    assert await refusal(platform.model.Predict(_predict())) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIALS_MISSING",
    )


async def test_models_survive_a_restart() -> None:
    shared: dict[str, Any] = {"data_dir": tempfile.mkdtemp(prefix="bullant-model-")}
    services = ("market", "model")
    async with running_signal_platform(SYMBOLS[:1], days=400, services=services, **shared) as first:
        model = await _production(first, model_pb2.ALGORITHM_ARIMA)
        before = (await first.model.Predict(_predict(), metadata=first.reader)).prediction
    async with running_signal_platform(SYMBOLS[:1], days=400, store=False, services=services, **shared) as second:
        after = (await second.model.Predict(_predict(), metadata=second.reader)).prediction
        listed = await second.model.ListModels(model_pb2.ListModelsRequest(), metadata=second.reader)
    assert after.model_id == model.model_id
    assert after.prediction_id == before.prediction_id  # the recorded prediction, not a second one
    assert [item.status for item in listed.models] == [model_pb2.MODEL_STATUS_PRODUCTION]


async def _add_bar(platform: SignalPlatform, symbol: str, moment: datetime, close: float) -> None:
    await platform.market.ImportBars(
        market_pb2.ImportBarsRequest(
            symbol=symbol,
            timeframe=common_pb2.TIMEFRAME_1D,
            bars=[
                market_pb2.Bar(
                    open_time=stamp(moment), open=close, high=close * 1.001, low=close * 0.999, close=close, volume=1.0
                )
            ],
        ),
        metadata=platform.admin,
    )


async def test_live_tracking_flags_drift_and_schedules_a_retrain(tmp_path: Path) -> None:
    async with running_signal_platform(
        SYMBOLS[:1],
        days=400,
        services=("market", "model"),
        model_dir=str(tmp_path / "models"),
        model_serving_cache_seconds=0.0,
    ) as platform:
        model = await _production(platform, model_pb2.ALGORITHM_KALMAN)
        bars = platform.bars["DEMO"]
        last = bars.open_time[-1].astype("datetime64[us]").item()
        close = float(bars.close[-1])
        rng = np.random.default_rng(3)
        # Each day: predict one bar ahead from the latest close, then the next close arrives, ten times the usual
        # move: live errors far above the evaluation's.
        for day in range(1, 16):
            await platform.model.Predict(_predict(horizon_bars=1, request_key=f"d{day}"), metadata=platform.reader)
            close *= float(np.exp(0.15 * rng.choice([-1.0, 1.0])))
            await _add_bar(platform, "DEMO", last + timedelta(days=day), close)
        request = model_pb2.GetModelPerformanceRequest(model_id=model.model_id, window_size=10, include_history=True)
        report = (await platform.model.GetModelPerformance(request, metadata=platform.reader)).performance
        assert report.horizon_bars == 1  # the evaluation horizon
        assert report.resolved_prediction_count == 15
        assert report.window_prediction_count == 10
        assert report.HasField("evaluation_mae")
        assert report.drift_factor > report.drift_threshold == 1.5
        assert report.drift_detected
        assert report.HasField("drift_detect_time")
        assert report.retrain_job_id
        assert 0.0 <= report.interval_coverage <= 1.0
        assert report.history
        job = await platform.model.GetTrainingJob(
            model_pb2.GetTrainingJobRequest(job_id=report.retrain_job_id), metadata=platform.reader
        )
        assert job.job.trigger == model_pb2.TRAINING_TRIGGER_DRIFT
        assert job.job.parent_model_id == model.model_id
        again = (await platform.model.GetModelPerformance(request, metadata=platform.reader)).performance
        assert again.retrain_job_id == report.retrain_job_id  # one retrain per drift episode
        by_series = await platform.model.GetModelPerformance(
            model_pb2.GetModelPerformanceRequest(symbol="DEMO", timeframe=common_pb2.TIMEFRAME_1D, horizon_bars=1),
            metadata=platform.reader,
        )
        assert by_series.performance.model_id == model.model_id
        calls = (
            (model_pb2.GetModelPerformanceRequest(), "MISSING_MODEL_SELECTOR"),
            (model_pb2.GetModelPerformanceRequest(model_id=model.model_id, horizon_bars=501), "INVALID_HORIZON"),
            (model_pb2.GetModelPerformanceRequest(model_id=model.model_id, window_size=5), "INVALID_WINDOW"),
        )
        for bad, reason in calls:
            assert await refusal(platform.model.GetModelPerformance(bad, metadata=platform.reader)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                reason,
            )
        missing = model_pb2.GetModelPerformanceRequest(model_id="mdl_000000000000000000000000")
        assert await refusal(platform.model.GetModelPerformance(missing, metadata=platform.reader)) == (
            grpc.StatusCode.NOT_FOUND,
            "MODEL_NOT_FOUND",
        )
        untrained = model_pb2.GetModelPerformanceRequest(symbol="DEMO", timeframe=common_pb2.TIMEFRAME_1H)
        assert await refusal(platform.model.GetModelPerformance(untrained, metadata=platform.reader)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "MODEL_NOT_TRAINED",
        )
        await _watch_to_end(platform, report.retrain_job_id)


async def _watch_to_end(platform: SignalPlatform, job_id: str) -> None:
    call = platform.model.WatchTraining(model_pb2.WatchTrainingRequest(job_id=job_id), metadata=platform.reader)
    async for _ in call:
        pass


async def test_the_scheduler_seeds_demo_models_and_retrains_on_schedule(tmp_path: Path) -> None:
    """Demo models are trained for the engine's timeframes and promoted only through the gate: TREND's passes,
    DEMO's (a random walk) stays a candidate."""
    async with running_signal_platform(
        SYMBOLS[:1],
        days=400,
        services=("market", "model"),
        model_dir=str(tmp_path / "models"),
        model_demo_symbols=["DEMO", "TREND"],
        signal_timeframes=["1d"],
        model_scheduler_interval_seconds=0.5,
        model_retrain_every_hours=0.0005,
    ) as platform:
        await store_trend(platform)  # after the start: the scheduler waits for the instrument and its bars
        production: list[model_pb2.Model] = []
        for _ in range(120):
            listed = await platform.model.ListModels(
                model_pb2.ListModelsRequest(symbol="TREND", status=model_pb2.MODEL_STATUS_PRODUCTION),
                metadata=platform.reader,
            )
            production = list(listed.models)
            if production:
                break
            await asyncio.sleep(0.25)
        assert len(production) == 1
        demo = production[0]
        assert demo.algorithm == model_pb2.ALGORITHM_KALMAN
        assert demo.timeframe == common_pb2.TIMEFRAME_1D
        assert demo.promotion_gate.passed
        assert not demo.HasField("promotion_override")
        walk = (
            await platform.model.ListModels(model_pb2.ListModelsRequest(symbol="DEMO"), metadata=platform.reader)
        ).models
        assert [(item.status, item.promotion_gate.passed) for item in walk] == [
            (model_pb2.MODEL_STATUS_CANDIDATE, False)
        ]
        prediction = await platform.model.Predict(_predict(symbol="TREND"), metadata=platform.reader)
        assert prediction.prediction.model_id == demo.model_id
        # Marked auto-retrain, the version is retrained once its training is older than the schedule allows.
        await platform.model.UpdateModel(
            model_pb2.UpdateModelRequest(
                model=model_pb2.Model(model_id=demo.model_id, auto_retrain=True),
                update_mask=FieldMask(paths=["auto_retrain"]),
            ),
            metadata=platform.admin,
        )
        scheduled: list[model_pb2.TrainingJob] = []
        for _ in range(120):
            jobs = await platform.model.ListTrainingJobs(model_pb2.ListTrainingJobsRequest(), metadata=platform.reader)
            scheduled = [job for job in jobs.jobs if job.parent_model_id == demo.model_id]
            if scheduled:
                break
            await asyncio.sleep(0.25)
        assert scheduled
        assert scheduled[0].trigger == model_pb2.TRAINING_TRIGGER_SCHEDULED
        assert scheduled[0].account_id == 0
        await _watch_to_end(platform, scheduled[0].job_id)
