"""Authentication through real channels: the contract's access rule decides, tokens are verified locally,
revocations are shared, API keys resolve through the account service's port, handlers get a typed Identity."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from bullant.account.v1 import account_pb2, account_pb2_grpc
from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.account.servicer import SERVICE as ACCOUNT
from services.core.auth.authenticator import Authenticator
from services.core.auth.identity import Credential, Identity, current_identity
from services.core.auth.keys import SigningKeys
from services.core.auth.revocation import RevocationList
from services.core.auth.tokens import TokenIssuer, TokenPolicy, TokenVerifier
from services.core.coordination import KeySpace, MemoryBackend
from services.core.server import GrpcServer, ServiceRegistration
from services.market.servicer import SERVICE as MARKET
from tests.support import make_settings

KEYS = SigningKeys.from_private(Ed25519PrivateKey.generate())
POLICY = TokenPolicy()
API_KEY_OWNER = Identity(
    account_id=9, shard=1, roles=("user",), scopes=("read",), credential=Credential.API_KEY, credential_id="key-1"
)


class WhoAmIMarket(market_pb2_grpc.MarketServiceServicer):
    """GetInstrument answers with the caller's account id as the symbol; StreamTicks streams once."""

    async def GetInstrument(
        self, request: market_pb2.GetInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.GetInstrumentResponse:
        identity = current_identity()
        assert identity is not None
        return market_pb2.GetInstrumentResponse(instrument=market_pb2.Instrument(symbol=f"A{identity.account_id}"))

    async def CreateInstrument(
        self, request: market_pb2.CreateInstrumentRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> market_pb2.CreateInstrumentResponse:
        return market_pb2.CreateInstrumentResponse()

    async def StreamTicks(
        self, request: market_pb2.StreamTicksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[market_pb2.StreamTicksResponse]:
        yield market_pb2.StreamTicksResponse()


async def _api_keys(secret: str) -> Identity | None:
    return API_KEY_OWNER if secret == "bk_live_good" else None


class Platform:
    def __init__(self, server: GrpcServer, channel: grpc.aio.Channel, revocations: RevocationList) -> None:
        self.server = server
        self.market = market_pb2_grpc.MarketServiceStub(channel)
        self.account = account_pb2_grpc.AccountServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.revocations = revocations


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    backend = MemoryBackend()
    await backend.start()
    revocations = RevocationList(backend.cache(KeySpace("bullant", "test", "account")))
    servicer = WhoAmIMarket()
    settings = make_settings()
    market = ServiceRegistration(
        name="market",
        full_name=MARKET.full_name,
        add_to_server=lambda s: market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, s),
    )
    # The generated base class: every account method reaches a handler (UNIMPLEMENTED) once authentication lets it.
    bare_account = account_pb2_grpc.AccountServiceServicer()
    account = ServiceRegistration(
        name="account",
        full_name=ACCOUNT.full_name,
        add_to_server=lambda s: account_pb2_grpc.add_AccountServiceServicer_to_server(bare_account, s),
    )
    server = GrpcServer(
        settings.server,
        [market, account],
        authenticator=Authenticator(TokenVerifier(KEYS, POLICY), revocations, _api_keys),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield Platform(server, channel, revocations)
    finally:
        await server.stop(grace=0.5)
        await backend.stop()


def _token(scopes: tuple[str, ...] = ("read",), *, now: float | None = None, session: str = "s-1") -> str:
    token, _ = TokenIssuer(KEYS, POLICY).issue(
        account_id=42, shard=0, roles=["user"], scopes=scopes, session_id=session, now=now
    )
    return token


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return caught.value.code(), info.reason
    raise AssertionError("no ErrorInfo")


GET = market_pb2.GetInstrumentRequest(symbol="AAPL")


async def test_no_credentials_is_unauthenticated(platform: Platform) -> None:
    assert await _refusal(platform.market.GetInstrument(GET)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIALS_MISSING",
    )


async def test_a_valid_token_reaches_the_handler_with_a_typed_identity(platform: Platform) -> None:
    reply = await platform.market.GetInstrument(GET, metadata=_bearer(_token()))
    assert reply.instrument.symbol == "A42"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "TOKEN_INVALID"),
        ("Bearer not.a.jwt", "TOKEN_INVALID"),
        (f"Bearer {_token(now=time.time() - 7200)}", "TOKEN_EXPIRED"),
        (f"Bearer {_token()[:-4]}AAAA", "TOKEN_INVALID"),
    ],
)
async def test_bad_tokens_are_unauthenticated(platform: Platform, authorization: str, reason: str) -> None:
    call = platform.market.GetInstrument(GET, metadata=(("authorization", authorization),))
    assert await _refusal(call) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_a_token_from_another_platform_key_is_refused(platform: Platform) -> None:
    stranger = SigningKeys.from_private(Ed25519PrivateKey.generate())
    token, _ = TokenIssuer(stranger, POLICY).issue(account_id=1, shard=0, roles=[], scopes=["read"], session_id="s")
    call = platform.market.GetInstrument(GET, metadata=_bearer(token))
    assert await _refusal(call) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_missing_scope_is_permission_denied(platform: Platform) -> None:
    create = market_pb2.CreateInstrumentRequest(
        instrument=market_pb2.Instrument(
            symbol="NEW", venue="TEST", asset_class=market_pb2.ASSET_CLASS_STOCK, quote_currency="USD"
        )
    )
    call = platform.market.CreateInstrument(create, metadata=_bearer(_token(("read",))))
    assert await _refusal(call) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    admin = _bearer(_token(("read", "admin")))
    await platform.market.CreateInstrument(create, metadata=admin)
    # The access rule is checked before the request's own rules: a caller without the scope learns nothing of them.
    call = platform.market.CreateInstrument(market_pb2.CreateInstrumentRequest(), metadata=_bearer(_token(("read",))))
    assert await _refusal(call) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")


