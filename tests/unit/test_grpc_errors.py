"""The domain-error → gRPC status table and the details every status carries."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.core import errors
from services.core.grpc_errors import (
    STATUS_OF_ERROR,
    domain_of_method,
    status_code_of,
    status_for_domain_error,
    status_for_internal_error,
)


def _details(status: grpc.Status) -> dict[str, object]:
    class _Call:
        def code(self) -> grpc.StatusCode:
            return status.code

        def details(self) -> str:
            return status.details

        def trailing_metadata(self) -> object:
            return status.trailing_metadata

    proto = rpc_status.from_call(_Call())  # type: ignore[arg-type]
    assert proto is not None
    found: dict[str, object] = {}
    for detail in proto.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RequestInfo,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument.field("x", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("dup"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unauthenticated("who"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.FailedPrecondition("state"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("later"), grpc.StatusCode.UNAVAILABLE),
        (errors.Aborted("conflict"), grpc.StatusCode.ABORTED),
        (errors.DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_each_error_type_has_its_code(error: errors.DomainError, code: grpc.StatusCode) -> None:
    assert status_code_of(error) is code
    status = status_for_domain_error(error, domain="bullant.market", request_id="rid-1")
    assert status.code is code
    assert status.details == error.message
    info = _details(status)["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == error.reason
    assert info.domain == "bullant.market"
    assert ("x-request-id", "rid-1") in status.trailing_metadata


def test_every_error_class_is_in_the_table() -> None:
    listed = {error_type for error_type, _ in STATUS_OF_ERROR}
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.DomainError) and value is not errors.DomainError
    }
    assert defined == listed


def test_invalid_argument_carries_every_violation_and_custom_reason() -> None:
    error = errors.InvalidArgument(
        [errors.FieldViolation("bars[2].high", "below low"), errors.FieldViolation("symbol", "empty")],
        reason="BAD_BARS",
        metadata={"rejected": 2},
    )
    found = _details(status_for_domain_error(error, domain="bullant.market", request_id=None))
    bad_request = found["BadRequest"]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("bars[2].high", "below low"),
        ("symbol", "empty"),
    ]
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "BAD_BARS"
    assert dict(info.metadata) == {"rejected": "2"}
    assert "RequestInfo" not in found


def test_many_violations_stay_within_what_clients_accept_in_a_trailer() -> None:
    error = errors.InvalidArgument(
        [errors.FieldViolation(f"bars[{i}].high", "x" * 500) for i in range(100)], reason="BARS_REJECTED"
    )
    status = status_for_domain_error(error, domain="bullant.market", request_id="r1")
    trailer = sum(len(value) for key, value in status.trailing_metadata if isinstance(value, bytes | str))
    assert trailer < 8192  # the default soft limit of gRPC clients
    bad_request = _details(status)["BadRequest"]
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    listed = list(bad_request.field_violations)
    assert listed[0].field == "bars[0].high"
    assert len(listed[0].description) == 300
    assert listed[-1].description == f"... and {100 - (len(listed) - 1)} more violation(s) not listed"


def test_invalid_argument_needs_a_violation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        errors.InvalidArgument([])


def test_resource_exhausted_says_when_to_retry() -> None:
    found = _details(
        status_for_domain_error(
            errors.ResourceExhausted("too many logins", retry_after_seconds=1.25),
            domain="bullant.account",
            request_id="r",
        )
    )
    retry = found["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 1250


def test_unlisted_domain_error_subclass_is_internal_without_its_text() -> None:
    class Strange(errors.DomainError):
        pass

    status = status_for_domain_error(Strange("db password is hunter2"), domain="bullant.model", request_id="r9")
    assert status.code is grpc.StatusCode.INTERNAL
    assert "hunter2" not in status.details
    assert "r9" in status.details


def test_internal_status_names_the_request_id() -> None:
    status = status_for_internal_error(domain="bullant.chat", request_id="abc")
    assert status.code is grpc.StatusCode.INTERNAL
    assert status.details == "internal error (request id abc)"
    request_info = _details(status)["RequestInfo"]
    assert isinstance(request_info, error_details_pb2.RequestInfo)
    assert request_info.request_id == "abc"


@pytest.mark.parametrize(
    ("method", "domain"),
    [
        ("/bullant.market.v1.MarketService/GetQuote", "bullant.market"),
        ("/grpc.health.v1.Health/Check", "bullant"),
    ],
)
def test_domain_of_method(method: str, domain: str) -> None:
    assert domain_of_method(method) == domain
