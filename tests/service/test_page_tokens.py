"""Every List method of every service, through real channels: a page token the server did not issue for that list
(forged, edited, garbage, oversized, another list's) – or a signed one whose position no store can use – is
INVALID_ARGUMENT with reason PAGE_TOKEN_INVALID, never INTERNAL; good tokens page on across a restart."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from bullant.account.v1 import account_pb2
from bullant.chat.v1 import chat_pb2
from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from bullant.model.v1 import model_pb2
from bullant.signal.v1 import signal_pb2
from services.bootstrap import build_server
from services.core.auth.keys import load_page_token_key, load_signing_keys
from services.core.auth.tokens import TokenIssuer, token_policy
from services.core.grpc_errors import error_reason
from services.core.paging import PageTokens
from services.core.server import GrpcServer
from services.core.settings import BUILT_SERVICES, Settings
from tests.support import make_settings

SERVICES = [
    account_pb2.DESCRIPTOR.services_by_name["AccountService"],
    market_pb2.DESCRIPTOR.services_by_name["MarketService"],
    signal_pb2.DESCRIPTOR.services_by_name["SignalService"],
    model_pb2.DESCRIPTOR.services_by_name["ModelService"],
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
]
# Every method that takes a page token, found in the contracts: a new List method is covered without a word here.
PAGED = [
    method for service in SERVICES for method in service.methods if "page_token" in method.input_type.fields_by_name
]
# The fields a method needs besides its page token to get as far as reading it.
REQUIRED: dict[str, dict[str, Any]] = {"ListBars": {"symbol": "HIST-A", "timeframe": common_pb2.TIMEFRAME_1M}}
# Services not built yet are not served: their methods answer UNIMPLEMENTED (no reason) whatever the token.
UNBUILT = {
    service.full_name for service in SERVICES if service.name.removesuffix("Service").lower() not in BUILT_SERVICES
}
# One platform for the module's tests (a full server per method would cost more than the checks).
pytestmark = pytest.mark.asyncio(loop_scope="module")
EMPTY_QUERY = "e3b0c44298fc1c14"  # the filter digest of a list without filters (the issue's probes carry it)


def _unsigned(payload: Any) -> str:
    """A token in the format before tokens were signed: base64 JSON, as the issue's probes edited it."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


# Forged, edited and garbage tokens any list must refuse.
FORGED = [
    _unsigned({"p": {"after": "zzz"}, "q": EMPTY_QUERY}),
    _unsigned({"p": {"after": None}, "q": EMPTY_QUERY}),
    _unsigned({"p": {}, "q": EMPTY_QUERY}),
    _unsigned([]),
    base64.urlsafe_b64encode(b'{"p":{"after":1e400},"q":"e3b0c44298fc1c14"}').decode(),
    _unsigned({"p": {"t": "9999-12-31T23:59:59.999999"}, "q": EMPTY_QUERY}),
    _unsigned({"p": {"t": "9999-12-31T23:59:59.999999", "id": "x"}, "q": EMPTY_QUERY}),
    "zzz",
    "%%%",
    "a.b",
    ".",
    "e30.e30",
    "A" * 5000,
    ("A" * 100 + ".") * 40,
]


