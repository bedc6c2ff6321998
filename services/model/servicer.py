"""gRPC adapter of the model domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

from bullant.model.v1 import model_pb2, model_pb2_grpc
from services.core.dependencies import Dependencies
from services.core.server import ServiceRegistration

SERVICE = model_pb2.DESCRIPTOR.services_by_name["ModelService"]


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    """bullant.model.v1.ModelService. Its methods are built by issue 7; until each lands it answers UNIMPLEMENTED
    (with ErrorInfo reason NOT_IMPLEMENTED), inherited from the generated base class."""


def registration(deps: Dependencies) -> ServiceRegistration:
    """The model service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = ModelServicer()  # type: ignore[abstract]
    return ServiceRegistration(
        name="model",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server),
    )
