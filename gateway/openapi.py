"""The OpenAPI 3 document of the gateway, generated from the same descriptors and routes it serves: one operation
per HTTP binding, path and query parameters, the request body, the response (NDJSON / SSE for server streams), the
error body, the security each method's access rule asks for, and a schema per message in the proto3 JSON mapping
(gateway/schemas.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor

from bullant.common.v1 import access_pb2
from gateway.routes import VARIABLE, Route
from gateway.schemas import WELL_KNOWN, Schemas, ref
from services.core.rules import JSON_BODY_FACTOR, field_rule, max_request_bytes

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "integer", "description": "HTTP status"},
                "status": {"type": "string", "description": "gRPC status name, e.g. INVALID_ARGUMENT"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
            },
            "required": ["code", "status", "message", "details"],
        }
    },
    "required": ["error"],
}
_QUERY_DEPTH = 3
_REQUEST_ID_HEADER = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}
# The error answers every operation can give: the gateway's, the authenticator's, the services' and the transport's.
_ERROR_RESPONSES = (
    ("400", "InvalidArgument"),
    ("401", "Unauthenticated"),
    ("403", "PermissionDenied"),
    ("404", "NotFound"),
    ("409", "Conflict"),
    ("413", "PayloadTooLarge"),
    ("429", "TooManyRequests"),
    ("500", "Internal"),
    ("501", "Unimplemented"),
    ("503", "Unavailable"),
    ("504", "DeadlineExceeded"),
)
_ERROR_DESCRIPTIONS = {
    "InvalidArgument": "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: the field violations say what to change",
    "Unauthenticated": "UNAUTHENTICATED: credentials missing, invalid, expired or revoked",
    "PermissionDenied": "PERMISSION_DENIED: the credential may not do this (scope, session-only, ownership)",
    "NotFound": "NOT_FOUND: a resource the request names does not exist (for this account)",
    "Conflict": "ALREADY_EXISTS or ABORTED",
    "PayloadTooLarge": "RESOURCE_EXHAUSTED: the body is larger than the gateway accepts",
    "TooManyRequests": "RESOURCE_EXHAUSTED: a rate or quota limit; Retry-After says when to try again",
    "Internal": "INTERNAL: logged with the request id the error names",
    "Unimplemented": "UNIMPLEMENTED: the method is not built yet",
    "Unavailable": "UNAVAILABLE: a service or a dependency cannot answer now (or the server is shutting down)",
    "DeadlineExceeded": "DEADLINE_EXCEEDED: a service did not answer in time",
}


def _query_parameters(
    schemas: Schemas,
    descriptor: Descriptor,
    covered: set[str],
    prefix: str = "",
    depth: int = 0,
    *,
    required_here: frozenset[str] | None = frozenset(),
) -> list[dict[str, Any]]:
    """Query parameters for the fields not set by the path or the body: scalars, enums, repeated ones, the
    well-known types written as strings, and (dotted) the fields of nested messages. `required_here` names the
    fields required at this level (None: nothing is, the message itself being optional)."""
    found = []
    for field in descriptor.fields:
        path = prefix + field.name
        if any(path == done or path.startswith(done + ".") for done in covered):
            continue
        rule = field_rule(field)
        if rule.output_only:
            continue
        required = required_here is not None and (rule.required or field.name in required_here)
        message = field.message_type
        if message is not None and message.full_name not in WELL_KNOWN:
            if message.GetOptions().map_entry or field.is_repeated or depth >= _QUERY_DEPTH:
                continue
            inner = frozenset(rule.rules.required_fields) if required else None
            found += _query_parameters(schemas, message, covered, path + ".", depth + 1, required_here=inner)
            continue
        schema = schemas.field(field, descriptor)
        parameter: dict[str, Any] = {"name": path, "in": "query", "required": required, "schema": schema}
        if field.is_repeated:
            parameter["explode"] = True
        found.append(parameter)
    return found


def _ref_response(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{name}"}


def _error_responses() -> dict[str, Any]:
    """The shared error responses: the AIP-193 body, the request id, and Retry-After or WWW-Authenticate where
    they apply."""
    found: dict[str, Any] = {}
    for name, description in _ERROR_DESCRIPTIONS.items():
        headers: dict[str, Any] = dict(_REQUEST_ID_HEADER)
        if name == "TooManyRequests":
            headers["Retry-After"] = {"description": "seconds to wait", "schema": {"type": "string"}}
        if name == "Unauthenticated":
            headers["WWW-Authenticate"] = {"description": "the scheme to use", "schema": {"type": "string"}}
        found[name] = {
            "description": description,
            "headers": headers,
            "content": {"application/json": {"schema": ref("Error")}},
        }
    return found


def _path_schema(schemas: Schemas, request: Descriptor, variable: str) -> dict[str, Any]:
    """A path variable's schema: its field's, one non-empty segment without '/' or ':'."""
    descriptor: Any = request
    field = None
    for part in variable.split("."):
        field = descriptor.fields_by_name[part]
        descriptor = field.message_type
    assert field is not None
    schema = schemas.value(field)
    if schema.get("type") == "string" and "pattern" not in schema:
        schema["pattern"] = "^[^/:]+$"
    if schema.get("type") == "string":
        schema.setdefault("minLength", 1)
    return schema


def path_parameter(variable: str) -> str:
    """A path variable's parameter name: dotted field paths (`alert.alert_id`) read `alert_alert_id`, since many
    OpenAPI tools take template names as identifiers."""
    return variable.replace(".", "_")


def openapi_path(template: str) -> str:
    """The route's template as an OpenAPI path: `{field=pattern}` and `{a.b}` become plain `{name}`s."""
    return VARIABLE.sub(lambda found: "{" + path_parameter(found.group(1)) + "}", template)


