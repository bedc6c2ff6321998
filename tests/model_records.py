"""Model-service records for tests that write the store directly: a training spec and a job left RUNNING."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from services.core.timeframes import Timeframe
from services.model.forecasting.base import Algorithm
from services.model.training.jobs import JobProgress, JobState, Stage, TrainingJob, TrainingSpec, Trigger


def training_spec(**overrides: Any) -> TrainingSpec:
    """A Kalman spec on the DEMO daily series over all its bars; `overrides` replace any field."""
    spec = TrainingSpec(
        algorithm=Algorithm.KALMAN,
        parameters={},
        symbol="DEMO",
        timeframe=Timeframe.D1,
        start=None,
        end=None,
        holdout_fraction=0.2,
        horizon=1,
        seed=0,
        auto_retrain=False,
    )
    return replace(spec, **overrides)


def running_job(
    job_id: str, *, started: datetime, heartbeat: datetime, spec: TrainingSpec | None = None, runner_id: str = ""
) -> TrainingJob:
    """A manual job in its fitting stage, as a replica that died mid-training leaves it."""
    return TrainingJob(
        job_id=job_id,
        spec=spec or training_spec(),
        state=JobState.RUNNING,
        trigger=Trigger.MANUAL,
        progress=JobProgress(stage=Stage.FITTING, fraction=0.5, message="fitting"),
        account_id=1,
        create_time=started,
        start_time=started,
        heartbeat_time=heartbeat,
        runner_id=runner_id,
    )
