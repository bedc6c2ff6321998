"""The registry's domain types: a trained model version, its status, an admin's gate override, and the filters of
ListModels (plain dataclasses; the rules over them are in rules.py)."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    """An admin's promotion despite a failed gate."""

    account_id: int
    reason: str
    time: datetime


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelFilter:
    """ListModels filters; empty values match everything."""

    symbol: str = ""
    timeframe: Timeframe | None = None
    algorithm: Algorithm | None = None
    status: ModelStatus | None = None
