"""protobuf → JSON in the proto3 JSON mapping, as `json_format.MessageToDict(message,
always_print_fields_with_no_presence=True)` gives it, several times faster.

`json_format` walks each message's descriptor for every value it prints (type checks, map and wrapper tests, enum
option lookups); on the gateway's WebSocket that was 60 % of the CPU spent relaying ticks. Here each message type is
compiled once into a table of per-field converters, and a message is then one `ListFields()` (C) plus one call per
set field, plus the no-presence fields' defaults (computed once). Well-known types with their own JSON form take fast
paths (Timestamp, wrappers) or go to `json_format` itself (Any, Struct, Value, ListValue, Duration, FieldMask, and any
message whose enums carry custom JSON names), so the output is `json_format`'s by construction or by test
(tests/unit/test_gateway_protojson.py compares the two on every message type of the generated services).

`dumps` writes the result with orjson: compact JSON as UTF-8 bytes.
"""

from __future__ import annotations

import base64
import keyword
import math
from collections.abc import Callable
from datetime import date
from functools import cache, lru_cache
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

Converter = Callable[..., Any]

# Printed by json_format itself: their JSON forms have rules of their own that are rare on the gateway's hot paths.
_DELEGATED = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
    }
)
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SECONDS_PER_DAY = 86_400
# The range json_format accepts: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def to_dict(message: Message, memo: Memo | None = None) -> Any:
    """The message in the proto3 JSON mapping: a dict for ordinary messages (lowerCamelCase names, fields without
    presence always present), a string, number, list or None for the well-known types that map to those.

    With a `memo`, the elements of repeated message fields come as pre-written JSON (orjson fragments) that only
    `dumps` writes: for streams whose items many clients receive alike."""
    return _message_converter(message.DESCRIPTOR)(message, memo)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of plain data (such as `to_dict`'s results)."""
    return orjson.dumps(value)


class Memo:
    """The JSON of repeated fields' elements by their wire bytes, for the streams of many clients that carry the
    same items (every socket watching a symbol gets the same ticks): each is printed once. A miss costs a
    serialization; equal bytes are equal messages, so a hit is always right.

    Bounded by two generations of capacity/2 entries: new entries and hits go to the young one; when it is full it
    becomes the old one and the previous old one is dropped, so entries still in use (a socket that lags its peers)
    survive while idle ones go, at O(1) per entry."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._generation = max(1, capacity // 2)
        # Per element converter or per stream message class: wire bytes → written JSON.
        self._young: dict[Any, dict[bytes, orjson.Fragment]] = {}
        self._old: dict[Any, dict[bytes, orjson.Fragment]] = {}
        self._young_size = 0
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        """Entries held."""
        return self._young_size + sum(len(table) for table in self._old.values())

    def __call__(self, convert: Converter, element: Message) -> orjson.Fragment:
        """An element's JSON (`convert` is its type's converter)."""
        key = element.SerializeToString()
        found = self._find(convert, key)
        if found is None:
            found = self._keep(convert, key, orjson.Fragment(orjson.dumps(convert(element, None))))
        return found

    def document(self, message_class: type[Message], raw: bytes) -> orjson.Fragment:
        """The JSON of a whole message from its wire bytes (a stream message read undecoded): streams that send
        several clients the same messages decode and print each once; the others still share their elements."""
        found = self._find(message_class, raw)
        if found is None:
            written = orjson.dumps(to_dict(message_class.FromString(raw), self))
            found = self._keep(message_class, raw, orjson.Fragment(written))
        return found

    def _find(self, kind: Any, key: bytes) -> orjson.Fragment | None:
        young = self._young.get(kind)
        found = young.get(key) if young is not None else None
        if found is not None:
            self.hits += 1
            return found
        old = self._old.get(kind)
        found = old.get(key) if old is not None else None
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        return self._keep(kind, key, found)  # still in use: keep it young

    def _keep(self, kind: Any, key: bytes, fragment: orjson.Fragment) -> orjson.Fragment:
        young = self._young.get(kind)
        if young is None:
            young = self._young[kind] = {}
        young[key] = fragment
        self._young_size += 1
        if self._young_size >= self._generation:
            self._old, self._young, self._young_size = self._young, {}, 0
        return fragment


def _delegate(message: Message, memo: Memo | None = None) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


@cache
def _message_converter(descriptor: Descriptor) -> Converter:
    """The converter of one message type (cached: descriptors live as long as the process)."""
    name = descriptor.full_name
    if name in _DELEGATED or _has_custom_enum_names(descriptor, set()):
        return _delegate
    if name == "google.protobuf.Timestamp":
        return _timestamp
    if descriptor.file.name == "google/protobuf/wrappers.proto":
        value = _value_converter(descriptor.fields_by_name["value"])

        def wrapper(message: Any, memo: Memo | None = None) -> Any:
            return value(message.value)

        return wrapper
    return _RegularMessage(descriptor)


class _RegularMessage:
    """Converts one ordinary message type with a function generated for it: one dict display of the fields without
    presence (read straight off the message, defaults included) and a `HasField` test per field with presence.
    Generated at the first call, so that recursive types (a message holding its own type) compile."""

    __slots__ = ("_convert", "_descriptor")

    def __init__(self, descriptor: Descriptor) -> None:
        self._descriptor = descriptor
        self._convert: Converter | None = None

    def __call__(self, message: Message, memo: Memo | None = None) -> Any:
        convert = self._convert or self._compile()
        return convert(message, memo)

    def _compile(self) -> Converter:
        namespace: dict[str, Any] = {}
        always: list[str] = []
        present: list[str] = []
        for field in self._descriptor.fields:
            value = _field_expression(field, _attribute(field.name), namespace)
            if field.has_presence:
                present.append(f"    if m.HasField({field.name!r}):\n        d[{field.json_name!r}] = {value}")
            else:
                always.append(f"{field.json_name!r}: {value}")
        source = "\n".join(["def convert(m, memo):", f"    d = {{{', '.join(always)}}}", *present, "    return d"])
        exec(compile(source, f"<protojson {self._descriptor.full_name}>", "exec"), namespace)  # noqa: S102
        self._convert = namespace["convert"]
        return self._convert


def _attribute(name: str) -> str:
    return f"getattr(m, {name!r})" if keyword.iskeyword(name) else f"m.{name}"


def _bind(namespace: dict[str, Any], value: Any) -> str:
    """A name for `value` in the generated code's namespace."""
    name = f"_{len(namespace)}"
    namespace[name] = value
    return name


