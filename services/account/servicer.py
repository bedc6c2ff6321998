"""gRPC adapter of the account domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

from bullant.account.v1 import account_pb2, account_pb2_grpc
from services.core.dependencies import Dependencies
from services.core.server import ServiceRegistration

SERVICE = account_pb2.DESCRIPTOR.services_by_name["AccountService"]


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """bullant.account.v1.AccountService. Its methods are built by issue 4; until each lands it answers UNIMPLEMENTED
    (with ErrorInfo reason NOT_IMPLEMENTED), inherited from the generated base class."""


def registration(deps: Dependencies) -> ServiceRegistration:
    """The account service, ready to be hosted by a GrpcServer; `deps` are the shared platform dependencies."""
    # The generated stubs mark every method abstract; the unbuilt ones answer UNIMPLEMENTED at run time.
    servicer = AccountServicer()  # type: ignore[abstract]
    return ServiceRegistration(
        name="account",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: account_pb2_grpc.add_AccountServiceServicer_to_server(servicer, server),
    )
