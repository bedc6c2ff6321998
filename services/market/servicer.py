"""gRPC adapter of the market domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.dependencies import Dependencies
from services.core.server import ServiceRegistration

SERVICE = market_pb2.DESCRIPTOR.services_by_name["MarketService"]


class MarketServicer(market_pb2_grpc.MarketServiceServicer):
    """bullant.market.v1.MarketService. Its methods are built by issue 5; until each lands it answers UNIMPLEMENTED
    (with ErrorInfo reason NOT_IMPLEMENTED), inherited from the generated base class."""


def registration(deps: Dependencies) -> ServiceRegistration:
    """The market service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = MarketServicer()  # type: ignore[abstract]
    return ServiceRegistration(
        name="market",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: market_pb2_grpc.add_MarketServiceServicer_to_server(servicer, server),
    )
