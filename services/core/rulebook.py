"""The declared request rules (services/core/rules.py) compiled per message type and checked on a parsed request in
one pass that collects every violation, each with its ErrorInfo reason."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor

from services.core.errors import FieldViolation, InvalidArgument
from services.core.rules import (
    FieldRule,
    field_rule,
    mask_paths,
    number_text,
    range_text,
    required_oneofs,
)

_FIELD_MASK = "google.protobuf.FieldMask"
_STRING = FieldDescriptor.TYPE_STRING
_BYTES = FieldDescriptor.TYPE_BYTES
_ENUM = FieldDescriptor.TYPE_ENUM
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}

Violation = tuple[str, FieldViolation]
# Checks one field of a message: (message, the field's path, violations found, the update mask within it).
_FieldCheck = Callable[[Any, str, list[Violation], frozenset[str] | None], None]


class _Checker:
    """The compiled checks of one message type."""

    def __init__(self, compiler: RuleBook, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.fields: list[tuple[FieldRule, _FieldCheck]] = []
        self.oneofs = [
            (oneof.name, reason, [member.name for member in oneof.fields], f"set one of {_names(oneof)}")
            for oneof, reason in required_oneofs(descriptor)
        ]
        self._compiler = compiler

    def check(self, message: Any, prefix: str, out: list[Violation], mask: frozenset[str] | None = None) -> None:
        for name, reason, members, words in self.oneofs:
            if message.WhichOneof(name) is None:
                out.append((reason, FieldViolation(prefix.removesuffix(".") or members[0], words)))
        for rule, check in self.fields:
            name = rule.field.name
            sub: frozenset[str] | None = None
            if mask is not None and not rule.identifier and "*" not in mask and name not in mask:
                deeper = frozenset(path[len(name) + 1 :] for path in mask if path.startswith(name + "."))
                if not deeper:
                    continue
                sub = deeper
            check(message, prefix + name, out, sub)


class RuleBook:
    """The compiled request rules of every message type reached from the requests it is asked about."""

    def __init__(self) -> None:
        self._checkers: dict[str, _Checker] = {}
        self._has_rules: dict[str, bool] = {}

    def violations(self, message: Any) -> list[Violation]:
        """Every violation of the message's rules, in field order, each with its ErrorInfo reason."""
        found: list[Violation] = []
        self.checker(message.DESCRIPTOR).check(message, "", found)
        return found

    def check(self, message: Any) -> None:
        """InvalidArgument with every violation (under the first one's reason) unless the message keeps its rules."""
        found = self.violations(message)
        if found:
            raise InvalidArgument([violation for _, violation in found], reason=found[0][0])

    def checker(self, descriptor: Descriptor) -> _Checker:
        name = descriptor.full_name
        checker = self._checkers.get(name)
        if checker is None:
            # Registered before compiling its fields, so a message that contains itself finds it.
            checker = self._checkers[name] = _Checker(self, descriptor)
            mask_of = {
                rule.rules.mask_of: rule.field for rule in map(field_rule, descriptor.fields) if rule.rules.mask_of
            }
            for field in descriptor.fields:
                rule = field_rule(field)
                if rule.output_only:
                    continue
                check = self._field_check(rule, masked_by=mask_of.get(field.name))
                if check is not None:
                    checker.fields.append((rule, check))
        return checker

    def has_rules(self, descriptor: Descriptor) -> bool:
        """Whether any field of the message (or of the messages it contains) has something to check."""
        name = descriptor.full_name
        if name in self._has_rules:
            return self._has_rules[name]
        self._has_rules[name] = False  # a cycle adds nothing by itself
        result = bool(required_oneofs(descriptor))
        for field in () if result else descriptor.fields:
            rule = field_rule(field)
            if rule.output_only:
                continue
            if rule.required or rule.rules.ListFields() or field.type == _ENUM:
                result = True
                break
            message = field.message_type
            if message is not None and self.has_rules(message):
                result = True
                break
        self._has_rules[name] = result
        return result

    # -- one field ---------------------------------------------------------------------------------------------------

    def _field_check(self, rule: FieldRule, *, masked_by: FieldDescriptor | None) -> _FieldCheck | None:
        if rule.is_map:
            return self._map_check(rule)
        if rule.is_repeated:
            return self._repeated_check(rule)
        if rule.field.type == _MESSAGE:
            return self._message_check(rule, masked_by)
        return self._scalar_check(rule)

    def _map_check(self, rule: FieldRule) -> _FieldCheck | None:
        field = rule.field
        entry: Descriptor = field.message_type  # type: ignore[assignment]
        value_message = entry.fields_by_name["value"].message_type
        value_check = (
            self.checker(value_message).check if value_message is not None and self.has_rules(value_message) else None
        )
        key_rules = rule.rules.keys if rule.rules.HasField("keys") else None
        if not (rule.required or _counts(rule) or key_rules is not None or value_check is not None):
            return None
        key_check = (
            _string_check(FieldRule(entry.fields_by_name["key"], False, False, False, key_rules)) if key_rules else None
        )

        def check_map(message: Any, path: str, out: list[Violation], mask: frozenset[str] | None) -> None:
            entries = getattr(message, field.name)
            if not _count_ok(rule, len(entries), path, out):
                return
            for key in entries:
                if key_check is not None:
                    key_check(key, f"{path}.{key}" if len(key) <= 64 else path, out)
                if value_check is not None:
                    value_check(entries[key], f"{path}.{key}.", out, None)

        return check_map

    def _repeated_check(self, rule: FieldRule) -> _FieldCheck | None:
        field = rule.field
        element = self._element_check(rule)
        if not (rule.required or _counts(rule) or element is not None):
            return None
        # Data rows are checked by the method itself, row by row; only their number is bounded here.
        each = None if rule.rules.rows else element

        def check_repeated(message: Any, path: str, out: list[Violation], mask: frozenset[str] | None) -> None:
            values = getattr(message, field.name)
            if not _count_ok(rule, len(values), path, out) or each is None:
                return
            for index, value in enumerate(values):
                each(value, f"{path}[{index}]", out)

        return check_repeated

    def _message_check(self, rule: FieldRule, masked_by: FieldDescriptor | None) -> _FieldCheck | None:
        field = rule.field
        message_type: Descriptor = field.message_type  # type: ignore[assignment]
        is_mask = message_type.full_name == _FIELD_MASK
        if is_mask and rule.rules.mask_of:
            return self._mask_check(rule)
        nested = self.checker(message_type) if self.has_rules(message_type) else None
        required_fields = tuple(rule.rules.required_fields)
        if not (rule.required or nested is not None or required_fields):
            return None

        def check_message(message: Any, path: str, out: list[Violation], mask: frozenset[str] | None) -> None:
            if not message.HasField(field.name) or (is_mask and not getattr(message, field.name).paths):
                if rule.required:
                    out.append((rule.reason, FieldViolation(path, "is required")))
                return
            value = getattr(message, field.name)
            for name in required_fields:
                if not _is_set(value, value.DESCRIPTOR.fields_by_name[name]):
                    out.append((rule.reason, FieldViolation(f"{path}.{name}", "is required")))
            if nested is not None:
                # The resource of an update request is checked only where its mask points.
                nested.check(value, path + ".", out, _mask_of(message, masked_by) if masked_by is not None else mask)

        return check_message

    def _scalar_check(self, rule: FieldRule) -> _FieldCheck | None:
        field = rule.field
        element = self._element_check(rule)
        if element is None and not rule.required:
            return None
        explicit = field.has_presence

        def check_scalar(message: Any, path: str, out: list[Violation], mask: frozenset[str] | None) -> None:
            if explicit and not message.HasField(field.name):
                if rule.required:
                    out.append((rule.reason, FieldViolation(path, "is required")))
                return
            value = getattr(message, field.name)
            if not explicit and not value:  # the zero value: not given (NaN is truthy, so it is checked)
                if rule.required:
                    out.append((rule.reason, FieldViolation(path, _missing(rule))))
                return
            if element is not None:
                element(value, path, out)

        return check_scalar

    def _element_check(self, rule: FieldRule) -> Callable[[Any, str, list[Violation]], None] | None:
        """The check of one value (an element, when repeated) that is set."""
        field = rule.field
        if field.type in (_STRING, _BYTES):
            return _string_check(rule)
        if field.type == _ENUM:
            return _enum_check(rule)
        if field.type == _MESSAGE:
            if rule.is_map:
                return None
            message_type = field.message_type
            if message_type is None or not self.has_rules(message_type):
                return None
            nested = self.checker(message_type)
            return lambda value, path, out: nested.check(value, path + ".", out)
        return _number_check(rule)

    def _mask_check(self, rule: FieldRule) -> _FieldCheck:
        field = rule.field
        request: Descriptor = field.containing_type  # type: ignore[assignment]
        resource: Descriptor = request.fields_by_name[rule.rules.mask_of].message_type  # type: ignore[assignment]
        allowed = frozenset(mask_paths(resource))
        top = ", ".join(sorted(path for path in allowed if "." not in path))

        def check_mask(message: Any, path: str, out: list[Violation], mask: frozenset[str] | None) -> None:
            paths = list(getattr(message, field.name).paths) if message.HasField(field.name) else []
            if not paths:
                if rule.required:
                    out.append((rule.reason, FieldViolation(path, f"is required: name some of {top}, or *")))
                return
            wrong = [name for name in paths if name != "*" and name not in allowed]
            if wrong:
                shown = ", ".join(name[:64] for name in wrong[:5])
                out.append((rule.reason, FieldViolation(path, f"name some of {top} (or *); not {shown}")))
            elif "*" in paths and len(paths) > 1:
                out.append((rule.reason, FieldViolation(path, "* (every field) must be the only path when it is used")))

        return check_mask


