"""gRPC adapter of the signal domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

from bullant.signal.v1 import signal_pb2, signal_pb2_grpc
from services.core.dependencies import Dependencies
from services.core.server import ServiceRegistration

SERVICE = signal_pb2.DESCRIPTOR.services_by_name["SignalService"]


class SignalServicer(signal_pb2_grpc.SignalServiceServicer):
    """bullant.signal.v1.SignalService. Its methods are built by issues 6 and 8; until each lands it answers
    UNIMPLEMENTED (with ErrorInfo reason NOT_IMPLEMENTED), inherited from the generated base class."""


def registration(deps: Dependencies) -> ServiceRegistration:
    """The signal service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = SignalServicer()  # type: ignore[abstract]
    return ServiceRegistration(
        name="signal",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: signal_pb2_grpc.add_SignalServiceServicer_to_server(servicer, server),
    )
