"""HTTP request → protobuf request and protobuf → JSON, by the proto3 JSON mapping and grpc-gateway's rules: the
body (`*` or one field), then the path variables, then the query string for every other field (`a.b=1`, repeated
fields by repeating the key). Unknown fields and badly typed values are refused with the field named
(gateway.jsonfields)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request

from gateway.jsonfields import BadRequest, check_field, check_message, check_nesting, check_single, field_named, shown
from gateway.routes import Route

__all__ = ["BadRequest", "build_request", "call_metadata", "header_value", "percent_decoded", "query_items"]
log = logging.getLogger("bullant.gateway")

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


# Headers passed to the services as metadata (the request id and the client address are added separately).
FORWARDED = ("authorization", "x-api-key")
MAX_QUERY_PARAMETERS = 1000
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def header_value(value: str) -> bool:
    """Whether a header can travel as gRPC ASCII metadata (printable, no line breaks)."""
    return all(" " <= character <= "~" for character in value)


def call_metadata(request: Request, request_id: str, *, credentials: bool = True) -> list[tuple[str, str]]:
    """The metadata of the upstream call (the credentials passed through unless told otherwise, the request id, the
    client's address chain); BadRequest for a header gRPC cannot carry."""
    metadata = [("x-request-id", request_id)]
    for name in FORWARDED if credentials else ():
        value = request.headers.get(name)
        if value:
            if not header_value(value):
                raise BadRequest(f"header {name}", "only printable ASCII characters")
            metadata.append((name, value))
    client = request.client.host if request.client else ""
    chain = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
    if client:
        chain.append(client)
    if chain:
        forwarded = ", ".join(chain)
        if not header_value(forwarded):
            raise BadRequest("header x-forwarded-for", "only printable ASCII characters")
        metadata.append(("x-forwarded-for", forwarded))
    return metadata


def percent_decoded(name: str, raw: str) -> str:
    """A percent-encoded path or query text, decoded; BadRequest naming `name` when it is not well-formed (a `%`
    without two hex digits, or bytes that are not UTF-8)."""
    if _BROKEN_ESCAPE.search(raw):
        raise BadRequest(name, "a % must start an escape of two hex digits, such as %2F")
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(name, "is not UTF-8 once percent-decoded") from None


def query_items(query_string: bytes) -> list[tuple[str, str]]:
    """The query string's parameters in order, strictly decoded (`+` is a space, as HTML forms write it)."""
    items: list[tuple[str, str]] = []
    text = query_string.decode("latin-1")
    for part in text.split("&") if text else ():
        if not part:
            continue
        if len(items) >= MAX_QUERY_PARAMETERS:
            raise BadRequest("", f"more than {MAX_QUERY_PARAMETERS} query parameters")
        key, _, value = part.partition("=")
        name = percent_decoded("query", key.replace("+", " "))
        items.append((name, percent_decoded(name, value.replace("+", " "))))
    return items


def _resolve(descriptor: Any, path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path; every one but the last must be a singular message."""
    fields: list[FieldDescriptor] = []
    current: Any = descriptor
    parts = path.split(".")
    for index, part in enumerate(parts):
        field = field_named(current, part)
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
        raise BadRequest(path, f"expected true or false, got {shown(text)}")
    message_type = field.message_type
    if field.type == FieldDescriptor.TYPE_MESSAGE and (
        message_type is None or message_type.full_name not in _SCALAR_MESSAGES
    ):
        raise BadRequest(path, "a message cannot be set from the URL; send it in the body")
    check_single(field, text, path)
    return text


def _nest(target: dict[str, Any], fields: Sequence[FieldDescriptor], value: Any) -> None:
    for field in fields[:-1]:
        target = target.setdefault(field.name, {})
    target[fields[-1].name] = value


def _parse_into(message: Message, document: Any, where: str) -> None:
    """Parse a document already checked field by field; a refusal json_format still finds is reported in our words
    (its own text names Python types and internals), with the detail in the debug log."""
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as error:
        log.debug("json_format refused a checked document at %r: %s", where, error)
        raise BadRequest(where, "a value does not fit the field's type") from None


def build_request(
    route: Route, path_variables: Mapping[str, str], query: Sequence[tuple[str, str]], body: bytes
) -> Message:
    """The RPC request of an HTTP request to `route`."""
    request = route.request_class()
    descriptor: Any = request.DESCRIPTOR
    covered: set[str] = set()
    if route.body:
        document = _body_document(body)
        if route.body == "*":
            check_message(descriptor, document, "")
            _parse_into(request, document, "")
            covered.add("*")
        else:
            fields = _resolve(descriptor, route.body)
            check_field(fields[-1], document, route.body)
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
    check_nesting(body)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise BadRequest("", f"the body is not valid JSON (line {error.lineno}, column {error.colno})") from None
