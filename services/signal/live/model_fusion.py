"""The model service's part in a live signal: asks for the prediction of the signal's symbol and timeframe within a
deadline and fuses it with the technical signal (the rule is services/signal/fusion.py); when the model cannot
answer, the signal is technical-only and says why."""

from __future__ import annotations

import grpc

from bullant.model.v1 import model_pb2, model_pb2_grpc
from services.core.clients import ClientFactory
from services.core.grpc_errors import error_reason
from services.core.timeframes import Timeframe
from services.signal.fusion import Fused, ModelView, TechnicalOnly, fuse

MODEL = model_pb2.DESCRIPTOR.services_by_name["ModelService"]


class ModelFusion:
    """Asks the model service for the prediction behind a signal, within a deadline."""

    def __init__(self, clients: ClientFactory, *, deadline_seconds: float = 0.5, enabled: bool = True) -> None:
        self._clients = clients
        self._deadline = deadline_seconds
        self._enabled = enabled

    async def fuse(
        self, *, symbol: str, timeframe: Timeframe, side: int, technical: float, horizon: int, request_key: str
    ) -> Fused:
        """The fused signal, or the technical-only one with the reason the model could not contribute."""
        if not self._enabled:
            return fuse(side, technical, None, TechnicalOnly.FUSION_DISABLED)
        stub = model_pb2_grpc.ModelServiceStub(self._clients.channel(MODEL))
        request = model_pb2.PredictRequest(
            symbol=symbol,
            timeframe=int(timeframe),  # type: ignore[arg-type]
            horizon_bars=horizon,
            request_key=request_key,
            # Only the symbol and timeframe's production model, and only when it beats naive (its gate passed).
            require_passed_gate=True,
        )
        try:
            reply = await stub.Predict(request, timeout=self._deadline, wait_for_ready=False)
        except grpc.aio.AioRpcError as error:
            # An unreachable model service answers UNAVAILABLE at once (the client factory fails fast), so a
            # timeout here means a slow one.
            return fuse(side, technical, None, _technical_only(error))
        prediction = reply.prediction
        view = ModelView(
            prediction_id=prediction.prediction_id,
            model_id=prediction.model_id,
            confidence=prediction.confidence,
            direction=prediction.direction,
            expected_return=prediction.expected_return,
        )
        return fuse(side, technical, view)


def _technical_only(error: grpc.aio.AioRpcError) -> TechnicalOnly:
    if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return TechnicalOnly.MODEL_TIMEOUT
    if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
        reason = error_reason(error)
        if reason == "MODEL_NOT_TRAINED":
            return TechnicalOnly.MODEL_NOT_TRAINED
        if reason == "MODEL_GATE_NOT_PASSED":
            return TechnicalOnly.MODEL_GATE_NOT_PASSED
    return TechnicalOnly.MODEL_UNAVAILABLE
