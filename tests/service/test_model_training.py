"""Training and the registry through real channels: TrainModel runs in a worker process and WatchTraining streams
its stages; the promotion gate refuses models that do not beat naive (the simulated demo prices are a random walk)
and passes one that does (a trending series); overrides are recorded; traffic splits, archiving and artifact
checks; every bad input gets the contract's reason."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from services.model.forecasting.base import Algorithm
from services.model.forecasting.evaluation import Gate
from services.model.training.jobs import JobProgress, JobState, TrainingSpec, Trigger
from services.model.training.runner import Trained, TrainingData, TrainingRunner
from services.model.training.store import JobStore
from tests.account_platform import refusal
from tests.model_records import running_job, training_spec
from tests.signal_platform import START, SignalPlatform, running_signal_platform, stamp, store_trend
from tests.support import eventually

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[SignalPlatform]:
    async with running_signal_platform(
        days=500, services=("market", "model"), model_dir=str(tmp_path / "models")
    ) as running:
        yield running


def _train(**extra: Any) -> model_pb2.TrainModelRequest:
    values: dict[str, Any] = {
        "algorithm": model_pb2.ALGORITHM_KALMAN,
        "symbol": "demo",
        "timeframe": common_pb2.TIMEFRAME_1D,
    }
    values.update(extra)
    return model_pb2.TrainModelRequest(**values)


async def _watch(platform: SignalPlatform, job_id: str) -> list[model_pb2.WatchTrainingResponse]:
    call = platform.model.WatchTraining(model_pb2.WatchTrainingRequest(job_id=job_id), metadata=platform.reader)
    return [message async for message in call]


async def _trained(platform: SignalPlatform, **extra: Any) -> model_pb2.Model:
    reply = await platform.model.TrainModel(_train(**extra), metadata=platform.admin)
    messages = await _watch(platform, reply.job_id)
    assert messages[-1].HasField("completed"), messages[-1]
    return messages[-1].completed.model


async def test_the_algorithms_are_listed(platform: SignalPlatform) -> None:
    reply = await platform.model.ListAlgorithms(model_pb2.ListAlgorithmsRequest(), metadata=platform.reader)
    algorithms = [item.algorithm for item in reply.algorithms]
    assert algorithms == [1, 2, 3, 4, 5, 6]
    by_number = {item.algorithm: item for item in reply.algorithms}
    assert by_number[model_pb2.ALGORITHM_NAIVE].baseline
    assert not by_number[model_pb2.ALGORITHM_LSTM].baseline
    assert {param.name for param in by_number[model_pb2.ALGORITHM_LSTM].parameters} >= {"window", "hidden_size"}
    for item in reply.algorithms:
        assert item.description
        assert item.min_training_bars > 0


async def test_training_streams_progress_and_registers_an_evaluated_candidate(
    platform: SignalPlatform, tmp_path: Path
) -> None:
    reply = await platform.model.TrainModel(_train(evaluation_horizon_bars=5), metadata=platform.admin)
    assert reply.job.state in (model_pb2.TRAINING_JOB_STATE_QUEUED, model_pb2.TRAINING_JOB_STATE_RUNNING)
    assert reply.job.training_range.HasField("start_time")
    assert reply.job.training_range.HasField("end_time")
    messages = await _watch(platform, reply.job_id)
    stages = [message.progress.stage for message in messages if message.HasField("progress")]
    assert model_pb2.TRAINING_STAGE_FITTING in stages
    assert model_pb2.TRAINING_STAGE_EVALUATING in stages
    fractions = [message.progress.fraction for message in messages if message.HasField("progress")]
    assert fractions == sorted(fractions)
    model = messages[-1].completed.model
    assert model.status == model_pb2.MODEL_STATUS_CANDIDATE
    assert model.algorithm == model_pb2.ALGORITHM_KALMAN
    assert model.symbol == "DEMO"
    assert model.job_id == reply.job_id
    assert model.training_bar_count == 500
    metrics = model.metrics
    assert metrics.horizon_bars == 5
    assert metrics.forecast_count > 50
    assert metrics.mae > 0
    assert metrics.naive_mae > 0
    assert metrics.HasField("mase")
    assert 0.0 <= metrics.directional_accuracy_ci_low <= metrics.directional_accuracy_ci_high <= 1.0
    assert 0.0 <= metrics.interval_coverage <= 1.0
    assert metrics.interval_level == pytest.approx(0.8)
    artifact = tmp_path / "models" / model.artifact_path
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == model.artifact_sha256
    job = (
        await platform.model.GetTrainingJob(
            model_pb2.GetTrainingJobRequest(job_id=reply.job_id), metadata=platform.reader
        )
    ).job
    assert job.state == model_pb2.TRAINING_JOB_STATE_SUCCEEDED
    assert job.model_id == model.model_id
    assert job.account_id == 1
    # A finished job's stream is its latest progress and the terminal event at once.
    again = await _watch(platform, reply.job_id)
    assert [message.WhichOneof("event") for message in again] == ["progress", "completed"]
    listed = await platform.model.ListModels(model_pb2.ListModelsRequest(symbol="demo"), metadata=platform.reader)
    assert [item.model_id for item in listed.models] == [model.model_id]
    jobs = await platform.model.ListTrainingJobs(
        model_pb2.ListTrainingJobsRequest(state=model_pb2.TRAINING_JOB_STATE_SUCCEEDED), metadata=platform.reader
    )
    assert [item.job_id for item in jobs.jobs] == [reply.job_id]


async def test_the_gate_refuses_random_walk_models_and_overrides_are_recorded(platform: SignalPlatform) -> None:
    model = await _trained(platform)
    assert not model.promotion_gate.passed  # the simulated prices are a random walk
    assert model.promotion_gate.threshold == 0.99  # the configured margin over naive
    promote = model_pb2.PromoteModelRequest(model_id=model.model_id)
    call = platform.model.PromoteModel(promote, metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.FAILED_PRECONDITION, "PROMOTION_GATE_FAILED")
    promote.override_gate = True
    promote.override_reason = "short"
    call = platform.model.PromoteModel(promote, metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.INVALID_ARGUMENT, "OVERRIDE_REASON_REQUIRED")
    promote.override_reason = "demo: serve predictions although naive is as good"
    promoted = await platform.model.PromoteModel(promote, metadata=platform.admin)
    assert promoted.model.status == model_pb2.MODEL_STATUS_PRODUCTION
    assert promoted.model.promotion_override.account_id == 1
    assert promoted.model.promotion_override.reason.startswith("demo")
    assert promoted.previous_model_id == ""


async def test_a_model_that_beats_naive_passes_and_replaces_production(platform: SignalPlatform) -> None:
    await store_trend(platform)
    first = await _trained(platform, symbol="TREND", algorithm=model_pb2.ALGORITHM_NAIVE)
    assert not first.promotion_gate.passed  # naive never beats itself (MASE exactly 1)
    better = await _trained(platform, symbol="TREND", algorithm=model_pb2.ALGORITHM_DRIFT)
    assert better.promotion_gate.passed, better.promotion_gate.detail
    assert better.metrics.mase < 1.0
    stub = platform.model
    override = "baseline in production until a better model exists"
    await stub.PromoteModel(
        model_pb2.PromoteModelRequest(model_id=first.model_id, override_gate=True, override_reason=override),
        metadata=platform.admin,
    )
    # A candidate may take a share of the traffic; the candidates' shares add up to at most 1.
    update = model_pb2.UpdateModelRequest(
        model=model_pb2.Model(model_id=better.model_id, traffic_fraction=0.3, description="drift candidate"),
        update_mask=FieldMask(paths=["traffic_fraction", "description"]),
    )
    updated = await stub.UpdateModel(update, metadata=platform.admin)
    assert updated.model.traffic_fraction == pytest.approx(0.3)
    assert updated.model.description == "drift candidate"
    update.model.model_id = first.model_id
    call = stub.UpdateModel(update, metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_NOT_CANDIDATE")
    third = await _trained(platform, symbol="TREND", algorithm=model_pb2.ALGORITHM_KALMAN)
    update.model.model_id = third.model_id
    update.model.traffic_fraction = 0.8
    call = stub.UpdateModel(update, metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.FAILED_PRECONDITION, "TRAFFIC_SPLIT_EXCEEDED")
    update.model.traffic_fraction = 1.5
    call = stub.UpdateModel(update, metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRAFFIC_FRACTION")

    promoted = await stub.PromoteModel(model_pb2.PromoteModelRequest(model_id=better.model_id), metadata=platform.admin)
    assert promoted.previous_model_id == first.model_id
    assert promoted.model.traffic_fraction == 0.0
    assert not promoted.model.HasField("promotion_override")
    previous = await stub.GetModel(model_pb2.GetModelRequest(model_id=first.model_id), metadata=platform.reader)
    assert previous.model.status == model_pb2.MODEL_STATUS_ARCHIVED
    again = await stub.PromoteModel(model_pb2.PromoteModelRequest(model_id=better.model_id), metadata=platform.admin)
    assert again.previous_model_id == ""  # already production: nothing changes

    archive = stub.ArchiveModel(model_pb2.ArchiveModelRequest(model_id=better.model_id), metadata=platform.admin)
    assert await refusal(archive) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_IS_PRODUCTION")
    archived = await stub.ArchiveModel(
        model_pb2.ArchiveModelRequest(model_id=better.model_id, force=True), metadata=platform.admin
    )
    assert archived.model.status == model_pb2.MODEL_STATUS_ARCHIVED
    production = await stub.ListModels(
        model_pb2.ListModelsRequest(symbol="TREND", status=model_pb2.MODEL_STATUS_PRODUCTION), metadata=platform.reader
    )
    assert list(production.models) == []


async def test_a_tampered_artifact_is_refused(platform: SignalPlatform, tmp_path: Path) -> None:
    model = await _trained(platform)
    (tmp_path / "models" / model.artifact_path).write_bytes(b"not the model")
    call = platform.model.PromoteModel(
        model_pb2.PromoteModelRequest(model_id=model.model_id, override_gate=True, override_reason="x" * 12),
        metadata=platform.admin,
    )
    assert await refusal(call) == (grpc.StatusCode.FAILED_PRECONDITION, "ARTIFACT_CORRUPT")


async def test_cancelling_a_training_job_kills_its_worker(platform: SignalPlatform) -> None:
    stub = platform.model
    reply = await stub.TrainModel(
        _train(
            algorithm=model_pb2.ALGORITHM_LSTM,
            parameters={
                "epochs": common_pb2.ParameterValue(int_value=500),
                "patience": common_pb2.ParameterValue(int_value=50),
            },
        ),
        metadata=platform.admin,
    )
    call = stub.WatchTraining(model_pb2.WatchTrainingRequest(job_id=reply.job_id), metadata=platform.reader)
    async for message in call:
        if message.HasField("progress") and message.progress.stage == model_pb2.TRAINING_STAGE_FITTING:
            break
    cancelled = await stub.CancelTraining(model_pb2.CancelTrainingRequest(job_id=reply.job_id), metadata=platform.admin)
    assert cancelled.job.state == model_pb2.TRAINING_JOB_STATE_CANCELLED
    rest = [message async for message in call]
    assert rest[-1].HasField("cancelled")
    models = await stub.ListModels(model_pb2.ListModelsRequest(), metadata=platform.reader)
    assert list(models.models) == []
    # Cancelling a finished job changes nothing.
    again = await stub.CancelTraining(model_pb2.CancelTrainingRequest(job_id=reply.job_id), metadata=platform.admin)
    assert again.job.state == model_pb2.TRAINING_JOB_STATE_CANCELLED


async def test_a_request_id_returns_the_first_job(platform: SignalPlatform) -> None:
    stub = platform.model
    first = await stub.TrainModel(_train(request_id="train-1"), metadata=platform.admin)
    again = await stub.TrainModel(_train(request_id="train-1"), metadata=platform.admin)
    assert again.job_id == first.job_id
    call = stub.TrainModel(_train(request_id="train-1", evaluation_horizon_bars=3), metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    await _watch(platform, first.job_id)


async def test_a_job_nobody_runs_any_more_is_failed_interrupted(platform: SignalPlatform) -> None:
    store = JobStore(platform.deps.databases)
    old = datetime(2026, 1, 1)
    job = running_job("job_stale0000000000000000", started=old, heartbeat=old)
    assert await store.insert_job(job) is None
    reply = await platform.model.GetTrainingJob(
        model_pb2.GetTrainingJobRequest(job_id=job.job_id), metadata=platform.reader
    )
    assert reply.job.state == model_pb2.TRAINING_JOB_STATE_FAILED
    assert reply.job.failure.reason == "INTERRUPTED"


@pytest.mark.parametrize(
    ("extra", "code", "reason"),
    [
        ({"algorithm": 0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"algorithm": 99}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (
            {"parameters": {"nope": common_pb2.ParameterValue(int_value=1)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_PARAMETER",
        ),
        (
            {"algorithm": model_pb2.ALGORITHM_LSTM, "parameters": {"window": common_pb2.ParameterValue(int_value=0)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PARAMETER",
        ),
        ({"symbol": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"symbol": "NOPE"}, grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND"),
        ({"timeframe": 0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ({"holdout_fraction": 0.05}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_HOLDOUT"),
        ({"holdout_fraction": 0.9}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_HOLDOUT"),
        ({"evaluation_horizon_bars": 501}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_HORIZON"),
        ({"evaluation_horizon_bars": -1}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_HORIZON"),
        (
            {"training_range": common_pb2.TimeRange(start_time=stamp(START), end_time=stamp(START))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RANGE",
        ),
        (
            {
                "training_range": common_pb2.TimeRange(
                    start_time=stamp(START), end_time=stamp(START + timedelta(days=20))
                )
            },
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_DATA",
        ),
        ({"request_id": "r" * 129}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_bad_training_requests(
    platform: SignalPlatform, extra: dict[str, Any], code: grpc.StatusCode, reason: str
) -> None:
    call = platform.model.TrainModel(_train(**extra), metadata=platform.admin)
    assert await refusal(call) == (code, reason)


async def test_ids_scopes_and_masks(platform: SignalPlatform) -> None:
    stub = platform.model
    assert await refusal(stub.TrainModel(_train(), metadata=platform.trader)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_MISSING",
    )
    for call in (
        stub.GetTrainingJob(model_pb2.GetTrainingJobRequest(job_id="../etc/passwd"), metadata=platform.reader),
        stub.GetTrainingJob(model_pb2.GetTrainingJobRequest(job_id="job_0000"), metadata=platform.reader),
        stub.CancelTraining(model_pb2.CancelTrainingRequest(job_id="j" * 300), metadata=platform.admin),
    ):
        assert await refusal(call) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    watch = stub.WatchTraining(model_pb2.WatchTrainingRequest(job_id="job_missing"), metadata=platform.reader)
    assert await refusal(watch.read()) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    for model_call in (
        stub.GetModel(model_pb2.GetModelRequest(model_id="mdl_nope"), metadata=platform.reader),
        stub.PromoteModel(model_pb2.PromoteModelRequest(model_id="mdl_nope"), metadata=platform.admin),
        stub.ArchiveModel(model_pb2.ArchiveModelRequest(model_id="x y"), metadata=platform.admin),
    ):
        assert await refusal(model_call) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
    assert (await refusal(stub.GetModel(model_pb2.GetModelRequest(), metadata=platform.reader)))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    model = await _trained(platform)
    for paths in ([], ["symbol"], ["status"]):
        masked = stub.UpdateModel(
            model_pb2.UpdateModelRequest(
                model=model_pb2.Model(model_id=model.model_id), update_mask=FieldMask(paths=paths)
            ),
            metadata=platform.admin,
        )
        assert await refusal(masked) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPDATE_MASK")
    await asyncio.sleep(0)


async def test_a_watcher_that_falls_behind_still_sees_the_job_finish(platform: SignalPlatform, tmp_path: Path) -> None:
    """The job may finish while a watcher still holds an earlier update: the watch then ends with the finished job,
    never on the stale one (WatchTraining would end without its completed message)."""
    release = asyncio.Event()

    async def worker(spec: TrainingSpec, data: TrainingData, progress: Callable[[JobProgress], None]) -> Trained:
        await release.wait()
        return Trained(artifact=b"model", metrics={}, gate=Gate(False, None, 0.99, "not evaluated"))

    runner = TrainingRunner(JobStore(platform.deps.databases), worker, model_dir=tmp_path)
    spec = training_spec(algorithm=Algorithm.NAIVE, seed=1)
    data = TrainingData(times=[datetime(2026, 1, day) for day in range(1, 4)], closes=np.array([1.0, 2.0, 3.0]))
    job = await runner.submit(spec, data, trigger=Trigger.MANUAL, account_id=1)
    updates = runner.watch(job.job_id)
    first = await anext(updates)
    assert first is not None
    assert not first.state.finished
    release.set()  # the job finishes while the watcher has not asked for the next update
    await eventually(lambda: _finished(runner, job.job_id), timeout=10)
    rest = [update async for update in updates]
    assert rest
    assert rest[-1] is not None
    assert rest[-1].state is JobState.SUCCEEDED


async def _finished(runner: TrainingRunner, job_id: str) -> bool:
    current = await runner.job(job_id)
    return current is not None and current.state.finished
