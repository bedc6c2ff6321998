"""gRPC status → HTTP (AIP-193): the status code, a JSON body `{"error": {"code", "status", "message", "details"}}`
with the status details (field violations, error info, request info) in the proto3 JSON mapping, and Retry-After
when the service said when to retry."""

from __future__ import annotations

import logging
import math
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger("bullant.gateway")
# What a client is told when the channel (not a service) ended a call with one of these codes.
_TRANSPORT_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "the service is unavailable; retry in a moment",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the service did not answer in time",
    grpc.StatusCode.INTERNAL: "the call to the service failed",
    grpc.StatusCode.UNKNOWN: "the call to the service failed",
    grpc.StatusCode.DATA_LOSS: "the call to the service failed",
    grpc.StatusCode.CANCELLED: "the call to the service was cancelled",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the request or its answer is larger than the service accepts",
    grpc.StatusCode.UNIMPLEMENTED: "this method is not served here",
}
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def error_body(code: grpc.StatusCode, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": HTTP_STATUS.get(code, 500),
            "status": code.name,
            "message": message,
            "details": details or [],
        }
    }


# The gRPC code of an HTTP status the gateway answers itself without a service (405 and 413 have no code of
# their own: the body keeps the HTTP status as its `code`).
_CODE_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The body of an HTTP error the gateway answers itself: the nearest gRPC status name, the HTTP status as the
    code."""
    code = _CODE_OF_HTTP.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)
    body = error_body(code, message, details)
    body["error"]["code"] = status
    return body


def error_info(reason: str, domain: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """An ErrorInfo detail in the JSON mapping."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
    return _detail(info, error_details_pb2.ErrorInfo.DESCRIPTOR.full_name)


def request_info(request_id: str) -> dict[str, Any]:
    """A RequestInfo detail naming the request id, which the logs carry too."""
    return _detail(
        error_details_pb2.RequestInfo(request_id=request_id), error_details_pb2.RequestInfo.DESCRIPTOR.full_name
    )


def bad_request(field: str, description: str) -> dict[str, Any]:
    """The body of a request the gateway itself refuses (it never reached a service)."""
    violation = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=description)]
    )
    details = [_detail(violation, error_details_pb2.BadRequest.DESCRIPTOR.full_name)]
    message = f"{field}: {description}" if field else description
    return error_body(grpc.StatusCode.INVALID_ARGUMENT, message, details)


def _detail(message: Any, type_name: str) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **json_format.MessageToDict(message)}


def from_rpc_error(error: grpc.aio.AioRpcError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, body and extra headers of a failed call."""
    status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
    details: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    for packed in status.details if status is not None else ():
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.RequestInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.QuotaFailure,
            error_details_pb2.ResourceInfo,
            error_details_pb2.Help,
            error_details_pb2.LocalizedMessage,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(_detail(detail, kind.DESCRIPTOR.full_name))
                if isinstance(detail, error_details_pb2.RetryInfo):
                    delay = detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9
                    headers["retry-after"] = str(max(1, math.ceil(delay)))
                break
    code = error.code()
    message = error.details() or code.name
    if status is None and code in _TRANSPORT_MESSAGES:
        # Not a service's answer (those carry google.rpc.Status details) but the channel's own: its text names
        # addresses and transport internals, which go to the log, not to the client.
        log.warning("upstream call failed: %s %s", code.name, message)
        message = _TRANSPORT_MESSAGES[code]
    if code is grpc.StatusCode.UNAUTHENTICATED:
        headers["www-authenticate"] = "Bearer"  # RFC 9110: a 401 names the scheme that would be accepted
    return HTTP_STATUS.get(code, 500), error_body(code, message, details), headers
