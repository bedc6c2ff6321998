"""gRPC adapter of the chat domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

from bullant.chat.v1 import chat_pb2, chat_pb2_grpc
from services.core.dependencies import Dependencies
from services.core.server import ServiceRegistration

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """bullant.chat.v1.ChatService. Its methods are built by the chat issue; until each lands it answers UNIMPLEMENTED
    (with ErrorInfo reason NOT_IMPLEMENTED), inherited from the generated base class."""


def registration(deps: Dependencies) -> ServiceRegistration:
    """The chat service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = ChatServicer()  # type: ignore[abstract]
    return ServiceRegistration(
        name="chat",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: chat_pb2_grpc.add_ChatServiceServicer_to_server(servicer, server),
    )
