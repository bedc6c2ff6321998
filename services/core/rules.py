"""The request rules declared on the contract (protos/bullant/common/v1/rules.proto), read once from the descriptors:
each RPC's request size limit and each request field's rules (services/core/rulebook.py checks them on a parsed
request). The server checks them before any handler runs; the gateway takes its body limits and its OpenAPI
constraints from the same declarations, so a limit lives in one place."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, OneofDescriptor

from bullant.common.v1 import rules_pb2

DEFAULT_MAX_REQUEST_BYTES = 65_536
# The gateway's JSON body limit of a route, as a multiple of its method's encoded limit: JSON spells field names,
# numbers as text and bytes as base64, which for any realistic request stays within four times the binary size.
JSON_BODY_FACTOR = 4
_REQUIRED = field_behavior_pb2.REQUIRED
_OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY
_IDENTIFIER = field_behavior_pb2.IDENTIFIER
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
DEFAULT_REASON = "INVALID_ARGUMENT"


def max_request_bytes(method: MethodDescriptor) -> int:
    """The largest encoded request the method accepts (its declared MethodLimits, else the platform default)."""
    options = method.GetOptions()
    if options.HasExtension(rules_pb2.limits):
        declared = int(options.Extensions[rules_pb2.limits].max_request_bytes)
        if declared:
            return declared
    return DEFAULT_MAX_REQUEST_BYTES


def behaviors(field: FieldDescriptor) -> frozenset[int]:
    """The field's google.api.field_behavior values."""
    options = field.GetOptions()
    return frozenset(options.Extensions[field_behavior_pb2.field_behavior]) if options.ListFields() else frozenset()


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What the contract says about one field of a request: its behaviours and its declared rules."""

    field: FieldDescriptor
    required: bool
    output_only: bool
    identifier: bool
    rules: rules_pb2.FieldRules

    @property
    def is_map(self) -> bool:
        message = self.field.message_type
        return message is not None and bool(message.GetOptions().map_entry)

    @property
    def is_repeated(self) -> bool:
        return bool(self.field.is_repeated) and not self.is_map

    @property
    def implicit_presence(self) -> bool:
        """A scalar whose zero value means "not given" (no `optional`, not in a oneof, not a message)."""
        return not self.field.has_presence and not self.field.is_repeated

    def bound(self, name: str) -> float | None:
        return getattr(self.rules, name) if self.rules.HasField(name) else None  # type: ignore[arg-type]

    @property
    def reason(self) -> str:
        return self.rules.reason or DEFAULT_REASON

    @property
    def items_reason(self) -> str:
        return self.rules.items_reason or self.reason

    @property
    def empty_reason(self) -> str:
        return self.rules.empty_reason or DEFAULT_REASON


def oneof_rules(oneof: OneofDescriptor) -> rules_pb2.OneofRules | None:
    """The contract's rules of a oneof (None when it declares none). A proto3 `optional` field's synthetic oneof
    never has any."""
    options = oneof.GetOptions()
    return options.Extensions[rules_pb2.oneof] if options.HasExtension(rules_pb2.oneof) else None


def required_oneofs(descriptor: Descriptor) -> list[tuple[OneofDescriptor, str]]:
    """The oneofs of a message of which one member must be set, each with its reason."""
    found = []
    for oneof in descriptor.oneofs:
        rules = oneof_rules(oneof)
        if rules is not None and rules.required:
            found.append((oneof, rules.reason or DEFAULT_REASON))
    return found


def field_rule(field: FieldDescriptor) -> FieldRule:
    """The contract's rules of `field` (empty rules when it declares none)."""
    found = behaviors(field)
    options = field.GetOptions()
    rules = options.Extensions[rules_pb2.field] if options.HasExtension(rules_pb2.field) else rules_pb2.FieldRules()
    return FieldRule(
        field=field,
        required=_REQUIRED in found,
        output_only=_OUTPUT_ONLY in found,
        identifier=_IDENTIFIER in found,
        rules=rules,
    )


def number_text(value: float, integral: bool) -> str:
    return str(int(value)) if integral and value == int(value) else f"{value:g}"


def range_text(rule: FieldRule) -> str | None:
    """The accepted range of a number in words ("must be in [1, 500]", "must be greater than 0"), or None."""
    integral = rule.field.type not in _FLOATS
    low, low_open = rule.bound("min"), False
    if low is None and (low := rule.bound("greater_than")) is not None:
        low_open = True
    high, high_open = rule.bound("max"), False
    if high is None and (high := rule.bound("less_than")) is not None:
        high_open = True
    if low is not None and high is not None:
        return (
            f"must be in {'(' if low_open else '['}{number_text(low, integral)}, "
            f"{number_text(high, integral)}{')' if high_open else ']'}"
        )
    if low is not None:
        return f"must be {'greater than' if low_open else 'at least'} {number_text(low, integral)}"
    if high is not None:
        return f"must be {'less than' if high_open else 'at most'} {number_text(high, integral)}"
    return None


def mask_paths(descriptor: Descriptor, prefix: str = "", depth: int = 0) -> list[str]:
    """The update-mask paths of a resource: its fields a client may set, and (dotted) those of its singular
    messages."""
    found: list[str] = []
    for field in descriptor.fields:
        rule = field_rule(field)
        if rule.output_only or rule.identifier:
            continue
        path = prefix + field.name
        found.append(path)
        message = field.message_type
        if (
            message is not None
            and not field.is_repeated
            and not message.full_name.startswith("google.protobuf.")
            and depth < 4
        ):
            found += mask_paths(message, path + ".", depth + 1)
    return found


def declared_fields(descriptor: Descriptor) -> Iterable[FieldRule]:
    """The rules of the message's fields a client may set."""
    for field in descriptor.fields:
        rule = field_rule(field)
        if not rule.output_only:
            yield rule