async def test_revoked_session_and_token_are_refused_everywhere(platform: Platform) -> None:
    token = _token(session="s-revoke")
    await platform.market.GetInstrument(GET, metadata=_bearer(token))
    await platform.revocations.revoke_session("s-revoke", ttl_seconds=900)
    call = platform.market.GetInstrument(GET, metadata=_bearer(token))
    assert await _refusal(call) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    # Another session of the same account is unaffected.
    await platform.market.GetInstrument(GET, metadata=_bearer(_token(session="s-other")))


async def test_public_methods_need_no_credentials(platform: Platform) -> None:
    # Login is public: without credentials it reaches its handler (here the bare generated one) instead of being
    # refused.
    call = platform.account.Login(account_pb2.LoginRequest(email="ada@example.com", password="secret"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    reply = await platform.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_api_keys_resolve_through_the_port_and_stay_out_of_session_only_methods(platform: Platform) -> None:
    reply = await platform.market.GetInstrument(GET, metadata=(("x-api-key", "bk_live_good"),))
    assert reply.instrument.symbol == "A9"
    unknown = platform.market.GetInstrument(GET, metadata=(("x-api-key", "bk_live_bad"),))
    assert await _refusal(unknown) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    takeover = platform.account.ChangePassword(
        account_pb2.ChangePasswordRequest(), metadata=(("x-api-key", "bk_live_good"),)
    )
    assert await _refusal(takeover) == (grpc.StatusCode.PERMISSION_DENIED, "SESSION_REQUIRED")


async def test_streams_are_refused_before_any_message(platform: Platform) -> None:
    stream = platform.market.StreamTicks(market_pb2.StreamTicksRequest(symbols=["AAPL"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            raise AssertionError("a message reached an unauthenticated caller")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    received = [
        m
        async for m in platform.market.StreamTicks(
            market_pb2.StreamTicksRequest(symbols=["AAPL"]), metadata=_bearer(_token())
        )
    ]
    assert len(received) == 1
