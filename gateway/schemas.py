"""The JSON schemas of the OpenAPI document (OpenAPI 3.0's dialect), read from the message descriptors: a component
schema per message and enum in the proto3 JSON mapping, and each field's schema with the rules its contract declares
(services/core/rules.py) – bounds, lengths, patterns, formats, element counts, required fields and oneofs, update
masks."""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from services.core.rules import FieldRule, field_rule, mask_paths
from services.core.rules import required_oneofs as required_oneofs_of

_WRAPPERS = {
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "example": "enabled,displayName"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    **_WRAPPERS,
}
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_UINT32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
# The formats of strings whose validity the method judges itself (rules.proto, FieldRules.format), in words.
_FORMAT_DESCRIPTIONS = {
    "email": "an email address (name@example.com), normalised by the server; one it cannot accept is refused (400)",
    "password": "a new password: the server refuses a weak one (400 PASSWORD_TOO_WEAK) – common, all one character, "
    "or the email",
    "iana-time-zone": "an IANA time zone name such as Asia/Seoul; an unknown one is refused (400 TIMEZONE_INVALID)",
    "trading-calendar": "a trading calendar: an exchange's (XNYS, XNAS, XKRX, ...), 24/7 or FX; an unknown one is "
    "refused (400 TRADING_CALENDAR_UNKNOWN)",
    "printable": "printable characters only: no control, format (zero-width, bidi), private-use or unassigned "
    "characters, and no space other than U+0020",
    "webhook-url": "an https URL of a public host: a fully qualified name that is not local (localhost, .local, "
    ".internal, ...) or a public IP address, without a user name or password",
    "page-token": "the next_page_token of the previous page of this list with the same filters; any other is "
    "refused (400 PAGE_TOKEN_INVALID): start without one",
}
# What the proto3 JSON mapping accepts for 32-bit integers (the gateway refuses the rest).
_INT32_RANGE = {"minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32_RANGE = {"minimum": 0, "maximum": 2**32 - 1}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _behaviors(field: FieldDescriptor) -> set[int]:
    options = field.GetOptions()
    return set(options.Extensions[field_behavior_pb2.field_behavior]) if options.ListFields() else set()


def _camel(path: str) -> str:
    """A proto field path in its JSON spelling (`notification_preferences.sms` → `notificationPreferences.sms`)."""
    return ".".join(
        part.split("_")[0] + "".join(word.title() for word in part.split("_")[1:]) for part in path.split(".")
    )


def _bound(schema: dict[str, Any], rule: FieldRule, *, integral: bool) -> dict[str, Any]:
    """minimum / maximum (exclusive ones in OpenAPI 3.0's boolean form) of a number."""
    low, high = rule.bound("min"), rule.bound("max")
    above, below = rule.bound("greater_than"), rule.bound("less_than")

    def shown(value: float) -> float | int:
        return int(value) if integral and value == int(value) else value

    if low is not None:
        schema["minimum"] = shown(low)
    elif above is not None:
        schema.update(minimum=shown(above), exclusiveMinimum=True)
    if high is not None:
        schema["maximum"] = shown(high)
    elif below is not None:
        schema.update(maximum=shown(below), exclusiveMaximum=True)
    if rule.rules.choices:
        schema["enum"] = [shown(choice) for choice in rule.rules.choices]
    return schema


def _admits_zero(rule: FieldRule) -> bool:
    low, high = rule.bound("min"), rule.bound("max")
    above, below = rule.bound("greater_than"), rule.bound("less_than")
    choices = list(rule.rules.choices)
    return (
        (low is None or low <= 0)
        and (high is None or high >= 0)
        and (above is None or above < 0)
        and (below is None or below > 0)
        and (not choices or 0 in choices)
    )


class Schemas:
    """Component schemas of the messages and enums reached, by full name."""

    def __init__(self) -> None:
        self.found: dict[str, dict[str, Any]] = {}
        self._building: set[str] = set()

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name not in self.found:
            self.found[descriptor.full_name] = {"type": "string", "enum": [value.name for value in descriptor.values]}
        return ref(descriptor.full_name)

    @staticmethod
    def specified_enum(descriptor: EnumDescriptor, rule: FieldRule) -> dict[str, Any]:
        """The values a required enum field (or an element of a repeated one) takes: never _UNSPECIFIED."""
        choices = {int(choice) for choice in rule.rules.choices}
        names = [value.name for value in descriptor.values if value.number and (not choices or value.number in choices)]
        return {"type": "string", "enum": names}

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[descriptor.full_name])
        name = descriptor.full_name
        if name not in self.found and name not in self._building:
            # A message that contains itself refers to its own $ref while it is being built.
            self._building.add(name)
            properties: dict[str, Any] = {}
            required = []
            for field in descriptor.fields:
                schema = self.field(field, descriptor)
                behaviors = _behaviors(field)
                if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                    schema = (
                        {**schema, "readOnly": True} if "$ref" not in schema else {"allOf": [schema], "readOnly": True}
                    )
                properties[field.json_name] = schema
                if field_behavior_pb2.REQUIRED in behaviors:
                    required.append(field.json_name)
            document: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
            if required:
                document["required"] = required
            # At most one member of each oneof (proto3 `optional` fields are oneofs of their own).
            pairs = [
                {"required": [first.json_name, second.json_name]}
                for oneof in descriptor.oneofs
                for index, first in enumerate(oneof.fields)
                for second in oneof.fields[index + 1 :]
            ]
            if pairs:
                document["not"] = {"anyOf": pairs}
            # At least one member of each oneof the contract requires (its OneofRules).
            required_oneofs = [
                {"anyOf": [{"required": [member.json_name]} for member in oneof.fields]}
                for oneof, _ in required_oneofs_of(descriptor)
            ]
            if len(required_oneofs) == 1:
                document.update(required_oneofs[0])
            elif required_oneofs:
                document["allOf"] = required_oneofs
            self.found[name] = document
            self._building.discard(name)
        return ref(name)

    def value(self, field: FieldDescriptor, rule: FieldRule | None = None) -> dict[str, Any]:
        """The schema of one value of the field (an element when repeated), with its declared rules."""
        rule = rule or field_rule(field)
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.message(field.message_type)  # type: ignore[arg-type]
        if kind == FieldDescriptor.TYPE_ENUM:
            if field.is_repeated or (rule.required and rule.implicit_presence) or rule.rules.choices:
                return self.specified_enum(field.enum_type, rule)  # type: ignore[arg-type]
            return self.enum(field.enum_type)  # type: ignore[arg-type]
        if kind in _INT32:
            return _bound({"type": "integer", "format": "int32", **_INT32_RANGE}, rule, integral=True)
        if kind in _UINT32:
            return _bound({"type": "integer", "format": "int64", **_UINT32_RANGE}, rule, integral=True)
        if kind in _INT64:
            return self.int64(rule)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return _bound({"type": "number"}, rule, integral=False)
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        return self.text(rule)

    @staticmethod
    def int64(rule: FieldRule) -> dict[str, Any]:
        """A 64-bit integer is a JSON string of decimal digits (up to 18, which always fit); a lower bound of 0 or 1
        becomes the pattern of its digits."""
        unsigned = rule.field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
        schema: dict[str, Any] = {"type": "string", "format": "uint64" if unsigned else "int64"}
        low = rule.bound("min")
        if low is not None and low >= 1:
            schema["pattern"] = "^[1-9][0-9]{0,17}$"
        elif unsigned or (low is not None and low >= 0):
            schema["pattern"] = "^[0-9]{1,18}$"
        else:
            schema["pattern"] = "^-?[0-9]{1,18}$"
        return schema

    @staticmethod
    def text(rule: FieldRule) -> dict[str, Any]:
        """A string or bytes (base64) value with its lengths, pattern and format. An optional field's empty value
        means "not given" and is always accepted."""
        rules = rule.rules
        binary = rule.field.type == FieldDescriptor.TYPE_BYTES
        schema: dict[str, Any] = {"type": "string", "format": "byte"} if binary else {"type": "string"}
        optional = rule.implicit_presence and not rule.required
        shortest = rules.min_len if rules.HasField("min_len") else 0
        if rule.required and rule.implicit_presence:
            shortest = max(shortest, 1)
        if rules.HasField("max_len"):
            # Base64 spells 3 bytes in 4 characters.
            schema["maxLength"] = -(-rules.max_len // 3) * 4 if binary else rules.max_len
        if shortest and not optional:
            schema["minLength"] = shortest
        if rules.pattern:
            schema["pattern"] = f"^$|{rules.pattern}" if optional else rules.pattern
            schema["description"] = rules.pattern_description or f"matches {rules.pattern}"
        if rules.format in _FORMAT_DESCRIPTIONS:
            described = _FORMAT_DESCRIPTIONS[rules.format]
            schema["description"] = f"{schema['description']}; {described}" if "description" in schema else described
        if rules.format and optional:
            # The format describes a value that is given; "" is not one.
            schema["anyOf"] = [{"enum": [""]}, {"format": rules.format}]
        elif rules.format:
            schema["format"] = rules.format
        return schema

    def field(self, field: FieldDescriptor, owner: Descriptor | None = None) -> dict[str, Any]:
        """The schema of a field: its values with their rules, the element count of a list or map, the required
        fields of a message held here, an update mask's paths."""
        rule = field_rule(field)
        rules = rule.rules
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.value(message.fields_by_name["value"]),
            }
            if rules.HasField("max_items"):
                schema["maxProperties"] = rules.max_items
            if rule.required:
                schema["minProperties"] = max(1, rules.min_items)
            if rules.HasField("keys") and rules.keys.pattern:
                schema["description"] = f"keys: {rules.keys.pattern_description or rules.keys.pattern}"
            return schema
        if field.is_repeated:
            schema = {"type": "array", "items": self.value(field, rule)}
            if rules.HasField("max_items"):
                schema["maxItems"] = rules.max_items
            least = max(1 if rule.required else 0, rules.min_items)
            if least:
                schema["minItems"] = least
            return schema
        if message is not None and message.full_name == "google.protobuf.FieldMask" and rules.mask_of and owner:
            return self.mask(owner, rules.mask_of)
        schema = self.value(field, rule)
        if rules.required_fields:
            return {"allOf": [schema, {"required": [_camel(name) for name in rules.required_fields]}]}
        if field.type in _INT32 | _UINT32 | {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}:
            return self.zero(schema, rule)
        return schema

    @staticmethod
    def zero(schema: dict[str, Any], rule: FieldRule) -> dict[str, Any]:
        """A number whose 0 means "not given": an optional one accepts 0 whatever its range; a required one never."""
        if not rule.implicit_presence or _admits_zero(rule) == (not rule.required):
            return schema
        if rule.required:
            return {**schema, "not": {"enum": [0]}}
        return {"anyOf": [{"type": schema["type"], "enum": [0]}, schema]}

    @staticmethod
    def mask(owner: Descriptor, resource_field: str) -> dict[str, Any]:
        """An update mask in JSON: comma-separated lowerCamelCase paths of the resource's settable fields, or *."""
        resource: Descriptor = owner.fields_by_name[resource_field].message_type  # type: ignore[assignment]
        names = "|".join(
            sorted((_camel(path).replace(".", "\\.") for path in mask_paths(resource)), key=len, reverse=True)
        )
        return {
            "type": "string",
            "pattern": f"^(\\*|({names})(,({names}))*)$",
            "description": f"paths of {resource.name} to change, comma-separated, or *",
            "example": ",".join(_camel(path) for path in mask_paths(resource)[:2]),
        }
