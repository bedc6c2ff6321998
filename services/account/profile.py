"""The account profile and notification preferences: field-mask updates, validation, defaults and storage form."""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, is_dataclass, replace
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar

from services.account import validation
from services.core.errors import FieldViolation, InvalidArgument

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_TIMEZONE = "Asia/Seoul"
DEFAULT_LOCALE = "en-US"
CHANNEL_ADDRESS_REQUIRED = "CHANNEL_ADDRESS_REQUIRED"
RISK_PROFILE_INVALID = "RISK_PROFILE_INVALID"

# Marks a field the server sets: never copied by an update mask, never stored in the JSON document.
_OUTPUT_ONLY = "output_only"

_D = TypeVar("_D", bound="DataclassInstance")


class RiskProfile(IntEnum):
    """How much risk the user says they accept; numbers of bullant.account.v1.RiskProfile."""

    UNSPECIFIED = 0
    CONSERVATIVE = 1
    MODERATE = 2
    AGGRESSIVE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailChannel:
    """Alerts by email; an empty address means the login email."""

    enabled: bool = True
    address: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookChannel:
    """Alerts POSTed to an https URL the user owns."""

    enabled: bool = False
    url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TelegramChannel:
    """Alerts sent by the Bullant bot to a Telegram chat."""

    enabled: bool = False
    chat_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsChannel:
    """Alerts by text message to an E.164 phone number."""

    enabled: bool = False
    phone_number: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InAppChannel:
    """Alerts shown in the dashboard."""

    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationPreferences:
    """Where alerts go; each channel is switched on and addressed independently."""

    email: EmailChannel = field(default_factory=EmailChannel)
    webhook: WebhookChannel = field(default_factory=WebhookChannel)
    telegram: TelegramChannel = field(default_factory=TelegramChannel)
    sms: SmsChannel = field(default_factory=SmsChannel)
    in_app: InAppChannel = field(default_factory=InAppChannel)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """What a user may change about their account besides credentials."""

    display_name: str = ""
    timezone: str = DEFAULT_TIMEZONE
    locale: str = DEFAULT_LOCALE
    notification_preferences: NotificationPreferences = field(default_factory=NotificationPreferences)
    risk_profile: RiskProfile = RiskProfile.UNSPECIFIED
    update_time: datetime | None = field(default=None, metadata={_OUTPUT_ONLY: True})


@functools.cache
def _field_types(cls: type[DataclassInstance]) -> dict[str, Any]:
    # Annotations are strings under `from __future__ import annotations`; resolve them once per class.
    return typing.get_type_hints(cls)


def _input_fields(cls: type[DataclassInstance]) -> list[tuple[Field[Any], Any]]:
    types = _field_types(cls)
    return [(f, types[f.name]) for f in fields(cls) if not f.metadata.get(_OUTPUT_ONLY, False)]


def _message_type(kind: object) -> type[DataclassInstance] | None:
    """The dataclass a field holds, if it holds a nested message rather than a scalar."""
    return kind if isinstance(kind, type) and is_dataclass(kind) else None