def _field_expression(field: FieldDescriptor, source: str, namespace: dict[str, Any]) -> str:
    """Python source printing the field read by `source` (a whole repeated field or map included)."""
    if _is_map(field):
        key = "('true' if k else 'false')" if _is_bool_key(field) else "str(k)"
        value = _single_expression(_entry(field).fields_by_name["value"], "v", namespace)
        return f"{{{key}: {value} for k, v in {source}.items()}}"
    if field.is_repeated:
        element = _single_expression(field, "v", namespace)
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            convert = _bind(namespace, _value_converter(field))
            return f"([{element} for v in {source}] if memo is None else [memo({convert}, v) for v in {source}])"
        return f"list({source})" if element == "v" else f"[{element} for v in {source}]"
    return _single_expression(field, source, namespace)


def _single_expression(field: FieldDescriptor, source: str, namespace: dict[str, Any]) -> str:
    convert = _value_converter(field)
    if convert is _same:
        return source
    if convert is _double:  # inline: a finite double is printed as it is (x - x is 0.0 only when x is finite)
        return f"({source} if {source} - {source} == 0.0 else {_bind(namespace, _non_finite)}({source}))"
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return f"{_bind(namespace, convert)}({source}, memo)"
    return f"{_bind(namespace, convert)}({source})"


def _is_bool_key(field: FieldDescriptor) -> bool:
    return bool(_entry(field).fields_by_name["key"].cpp_type == FieldDescriptor.CPPTYPE_BOOL)


def _value_converter(field: FieldDescriptor) -> Converter:
    """The converter of one value of the field (one element when repeated)."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        # A message type's converter generates its code at its first call, so a type can hold itself.
        return _message_converter(_entry(field))
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return _enum_converter(field.enum_type)
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return lambda value: base64.b64encode(value).decode("utf-8")
        return _same  # already a str
    if kind in _INT64:
        return str
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return _float
    return _same


def _same(value: Any) -> Any:
    return value


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return _non_finite(value)


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return float(type_checkers.ToShortestFloat(value))
    return _non_finite(value)


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _enum_converter(enum: EnumDescriptor) -> Converter:
    if enum.full_name == "google.protobuf.NullValue":
        return lambda value: None
    names = {value.number: value.name for value in enum.values}
    # A number the enum does not name (a newer peer's value kept by an open enum) is printed as the number.
    return lambda value: names.get(value, value)


def _timestamp(message: Message, memo: Memo | None = None) -> str:
    """RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as Timestamp.ToJsonString."""
    seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        return str(message.ToJsonString())  # type: ignore[attr-defined]  # its own range error
    clock = _clock(seconds)
    if nanos == 0:
        return clock + "Z"
    if nanos % 1_000_000 == 0:
        return f"{clock}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{clock}.{nanos // 1000:06d}Z"
    return f"{clock}.{nanos:09d}Z"


@lru_cache(maxsize=4096)
def _clock(seconds: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` of a second since the epoch (cached: a stream's timestamps share their seconds)."""
    days, rest = divmod(seconds, _SECONDS_PER_DAY)
    hours, rest = divmod(rest, 3600)
    minutes, second = divmod(rest, 60)
    return f"{date.fromordinal(_EPOCH_ORDINAL + days).isoformat()}T{hours:02d}:{minutes:02d}:{second:02d}"


def _entry(field: FieldDescriptor) -> Descriptor:
    """The message type of a message-typed field (a map's entry type for a map)."""
    assert field.message_type is not None
    return field.message_type


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE and field.is_repeated and _entry(field).GetOptions().map_entry
    )


def _has_custom_enum_names(descriptor: Descriptor, seen: set[str]) -> bool:
    """Whether any enum this message prints directly carries an option extension (such as a custom JSON name)."""
    if descriptor.full_name in seen:
        return False
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        if field.enum_type is not None and any(
            option.is_extension for value in field.enum_type.values for option, _ in value.GetOptions().ListFields()
        ):
            return True
        if _is_map(field) and _has_custom_enum_names(_entry(field), seen):
            return True
    return False
