"""Open streams end with their credentials, through real channels: StreamTicks and the gateway's WebSocket (its
shared tick topics run under the platform's identity) stop promptly after Logout, RevokeSession, RevokeApiKey, an
admin disabling the account, or the token's expiry, each with the right code and reason – and the platform's own
tick relay renews its credential without the sockets noticing."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from bullant.account.v1 import account_pb2, account_pb2_grpc
from bullant.market.v1 import market_pb2, market_pb2_grpc
from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from gateway.relay import TickRelay
from services.bootstrap import build_dependencies
from services.core.auth.authenticator import Authenticator
from services.core.auth.keys import SigningKeys, load_signing_keys
from services.core.auth.revocation import RevocationList
from services.core.auth.service_identity import ServiceIdentity
from services.core.auth.tokens import TokenIssuer, TokenPolicy, TokenVerifier, token_policy
from services.core.auth.watch import CredentialWatcher
from services.core.clients import ClientFactory
from services.core.db.databases import Databases
from services.core.db.schema import outbox_messages
from services.core.grpc_errors import error_reason
from services.core.server import GrpcServer
from services.market import wiring as market_wiring
from services.signal import wiring as signal_wiring
from services.signal.live.market_ticks import MarketTicks
from tests.gateway_platform import GatewayPlatform, running_gateway
from tests.live_platform import SYMBOL as LIVE_SYMBOL
from tests.live_platform import live_settings, running_live_platform
from tests.market_platform import ScriptedFeed
from tests.support import eventually, make_settings

pytestmark = pytest.mark.timeout(180)
PASSWORD = "correct horse battery staple"
SYMBOL = "SIM-AAPL"
# Generous bounds for "promptly" on a loaded 2-core machine; nothing here measures time.
ENDS_WITHIN = 20.0


@pytest.fixture
async def platform() -> AsyncIterator[GatewayPlatform]:
    async with running_gateway(
        market_feeds=["sim"], sim_tick_interval_seconds=0.05, sim_history_daily_days=0, sim_history_minute_days=0
    ) as running:

        async def listed() -> bool:  # the simulator registers its instruments once started
            found = await running.http.get(f"/v1/instruments/{SYMBOL}", headers=running.bearer(999))
            return found.status_code == 200

        await eventually(listed, timeout=30)
        yield running


class User:
    """A verified user of the running platform, with gRPC stubs."""

    def __init__(self, platform: GatewayPlatform, channel: grpc.aio.Channel, account_id: int, login: Any) -> None:
        self.platform = platform
        self.account_id = account_id
        self.login = login
        self.account = account_pb2_grpc.AccountServiceStub(channel)
        self.market = market_pb2_grpc.MarketServiceStub(channel)

    @property
    def session(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.login['accessToken']}"),)

    async def api_key(self) -> str:
        created = await self.account.CreateApiKey(
            account_pb2.CreateApiKeyRequest(api_key=account_pb2.ApiKey(name="bot", scopes=["read"])),
            metadata=self.session,
        )
        return str(created.secret)


async def _user(platform: GatewayPlatform, channel: grpc.aio.Channel, email: str) -> User:
    http = platform.http
    registered = await http.post("/v1/auth:register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 200, registered.text
    account_id = int(registered.json()["account"]["accountId"])
    databases = next(c for c in platform.server.components if isinstance(c, Databases))
    async with databases.global_transaction() as connection:
        rows = await connection.execute(
            select(outbox_messages.c.payload).where(outbox_messages.c.account_id == account_id)
        )
        link = json.loads(rows.all()[-1].payload)["link"]
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["token"][0]
    assert (await http.post("/v1/auth:verifyEmail", json={"token": token})).status_code == 200
    login = await http.post("/v1/auth:login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return User(platform, channel, account_id, login.json())


async def _open_ticks(market: market_pb2_grpc.MarketServiceStub, metadata: Any) -> Any:
    """A StreamTicks call that has started (its snapshot arrived)."""
    call: Any = market.StreamTicks(market_pb2.StreamTicksRequest(symbols=[SYMBOL]), metadata=metadata)
    first = await call.read()
    assert first.WhichOneof("event") == "snapshot"
    return call


async def _end_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """How a stream ended: it may deliver ticks until then, never past the bound."""
    try:
        async with asyncio.timeout(ENDS_WITHIN):
            while await call.read() is not grpc.aio.EOF:
                pass
    except grpc.aio.AioRpcError as error:
        return error.code(), error_reason(error)
    raise AssertionError("the stream ended without an error")


async def _still_streaming(call: Any) -> None:
    async with asyncio.timeout(ENDS_WITHIN):
        message = await call.read()
    assert message is not grpc.aio.EOF


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


async def test_logout_ends_the_sessions_streams_of_every_service(platform: GatewayPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        user = await _user(platform, channel, "logout@example.com")
        ticks = await _open_ticks(user.market, user.session)
        signals: Any = signal_pb2_grpc.SignalServiceStub(channel).StreamSignals(
            signal_pb2.StreamSignalsRequest(), metadata=user.session
        )
        assert (await signals.read()).WhichOneof("event") == "heartbeat"  # (sent at once: the stream is live)
        await user.account.Logout(account_pb2.LogoutRequest(), metadata=user.session)
        assert await _end_of(ticks) == (UNAUTHENTICATED, "TOKEN_REVOKED")
        assert await _end_of(signals) == (UNAUTHENTICATED, "TOKEN_REVOKED")


async def test_revoking_a_session_ends_its_streams_and_no_other(platform: GatewayPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        laptop = await _user(platform, channel, "two@example.com")
        phone_login = await platform.http.post(
            "/v1/auth:login", json={"email": "two@example.com", "password": PASSWORD}
        )
        phone = User(platform, channel, laptop.account_id, phone_login.json())
        laptop_stream = await _open_ticks(laptop.market, laptop.session)
        phone_stream = await _open_ticks(phone.market, phone.session)
        revoke = account_pb2.RevokeSessionRequest(session_id=phone.login["sessionId"])
        await laptop.account.RevokeSession(revoke, metadata=laptop.session)
        assert await _end_of(phone_stream) == (UNAUTHENTICATED, "TOKEN_REVOKED")
        await _still_streaming(laptop_stream)
        laptop_stream.cancel()


async def test_revoking_an_api_key_ends_its_streams(platform: GatewayPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        user = await _user(platform, channel, "keys@example.com")
        secret = await user.api_key()
        stream = await _open_ticks(user.market, (("x-api-key", secret),))
        keys = await user.account.ListApiKeys(account_pb2.ListApiKeysRequest(), metadata=user.session)
        revoke = account_pb2.RevokeApiKeyRequest(api_key_id=keys.api_keys[0].api_key_id)
        await user.account.RevokeApiKey(revoke, metadata=user.session)
        assert await _end_of(stream) == (UNAUTHENTICATED, "API_KEY_INVALID")


async def test_disabling_an_account_ends_every_stream_of_it(platform: GatewayPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        user = await _user(platform, channel, "victim@example.com")
        secret = await user.api_key()
        by_session = await _open_ticks(user.market, user.session)
        by_key = await _open_ticks(user.market, (("x-api-key", secret),))
        admin = tuple(platform.bearer(999, admin=True).items())
        await user.account.DisableUser(account_pb2.DisableUserRequest(account_id=user.account_id), metadata=admin)
        assert await _end_of(by_session) == (PERMISSION_DENIED, "ACCOUNT_DISABLED")
        assert await _end_of(by_key) == (PERMISSION_DENIED, "ACCOUNT_DISABLED")


async def test_a_stream_ends_when_its_token_expires(platform: GatewayPlatform) -> None:
    settings = platform.settings
    # A token issued long enough ago that it has two seconds to live (on the real clock the server reads).
    ttl = settings.auth.access_token_ttl_seconds
    issuer = TokenIssuer(load_signing_keys(settings), token_policy(settings.auth), clock=lambda: time.time() - ttl + 2)
    token, _ = issuer.issue(account_id=5, shard=1, roles=("user",), scopes=("read",), session_id="short")
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        stream = await _open_ticks(market_pb2_grpc.MarketServiceStub(channel), (("authorization", f"Bearer {token}"),))
        assert await _end_of(stream) == (UNAUTHENTICATED, "TOKEN_EXPIRED")


# -- the WebSocket ----------------------------------------------------------------------------------------------------


def _url(platform: GatewayPlatform) -> str:
    return platform.base_url.replace("http://", "ws://") + "/v1/ws"


async def _next(socket: Any, kinds: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(ENDS_WITHIN):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message["type"] in kinds:
                return message


async def _socket_watching(socket: Any, auth: dict[str, str]) -> None:
    """Authenticated, with a shared ticks topic and a signals topic running."""
    await socket.send(json.dumps({"type": "auth", **auth}))
    assert (await _next(socket, {"authenticated", "error"}))["type"] == "authenticated"
    for topic in (f"ticks:{SYMBOL}", "signals"):
        await socket.send(json.dumps({"type": "subscribe", "topic": topic}))
    ticking = await _next(socket, {"event"})
    assert ticking["topic"] in (f"ticks:{SYMBOL}", "signals")


async def _socket_end(socket: Any) -> tuple[str, str, int]:
    """The socket's last error (status, reason) and its close code; events before it are fine, none after."""
    last: dict[str, Any] | None = None
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(ENDS_WITHIN):
            while True:
                message = json.loads(await socket.recv())
                if message["type"] == "error" and "topic" not in message:
                    last = message
                else:
                    assert last is None, f"{message} after the socket's credential ended"
    assert last is not None, "closed without saying why"
    error = last["error"]
    reason = next(d["reason"] for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert closed.value.rcvd is not None
    return error["status"], reason, closed.value.rcvd.code


async def test_a_socket_ends_when_its_session_signs_out(platform: GatewayPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        user = await _user(platform, channel, "socket@example.com")
        async with websockets.connect(_url(platform)) as socket:
            await _socket_watching(socket, {"token": user.login["accessToken"]})
            assert platform.app.state.gateway.relay.stream_count == 1  # the topic is on the shared stream
            await user.account.Logout(account_pb2.LogoutRequest(), metadata=user.session)
            assert await _socket_end(socket) == ("UNAUTHENTICATED", "TOKEN_REVOKED", 4401)


async def test_a_socket_ends_when_its_api_key_is_revoked_or_its_account_disabled(platform: GatewayPlatform) -> None:
    async with grpc.aio.insecure_channel(platform.server.address) as channel:
        user = await _user(platform, channel, "sockets@example.com")
        first, second = await user.api_key(), await user.api_key()
        async with websockets.connect(_url(platform)) as revoked, websockets.connect(_url(platform)) as disabled:
            await _socket_watching(revoked, {"apiKey": first})
            await _socket_watching(disabled, {"token": user.login["accessToken"]})
            keys = await user.account.ListApiKeys(account_pb2.ListApiKeysRequest(), metadata=user.session)
            key_id = next(key.api_key_id for key in keys.api_keys if first.startswith(key.prefix))
            await user.account.RevokeApiKey(account_pb2.RevokeApiKeyRequest(api_key_id=key_id), metadata=user.session)
            assert await _socket_end(revoked) == ("UNAUTHENTICATED", "API_KEY_INVALID", 4401)
            async with websockets.connect(_url(platform)) as by_key:
                await _socket_watching(by_key, {"apiKey": second})
                admin = tuple(platform.bearer(999, admin=True).items())
                request = account_pb2.DisableUserRequest(account_id=user.account_id)
                await user.account.DisableUser(request, metadata=admin)
                assert await _socket_end(disabled) == ("PERMISSION_DENIED", "ACCOUNT_DISABLED", 4403)
                assert await _socket_end(by_key) == ("PERMISSION_DENIED", "ACCOUNT_DISABLED", 4403)


async def test_a_socket_ends_when_its_token_expires(platform: GatewayPlatform) -> None:
    settings = platform.settings
    ttl = settings.auth.access_token_ttl_seconds
    issuer = TokenIssuer(load_signing_keys(settings), token_policy(settings.auth), clock=lambda: time.time() - ttl + 3)
    token, _ = issuer.issue(account_id=6, shard=0, roles=("user",), scopes=("read",), session_id="short-ws")
    async with websockets.connect(_url(platform)) as socket:
        await _socket_watching(socket, {"token": token})
        assert await _socket_end(socket) == ("UNAUTHENTICATED", "TOKEN_EXPIRED", 4401)


# -- expiry on an injected clock, and the relay's own credential -------------------------------------------------------


class MovableClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_expiry_follows_the_servers_clock_not_wall_time() -> None:
    keys = SigningKeys.from_private(Ed25519PrivateKey.generate())
    clock = MovableClock()
    policy = TokenPolicy(ttl_seconds=900, leeway_seconds=5)
    settings = make_settings(market_feeds=["sim"], sim_tick_interval_seconds=0.05, sim_history_daily_days=0)
    deps = build_dependencies(settings)
    revocations = RevocationList(deps.coordination.for_service("account").cache)
    server = GrpcServer(
        settings.server,
        [market_wiring.build(deps)],
        lifecycle=deps.lifecycle,
        components=(deps.databases, deps.coordination),
        authenticator=Authenticator(
            TokenVerifier(keys, policy, clock=clock),
            revocations,
            watcher=CredentialWatcher(revocations, clock=clock, recheck_seconds=0.2),
        ),
    )
    await server.start()
    try:
        token, _ = TokenIssuer(keys, policy, clock=clock).issue(
            account_id=5, shard=0, roles=("user",), scopes=("read",), session_id="s-5"
        )
        async with grpc.aio.insecure_channel(server.address) as channel:
            market = market_pb2_grpc.MarketServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"),)

            async def listed() -> bool:  # the simulator registers its instruments once started
                found = await market.ListInstruments(market_pb2.ListInstrumentsRequest(), metadata=metadata)
                return SYMBOL in {instrument.symbol for instrument in found.instruments}

            await eventually(listed, timeout=30)
            stream = await _open_ticks(market, metadata)
            clock.now += 600
            await _still_streaming(stream)
            # One second past its expiry – inside the leeway a new call still gets, but a stream ends strictly.
            clock.now += 301
            assert await _end_of(stream) == (UNAUTHENTICATED, "TOKEN_EXPIRED")
    finally:
        await server.stop(grace=0.5)


async def test_the_relay_renews_its_credential_before_it_expires(platform: GatewayPlatform) -> None:
    settings = platform.settings
    # Service tokens that live six seconds: the shared stream must be renewed over and over.
    identity = ServiceIdentity(load_signing_keys(settings), TokenPolicy(ttl_seconds=6), "gateway")
    clients = ClientFactory(settings.calls, settings.server)
    await clients.start()
    relay = TickRelay(clients, identity)
    received: list[int] = []
    # For each delivery, the newest service token then (by its expiry): a renewed call is opened with a new token and
    # overlaps the call it replaces, so ticks delivered under each new token span a renewal.
    under: Counter[float] = Counter()
    ended: list[dict[str, object]] = []

    class Socket:
        def offer(self, topic: str, frame: str, ticks: int, last_sequence: int) -> None:
            if ticks:  # (a drop report carries none)
                received.append(last_sequence)
                under[identity.expires_at] += 1

        def end_topic(self, topic: str, error: dict[str, object]) -> None:
            ended.append(error)

    socket = Socket()
    try:
        stream = relay.join(SYMBOL, f"ticks:{SYMBOL}", socket)

        def renewed_and_ticking() -> bool:
            # Four tokens (three renewals) each with several deliveries: ticks kept flowing across every renewal. (Not
            # a total count of ticks: how fast the simulator ticks depends on the time of day.)
            return sum(count >= 3 for count in under.values()) >= 4

        await eventually(renewed_and_ticking, timeout=60)
        assert ended == []
        assert relay.usable
        # Never a tick twice or out of order across the renewals.
        assert received == sorted(received)
        assert len(set(received)) == len(received)
        relay.leave(stream, socket)
    finally:
        await relay.stop()
        await clients.stop()


async def test_the_signal_engine_renews_its_tick_streams_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine's service tokens live six seconds: its tick stream must be renewed over and over.
    short = TokenPolicy(ttl_seconds=6)
    monkeypatch.setattr(signal_wiring, "token_policy", lambda settings: short)
    # How each of the engine's tick streams ended: cancelled by the engine once replaced, or broken.
    broken: list[Exception] = []
    stream = MarketTicks.stream

    async def recorded(self: MarketTicks, *args: Any, **kwargs: Any) -> None:
        try:
            await stream(self, *args, **kwargs)
        except Exception as error:
            broken.append(error)
            raise

    monkeypatch.setattr(MarketTicks, "stream", recorded)
    settings = live_settings(signal_symbols=[LIVE_SYMBOL])
    async with running_live_platform(settings, feed=ScriptedFeed(), services=("market", "signal")) as platform:
        await eventually(lambda: LIVE_SYMBOL in platform.engine.streaming, timeout=30)
        identity = platform.engine._identity
        tokens: set[float] = set()

        def renewed() -> bool:
            tokens.add(identity.expires_at)
            return len(tokens) >= 3  # two renewals

        await eventually(renewed, timeout=60)
        # Each stream was replaced, live, before its token ran out: none was ended by the market.
        assert broken == []
        assert LIVE_SYMBOL in platform.engine.streaming
