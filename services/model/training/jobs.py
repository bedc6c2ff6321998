"""Training's domain types: what a job trains (TrainingSpec), the job itself, its state, stage, trigger and
progress, and the filters of ListTrainingJobs (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum
from typing import Any

from services.core.errors import FieldViolation, InvalidArgument
from services.core.jobs import JobRecordMixin
from services.core.parameters import Params, ParamValue
from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm
from services.model.forecasting.catalogue import ALGORITHMS

# What TrainModel trains with when the request leaves it out.
DEFAULT_SEED = 20_261_122
DEFAULT_HOLDOUT = 0.2
DEFAULT_HORIZON = 1


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

    @classmethod
    def requested(
        cls,
        *,
        algorithm: Algorithm,
        parameters: Params,
        symbol: str,
        timeframe: Timeframe,
        start: datetime | None,
        end: datetime | None,
        holdout_fraction: float | None,
        horizon: int | None,
        seed: int | None,
        auto_retrain: bool,
    ) -> TrainingSpec:
        """A spec as a caller asks for one: the algorithm's parameters resolved with their defaults (InvalidArgument:
        UNKNOWN_PARAMETER, INVALID_PARAMETER), the defaults above for what is left out (None), and the range checked
        (INVALID_RANGE unless start is before end); the range is resolved to the stored bars when the job is
        submitted."""
        resolved = ALGORITHMS[algorithm].resolve(parameters)
        if start is not None and end is not None and not start < end:
            raise InvalidArgument(
                FieldViolation("training_range", "start_time must be before end_time"), reason="INVALID_RANGE"
            )
        return cls(
            algorithm=algorithm,
            parameters=resolved,
            symbol=symbol,
            timeframe=timeframe,
            start=start,
            end=end,
            holdout_fraction=DEFAULT_HOLDOUT if holdout_fraction is None else holdout_fraction,
            horizon=horizon or DEFAULT_HORIZON,
            seed=DEFAULT_SEED if seed is None else seed,
            auto_retrain=auto_retrain,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingJob(JobRecordMixin):
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

    # -- as the job runner sees it (services.core.jobs.JobRecord) ---------------------------------------------------

    ID_FIELD = "job_id"

    def running(self, now: datetime) -> TrainingJob:
        progress = JobProgress(stage=Stage.LOADING_DATA, fraction=0.0, message="data loaded")
        return replace(self, state=JobState.RUNNING, start_time=now, heartbeat_time=now, progress=progress)

    def with_progress(self, progress: JobProgress) -> TrainingJob:
        return replace(self, progress=progress)

    def failed(self, now: datetime, reason: str, message: str) -> TrainingJob:
        return replace(
            self,
            state=JobState.FAILED,
            end_time=now,
            failure_reason=reason,
            failure_message=message,
            heartbeat_time=None,
        )

    def cancelled(self, now: datetime) -> TrainingJob:
        return replace(self, state=JobState.CANCELLED, end_time=now, heartbeat_time=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """ListTrainingJobs filters; empty values match everything."""

    symbol: str = ""
    algorithm: Algorithm | None = None
    state: JobState | None = None
