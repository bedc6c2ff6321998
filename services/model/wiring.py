"""The model service's wiring: its stores, services, training runner and scheduler built from the shared platform
dependencies and the settings, and handed to the server as one registration (services/bootstrap.py calls build)."""

from __future__ import annotations

from bullant.model.v1 import model_pb2_grpc
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
from services.core.dependencies import Dependencies
from services.core.jobs import JobOptions
from services.core.market_data import MarketData
from services.core.replica import replica_identity
from services.core.server import ServiceRegistration
from services.core.settings import Settings
from services.model.registry.service import ModelRegistry
from services.model.registry.store import VersionStore
from services.model.scheduler import ModelScheduler, SchedulerPolicy
from services.model.servicer import SERVICE, ModelServicer
from services.model.serving.service import Predictor
from services.model.serving.store import PredictionStore
from services.model.tracking.service import Tracker
from services.model.training.runner import TrainingRunner
from services.model.training.service import TrainingService
from services.model.training.store import JobStore
from services.model.training.worker import ProcessWorker


def build(deps: Dependencies, settings: Settings | None = None) -> ServiceRegistration:
    """The model service, ready to be hosted by a GrpcServer: `deps` are the shared platform dependencies and
    `settings` the process's settings (those of `deps` when not given): its model section, and the signal section's
    timeframes and horizon for the demo models the live engine fuses."""
    settings = settings or deps.settings
    model = settings.model
    artifacts = model.artifact_dir(settings.data_dir)
    versions, jobs, predictions = (
        VersionStore(deps.databases),
        JobStore(deps.databases),
        PredictionStore(deps.databases),
    )
    market = MarketData(deps.clients)
    runner = TrainingRunner(
        jobs,
        ProcessWorker(gate_threshold=model.model_gate_threshold, gate_max_pvalue=model.model_gate_max_pvalue),
        model_dir=artifacts,
        max_queued=model.max_queued_training_jobs,
        jobs=JobOptions(slots=model.training_workers, runner_id=replica_identity(settings.server)),
    )
    registry = ModelRegistry(versions, artifacts, pages=deps.page_tokens)
    training = TrainingService(runner, jobs, registry, market, pages=deps.page_tokens)
    cache = model.model_serving_cache_seconds
    predictor = Predictor(versions, predictions, market, artifacts, bar_ttl=cache, registry_ttl=min(cache, 2.0))
    tracker = Tracker(versions, predictions, market, registry, training, drift_threshold=model.model_drift_factor)
    servicer = ModelServicer(training, registry, predictor, tracker)
    scheduler = ModelScheduler(
        registry=registry,
        tracker=tracker,
        training=training,
        market=market,
        identity=ServiceIdentity(deps.signing_keys, token_policy(settings.auth), "model"),
        locks=deps.coordination.for_service("model").locks,
        policy=SchedulerPolicy.from_settings(model, settings.signal),
    )
    return ServiceRegistration(
        name="model",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server),
        components=(runner, scheduler),
    )
