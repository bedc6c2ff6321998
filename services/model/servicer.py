"""gRPC adapter of the model domain: each handler decodes its request (decoding.py), calls one use case of the
service layer (training/, registry/, serving/, tracking/ – each a service.py) and encodes the answer (encoding.py).
It holds no rule and touches no store; the services are built in wiring.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from bullant.model.v1 import model_pb2, model_pb2_grpc
from services.core.auth.identity import require_identity
from services.core.timeframes import Timeframe
from services.model import decoding
from services.model.encoding import (
    algorithm_message,
    job_message,
    model_message,
    performance_message,
    prediction_message,
    watch_message,
)
from services.model.registry.service import ModelRegistry
from services.model.serving.service import Predictor
from services.model.tracking.service import Tracker
from services.model.training.service import TrainingService

SERVICE = model_pb2.DESCRIPTOR.services_by_name["ModelService"]
Context = grpc.aio.ServicerContext[Any, Any]


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    """bullant.model.v1.ModelService: algorithms, training jobs, the registry, Predict and live tracking."""

    def __init__(
        self,
        training: TrainingService,
        registry: ModelRegistry,
        predictor: Predictor,
        tracker: Tracker,
    ) -> None:
        self._training = training
        self._registry = registry
        self._predictor = predictor
        self._tracker = tracker

    # -- algorithms and training ------------------------------------------------------------------------------------

    async def ListAlgorithms(
        self, request: model_pb2.ListAlgorithmsRequest, context: Context
    ) -> model_pb2.ListAlgorithmsResponse:
        page = await self._training.list_algorithms(size=request.page_size, page_token=request.page_token)
        return model_pb2.ListAlgorithmsResponse(
            algorithms=[algorithm_message(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def TrainModel(self, request: model_pb2.TrainModelRequest, context: Context) -> model_pb2.TrainModelResponse:
        identity = require_identity()
        job = await self._training.train(decoding.training_order(request), account_id=identity.account_id)
        return model_pb2.TrainModelResponse(job_id=job.job_id, job=job_message(job))

    async def WatchTraining(
        self, request: model_pb2.WatchTrainingRequest, context: Context
    ) -> AsyncIterator[model_pb2.WatchTrainingResponse]:
        job_id = decoding.job_id(request.job_id)
        async for event in self._training.watch(job_id):
            yield watch_message(job_id, event)

    async def GetTrainingJob(
        self, request: model_pb2.GetTrainingJobRequest, context: Context
    ) -> model_pb2.GetTrainingJobResponse:
        job = await self._training.job(decoding.job_id(request.job_id))
        return model_pb2.GetTrainingJobResponse(job=job_message(job))

    async def ListTrainingJobs(
        self, request: model_pb2.ListTrainingJobsRequest, context: Context
    ) -> model_pb2.ListTrainingJobsResponse:
        page = await self._training.list_jobs(
            decoding.job_filter(request), size=request.page_size, page_token=request.page_token
        )
        return model_pb2.ListTrainingJobsResponse(
            jobs=[job_message(job) for job in page.items], next_page_token=page.next_page_token
        )

    async def CancelTraining(
        self, request: model_pb2.CancelTrainingRequest, context: Context
    ) -> model_pb2.CancelTrainingResponse:
        job = await self._training.cancel(decoding.job_id(request.job_id))
        return model_pb2.CancelTrainingResponse(job=job_message(job))

    # -- registry ---------------------------------------------------------------------------------------------------

    async def ListModels(self, request: model_pb2.ListModelsRequest, context: Context) -> model_pb2.ListModelsResponse:
        page = await self._registry.list_models(
            decoding.model_filter(request), size=request.page_size, page_token=request.page_token
        )
        return model_pb2.ListModelsResponse(
            models=[model_message(item) for item in page.items], next_page_token=page.next_page_token
        )

    async def GetModel(self, request: model_pb2.GetModelRequest, context: Context) -> model_pb2.GetModelResponse:
        version = await self._registry.get(decoding.model_id(request.model_id))
        return model_pb2.GetModelResponse(model=model_message(version))

    async def UpdateModel(
        self, request: model_pb2.UpdateModelRequest, context: Context
    ) -> model_pb2.UpdateModelResponse:
        model_id = decoding.model_id(request.model.model_id, "model.model_id")
        settings = decoding.settings_update(request)
        version = await self._registry.update(
            model_id,
            auto_retrain=settings.auto_retrain,
            description=settings.description,
            traffic_fraction=settings.traffic_fraction,
        )
        return model_pb2.UpdateModelResponse(model=model_message(version))

    async def PromoteModel(
        self, request: model_pb2.PromoteModelRequest, context: Context
    ) -> model_pb2.PromoteModelResponse:
        identity = require_identity()
        version, previous = await self._registry.promote(
            decoding.model_id(request.model_id),
            account_id=identity.account_id,
            override_gate=request.override_gate,
            override_reason=request.override_reason,
        )
        return model_pb2.PromoteModelResponse(model=model_message(version), previous_model_id=previous)

    async def ArchiveModel(
        self, request: model_pb2.ArchiveModelRequest, context: Context
    ) -> model_pb2.ArchiveModelResponse:
        version = await self._registry.archive(decoding.model_id(request.model_id), force=request.force)
        return model_pb2.ArchiveModelResponse(model=model_message(version))

    # -- serving and tracking ---------------------------------------------------------------------------------------

    async def Predict(self, request: model_pb2.PredictRequest, context: Context) -> model_pb2.PredictResponse:
        prediction = await self._predictor.predict(
            symbol=request.symbol.upper(),
            timeframe=Timeframe(request.timeframe),
            horizon=request.horizon_bars,
            level=request.interval_level if request.HasField("interval_level") else None,
            request_key=request.request_key,
            model_id=decoding.optional_model_id(request.model_id),
            require_passed_gate=request.require_passed_gate,
        )
        return model_pb2.PredictResponse(prediction=prediction_message(prediction))

    async def GetModelPerformance(
        self, request: model_pb2.GetModelPerformanceRequest, context: Context
    ) -> model_pb2.GetModelPerformanceResponse:
        report, version = await self._tracker.model_performance(
            model_id=decoding.optional_model_id(request.model_id),
            symbol=request.symbol.upper(),
            timeframe=Timeframe(request.timeframe) if request.timeframe else None,
            horizon=request.horizon_bars or None,
            window_size=request.window_size or None,
            include_history=request.include_history,
        )
        return model_pb2.GetModelPerformanceResponse(performance=performance_message(version, report))
