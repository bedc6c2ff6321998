"""The gateway's fast proto3 JSON printer against `json_format.MessageToDict(..., always_print_fields_with_no_presence
=True)`: every message type of the generated services filled at random, and a test type holding every kind of field
(all scalar types, repeated, maps with bool/int/string keys, enums, optional and oneof members,
recursion and the well-known types) including the edge values (NaN, infinities, 64-bit extremes, unknown enum
numbers, each Timestamp precision)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    json_format,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from bullant.market.v1 import market_pb2
from gateway.protojson import Memo, dumps, to_dict
from gateway.routes import generated_services

F = descriptor_pb2.FieldDescriptorProto

_DOUBLES = [0.0, -0.0, 1.5, -2.25, 0.1, 1e300, -1e-300, 123456789.125, math.nan, math.inf, -math.inf]
_FLOATS = [0.0, 0.1, 3.4e38, -1.17549435e-38, 16777217.0, 2.5, math.nan, math.inf, -math.inf]
_LIMITS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_NANOS = [0, 5_000_000, 123_000, 7, 999_999_999]


def _expected(message: Message) -> Any:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def _scalar(field: Any, rng: random.Random) -> Any:
    kind = field.cpp_type
    if kind in _LIMITS:
        low, high = _LIMITS[kind]
        return rng.choice([low, high, 0, 1, rng.randint(low, high)])
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return rng.choice(_DOUBLES)
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return rng.choice(_FLOATS)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        # proto3 enums are open: a number the enum does not name is kept, and printed as the number.
        return rng.choice([*(value.number for value in field.enum_type.values), 1000])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.randint(0, 12))
    return rng.choice(["", "plain", "ünïcode ✓", 'quote " and \\ slash', "line\nbreak"])


def _fill_well_known(message: Any, rng: random.Random) -> bool:
    """Fill a well-known type with a valid value; False when the message is not one."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.seconds = rng.choice([0, 1, -1, 1_733_000_000, 253_402_300_799, -62_135_596_800])
        message.nanos = rng.choice(_NANOS)
    elif name == "google.protobuf.Duration":
        message.seconds = rng.randint(0, 10**6)
        message.nanos = rng.choice(_NANOS)
    elif name == "google.protobuf.FieldMask":
        message.paths.extend(rng.sample(["display_name", "risk.max_position", "a"], rng.randint(0, 3)))
    elif name == "google.protobuf.Struct":
        message.update({"n": 1.5, "s": "x", "b": True, "z": None, "l": [1.0, "two"], "o": {"k": 2.0}})
    elif name == "google.protobuf.Value":
        if rng.random() < 0.5:
            message.string_value = "v"
        else:
            message.number_value = 2.5
    elif name == "google.protobuf.ListValue":
        message.extend([1.0, "a", None])
    elif name == "google.protobuf.Any":
        message.Pack(timestamp_pb2.Timestamp(seconds=60, nanos=1000))
    else:
        return False
    return True


def _fill(message: Any, rng: random.Random, depth: int = 0) -> Any:
    if _fill_well_known(message, rng):
        return message
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.25:
            continue
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if is_message and depth >= 3:
            continue
        if is_message and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                key = _scalar(key_field, rng)
                if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    _fill(target[key], rng, depth + 1)
                else:
                    target[key] = _scalar(value_field, rng)
        elif field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 3)):
                if is_message:
                    _fill(target.add(), rng, depth + 1)
                else:
                    target.append(_scalar(field, rng))
        elif is_message:
            _fill(getattr(message, field.name), rng, depth + 1)
            getattr(message, field.name).SetInParent()
        else:
            setattr(message, field.name, _scalar(field, rng))
    return message


def _message_types() -> list[Descriptor]:
    found: dict[str, Descriptor] = {}

    def visit(descriptor: Descriptor) -> None:
        if descriptor.full_name in found:
            return
        found[descriptor.full_name] = descriptor
        for field in descriptor.fields:
            if field.message_type is not None:
                visit(field.message_type)

    for service in generated_services():
        for method in service.methods:
            visit(method.input_type)
            visit(method.output_type)
    return [found[name] for name in sorted(found)]


def _assert_same(message: Message) -> None:
    ours = to_dict(message)
    assert ours == _expected(message), message
    # And it survives orjson as the same document.
    assert orjson.loads(dumps(ours)) == ours


@pytest.mark.parametrize("descriptor", _message_types(), ids=lambda descriptor: descriptor.full_name)
def test_every_generated_message_type_prints_as_json_format_does(descriptor: Descriptor) -> None:
    message_class = GetMessageClass(descriptor)
    rng = random.Random(descriptor.full_name)
    memo = Memo(capacity=8)  # small, so that eviction happens too
    _assert_same(message_class())  # nothing set: every no-presence field at its default
    for _ in range(25):
        message = _fill(message_class(), rng)
        _assert_same(message)
        # Through a memo (pre-written elements of repeated fields), twice: the same document once written.
        for _ in range(2):
            assert orjson.loads(dumps(to_dict(message, memo))) == _expected(message)


def test_a_memo_prints_each_repeated_element_once_and_stays_bounded() -> None:
    def batch(first: int) -> market_pb2.StreamTicksResponse:
        response = market_pb2.StreamTicksResponse()
        for sequence in range(first, first + 10):
            tick = response.ticks.ticks.add(symbol="SIM-AAPL", price=100 + sequence / 100, sequence=sequence)
            tick.event_time.seconds = 1_733_000_000 + sequence
        return response

    memo = Memo(capacity=25)
    for _ in range(3):  # three sockets receiving the same batch
        assert orjson.loads(dumps(to_dict(batch(0), memo))) == _expected(batch(0))
    assert (memo.misses, memo.hits) == (10, 20)
    for first in range(10, 100, 10):  # more distinct ticks than the memo holds
        assert orjson.loads(dumps(to_dict(batch(first), memo))) == _expected(batch(first))
    assert memo.misses == 100
    assert memo.size <= 25