def _paths(cls: type[DataclassInstance], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for f, kind in _input_fields(cls):
        path = prefix + f.name
        paths.add(path)
        message = _message_type(kind)
        if message is not None:
            paths |= _paths(message, path + ".")
    return paths


UPDATABLE_PATHS: frozenset[str] = frozenset(_paths(Profile))
_TOP_LEVEL_PATHS: tuple[str, ...] = tuple(f.name for f, _ in _input_fields(Profile))


def _local_part(email: str) -> str:
    return email.partition("@")[0][: validation.MAX_DISPLAY_NAME_LENGTH]


def default_profile(email: str) -> Profile:
    """The profile a new account starts with: named after the part of its email before the @."""
    return Profile(display_name=_local_part(email))


def _checked_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """The paths to copy: each once, "*" meaning every updatable top-level field. Which paths a mask may name (at
    least one, settable fields only, "*" alone) is the contract's declared rule of UpdateProfileRequest.update_mask,
    checked before the request reaches the service."""
    if isinstance(paths, str):
        # A bare string is a Sequence[str] too, and would be read as one path per character.
        raise TypeError("paths must be a sequence of field paths, not a single string")
    if "*" in paths:
        return _TOP_LEVEL_PATHS
    return tuple(dict.fromkeys(paths))


def _copy_path(current: _D, incoming: _D, names: Sequence[str]) -> _D:
    head, rest = names[0], names[1:]
    value = getattr(incoming, head)
    if rest:
        value = _copy_path(getattr(current, head), value, rest)
    return replace(current, **{head: value})


def apply_update(current: Profile, incoming: Profile, paths: Sequence[str]) -> Profile:
    """`current` with the fields named by `paths` taken from `incoming` (a field-mask update).

    A path naming a message replaces the whole message; "*" alone means every updatable top-level field. An empty
    timezone or locale in the result restores its default. An empty display_name stays empty, since its default
    comes from the email: `finalize_profile(profile, email)` fills it. `paths` are those the declared mask rule
    admitted (see _checked_paths).
    """
    updated = current
    for path in _checked_paths(paths):
        updated = _copy_path(updated, incoming, path.split("."))
    return replace(
        updated,
        timezone=updated.timezone or DEFAULT_TIMEZONE,
        locale=updated.locale or DEFAULT_LOCALE,
    )


class _Violations:
    """Collects every bad field so one response can tell the user about all of them."""

    def __init__(self) -> None:
        self.items: list[tuple[FieldViolation, str]] = []

    def check(self, check: Callable[..., str], value: str, field: str, *, optional: bool = False) -> str:
        """`check(value, field=field)`, or `value` unchanged (recording why) if it fails.

        With `optional`, a blank value is allowed and comes back as "" – the "use the default" signal.
        """
        if optional and not value.strip():
            return ""
        try:
            return check(value, field=field)
        except InvalidArgument as error:
            self.items.extend((violation, error.reason) for violation in error.violations)
            return value

    def address(self, check: Callable[..., str], value: str, field: str, *, channel: str, required: bool) -> str:
        """A channel address checked like `check(..., optional=True)`, but blank is refused when `required`."""
        if required and not value.strip():
            violation = FieldViolation(field, f"is required when the {channel} channel is enabled")
            self.items.append((violation, CHANNEL_ADDRESS_REQUIRED))
            return value
        return self.check(check, value, field, optional=True)

    def raise_if_any(self) -> None:
        if self.items:
            # Clients branch on one reason; the first problem in field order is the one to fix first.
            raise InvalidArgument([v for v, _ in self.items], reason=self.items[0][1])


def _validated_preferences(prefs: NotificationPreferences, found: _Violations) -> NotificationPreferences:
    base = "profile.notification_preferences"
    email, webhook, telegram, sms = prefs.email, prefs.webhook, prefs.telegram, prefs.sms
    # Addresses of disabled channels are checked too: they are stored and may be switched on later. An email
    # channel never requires one, since it falls back to the login email.
    return replace(
        prefs,
        email=replace(
            email,
            address=found.check(validation.check_channel_email, email.address, f"{base}.email.address", optional=True),
        ),
        webhook=replace(
            webhook,
            url=found.address(
                validation.check_webhook_url,
                webhook.url,
                f"{base}.webhook.url",
                channel="webhook",
                required=webhook.enabled,
            ),
        ),
        telegram=replace(
            telegram,
            chat_id=found.address(
                validation.check_telegram_chat_id,
                telegram.chat_id,
                f"{base}.telegram.chat_id",
                channel="Telegram",
                required=telegram.enabled,
            ),
        ),
        sms=replace(
            sms,
            phone_number=found.address(
                validation.check_phone_number,
                sms.phone_number,
                f"{base}.sms.phone_number",
                channel="SMS",
                required=sms.enabled,
            ),
        ),
    )


def validate_profile(profile: Profile) -> Profile:
    """The profile normalised (stripped, canonical locale, channel email normalised), or InvalidArgument listing
    every bad field as `profile.<path>`.

    Blank display_name, timezone and locale are allowed and come back empty: they mean "use the default", which
    `finalize_profile` fills in. An enabled webhook, Telegram or SMS channel without its address is
    CHANNEL_ADDRESS_REQUIRED; an enabled email channel without an address uses the login email. With several
    problems the error's reason is that of the first.
    """
    found = _Violations()
    display_name = found.check(
        validation.check_display_name, profile.display_name, "profile.display_name", optional=True
    )
    timezone = found.check(validation.check_timezone, profile.timezone, "profile.timezone", optional=True)
    locale = found.check(validation.check_locale, profile.locale, "profile.locale", optional=True)
    risk_profile = profile.risk_profile
    try:
        # Decoding from the wire can hand over any integer; only the members are meaningful.
        risk_profile = RiskProfile(profile.risk_profile)
    except ValueError:
        violation = FieldViolation("profile.risk_profile", "must be one of the listed risk profiles")
        found.items.append((violation, RISK_PROFILE_INVALID))
    preferences = _validated_preferences(profile.notification_preferences, found)
    found.raise_if_any()
    return replace(
        profile,
        display_name=display_name,
        timezone=timezone,
        locale=locale,
        notification_preferences=preferences,
        risk_profile=risk_profile,
    )


def finalize_profile(profile: Profile, email: str) -> Profile:
    """Fills an empty display_name from `email` and an empty timezone or locale with the defaults."""
    return replace(
        profile,
        display_name=profile.display_name or _local_part(email),
        timezone=profile.timezone or DEFAULT_TIMEZONE,
        locale=profile.locale or DEFAULT_LOCALE,
    )


def _to_document(value: DataclassInstance) -> dict[str, object]:
    document: dict[str, object] = {}
    for f, _ in _input_fields(type(value)):
        item = getattr(value, f.name)
        if is_dataclass(item) and not isinstance(item, type):
            document[f.name] = _to_document(item)
        elif isinstance(item, RiskProfile):
            # By name, so the stored document stays readable and independent of enum numbering.
            document[f.name] = item.name
        else:
            document[f.name] = item
    return document


def _decoded(kind: Any, raw: object) -> tuple[bool, object]:
    """(True, value) if `raw` is a stored value of type `kind`, else (False, None) so the default applies."""
    message = _message_type(kind)
    if message is not None and isinstance(raw, Mapping):
        return True, _from_document(message, raw)
    if kind is RiskProfile and isinstance(raw, str):
        return raw in RiskProfile.__members__, RiskProfile.__members__.get(raw)
    if kind is bool and isinstance(raw, bool):
        return True, raw
    if kind is str and isinstance(raw, str):
        return True, raw
    return False, None


def _from_document(cls: type[_D], document: Mapping[str, object]) -> _D:
    values: dict[str, object] = {}
    for f, kind in _input_fields(cls):
        if f.name in document:
            ok, value = _decoded(kind, document[f.name])
            if ok:
                values[f.name] = value
    constructor: Callable[..., _D] = cls
    return constructor(**values)


def profile_to_json(profile: Profile) -> str:
    """The profile as a JSON document for storage; update_time is kept in its own column, not here."""
    return json.dumps(_to_document(profile), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def profile_from_json(text: str, *, update_time: datetime | None) -> Profile:
    """The profile stored by `profile_to_json`, stamped with `update_time`.

    Unknown keys are ignored and missing or wrongly typed values take their defaults, so documents written by an
    older or newer version still load. Raises ValueError if `text` is not a JSON object.
    """
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("a stored profile must be a JSON object")
    return replace(_from_document(Profile, document), update_time=update_time)