def _mask_of(message: Any, mask_field: FieldDescriptor | None) -> frozenset[str] | None:
    if mask_field is None:
        return None
    return frozenset(getattr(message, mask_field.name).paths)


def _missing(rule: FieldRule) -> str:
    if rule.field.type == _ENUM:
        return f"is required: one of {_enum_names(rule)}"
    words = range_text(rule)
    return f"is required: {words.removeprefix('must be ')}" if words and rule.field.type != _STRING else "is required"


def _names(oneof: OneofDescriptor) -> str:
    return ", ".join(member.name for member in oneof.fields)


def _enum_names(rule: FieldRule) -> str:
    values = [value.name for value in rule.field.enum_type.values if value.number]  # type: ignore[union-attr]
    return ", ".join(values) if len(values) <= 6 else f"{values[0]} … {values[-1]}"


def _is_set(message: Any, field: FieldDescriptor) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return bool(message.HasField(field.name))
    return bool(getattr(message, field.name))


def _counts(rule: FieldRule) -> bool:
    return rule.rules.HasField("min_items") or rule.rules.HasField("max_items")


def _count_ok(rule: FieldRule, count: int, path: str, out: list[Violation]) -> bool:
    """Checks the number of elements before any element is looked at; False when the elements must not be."""
    if count == 0:
        if rule.required:
            least = max(1, rule.rules.min_items)
            out.append((rule.empty_reason, FieldViolation(path, f"is required: at least {least} element(s)")))
        return False
    if rule.rules.HasField("max_items") and count > rule.rules.max_items:
        out.append(
            (rule.items_reason, FieldViolation(path, f"must have at most {rule.rules.max_items} elements, got {count}"))
        )
        return False
    if rule.rules.HasField("min_items") and count < rule.rules.min_items:
        out.append((rule.empty_reason, FieldViolation(path, f"must have at least {rule.rules.min_items} elements")))
    return True


