"""gRPC adapter of the model domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2, model_pb2_grpc
from services.core.auth.identity import require_identity
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
from services.core.dependencies import Dependencies
from services.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.core.market_data import MarketData
from services.core.messages import decode_parameters, naive_utc, parameter_spec, parameter_values, timestamp
from services.core.paging import COUNT, Cursor, PageTokens, keyset_cursor, page_size
from services.core.replica import replica_identity
from services.core.server import ServiceRegistration
from services.core.timeframes import Timeframe
from services.model.encoding import (
    job_message,
    model_message,
    performance_message,
    prediction_message,
    progress_message,
)
from services.model.forecasting.base import Algorithm, AlgorithmDef
from services.model.forecasting.catalogue import ALGORITHMS
from services.model.records import JobState, ModelStatus, TrainingJob, TrainingSpec, Trigger
from services.model.retraining import Tracker, minimum_range_bars, training_data
from services.model.scheduler import ModelScheduler
from services.model.service import ModelRegistry
from services.model.serving import Predictor
from services.model.store import JobFilter, ModelFilter, ModelStore, PredictionStore
from services.model.training import TrainingData, TrainingRunner
from services.model.worker import ProcessWorker

SERVICE = model_pb2.DESCRIPTOR.services_by_name["ModelService"]
Context = grpc.aio.ServicerContext[Any, Any]
# Lengths, patterns, ranges and enum values of every request are the contract's declared rules
# (protos/bullant/model/v1/model.proto), checked by the server before a handler runs; only defaults, normalisation
# and the rules no declaration can say are here.
DEFAULT_SEED = 20_261_122
DEFAULT_HOLDOUT = 0.2
DEFAULT_WINDOW = 100
DEFAULT_LEVEL = 0.8
_MUTABLE = {"auto_retrain", "traffic_fraction", "description"}


def _identifier(value: str, field: str, not_found: NotFound) -> str:
    """An id from a request: empty is INVALID_ARGUMENT; anything that cannot be an id of ours is simply not found."""
    if not value:
        raise InvalidArgument(FieldViolation(field, "is required"))
    if len(value) > 64 or not value.isascii() or not value.replace("_", "").isalnum():
        raise not_found
    return value


def _job_not_found(job_id: str) -> NotFound:
    return NotFound(f"no training job {job_id[:64]!r}", reason="JOB_NOT_FOUND", metadata={"job_id": job_id[:64]})


def _model_not_found(model_id: str) -> NotFound:
    return NotFound(
        f"no model version {model_id[:64]!r}", reason="MODEL_NOT_FOUND", metadata={"model_id": model_id[:64]}
    )


# What each list's page tokens hold.
_ALGORITHMS_CURSOR = Cursor.of("model.ListAlgorithms", after=COUNT)
_JOBS_CURSOR = keyset_cursor("model.ListTrainingJobs")
_MODELS_CURSOR = keyset_cursor("model.ListModels")


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    """bullant.model.v1.ModelService: algorithms, training jobs, the registry, Predict and live tracking."""

    def __init__(
        self,
        market: MarketData,
        runner: TrainingRunner,
        registry: ModelRegistry,
        predictor: Predictor,
        tracker: Tracker,
        *,
        pages: PageTokens,
    ) -> None:
        self._market = market
        self._pages = pages
        self._runner = runner
        self._registry = registry
        self._predictor = predictor
        self._tracker = tracker

    # -- algorithms -------------------------------------------------------------------------------------------------

    async def ListAlgorithms(
        self, request: model_pb2.ListAlgorithmsRequest, context: Context
    ) -> model_pb2.ListAlgorithmsResponse:
        size = page_size(request.page_size)
        position = self._pages.decode(_ALGORITHMS_CURSOR, request.page_token)
        after = position["after"] if position else 0
        algorithms = [algorithm for algorithm in sorted(ALGORITHMS) if algorithm > after]
        page = algorithms[:size]
        token = self._pages.encode(_ALGORITHMS_CURSOR, {"after": int(page[-1])}) if len(algorithms) > size else ""
        return model_pb2.ListAlgorithmsResponse(
            algorithms=[self._algorithm_info(ALGORITHMS[algorithm]) for algorithm in page], next_page_token=token
        )

    @staticmethod
    def _algorithm_info(definition: AlgorithmDef) -> model_pb2.AlgorithmInfo:
        defaults = definition.resolve({})
        return model_pb2.AlgorithmInfo(
            algorithm=int(definition.algorithm),  # type: ignore[arg-type]
            display_name=definition.display_name,
            description=definition.description,
            parameters=[parameter_spec(param) for param in definition.params],
            baseline=definition.baseline,
            min_training_bars=minimum_range_bars(definition, defaults, DEFAULT_HOLDOUT, 1),
        )

    # -- training ---------------------------------------------------------------------------------------------------

    async def TrainModel(self, request: model_pb2.TrainModelRequest, context: Context) -> model_pb2.TrainModelResponse:
        identity = require_identity()
        spec, digest = self._training_spec(request)
        request_id = request.request_id or None
        job = await self._runner.by_request(request_id, digest) if request_id else None
        if job is None:
            data = await self._training_data(spec)
            spec = replace(spec, start=data.times[0], end=data.times[-1] + spec.timeframe.delta)
            job = await self._runner.submit(
                spec, data, trigger=Trigger.MANUAL, account_id=identity.account_id, request_id=request_id, digest=digest
            )
        return model_pb2.TrainModelResponse(job_id=job.job_id, job=job_message(job))

    def _training_spec(self, request: model_pb2.TrainModelRequest) -> tuple[TrainingSpec, str]:
        """The validated request as a spec (range not yet resolved) and its digest for request-id deduplication."""
        definition = ALGORITHMS[Algorithm(request.algorithm)]
        parameters = definition.resolve(decode_parameters(request.parameters))
        symbol = request.symbol.upper()
        timeframe = Timeframe(request.timeframe)
        start = naive_utc(request.training_range.start_time) if request.training_range.HasField("start_time") else None
        end = naive_utc(request.training_range.end_time) if request.training_range.HasField("end_time") else None
        if start is not None and end is not None and not start < end:
            raise InvalidArgument(
                FieldViolation("training_range", "start_time must be before end_time"), reason="INVALID_RANGE"
            )
        holdout = request.holdout_fraction if request.HasField("holdout_fraction") else DEFAULT_HOLDOUT
        horizon = request.evaluation_horizon_bars or 1
        spec = TrainingSpec(
            algorithm=definition.algorithm,
            parameters=parameters,
            symbol=symbol,
            timeframe=timeframe,
            start=start,
            end=end,
            holdout_fraction=holdout,
            horizon=horizon,
            seed=request.seed if request.HasField("seed") else DEFAULT_SEED,
            auto_retrain=request.auto_retrain,
        )
        normalized = model_pb2.TrainModelRequest()
        normalized.CopyFrom(request)
        normalized.request_id = ""
        normalized.symbol = symbol
        normalized.holdout_fraction = holdout
        normalized.evaluation_horizon_bars = horizon
        normalized.seed = spec.seed
        normalized.parameters.clear()
        for name, value in parameter_values(parameters).items():
            normalized.parameters[name].CopyFrom(value)
        return spec, hashlib.sha256(normalized.SerializeToString(deterministic=True)).hexdigest()

    async def _training_data(self, spec: TrainingSpec) -> TrainingData:
        return await training_data(self._market, spec)

    async def GetModelPerformance(
        self, request: model_pb2.GetModelPerformanceRequest, context: Context
    ) -> model_pb2.GetModelPerformanceResponse:
        if request.model_id:
            model_id = _identifier(request.model_id, "model_id", _model_not_found(request.model_id))
            version = await self._registry.get(model_id)
        elif request.symbol and request.timeframe:
            symbol, timeframe = request.symbol.upper(), Timeframe(request.timeframe)
            production = await self._registry.find(
                ModelFilter(symbol=symbol, timeframe=timeframe, status=ModelStatus.PRODUCTION), after=None, limit=1
            )
            if not production:
                raise FailedPrecondition(
                    f"no production model for {symbol} {timeframe.label}; train one with TrainModel and promote it",
                    reason="MODEL_NOT_TRAINED",
                )
            version = production[0]
        else:
            raise InvalidArgument(
                FieldViolation("model_id", "name a model_id, or a symbol and timeframe"),
                reason="MISSING_MODEL_SELECTOR",
            )
        window_size = request.window_size or DEFAULT_WINDOW
        report, version = await self._tracker.report(
            version,
            horizon=request.horizon_bars or None,
            window_size=window_size,
            include_history=request.include_history,
        )
        return model_pb2.GetModelPerformanceResponse(performance=performance_message(version, report))

    async def WatchTraining(
        self, request: model_pb2.WatchTrainingRequest, context: Context
    ) -> AsyncIterator[model_pb2.WatchTrainingResponse]:
        job_id = _identifier(request.job_id, "job_id", _job_not_found(request.job_id))
        if await self._runner.job(job_id) is None:
            raise _job_not_found(job_id)
        async for job in self._runner.watch(job_id):
            if job is None:
                yield model_pb2.WatchTrainingResponse(
                    job_id=job_id, heartbeat=common_pb2.Heartbeat(server_time=timestamp(datetime.utcnow()))
                )
                continue
            yield model_pb2.WatchTrainingResponse(job_id=job_id, progress=progress_message(job.progress))
            if job.state.finished:
                yield await self._terminal(job)

    async def _terminal(self, job: TrainingJob) -> model_pb2.WatchTrainingResponse:
        if job.state is JobState.SUCCEEDED:
            version = await self._registry.get(job.model_id)
            return model_pb2.WatchTrainingResponse(
                job_id=job.job_id, completed=model_pb2.TrainingCompleted(model=model_message(version))
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

    async def GetTrainingJob(
        self, request: model_pb2.GetTrainingJobRequest, context: Context
    ) -> model_pb2.GetTrainingJobResponse:
        job_id = _identifier(request.job_id, "job_id", _job_not_found(request.job_id))
        job = await self._runner.job(job_id)
        if job is None:
            raise _job_not_found(job_id)
        return model_pb2.GetTrainingJobResponse(job=job_message(job))

    async def ListTrainingJobs(
        self, request: model_pb2.ListTrainingJobsRequest, context: Context
    ) -> model_pb2.ListTrainingJobsResponse:
        size = page_size(request.page_size)
        filters = JobFilter(
            symbol=request.symbol.upper(),
            algorithm=Algorithm(request.algorithm) if request.algorithm else None,
            state=JobState(request.state) if request.state else None,
        )
        query = f"{filters.symbol}|{request.algorithm}|{request.state}"
        position = self._pages.decode(_JOBS_CURSOR, request.page_token, query=query)
        after = (position["t"], position["id"]) if position else None
        jobs = await self._runner.jobs(filters, after=after, limit=size + 1)
        token = ""
        if len(jobs) > size:
            jobs = jobs[:size]
            token = self._pages.encode(_JOBS_CURSOR, {"t": jobs[-1].create_time, "id": jobs[-1].job_id}, query=query)
        return model_pb2.ListTrainingJobsResponse(jobs=[job_message(job) for job in jobs], next_page_token=token)

    async def CancelTraining(
        self, request: model_pb2.CancelTrainingRequest, context: Context
    ) -> model_pb2.CancelTrainingResponse:
        job_id = _identifier(request.job_id, "job_id", _job_not_found(request.job_id))
        job = await self._runner.cancel(job_id)
        if job is None:
            raise _job_not_found(job_id)
        return model_pb2.CancelTrainingResponse(job=job_message(job))

    # -- registry ---------------------------------------------------------------------------------------------------

    async def ListModels(self, request: model_pb2.ListModelsRequest, context: Context) -> model_pb2.ListModelsResponse:
        size = page_size(request.page_size)
        filters = ModelFilter(
            symbol=request.symbol.upper(),
            timeframe=Timeframe(request.timeframe) if request.timeframe else None,
            algorithm=Algorithm(request.algorithm) if request.algorithm else None,
            status=ModelStatus(request.status) if request.status else None,
        )
        query = f"{filters.symbol}|{request.timeframe}|{request.algorithm}|{request.status}"
        position = self._pages.decode(_MODELS_CURSOR, request.page_token, query=query)
        after = (position["t"], position["id"]) if position else None
        versions = await self._registry.find(filters, after=after, limit=size + 1)
        token = ""
        if len(versions) > size:
            versions = versions[:size]
            last = versions[-1]
            token = self._pages.encode(_MODELS_CURSOR, {"t": last.create_time, "id": last.model_id}, query=query)
        return model_pb2.ListModelsResponse(models=[model_message(item) for item in versions], next_page_token=token)

    async def GetModel(self, request: model_pb2.GetModelRequest, context: Context) -> model_pb2.GetModelResponse:
        model_id = _identifier(request.model_id, "model_id", _model_not_found(request.model_id))
        return model_pb2.GetModelResponse(model=model_message(await self._registry.get(model_id)))

    async def UpdateModel(
        self, request: model_pb2.UpdateModelRequest, context: Context
    ) -> model_pb2.UpdateModelResponse:
        model_id = _identifier(request.model.model_id, "model.model_id", _model_not_found(request.model.model_id))
        # The declared rules admitted only the settable paths (auto_retrain, traffic_fraction, description) or "*".
        paths = sorted(_MUTABLE) if "*" in request.update_mask.paths else list(request.update_mask.paths)
        version = await self._registry.update(
            model_id,
            auto_retrain=request.model.auto_retrain if "auto_retrain" in paths else None,
            description=request.model.description if "description" in paths else None,
            traffic_fraction=request.model.traffic_fraction if "traffic_fraction" in paths else None,
        )
        return model_pb2.UpdateModelResponse(model=model_message(version))

    async def PromoteModel(
        self, request: model_pb2.PromoteModelRequest, context: Context
    ) -> model_pb2.PromoteModelResponse:
        identity = require_identity()
        model_id = _identifier(request.model_id, "model_id", _model_not_found(request.model_id))
        version, previous = await self._registry.promote(
            model_id,
            account_id=identity.account_id,
            override_gate=request.override_gate,
            override_reason=request.override_reason,
        )
        return model_pb2.PromoteModelResponse(model=model_message(version), previous_model_id=previous)

    async def ArchiveModel(
        self, request: model_pb2.ArchiveModelRequest, context: Context
    ) -> model_pb2.ArchiveModelResponse:
        model_id = _identifier(request.model_id, "model_id", _model_not_found(request.model_id))
        version = await self._registry.archive(model_id, force=request.force)
        return model_pb2.ArchiveModelResponse(model=model_message(version))

    # -- serving ----------------------------------------------------------------------------------------------------

    async def Predict(self, request: model_pb2.PredictRequest, context: Context) -> model_pb2.PredictResponse:
        symbol = request.symbol.upper()
        timeframe = Timeframe(request.timeframe)
        level = request.interval_level if request.HasField("interval_level") else DEFAULT_LEVEL
        model_id = (
            _identifier(request.model_id, "model_id", _model_not_found(request.model_id)) if request.model_id else ""
        )
        if model_id and request.require_passed_gate:
            raise InvalidArgument(
                FieldViolation("require_passed_gate", "cannot be combined with model_id"),
                reason="MODEL_SELECTOR_CONFLICT",
            )
        prediction = await self._predictor.predict(
            symbol=symbol,
            timeframe=timeframe,
            horizon=request.horizon_bars,
            level=level,
            request_key=request.request_key,
            model_id=model_id,
            require_passed_gate=request.require_passed_gate,
        )
        return model_pb2.PredictResponse(prediction=prediction_message(prediction))


def registration(deps: Dependencies) -> ServiceRegistration:
    """The model service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    store = ModelStore(deps.databases)
    model_dir = Path(deps.settings.model_dir) if deps.settings.model_dir else deps.settings.data_dir / "models"
    runner = TrainingRunner(
        store,
        ProcessWorker(
            gate_threshold=deps.settings.model_gate_threshold, gate_max_pvalue=deps.settings.model_gate_max_pvalue
        ),
        model_dir=model_dir,
        workers=deps.settings.training_workers,
        max_queued=deps.settings.max_queued_training_jobs,
        runner_id=replica_identity(deps.settings),
    )
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    market = MarketData(deps.clients)
    predictions = PredictionStore(deps.databases)
    cache = deps.settings.model_serving_cache_seconds
    predictor = Predictor(store, predictions, market, model_dir, bar_ttl=cache, registry_ttl=min(cache, 2.0))
    tracker = Tracker(store, predictions, market, runner, drift_threshold=deps.settings.model_drift_factor)
    registry = ModelRegistry(store, model_dir)
    servicer = ModelServicer(market, runner, registry, predictor, tracker, pages=deps.page_tokens)
    scheduler = ModelScheduler(
        store=store,
        registry=registry,
        tracker=tracker,
        runner=runner,
        market=market,
        identity=ServiceIdentity(deps.signing_keys, token_policy(deps.settings), "model"),
        locks=deps.coordination.for_service("model").locks,
        interval=deps.settings.model_scheduler_interval_seconds,
        retrain_every=timedelta(hours=deps.settings.model_retrain_every_hours),
        demo_symbols=deps.settings.model_demo_symbols,
        # Demo models forecast what the live signal engine fuses: its timeframes, at its horizon.
        demo_timeframes=[Timeframe.from_label(label) for label in deps.settings.signal_timeframes],
        demo_horizon=deps.settings.signal_fusion_horizon_bars,
    )
    return ServiceRegistration(
        name="model",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server),
        components=(runner, scheduler),
    )
