"""gRPC adapter of the chat domain: protobuf in, one service call, protobuf out (built by the chat issue)."""

from __future__ import annotations

from bullant.chat.v1 import chat_pb2, chat_pb2_grpc

SERVICE = chat_pb2.DESCRIPTOR.services_by_name["ChatService"]


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """bullant.chat.v1.ChatService. Its methods are built by the chat issue; until each lands it answers UNIMPLEMENTED
    (with ErrorInfo reason NOT_IMPLEMENTED), inherited from the generated base class."""
