"""An account whose email address is not verified yet is told so – PERMISSION_DENIED EMAIL_NOT_VERIFIED and how to
verify – by every method that needs a scope it cannot have until then, not "the credential lacks scope trade"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from bullant.account.v1 import account_pb2
from bullant.chat.v1 import chat_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.core.access import rule_of
from services.core.auth.identity import VERIFIED_SCOPES
from services.core.grpc_errors import error_info
from services.core.settings import BUILT_SERVICES
from tests.gateway_platform import GatewayPlatform, running_gateway

pytestmark = pytest.mark.timeout(120)
PASSWORD = "correct horse battery staple"
SERVICES = [
    account_pb2.DESCRIPTOR.services_by_name["AccountService"],
    market_pb2.DESCRIPTOR.services_by_name["MarketService"],
    signal_pb2.DESCRIPTOR.services_by_name["SignalService"],
    model_pb2.DESCRIPTOR.services_by_name["ModelService"],
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
]
# A service that is not built yet is not served at all: its methods answer UNIMPLEMENTED before any check.
SERVED = [service for service in SERVICES if service.name.removesuffix("Service").lower() in BUILT_SERVICES]


def _needs_verification(method: MethodDescriptor) -> bool:
    rule = rule_of(method)
    return rule is not None and any(scope in VERIFIED_SCOPES for scope in rule.scopes) and "admin" not in rule.scopes


# Every method whose contract asks for a scope an unverified account cannot have, found in the contracts.
GUARDED = [method for service in SERVED for method in service.methods if _needs_verification(method)]


@pytest.fixture
async def platform() -> AsyncIterator[GatewayPlatform]:
    async with running_gateway() as running:
        yield running


async def _unverified_session(platform: GatewayPlatform, email: str) -> str:
    registered = await platform.http.post("/v1/auth:register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 200, registered.text
    login = await platform.http.post("/v1/auth:login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert login.json()["scopes"] == ["read"]
    return str(login.json()["accessToken"])


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, token: str) -> None:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),)
    options: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    if method.client_streaming:
        call: Any = (
            channel.stream_stream(path, **options) if method.server_streaming else channel.stream_unary(path, **options)
        )
        stream = call(iter([request_class()]), metadata=metadata)
    elif method.server_streaming:
        stream = channel.unary_stream(path, **options)(request_class(), metadata=metadata)
    else:
        await channel.unary_unary(path, **options)(request_class(), metadata=metadata)
        return
    if method.server_streaming:
        async for _ in stream:
            pass
    else:
        await stream


async def test_creating_an_alert_before_verifying_says_what_to_do(platform: GatewayPlatform) -> None:
    token = await _unverified_session(platform, "new@example.com")
    alert = {"symbol": "SIM-AAPL", "timeframe": "TIMEFRAME_1M", "strategyId": "ema_cross"}
    response = await platform.http.post("/v1/alerts", headers={"authorization": f"Bearer {token}"}, json=alert)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    info = next(d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert (error["status"], info["reason"]) == ("PERMISSION_DENIED", "EMAIL_NOT_VERIFIED")
    assert "verify your email address" in error["message"]
    assert "ResendVerificationEmail" in error["message"]
    assert "lacks scope" not in error["message"]


async def test_every_method_needing_a_verified_email_says_so(platform: GatewayPlatform) -> None:
    assert {"CreateAlert", "RunBacktest", "UpdateProfile"} <= {method.name for method in GUARDED}
    token = await _unverified_session(platform, "every@example.com")
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        for method in GUARDED:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _call(channel, method, token)
            info = error_info(caught.value)
            assert (caught.value.code(), info.reason if info else "") == (
                grpc.StatusCode.PERMISSION_DENIED,
                "EMAIL_NOT_VERIFIED",
            ), method.full_name
            assert info is not None
            assert info.metadata["missing_scopes"] == "trade"


async def test_a_verified_credential_without_the_scope_still_lacks_it(platform: GatewayPlatform) -> None:
    # A credential that lacks "trade" by choice (a read-only token here; a read-only API key alike) is told that,
    # not to verify an email address.
    response = await platform.http.post(
        "/v1/alerts",
        headers=platform.bearer(scopes=("read",)),
        json={"symbol": "SIM-AAPL", "timeframe": "TIMEFRAME_1M", "strategyId": "ema_cross"},
    )
    assert response.status_code == 403
    info = next(d for d in response.json()["error"]["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["reason"] == "SCOPE_MISSING"
