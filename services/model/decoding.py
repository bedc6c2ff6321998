"""bullant.model.v1 requests in the model domain's terms: ids, filters, the training order and the settings an update
mask names. Lengths, patterns, ranges and enum values of every request are the contract's declared rules
(protos/bullant/model/v1/model.proto), checked by the server before a handler runs; defaults and the rules no
declaration can say belong to the domain types and services these values are handed to."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bullant.model.v1 import model_pb2
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.core.parameter_messages import decode_parameters, parameter_values
from services.core.timeframes import Timeframe
from services.core.timestamps import naive_utc
from services.model.forecasting.base import Algorithm
from services.model.registry.rules import model_not_found
from services.model.registry.versions import ModelFilter, ModelStatus
from services.model.training.jobs import JobFilter, JobState, TrainingSpec
from services.model.training.service import TrainingOrder, job_not_found

# The settings UpdateModel may change; the declared rules admit only these paths, or "*" for all of them.
MUTABLE_SETTINGS = ("auto_retrain", "description", "traffic_fraction")


def _identifier(value: str, field: str, not_found: NotFound) -> str:
    """An id from a request: empty is INVALID_ARGUMENT; anything that cannot be an id of ours is simply not found."""
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(value) > 64 or not value.isascii() or not value.replace("_", "").isalnum():
        raise not_found
    return value


def model_id(value: str, field: str = "model_id") -> str:
    return _identifier(value, field, model_not_found(value))


def optional_model_id(value: str) -> str:
    """A model id where the request may leave it empty ("" then)."""
    return model_id(value) if value else ""


def job_id(value: str) -> str:
    return _identifier(value, "job_id", job_not_found(value))


def training_order(request: model_pb2.TrainModelRequest) -> TrainingOrder:
    """The spec the request asks for (see TrainingSpec.requested) and the digest a request id is bound to: the
    request's bytes with the defaults filled in, so a retry that spells a default out is the same request."""
    spec = TrainingSpec.requested(
        algorithm=Algorithm(request.algorithm),
        parameters=decode_parameters(request.parameters),
        symbol=request.symbol.upper(),
        timeframe=Timeframe(request.timeframe),
        start=naive_utc(request.training_range.start_time) if request.training_range.HasField("start_time") else None,
        end=naive_utc(request.training_range.end_time) if request.training_range.HasField("end_time") else None,
        holdout_fraction=request.holdout_fraction if request.HasField("holdout_fraction") else None,
        horizon=request.evaluation_horizon_bars or None,
        seed=request.seed if request.HasField("seed") else None,
        auto_retrain=request.auto_retrain,
    )
    normalized = model_pb2.TrainModelRequest()
    normalized.CopyFrom(request)
    normalized.request_id = ""
    normalized.symbol = spec.symbol
    normalized.holdout_fraction = spec.holdout_fraction
    normalized.evaluation_horizon_bars = spec.horizon
    normalized.seed = spec.seed
    normalized.parameters.clear()
    for name, value in parameter_values(spec.parameters).items():
        normalized.parameters[name].CopyFrom(value)
    digest = hashlib.sha256(normalized.SerializeToString(deterministic=True)).hexdigest()
    return TrainingOrder(spec=spec, request_id=request.request_id or None, digest=digest)


def job_filter(request: model_pb2.ListTrainingJobsRequest) -> JobFilter:
    return JobFilter(
        symbol=request.symbol.upper(),
        algorithm=Algorithm(request.algorithm) if request.algorithm else None,
        state=JobState(request.state) if request.state else None,
    )


def model_filter(request: model_pb2.ListModelsRequest) -> ModelFilter:
    return ModelFilter(
        symbol=request.symbol.upper(),
        timeframe=Timeframe(request.timeframe) if request.timeframe else None,
        algorithm=Algorithm(request.algorithm) if request.algorithm else None,
        status=ModelStatus(request.status) if request.status else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsUpdate:
    """The settings an UpdateModel request changes (None: left as it is)."""

    auto_retrain: bool | None
    description: str | None
    traffic_fraction: float | None


def settings_update(request: model_pb2.UpdateModelRequest) -> SettingsUpdate:
    paths = MUTABLE_SETTINGS if "*" in request.update_mask.paths else tuple(request.update_mask.paths)
    model = request.model
    return SettingsUpdate(
        auto_retrain=model.auto_retrain if "auto_retrain" in paths else None,
        description=model.description if "description" in paths else None,
        traffic_fraction=model.traffic_fraction if "traffic_fraction" in paths else None,
    )
