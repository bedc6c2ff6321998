"""The one place that turns domain errors into gRPC statuses with google.rpc error details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.core.context import REQUEST_ID_KEY
from services.core.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

# Checked in order, so a subclass listed before its base wins.
STATUS_OF_ERROR: tuple[tuple[type[DomainError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Aborted, grpc.StatusCode.ABORTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)

INTERNAL_REASON = "INTERNAL"
NOT_IMPLEMENTED_REASON = "NOT_IMPLEMENTED"


def status_code_of(error: DomainError) -> grpc.StatusCode:
    """The gRPC code for a domain error; an unlisted DomainError subclass is a bug, reported as INTERNAL."""
    for error_type, code in STATUS_OF_ERROR:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


# Details travel in a trailer, and clients refuse trailers above 8 KiB by default (the call then fails with a
# transport error instead of the status): violations beyond this budget are summarised in a last entry.
_VIOLATION_BUDGET_BYTES = 4096
_DESCRIPTION_LIMIT = 300
_MESSAGE_LIMIT = 1024


def _bad_request(violations: tuple[tuple[str, str], ...]) -> error_details_pb2.BadRequest:
    bad_request = error_details_pb2.BadRequest()
    used = 0
    for index, (field, description) in enumerate(violations):
        text = description if len(description) <= _DESCRIPTION_LIMIT else description[: _DESCRIPTION_LIMIT - 3] + "..."
        size = len(field.encode()) + len(text.encode()) + 8
        if used + size > _VIOLATION_BUDGET_BYTES:
            left = len(violations) - index
            bad_request.field_violations.add(field="", description=f"... and {left} more violation(s) not listed")
            break
        bad_request.field_violations.add(field=field, description=text)
        used += size
    return bad_request


def build_status(
    code: grpc.StatusCode,
    message: str,
    *,
    domain: str,
    reason: str,
    request_id: str | None,
    metadata: dict[str, str] | None = None,
    violations: tuple[tuple[str, str], ...] = (),
    retry_after_seconds: float | None = None,
) -> grpc.Status:
    """A grpc.Status whose trailers carry google.rpc.Status details and the request id."""
    if len(message) > _MESSAGE_LIMIT:
        # The message travels twice (grpc-message and inside the details): keep both trailers small.
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    details: list[any_pb2.Any] = []
    if violations:
        details.append(_pack(_bad_request(violations)))
    details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})))
    if retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(0, round(retry_after_seconds * 1000)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if request_id:
        details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    proto_status = status_pb2.Status(code=code.value[0], message=message, details=details)
    status = rpc_status.to_status(proto_status)
    if not request_id:
        return status
    trailing = (*status.trailing_metadata, (REQUEST_ID_KEY, request_id))
    return _Status(status.code, status.details, trailing)


def status_for_domain_error(error: DomainError, *, domain: str, request_id: str | None) -> grpc.Status:
    """The status a client receives for a domain error."""
    code = status_code_of(error)
    if code is grpc.StatusCode.INTERNAL:
        return status_for_internal_error(domain=domain, request_id=request_id)
    violations: tuple[tuple[str, str], ...] = ()
    if isinstance(error, InvalidArgument):
        violations = tuple((v.field, v.description) for v in error.violations)
    retry_after = error.retry_after_seconds if isinstance(error, ResourceExhausted | Unavailable) else None
    return build_status(
        code,
        error.message,
        domain=domain,
        reason=error.reason,
        request_id=request_id,
        metadata=error.metadata,
        violations=violations,
        retry_after_seconds=retry_after,
    )


def status_for_internal_error(*, domain: str, request_id: str | None) -> grpc.Status:
    """INTERNAL with nothing of the exception in it: the request id lets an operator find the logged traceback."""
    suffix = f" (request id {request_id})" if request_id else ""
    return build_status(
        grpc.StatusCode.INTERNAL,
        f"internal error{suffix}",
        domain=domain,
        reason=INTERNAL_REASON,
        request_id=request_id,
    )


def status_for_unimplemented(method: str, *, domain: str, request_id: str | None) -> grpc.Status:
    """UNIMPLEMENTED for a method whose contract exists but whose behaviour has not been built yet."""
    return build_status(
        grpc.StatusCode.UNIMPLEMENTED,
        f"{method} is not implemented yet",
        domain=domain,
        reason=NOT_IMPLEMENTED_REASON,
        request_id=request_id,
        metadata={"method": method},
    )


class _Status(grpc.Status):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def domain_of_method(full_method: str) -> str:
    """`/bullant.market.v1.MarketService/GetQuote` → `bullant.market` (ErrorInfo.domain)."""
    service = full_method.lstrip("/").split("/", 1)[0]
    parts = service.split(".")
    if len(parts) >= 2 and parts[0] == "bullant":
        return f"{parts[0]}.{parts[1]}"
    return "bullant"


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo another service put in a failed call's status details (reason and metadata), if any."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason another service put in a failed call's status details ("" when there is none)."""
    info = error_info(error)
    return str(info.reason) if info is not None else ""