def _string_check(rule: FieldRule) -> Callable[[Any, str, list[Violation]], None] | None:
    rules = rule.rules
    unit = "bytes" if rule.field.type == _BYTES else "characters"
    shortest = rules.min_len if rules.HasField("min_len") else None
    longest = rules.max_len if rules.HasField("max_len") else None
    pattern = re.compile(rules.pattern) if rules.pattern else None
    if shortest is None and longest is None and pattern is None:
        return None
    reason = rule.reason
    described = rules.pattern_description or f"must match {rules.pattern}"

    def check(value: Any, path: str, out: list[Violation]) -> None:
        # The length first: the pattern only ever sees a bounded value.
        size = len(value)
        if longest is not None and size > longest:
            out.append((reason, FieldViolation(path, f"must be at most {longest} {unit}, got {size}")))
        elif shortest is not None and size < shortest:
            out.append((reason, FieldViolation(path, f"must be at least {shortest} {unit}")))
        elif pattern is not None and not pattern.fullmatch(value):
            out.append((reason, FieldViolation(path, described)))

    return check


def _enum_check(rule: FieldRule) -> Callable[[Any, str, list[Violation]], None]:
    known = frozenset(value.number for value in rule.field.enum_type.values)  # type: ignore[union-attr]
    choices = frozenset(int(choice) for choice in rule.rules.choices) or known
    repeated = rule.is_repeated
    reason = rule.reason
    names = _enum_names(rule)

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if value not in choices or (repeated and value == 0):
            out.append((reason, FieldViolation(path, f"must be one of {names}")))

    return check


def _number_check(rule: FieldRule) -> Callable[[Any, str, list[Violation]], None] | None:
    low, high = rule.bound("min"), rule.bound("max")
    above, below = rule.bound("greater_than"), rule.bound("less_than")
    choices = frozenset(rule.rules.choices)
    if low is None and high is None and above is None and below is None and not choices:
        return None
    reason = rule.reason
    words = range_text(rule) or ""
    if rule.implicit_presence and not rule.required and not _in_range(0, low, high, above, below):
        words += " or 0"
    if choices:
        shown = ", ".join(number_text(choice, rule.field.type not in _FLOATS) for choice in sorted(choices))
        words = f"must be one of {shown}"

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            out.append((reason, FieldViolation(path, "must be a finite number")))
        elif (choices and value not in choices) or not _in_range(value, low, high, above, below):
            out.append((reason, FieldViolation(path, words)))

    return check


def _in_range(value: float, low: float | None, high: float | None, above: float | None, below: float | None) -> bool:
    return (
        (low is None or value >= low)
        and (high is None or value <= high)
        and (above is None or value > above)
        and (below is None or value < below)
    )