def _operation(schemas: Schemas, route: Route) -> dict[str, Any]:
    method = route.method
    request = method.input_type
    covered = set(route.variables)
    parameters = [
        {
            "name": path_parameter(name),
            "in": "path",
            "required": True,
            "schema": _path_schema(schemas, request, name),
            "description": f"sets `{name}`",
        }
        for name in route.variables
    ]
    operation: dict[str, Any] = {
        "operationId": f"{method.containing_service.name}_{method.name}"
        + ("" if route.binding == 0 else f"_{route.binding}"),
        "tags": [method.containing_service.name],
        "summary": f"{method.containing_service.full_name}/{method.name}",
    }
    body_limit = JSON_BODY_FACTOR * max_request_bytes(method)
    if route.body == "*":
        covered.add("*")
        operation["requestBody"] = {
            "required": True,
            "description": f"at most {body_limit} bytes (413 beyond)",
            "content": {"application/json": {"schema": schemas.message(request)}},
        }
    elif route.body:
        covered.add(route.body)
        field = request.fields_by_name[route.body.split(".")[0]]
        operation["requestBody"] = {
            "required": True,
            "description": f"at most {body_limit} bytes (413 beyond)",
            "content": {"application/json": {"schema": schemas.field(field, request)}},
        }
    if "*" not in covered:
        parameters += _query_parameters(schemas, request, covered)
    if parameters:
        operation["parameters"] = parameters
    response = schemas.message(method.output_type)
    if route.server_streaming:
        item = {
            "type": "object",
            "properties": {"result": response, "error": ERROR_SCHEMA["properties"]["error"]},  # type: ignore[index]
            "additionalProperties": False,
        }
        # OpenAPI 3.0 describes one Server-Sent Event: its `event` name and its `data`, which holds the item's JSON.
        event = {
            "type": "object",
            "properties": {
                "event": {"type": "string", "enum": ["message", "error"]},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": item},
            },
            "required": ["data"],
        }
        content = {"application/x-ndjson": {"schema": item}, "text/event-stream": {"schema": event}}
        description = (
            "a stream: one JSON object per line, or per Server-Sent Event (`event: message`) with "
            "`Accept: text/event-stream`; an error, or the server shutting down, ends it with an `error` item"
        )
    else:
        content = {"application/json": {"schema": response}}
        description = "OK"
    operation["responses"] = {
        "200": {"description": description, "headers": _REQUEST_ID_HEADER, "content": content},
        **{status: _ref_response(name) for status, name in _ERROR_RESPONSES},
    }
    options = method.GetOptions()
    rule = options.Extensions[access_pb2.access] if options.HasExtension(access_pb2.access) else None
    if rule is not None and rule.public:
        operation["security"] = []
    else:
        operation["security"] = (
            [{"bearer": []}] if rule is not None and rule.session_only else [{"bearer": []}, {"apiKey": []}]
        )
    return operation


def openapi_document(routes: Sequence[Route], *, title: str = "Bullant API", version: str = "v1") -> dict[str, Any]:
    schemas = Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda item: (item.template, item.http_method)):
        paths.setdefault(openapi_path(route.template), {})[route.http_method.lower()] = _operation(schemas, route)
    components = dict(sorted(schemas.found.items()))
    components["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "REST for browsers in front of the Bullant gRPC services, derived from their protos.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": _error_responses(),
            "headers": {
                "RequestId": {
                    "description": "the request's id (the client's X-Request-Id, or a new one); logs carry it too",
                    "required": True,
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }
