"""The model domain's values as bullant.model.v1 messages (requests are decoded in decoding.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from services.core.parameter_messages import parameter_spec, parameter_values
from services.core.timestamps import timestamp
from services.model.registry.versions import ModelVersion
from services.model.serving.predictions import Prediction
from services.model.tracking.performance import Performance
from services.model.training.jobs import JobProgress, JobState, TrainingJob
from services.model.training.service import AlgorithmSummary, Quiet, TrainingOutcome, WatchEvent


def algorithm_message(summary: AlgorithmSummary) -> model_pb2.AlgorithmInfo:
    definition = summary.definition
    return model_pb2.AlgorithmInfo(
        algorithm=int(definition.algorithm),  # type: ignore[arg-type]
        display_name=definition.display_name,
        description=definition.description,
        parameters=[parameter_spec(param) for param in definition.params],
        baseline=definition.baseline,
        min_training_bars=summary.min_training_bars,
    )


def progress_message(progress: JobProgress) -> model_pb2.TrainingProgress:
    message = model_pb2.TrainingProgress(
        stage=int(progress.stage),  # type: ignore[arg-type]
        fraction=progress.fraction,
        epoch_count=progress.epoch_count,
        message=progress.message,
    )
    if progress.epoch is not None:
        message.epoch = progress.epoch
    if progress.loss is not None and math.isfinite(progress.loss):
        message.loss = progress.loss
    if progress.validation_loss is not None and math.isfinite(progress.validation_loss):
        message.validation_loss = progress.validation_loss
    if progress.remaining_seconds is not None:
        message.estimated_remaining.FromNanoseconds(int(progress.remaining_seconds * 1e9))
    return message


def job_message(job: TrainingJob) -> model_pb2.TrainingJob:
    spec = job.spec
    message = model_pb2.TrainingJob(
        job_id=job.job_id,
        state=int(job.state),  # type: ignore[arg-type]
        trigger=int(job.trigger),  # type: ignore[arg-type]
        algorithm=int(spec.algorithm),  # type: ignore[arg-type]
        parameters=parameter_values(spec.parameters),
        symbol=spec.symbol,
        timeframe=int(spec.timeframe),  # type: ignore[arg-type]
        holdout_fraction=spec.holdout_fraction,
        evaluation_horizon_bars=spec.horizon,
        seed=spec.seed,
        auto_retrain=spec.auto_retrain,
        parent_model_id=spec.parent_model_id,
        progress=progress_message(job.progress),
        model_id=job.model_id,
        account_id=job.account_id,
        create_time=timestamp(job.create_time),
    )
    if spec.start is not None:
        message.training_range.start_time.CopyFrom(timestamp(spec.start))
    if spec.end is not None:
        message.training_range.end_time.CopyFrom(timestamp(spec.end))
    if job.failure_reason:
        message.failure.reason = job.failure_reason
        message.failure.message = job.failure_message
    for name, moment in (("start_time", job.start_time), ("end_time", job.end_time)):
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(moment))
    return message


def watch_message(job_id: str, event: WatchEvent) -> model_pb2.WatchTrainingResponse:
    """One WatchTraining message: a heartbeat, the job's progress, or how it ended."""
    if isinstance(event, Quiet):
        return model_pb2.WatchTrainingResponse(
            job_id=job_id, heartbeat=common_pb2.Heartbeat(server_time=timestamp(event.server_time))
        )
    if isinstance(event, TrainingOutcome):
        return _outcome_message(event)
    return model_pb2.WatchTrainingResponse(job_id=job_id, progress=progress_message(event.progress))


def _outcome_message(outcome: TrainingOutcome) -> model_pb2.WatchTrainingResponse:
    job = outcome.job
    if job.state is JobState.SUCCEEDED and outcome.model is not None:
        return model_pb2.WatchTrainingResponse(
            job_id=job.job_id, completed=model_pb2.TrainingCompleted(model=model_message(outcome.model))
        )
    if job.state is JobState.CANCELLED:
        cancelled = model_pb2.TrainingCancelled()
        if job.end_time is not None:
            cancelled.cancel_time.CopyFrom(timestamp(job.end_time))
        return model_pb2.WatchTrainingResponse(job_id=job.job_id, cancelled=cancelled)
    return model_pb2.WatchTrainingResponse(
        job_id=job.job_id,
        failed=model_pb2.TrainingFailed(
            failure=model_pb2.TrainingFailure(reason=job.failure_reason, message=job.failure_message)
        ),
    )


def _metrics_message(metrics: Mapping[str, Any]) -> model_pb2.ModelMetrics:
    message = model_pb2.ModelMetrics()
    for name, value in metrics.items():
        if value is None:
            continue
        if name in {"evaluation_start_time", "evaluation_end_time"}:
            getattr(message, name).CopyFrom(timestamp(datetime.fromisoformat(str(value))))
        else:
            setattr(message, name, value)
    return message