def _kitchen_sink() -> Callable[..., Message]:
    """A message type with every kind of field, in a pool of its own.

    Typed as a callable, not type[Message]: the class is made at run time with fields no stub knows.
    """
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, wrappers_pb2, struct_pb2, any_pb2, field_mask_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    sink = descriptor_pb2.FileDescriptorProto(
        name="sink.proto",
        package="sink",
        syntax="proto3",
        dependency=[
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/any.proto",
            "google/protobuf/field_mask.proto",
        ],
    )
    color = sink.enum_type.add(name="Color")
    for number, name in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_GREEN"]):
        color.value.add(name=name, number=number)
    top = sink.message_type.add(name="Sink")
    scalar_types = {
        "f_double": F.TYPE_DOUBLE,
        "f_float": F.TYPE_FLOAT,
        "f_int64": F.TYPE_INT64,
        "f_uint64": F.TYPE_UINT64,
        "f_int32": F.TYPE_INT32,
        "f_fixed64": F.TYPE_FIXED64,
        "f_fixed32": F.TYPE_FIXED32,
        "f_bool": F.TYPE_BOOL,
        "f_string": F.TYPE_STRING,
        "f_bytes": F.TYPE_BYTES,
        "f_uint32": F.TYPE_UINT32,
        "f_sfixed32": F.TYPE_SFIXED32,
        "f_sfixed64": F.TYPE_SFIXED64,
        "f_sint32": F.TYPE_SINT32,
        "f_sint64": F.TYPE_SINT64,
    }
    number = 0

    def add(name: str, kind: int, *, label: int = F.LABEL_OPTIONAL, type_name: str = "", **extra: Any) -> None:
        nonlocal number
        number += 1
        if type_name:
            extra["type_name"] = type_name
        top.field.add(name=name, number=number, type=kind, label=label, **extra)

    for name, kind in scalar_types.items():
        add(name, kind)
        add("r_" + name, kind, label=F.LABEL_REPEATED)
    add("color", F.TYPE_ENUM, type_name=".sink.Color")
    add("colors", F.TYPE_ENUM, label=F.LABEL_REPEATED, type_name=".sink.Color")
    for wkt in ("Timestamp", "Duration", "Struct", "Value", "ListValue", "Any", "FieldMask", "DoubleValue"):
        add(wkt.lower(), F.TYPE_MESSAGE, type_name=f".google.protobuf.{wkt}")
    for wrapper in ("FloatValue", "Int64Value", "UInt64Value", "BoolValue", "StringValue", "BytesValue"):
        add(wrapper.lower(), F.TYPE_MESSAGE, type_name=f".google.protobuf.{wrapper}")
    add("from", F.TYPE_STRING)  # a Python keyword as a field name
    add("times", F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".google.protobuf.Timestamp")
    add("child", F.TYPE_MESSAGE, type_name=".sink.Sink")  # recursion
    add("children", F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".sink.Sink")
    for key, kind in (("bool", F.TYPE_BOOL), ("int64", F.TYPE_INT64), ("string", F.TYPE_STRING)):
        entry = top.nested_type.add(name=f"By{key.title()}Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=kind, label=F.LABEL_OPTIONAL)
        value_kind, value_type = (F.TYPE_MESSAGE, ".sink.Sink") if key == "int64" else (F.TYPE_ENUM, ".sink.Color")
        entry.field.add(name="value", number=2, type=value_kind, label=F.LABEL_OPTIONAL, type_name=value_type)
        add(f"by_{key}", F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=f".sink.Sink.By{key.title()}Entry")
    top.oneof_decl.add(name="choice")
    add("choice_text", F.TYPE_STRING, oneof_index=0)
    add("choice_time", F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp", oneof_index=0)
    top.oneof_decl.add(name="_maybe")  # proto3 `optional`: a synthetic oneof, declared after the real ones
    add("maybe", F.TYPE_INT64, proto3_optional=True, oneof_index=1)
    pool.Add(sink)
    return GetMessageClass(pool.FindMessageTypeByName("sink.Sink"))


def test_every_kind_of_field_and_edge_value_prints_as_json_format_does() -> None:
    sink = _kitchen_sink()
    _assert_same(sink())
    rng = random.Random(7)
    for _ in range(300):
        _assert_same(_fill(sink(), rng))
    # Presence: an optional or oneof member set to its default is printed; unset, it is not.
    explicit = sink(maybe=0, choice_text="")
    assert to_dict(explicit)["maybe"] == "0"
    assert to_dict(explicit)["choiceText"] == ""
    assert "maybe" not in to_dict(sink())
    _assert_same(explicit)


def test_timestamps_of_every_precision_and_the_edges_of_the_range() -> None:
    for seconds in (0, -1, 86_399, 951_782_400, 1_733_000_000, -62_135_596_800, 253_402_300_799):
        for nanos in (0, 1_000_000, 10_000, 1, 999_999_999):
            stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
            assert to_dict(stamp) == stamp.ToJsonString()
    for seconds, nanos in ((253_402_300_800, 0), (-62_135_596_801, 0)):
        with pytest.raises(ValueError, match="Timestamp"):
            to_dict(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
