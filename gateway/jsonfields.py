"""JSON values checked against a request message's fields before `json_format` parses them, so that every refusal
names the field as the client wrote it and says what was expected, in words of our own (never a parser's exception
text). It accepts what the proto3 JSON mapping accepts, with one exception: enums by name only, as the OpenAPI
document lists them. Nesting is bounded before the body is parsed at all (`check_nesting`)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

# The deepest JSON nesting a request may have: our deepest request message nests well under ten levels, and a
# bound far below the parsers' recursion limits keeps every later walk of the document safe.
MAX_DEPTH = 32
_SHOWN_CHARACTERS = 40
_ENUM_NAMES_SHOWN = 12
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_UNPAIRED_SURROGATE = re.compile(r"[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]")
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_QUOTED_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})
# Well-known types written as one JSON string, with what the client should send instead when it does not parse.
_STRING_TYPES: dict[str, tuple[Any, str]] = {
    "google.protobuf.Timestamp": (timestamp_pb2.Timestamp, "an RFC 3339 time such as 2024-01-02T15:04:05Z"),
    "google.protobuf.Duration": (duration_pb2.Duration, "a duration in seconds such as 1.5s"),
    "google.protobuf.FieldMask": (field_mask_pb2.FieldMask, "comma-separated field names such as enabled,displayName"),
}
_WRAPPERS_FILE = "google/protobuf/wrappers.proto"


class BadRequest(ValueError):
    """The HTTP request cannot become the RPC's request; `field` names where, as the client wrote it (empty: the
    whole body)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


def check_nesting(body: bytes, limit: int = MAX_DEPTH) -> None:
    """BadRequest when the JSON text nests arrays and objects deeper than `limit`, found without parsing it: strings
    are dropped, the brackets kept, and each pass removes the innermost level (all in C, at most `limit` passes)."""
    structure = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    structure = structure.replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(limit):
        if not structure:
            return
        shorter = structure.replace(b"[]", b"")
        if len(shorter) == len(structure):
            return  # unbalanced brackets: not JSON, which the parser reports
        structure = shorter
    if structure:
        raise BadRequest("", f"the JSON nests deeper than {limit} levels")


