"""HTTP request → protobuf request and protobuf → JSON, by the proto3 JSON mapping and grpc-gateway's rules: the
body (`*` or one field), then the path variables, then the query string for every other field (`a.b=1`, repeated
fields by repeating the key). Unknown fields and badly typed values are refused with the field named."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.routes import Route

# Well-known message types that take a JSON string (or number) as their value, so a query parameter can set them.
_SCALAR_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)


class BadRequest(ValueError):
    """The HTTP request cannot become the RPC's request; `field` names where (empty: the whole body)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON (lowerCamelCase) name."""
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((field for field in descriptor.fields if field.json_name == name), None)


def _resolve(descriptor: Any, path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path; every one but the last must be a singular message."""
    fields: list[FieldDescriptor] = []
    current: Any = descriptor
    parts = path.split(".")
    for index, part in enumerate(parts):
        field = _field(current, part)
        if field is None:
            raise BadRequest(path, "no such field")
        fields.append(field)
        if index < len(parts) - 1:
            if field.type != FieldDescriptor.TYPE_MESSAGE or _is_repeated(field):
                raise BadRequest(path, f"{part} has no fields")
            current = field.message_type
    return fields


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _json_value(field: FieldDescriptor, text: str, path: str) -> Any:
    """A query or path text as the JSON value the proto3 mapping expects for the field."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise BadRequest(path, "expected true or false")
    message_type = field.message_type
    if field.type == FieldDescriptor.TYPE_MESSAGE and (
        message_type is None or message_type.full_name not in _SCALAR_MESSAGES
    ):
        raise BadRequest(path, "a message cannot be set from the URL; send it in the body")
    return text


def _nest(target: dict[str, Any], fields: Sequence[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        target = target.setdefault(field.name, {})
    target[fields[-1].name] = value


def _parse_into(message: Message, document: Any, where: str) -> None:
    if not isinstance(document, dict):
        raise BadRequest(where, f"expected a JSON object, got {type(document).__name__}")
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as error:
        raise BadRequest(where, str(error)) from None


def build_request(
    route: Route, path_variables: Mapping[str, str], query: Sequence[tuple[str, str]], body: bytes
) -> Message:
    """The RPC request of an HTTP request to `route`."""
    request = route.request_class()
    descriptor = request.DESCRIPTOR
    covered: set[str] = set()
    if route.body:
        document = _body_document(body)
        if route.body == "*":
            _parse_into(request, document, "")
            covered.add("*")
        else:
            fields = _resolve(descriptor, route.body)
            nested: dict[str, Any] = {}
            _nest(nested, fields, document)
            _parse_into(request, nested, route.body)
            covered.add(route.body)
    elif body.strip():
        raise BadRequest("", f"{route.http_method} {route.template} takes no body; use the query string")
    values: dict[str, Any] = {}
    for path, text in path_variables.items():
        fields = _resolve(descriptor, path)
        _nest(values, fields, _json_value(fields[-1], text, path))
        covered.add(path)
    if query and "*" in covered:
        raise BadRequest(query[0][0], "this method takes every field in the body, not in the query string")
    repeated: dict[str, list[Any]] = {}
    for key, text in query:
        fields = _resolve(descriptor, key)
        path = ".".join(field.name for field in fields)
        if any(path == done or path.startswith(done + ".") for done in covered):
            raise BadRequest(key, "is set by the path or the body")
        value = _json_value(fields[-1], text, key)
        if _is_repeated(fields[-1]):
            repeated.setdefault(path, []).append(value)
            _nest(values, fields, repeated[path])
        else:
            _nest(values, fields, value)
    if values:
        extra = route.request_class()
        _parse_into(extra, values, "query")
        request.MergeFrom(extra)
    return request


def _body_document(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest("", f"the body is not JSON: {error}") from None
