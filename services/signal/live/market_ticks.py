"""The engine's tick source: MarketService.StreamTicks for a set of symbols, without conflation (bars must see every
tick), through the client factory with the caller's (the service's) credentials."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.clients import ClientFactory
from services.core.errors import NotFound, Unavailable
from services.core.grpc_errors import error_info
from services.core.timestamps import naive_utc

MARKET = market_pb2.DESCRIPTOR.services_by_name["MarketService"]


@dataclass(frozen=True, slots=True)
class TickEvent:
    """What the engine reads of a tick; `time` naive UTC."""

    symbol: str
    time: datetime
    price: float
    size: float
    sequence: int


class MarketTicks:
    """Opens tick streams on the market service."""

    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    async def stream(
        self, symbols: Sequence[str], on_ticks: Callable[[list[TickEvent]], None], on_live: Callable[[], None]
    ) -> None:
        """Deliver ticks of `symbols` until cancelled; `on_live` is called once the subscription is in place (at
        the snapshot). Ends with Unavailable when the stream breaks or the market service refuses it."""
        stub = self._clients.stub(market_pb2_grpc.MarketServiceStub, MARKET)
        request = market_pb2.StreamTicksRequest(
            symbols=list(symbols),
            conflation=market_pb2.CONFLATION_MODE_NONE,
            heartbeat_interval_seconds=5,
        )
        call = stub.StreamTicks(request)
        try:
            async for response in call:
                kind = response.WhichOneof("event")
                if kind == "ticks":
                    on_ticks(
                        [
                            TickEvent(tick.symbol, naive_utc(tick.event_time), tick.price, tick.size, tick.sequence)
                            for tick in response.ticks.ticks
                        ]
                    )
                elif kind == "snapshot":
                    on_live()
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            if info is not None and info.reason == "SYMBOL_NOT_FOUND":
                symbol = str(info.metadata.get("symbol", ""))
                raise NotFound(
                    f"no instrument {symbol}", reason="SYMBOL_NOT_FOUND", metadata={"symbol": symbol}
                ) from None
            if info is not None and info.reason == "SERVER_DRAINING":
                # A market replica shutting down (a restart, a rolling deploy): the stream is opened again elsewhere.
                raise Unavailable("the market service is shutting down", reason="MARKET_DRAINING") from None
            raise Unavailable(
                f"the tick stream broke: {error.code().name} {error.details()}", reason="MARKET_UNAVAILABLE"
            ) from None
        finally:
            call.cancel()
        raise Unavailable("the market service ended the tick stream", reason="MARKET_UNAVAILABLE")