def model_message(version: ModelVersion) -> model_pb2.Model:
    message = model_pb2.Model(
        model_id=version.model_id,
        algorithm=int(version.algorithm),  # type: ignore[arg-type]
        parameters=parameter_values(version.parameters),
        symbol=version.symbol,
        timeframe=int(version.timeframe),  # type: ignore[arg-type]
        training_start_time=timestamp(version.training_start),
        training_end_time=timestamp(version.training_end),
        training_bar_count=version.training_bar_count,
        metrics=_metrics_message(version.metrics),
        artifact_path=version.artifact_path,
        artifact_sha256=version.artifact_sha256,
        status=int(version.status),  # type: ignore[arg-type]
        auto_retrain=version.auto_retrain,
        traffic_fraction=version.traffic_fraction,
        description=version.description,
        promotion_gate=model_pb2.PromotionGate(
            passed=version.gate.passed, threshold=version.gate.threshold, detail=version.gate.detail
        ),
        job_id=version.job_id,
        parent_model_id=version.parent_model_id,
        seed=version.seed,
        create_time=timestamp(version.create_time),
        update_time=timestamp(version.update_time),
    )
    if version.gate.mase is not None:
        message.promotion_gate.mase = version.gate.mase
    if version.override is not None:
        message.promotion_override.CopyFrom(
            model_pb2.PromotionOverride(
                account_id=version.override.account_id,
                reason=version.override.reason,
                override_time=timestamp(version.override.time),
            )
        )
    for name, moment in (("promoted_time", version.promoted_time), ("archived_time", version.archived_time)):
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(moment))
    return message


def prediction_message(prediction: Prediction) -> model_pb2.Prediction:
    """A served prediction, its points dated by the instrument's calendar (Prediction.point_times)."""
    return model_pb2.Prediction(
        prediction_id=prediction.prediction_id,
        model_id=prediction.model_id,
        algorithm=int(prediction.algorithm),  # type: ignore[arg-type]
        serving_arm=int(prediction.serving_arm),  # type: ignore[arg-type]
        symbol=prediction.symbol,
        timeframe=int(prediction.timeframe),  # type: ignore[arg-type]
        horizon_bars=prediction.horizon,
        base_time=timestamp(prediction.base_time),
        base_price=prediction.base_price,
        points=[
            model_pb2.PredictionPoint(time=timestamp(moment), price=price, lower=lower, upper=upper)
            for moment, price, lower, upper in zip(
                prediction.point_times, prediction.mean, prediction.lower, prediction.upper, strict=True
            )
        ],
        interval_level=prediction.interval_level,
        direction=prediction.direction,  # type: ignore[arg-type]
        confidence=prediction.confidence,
        expected_return=prediction.mean[-1] / prediction.base_price - 1.0,
        create_time=timestamp(prediction.create_time),
    )


def performance_message(version: ModelVersion, report: Performance) -> model_pb2.ModelPerformance:
    """A version's live figures (absent optionals where nothing is resolved yet)."""
    window = report.window
    message = model_pb2.ModelPerformance(
        model_id=version.model_id,
        algorithm=int(version.algorithm),  # type: ignore[arg-type]
        symbol=version.symbol,
        timeframe=int(version.timeframe),  # type: ignore[arg-type]
        horizon_bars=report.horizon,
        window_prediction_count=window.count,
        resolved_prediction_count=report.resolved_count,
        pending_prediction_count=report.pending_count,
        drift_threshold=report.threshold,
        drift_detected=version.drift_detect_time is not None,
        retrain_job_id=version.retrain_job_id,
    )
    for name, value in (
        ("rolling_mae", window.mae),
        ("rolling_mape", window.mape),
        ("hit_rate", window.hit_rate),
        ("interval_coverage", window.coverage),
        ("evaluation_mae", report.evaluation_mae),
        ("drift_factor", report.drift_factor),
    ):
        if value is not None and math.isfinite(value):
            setattr(message, name, value)
    if window.start is not None and window.end is not None:
        message.window_start_time.CopyFrom(timestamp(window.start))
        message.window_end_time.CopyFrom(timestamp(window.end))
    if version.drift_detect_time is not None:
        message.drift_detect_time.CopyFrom(timestamp(version.drift_detect_time))
    for moment, figures in report.history:
        message.history.append(
            model_pb2.PerformancePoint(
                time=timestamp(moment),
                rolling_mae=figures.mae or 0.0,
                hit_rate=figures.hit_rate or 0.0,
                interval_coverage=figures.coverage or 0.0,
            )
        )
    return message