def field_named(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON (lowerCamelCase) name."""
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((field for field in descriptor.fields if field.json_name == name), None)


def check_message(descriptor: Descriptor, document: Any, path: str) -> None:
    """A JSON object as the message type `descriptor`."""
    if not isinstance(document, dict):
        raise BadRequest(path, f"expected a JSON object, got {_kind(document)}")
    seen: dict[str, str] = {}
    for key, value in document.items():
        where = f"{path}.{key}" if path else key
        field = field_named(descriptor, key)
        if field is None:
            raise BadRequest(where, "no such field")
        if field.name in seen:
            raise BadRequest(where, f"the same field as {seen[field.name]}; set it once")
        seen[field.name] = key
        oneof = field.containing_oneof
        if oneof is not None and value is not None:
            if oneof.name in seen:
                raise BadRequest(where, f"set only one of {', '.join(f.json_name for f in oneof.fields)}")
            seen[oneof.name] = key
        check_field(field, value, where)


def check_field(field: FieldDescriptor, value: Any, path: str) -> None:
    """A field's whole JSON value: a list for a repeated field, an object for a map, else one value. JSON null
    leaves a field unset."""
    if value is None:
        return
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise BadRequest(path, f"expected a JSON object, got {_kind(value)}")
        key_field, value_field = message.fields_by_name["key"], message.fields_by_name["value"]
        for key, item in value.items():
            _check_map_key(key_field, key, f"{path}.{key}")
            if item is None and not _is_value_type(value_field):
                raise BadRequest(f"{path}.{key}", "null is not allowed as a map value")
            check_single(value_field, item, f"{path}.{key}")
        return
    if field.is_repeated:
        if not isinstance(value, list):
            raise BadRequest(path, f"expected a JSON list, got {_kind(value)}")
        for index, item in enumerate(value):
            if item is None and not _is_value_type(field):
                raise BadRequest(f"{path}[{index}]", "null is not allowed in a list")
            check_single(field, item, f"{path}[{index}]")
        return
    check_single(field, value, path)


def check_single(field: FieldDescriptor, value: Any, path: str) -> None:
    """One value of the field (an element when it is repeated)."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        assert field.message_type is not None
        _check_message_value(field.message_type, value, path)
    elif kind == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        _check_enum(field.enum_type, value, path)
    elif kind in _INT_RANGES:
        _check_integer(kind, value, path)
    elif kind in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        _check_number(kind == FieldDescriptor.CPPTYPE_FLOAT, value, path)
    elif kind == FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(value, bool):
            raise BadRequest(path, f"expected true or false, got {shown(value)}")
    elif field.type == FieldDescriptor.TYPE_BYTES:
        _check_bytes(value, path)
    else:
        if not isinstance(value, str):
            raise BadRequest(path, f"expected a string, got {_kind(value)}")
        if _UNPAIRED_SURROGATE.search(value):
            raise BadRequest(path, "is not valid Unicode (an unpaired surrogate)")


def _check_message_value(message: Descriptor, value: Any, path: str) -> None:
    name = message.full_name
    if name in _STRING_TYPES:
        kind, expected = _STRING_TYPES[name]
        if not isinstance(value, str):
            raise BadRequest(path, f"expected {expected}, got {_kind(value)}")
        try:
            kind().FromJsonString(value)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(path, f"expected {expected}, got {shown(value)}") from None
    elif message.file.name == _WRAPPERS_FILE:
        check_single(message.fields_by_name["value"], value, path)
    elif name == "google.protobuf.Value":
        return  # any JSON value
    elif name == "google.protobuf.ListValue":
        if not isinstance(value, list):
            raise BadRequest(path, f"expected a JSON list, got {_kind(value)}")
    elif name in ("google.protobuf.Struct", "google.protobuf.Any"):
        if not isinstance(value, dict):
            raise BadRequest(path, f"expected a JSON object, got {_kind(value)}")
    elif name == "google.protobuf.Empty":
        if value != {}:
            raise BadRequest(path, f"expected an empty JSON object, got {_kind(value)}")
    else:
        check_message(message, value, path)


def _check_enum(enum: EnumDescriptor, value: Any, path: str) -> None:
    if enum.full_name == "google.protobuf.NullValue":
        return
    if isinstance(value, str) and value in enum.values_by_name:
        return
    names = [item.name for item in enum.values]
    listed = ", ".join(names[:_ENUM_NAMES_SHOWN]) + (", ..." if len(names) > _ENUM_NAMES_SHOWN else "")
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or _is_integer_text(value):
        raise BadRequest(path, f"expected a name, not a number: one of {listed}")
    raise BadRequest(path, f"expected one of {listed}, got {shown(value)}")


def _check_integer(kind: int, value: Any, path: str) -> None:
    number = _integer(value)
    if number is None:
        raise BadRequest(path, f"expected an integer, got {shown(value)}")
    low, high = _INT_RANGES[kind]
    if not low <= number <= high:
        raise BadRequest(path, f"expected an integer from {low} to {high}, got {shown(value)}")


def _integer(value: Any) -> int | None:
    """The integer the proto3 JSON mapping reads from a number or a string, None when it reads none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if not isinstance(value, str) or " " in value:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _is_integer_text(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip("-").isdigit()


def _check_number(single: bool, value: Any, path: str) -> None:
    if isinstance(value, bool):
        raise BadRequest(path, f"expected a number, got {shown(value)}")
    if isinstance(value, str):
        if value in _QUOTED_FLOATS:
            return
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(
                path, f'expected a number (or "NaN", "Infinity", "-Infinity"), got {shown(value)}'
            ) from None
    elif isinstance(value, (int, float)):
        number = float(value) if abs(value) < 1e309 else math.inf
    else:
        raise BadRequest(path, f"expected a number, got {_kind(value)}")
    if not math.isfinite(number) and not isinstance(value, str):
        raise BadRequest(path, 'expected a finite number; write "NaN", "Infinity" or "-Infinity" in quotes')
    if single and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
        raise BadRequest(path, f"expected a number within ±{_FLOAT32_MAX:.7g}, got {shown(value)}")


def _check_bytes(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise BadRequest(path, f"expected base64 text, got {_kind(value)}")
    try:
        encoded = value.encode("ascii")
        base64.urlsafe_b64decode(encoded.replace(b"+", b"-").replace(b"/", b"_") + b"=" * (-len(encoded) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise BadRequest(path, f"expected base64 text, got {shown(value)}") from None


def _check_map_key(field: FieldDescriptor, key: str, path: str) -> None:
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        if key not in ("true", "false"):
            raise BadRequest(path, "expected true or false as the key")
    elif field.cpp_type in _INT_RANGES:
        _check_integer(field.cpp_type, key, path)


def _is_value_type(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.full_name == "google.protobuf.Value"


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def shown(value: Any) -> str:
    """A scalar as the client sent it, shortened; containers by their kind."""
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN_CHARACTERS else value[:_SHOWN_CHARACTERS] + "..."
        # JSON's escapes keep control characters visible; the quotes are the ones people write.
        return "'" + json.dumps(text, ensure_ascii=False)[1:-1].replace('\\"', '"') + "'"
    if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        return _kind(value)
    text = json.dumps(value)
    return text if len(text) <= _SHOWN_CHARACTERS else text[:_SHOWN_CHARACTERS] + "..."