@dataclass
class Lists:
    server: GrpcServer
    settings: Settings
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]

    async def call(self, method: MethodDescriptor, **fields: Any) -> Any:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = self.channel.unary_unary(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return await call(request_class(**{**REQUIRED.get(method.name, {}), **fields}), metadata=self.metadata)

    def pages(self) -> PageTokens:
        """The page-token key the server holds (the local environment keeps it under the data directory)."""
        return PageTokens(load_page_token_key(self.settings))


def _admin(settings: Settings) -> tuple[tuple[str, str], ...]:
    token, _ = TokenIssuer(load_signing_keys(settings), token_policy(settings.auth)).issue(
        account_id=3, shard=1, roles=("user", "admin"), scopes=("read", "trade", "admin"), session_id="lists"
    )
    return (("authorization", f"Bearer {token}"),)


async def _import_bars(lists: Lists) -> None:
    market = SERVICES[1]
    instrument = market_pb2.Instrument(
        symbol="HIST-A",
        venue="HIST",
        asset_class=market_pb2.ASSET_CLASS_STOCK,
        quote_currency="USD",
        trading_session=market_pb2.TradingSession(always_open=True),  # test bars come at any hour
    )
    await lists.call(market.methods_by_name["CreateInstrument"], instrument=instrument)
    rows = "\n".join(f"2024-01-02T00:0{minute}:00Z,10,11,9,10.5,100" for minute in range(4))
    await lists.call(
        market.methods_by_name["ImportBars"],
        symbol="HIST-A",
        timeframe=common_pb2.TIMEFRAME_1M,
        csv=f"time,open,high,low,close,volume\n{rows}\n".encode(),
    )


async def _running(settings: Settings) -> GrpcServer:
    server = build_server(settings)
    await server.start()
    return server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lists() -> AsyncIterator[Lists]:
    settings = make_settings(market_feeds=[])
    server = await _running(settings)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            running = Lists(server, settings, channel, _admin(settings))
            await _import_bars(running)
            yield running
    finally:
        await server.stop(grace=0.5)


async def _refusal(lists: Lists, method: MethodDescriptor, token: str) -> tuple[grpc.StatusCode, str]:
    try:
        await lists.call(method, page_size=1, page_token=token)
    except grpc.aio.AioRpcError as error:
        return error.code(), error_reason(error)
    raise AssertionError(f"{method.name} accepted the page token {token[:60]!r}")


def _edited(token: str) -> list[str]:
    """A real token with its position changed, its tag dropped, and its tag moved to another body."""
    body, _, tag = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    position = payload["p"]
    changed = {name: (value + 1 if isinstance(value, int) else "zzz") for name, value in position.items()}
    edited = _unsigned({**payload, "p": changed})
    return [f"{edited}.{tag}", body, f"{body}.{tag[:-4]}", f"{body}{tag}"]


@pytest.mark.parametrize("method", PAGED, ids=lambda method: f"{method.containing_service.name}.{method.name}")
async def test_every_list_refuses_tokens_it_did_not_issue(lists: Lists, method: MethodDescriptor) -> None:
    if method.containing_service.full_name in UNBUILT:
        assert (await _refusal(lists, method, FORGED[0]))[0] == grpc.StatusCode.UNIMPLEMENTED
        return
    # The request is good without a token: every refusal below is the token's.
    first = await lists.call(method, page_size=1)
    others = [
        (await lists.call(other, page_size=1, **REQUIRED.get(other.name, {}))).next_page_token
        for other in PAGED
        if other is not method and other.name in ("ListIndicators", "ListStrategies", "ListAlgorithms")
    ]
    assert any(others), "no other list gave a token to replay here"
    tokens = FORGED + [token for token in others if token]
    if first.next_page_token:
        tokens += _edited(first.next_page_token)
    for token in tokens:
        assert await _refusal(lists, method, token) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAGE_TOKEN_INVALID",
        ), token[:80]


@pytest.mark.parametrize("after", ["zzz", None, {}, [], float("inf"), True, -1, 2**64, 1.0])
async def test_a_signed_but_unusable_algorithm_position_is_refused(lists: Lists, after: Any) -> None:
    method = SERVICES[3].methods_by_name["ListAlgorithms"]
    token = lists.pages().seal("model.ListAlgorithms", {"p": {"after": after}, "q": EMPTY_QUERY})
    assert await _refusal(lists, method, token) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59.999999", "0001-01-01T00:00:00", "soon", 0])
async def test_a_signed_bar_position_at_the_end_of_time_is_refused(lists: Lists, moment: Any) -> None:
    method = SERVICES[1].methods_by_name["ListBars"]
    token = (await lists.call(method, page_size=1)).next_page_token
    body = token.partition(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    # The position the issue's probe wrote, for the very filters of the request, signed with the server's key.
    forged = lists.pages().seal("market.ListBars", {**payload, "p": {"t": moment}})
    assert await _refusal(lists, method, forged) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


async def test_tokens_page_on_across_a_restart() -> None:
    settings = make_settings(market_feeds=[])
    signal = SERVICES[2]
    server = await _running(settings)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            before = Lists(server, settings, channel, _admin(settings))
            listed = await before.call(signal.methods_by_name["ListStrategies"])
            everything = [strategy.strategy_id for strategy in listed.strategies]
            first = await before.call(signal.methods_by_name["ListStrategies"], page_size=2)
            indicators_page = await before.call(signal.methods_by_name["ListIndicators"], page_size=3)
    finally:
        await server.stop(grace=0.5)
    assert first.next_page_token
    assert indicators_page.next_page_token
    server = await _running(settings)  # same data directory, so the same local page-token key
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            after = Lists(server, settings, channel, _admin(settings))
            seen = [s.strategy_id for s in first.strategies]
            token = first.next_page_token
            while token:
                reply = await after.call(signal.methods_by_name["ListStrategies"], page_size=2, page_token=token)
                seen += [s.strategy_id for s in reply.strategies]
                token = reply.next_page_token
            assert seen == everything
            rest = await after.call(
                signal.methods_by_name["ListIndicators"], page_token=indicators_page.next_page_token
            )
            assert rest.indicators
            assert rest.indicators[0].name > indicators_page.indicators[-1].name
    finally:
        await server.stop(grace=0.5)
