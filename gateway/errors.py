"""gRPC status → HTTP (AIP-193): the status code, a JSON body `{"error": {"code", "status", "message", "details"}}`
with the status details (field violations, error info, request info) in the proto3 JSON mapping, and Retry-After
when the service said when to retry."""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

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
    return HTTP_STATUS.get(code, 500), error_body(code, error.details() or code.name, details), headers
