"""Fusion against a real model service, acting as the signal service itself (service token): fused only with the
production model of the signal's symbol and timeframe that passed its promotion gate; technical-only with the
reason when there is no model, when the production model was promoted over its gate, when the model service is
down, or when it does not answer within the deadline (then within about the deadline)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from bullant.common.v1 import common_pb2
from bullant.model.v1 import model_pb2
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import token_policy
from services.core.clients import ClientFactory
from services.core.timeframes import Timeframe
from services.signal.fusion import BUY, ModelView, TechnicalOnly, fuse
from services.signal.live.model_fusion import ModelFusion
from tests.signal_platform import SignalPlatform, StoredSymbol, free_port, running_signal_platform, store_trend
from tests.support import make_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[SignalPlatform]:
    # No serving cache: the test promotes a model right after asking for one (replicas see a promotion within the
    # cache time, 2 s by default).
    async with running_signal_platform(
        (StoredSymbol("DEMO", "SIM-AAPL"),),
        days=400,
        services=("market", "model"),
        model_dir=str(tmp_path),
        model_serving_cache_seconds=0.0,
    ) as running:
        await store_trend(running)
        yield running


async def _fused(
    platform: SignalPlatform,
    upstream: str,
    *,
    deadline: float = 0.5,
    enabled: bool = True,
    symbol: str = "DEMO",
    timeframe: Timeframe = Timeframe.D1,
) -> object:
    settings = make_settings(default_upstream=upstream)
    clients = ClientFactory(settings.calls, settings.server)
    identity = ServiceIdentity(platform.deps.signing_keys, token_policy(platform.deps.settings.auth), "signal")
    try:
        with identity.acting():
            return await ModelFusion(clients, deadline_seconds=deadline, enabled=enabled).fuse(
                symbol=symbol, timeframe=timeframe, side=BUY, technical=0.7, horizon=5, request_key="sig-1"
            )
    finally:
        await clients.stop()


async def _trained(platform: SignalPlatform, symbol: str) -> model_pb2.Model:
    request = model_pb2.TrainModelRequest(
        algorithm=model_pb2.ALGORITHM_KALMAN, symbol=symbol, timeframe=common_pb2.TIMEFRAME_1D
    )
    reply = await platform.model.TrainModel(request, metadata=platform.admin)
    watch = model_pb2.WatchTrainingRequest(job_id=reply.job_id)
    watched = platform.model.WatchTraining(watch, metadata=platform.reader)
    model: model_pb2.Model = [message async for message in watched][-1].completed.model
    return model


async def test_fusion_only_with_a_production_model_that_beats_naive(platform: SignalPlatform) -> None:
    address = platform.server.address
    untrained = await _fused(platform, address)
    assert untrained == fuse(BUY, 0.7, None, TechnicalOnly.MODEL_NOT_TRAINED)
    disabled = await _fused(platform, address, enabled=False)
    assert disabled == fuse(BUY, 0.7, None, TechnicalOnly.FUSION_DISABLED)

    # DEMO is a random walk: its model fails the gate, and promoting it over the gate does not let it weigh in.
    walk = await _trained(platform, "DEMO")
    assert not walk.promotion_gate.passed
    await platform.model.PromoteModel(
        model_pb2.PromoteModelRequest(model_id=walk.model_id, override_gate=True, override_reason="fusion test model"),
        metadata=platform.admin,
    )
    overridden = await _fused(platform, address, deadline=5.0)
    assert overridden == fuse(BUY, 0.7, None, TechnicalOnly.MODEL_GATE_NOT_PASSED)
    # Its minute series has no model at all, whatever the daily one does.
    minutes = await _fused(platform, address, deadline=5.0, timeframe=Timeframe.M1)
    assert minutes == fuse(BUY, 0.7, None, TechnicalOnly.MODEL_NOT_TRAINED)

    # TREND trends: its model beats naive, is promoted through the gate, and weighs in.
    trend = await _trained(platform, "TREND")
    assert trend.promotion_gate.passed, trend.promotion_gate.detail
    await platform.model.PromoteModel(model_pb2.PromoteModelRequest(model_id=trend.model_id), metadata=platform.admin)
    fused = await _fused(platform, address, deadline=5.0, symbol="TREND")
    assert fused.model is not None  # type: ignore[attr-defined]
    view = fused.model  # type: ignore[attr-defined]
    assert view.model_id == trend.model_id
    assert fused == fuse(BUY, 0.7, ModelView(**{name: getattr(view, name) for name in ModelView.__dataclass_fields__}))
    # A candidate with an A/B share never weighs in: fusion asks for the production version only.
    challenger = await _trained(platform, "TREND")
    await platform.model.UpdateModel(
        model_pb2.UpdateModelRequest(
            model=model_pb2.Model(model_id=challenger.model_id, traffic_fraction=1.0),
            update_mask=FieldMask(paths=["traffic_fraction"]),
        ),
        metadata=platform.admin,
    )
    again = await _fused(platform, address, deadline=5.0, symbol="TREND")
    assert again.model.model_id == trend.model_id  # type: ignore[attr-defined]


async def test_a_down_or_silent_model_service_leaves_the_signal_technical_only(platform: SignalPlatform) -> None:
    down = await _fused(platform, f"127.0.0.1:{free_port()}")
    assert down == fuse(BUY, 0.7, None, TechnicalOnly.MODEL_UNAVAILABLE)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)  # accepts the connection, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # The outer bound only guards against a hang: the call must end by its own 0.3 s deadline (a timeout, not a
        # connect or retry loop that would end some other way).
        slow = await asyncio.wait_for(_fused(platform, f"127.0.0.1:{port}", deadline=0.3), 60)
    finally:
        server.close()
    assert slow == fuse(BUY, 0.7, None, TechnicalOnly.MODEL_TIMEOUT)
