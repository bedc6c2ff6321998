"""The chat service's wiring (services/bootstrap.py calls build). The chat issue builds its parts here; until then
the servicer answers UNIMPLEMENTED and the service is not in BUILT_SERVICES, so no process serves it."""

from __future__ import annotations

from bullant.chat.v1 import chat_pb2_grpc
from services.chat.servicer import SERVICE, ChatServicer
from services.core.dependencies import Dependencies
from services.core.server import ServiceRegistration
from services.core.settings import Settings


def build(deps: Dependencies, settings: Settings | None = None) -> ServiceRegistration:
    """The chat service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = ChatServicer()  # type: ignore[abstract]
    return ServiceRegistration(
        name="chat",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server),
    )
