"""The model domain's records: model versions of the registry and training jobs (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from services.core.parameters import ParamValue
from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm
from services.model.forecasting.evaluation import Gate


class ModelStatus(IntEnum):
    """Numbers of bullant.model.v1.ModelStatus."""

    CANDIDATE = 1
    PRODUCTION = 2
    ARCHIVED = 3


class JobState(IntEnum):
    """Numbers of bullant.model.v1.TrainingJobState."""

    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


class Stage(IntEnum):
    """Numbers of bullant.model.v1.TrainingStage."""

    QUEUED = 1
    LOADING_DATA = 2
    PREPARING = 3
    FITTING = 4
    EVALUATING = 5
    SAVING = 6


class Trigger(IntEnum):
    """Numbers of bullant.model.v1.TrainingTrigger."""

    MANUAL = 1
    SCHEDULED = 2
    DRIFT = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress:
    """A training job's latest progress (see bullant.model.v1.TrainingProgress)."""

    stage: Stage = Stage.QUEUED
    fraction: float = 0.0
    epoch: int | None = None
    epoch_count: int = 0
    loss: float | None = None
    validation_loss: float | None = None
    remaining_seconds: float | None = None
    message: str = "waiting for a worker"

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": int(self.stage),
            "fraction": self.fraction,
            "epoch": self.epoch,
            "epoch_count": self.epoch_count,
            "loss": self.loss,
            "validation_loss": self.validation_loss,
            "remaining_seconds": self.remaining_seconds,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> JobProgress:
        return cls(**{**value, "stage": Stage(value["stage"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """An admin's promotion despite a failed gate."""

    account_id: int
    reason: str
    time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingSpec:
    """What a training job trains: validated, defaults filled in, range resolved."""

    algorithm: Algorithm
    parameters: dict[str, ParamValue]
    symbol: str
    timeframe: Timeframe
    start: datetime | None
    end: datetime | None
    holdout_fraction: float
    horizon: int
    seed: int
    auto_retrain: bool
    parent_model_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingJob:
    """One training run."""

    job_id: str
    spec: TrainingSpec
    state: JobState
    trigger: Trigger
    progress: JobProgress
    account_id: int
    create_time: datetime
    request_id: str | None = None
    request_digest: str = ""
    model_id: str = ""
    failure_reason: str = ""
    failure_message: str = ""
    runner_id: str = ""
    heartbeat_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelVersion:
    """One trained model version; `metrics` is the walk-forward evaluation as the proto's field names."""

    model_id: str
    algorithm: Algorithm
    parameters: dict[str, ParamValue]
    symbol: str
    timeframe: Timeframe
    training_start: datetime
    training_end: datetime
    training_bar_count: int
    metrics: dict[str, Any]
    artifact_path: str
    artifact_sha256: str
    status: ModelStatus
    gate: Gate
    job_id: str
    seed: int
    create_time: datetime
    update_time: datetime
    auto_retrain: bool = False
    traffic_fraction: float = 0.0
    description: str = ""
    override: Override | None = None
    parent_model_id: str = ""
    promoted_time: datetime | None = None
    archived_time: datetime | None = None
    drift_detect_time: datetime | None = None
    retrain_job_id: str = ""


class ServingArm(IntEnum):
    """Numbers of bullant.model.v1.ServingArm."""

    PRODUCTION = 1
    CANDIDATE = 2
    PINNED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One served forecast, recorded to be scored when its horizon passes (direction: bullant.model.v1.Direction
    numbers)."""

    prediction_id: str
    model_id: str
    algorithm: Algorithm
    serving_arm: ServingArm
    symbol: str
    timeframe: Timeframe
    horizon: int
    base_time: datetime
    base_price: float
    interval_level: float
    direction: int
    confidence: float
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    create_time: datetime
    # The open time of each forecast bar on the instrument's calendar (not stored: served predictions carry them).
    point_times: tuple[datetime, ...] = ()
