"""Account profile: field-mask updates, validation that reports every bad field, defaults and the stored form."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from bullant.account.v1 import account_pb2
from services.account.profile import (
    DEFAULT_LOCALE,
    DEFAULT_TIMEZONE,
    UPDATABLE_PATHS,
    EmailChannel,
    InAppChannel,
    NotificationPreferences,
    Profile,
    RiskProfile,
    SmsChannel,
    TelegramChannel,
    WebhookChannel,
    apply_update,
    default_profile,
    finalize_profile,
    profile_from_json,
    profile_to_json,
    validate_profile,
)
from services.core.errors import InvalidArgument
from services.core.rules import mask_paths

STAMP = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

CURRENT = Profile(
    display_name="Alice",
    timezone="Asia/Seoul",
    locale="ko-KR",
    notification_preferences=NotificationPreferences(
        email=EmailChannel(enabled=True, address=""),
        webhook=WebhookChannel(enabled=True, url="https://old.example.com/hook"),
        telegram=TelegramChannel(enabled=False, chat_id="42"),
    ),
    risk_profile=RiskProfile.CONSERVATIVE,
    update_time=STAMP,
)

INCOMING = Profile(
    display_name="Bob",
    timezone="America/New_York",
    locale="en-US",
    notification_preferences=NotificationPreferences(
        email=EmailChannel(enabled=False, address="bob@example.com"),
        webhook=WebhookChannel(enabled=False, url="https://new.example.com/hook"),
        telegram=TelegramChannel(enabled=True, chat_id="-100123"),
        sms=SmsChannel(enabled=True, phone_number="+821012345678"),
        in_app=InAppChannel(enabled=False),
    ),
    risk_profile=RiskProfile.AGGRESSIVE,
    update_time=datetime(2030, 1, 1, tzinfo=UTC),
)


def _violations(profile: Profile) -> tuple[str, list[tuple[str, str]]]:
    """The error's reason and its (field, description) pairs."""
    with pytest.raises(InvalidArgument) as caught:
        validate_profile(profile)
    return caught.value.reason, [(v.field, v.description) for v in caught.value.violations]


# --- model -----------------------------------------------------------------------------------------------------


def test_defaults() -> None:
    profile = Profile()
    assert profile.timezone == DEFAULT_TIMEZONE == "Asia/Seoul"
    assert profile.locale == DEFAULT_LOCALE == "en-US"
    assert profile.risk_profile is RiskProfile.UNSPECIFIED
    prefs = profile.notification_preferences
    assert (prefs.email.enabled, prefs.in_app.enabled) == (True, True)
    assert (prefs.webhook.enabled, prefs.telegram.enabled, prefs.sms.enabled) == (False, False, False)
    assert profile.update_time is None


def test_dataclasses_are_frozen_and_keyword_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Profile().display_name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        EmailChannel(True, "a@example.com")  # type: ignore[call-arg]


def test_risk_profile_numbers_match_the_proto_enum() -> None:
    assert [(m.name, int(m)) for m in RiskProfile] == [
        ("UNSPECIFIED", 0),
        ("CONSERVATIVE", 1),
        ("MODERATE", 2),
        ("AGGRESSIVE", 3),
    ]


def test_updatable_paths_cover_every_input_field_and_nothing_else() -> None:
    channels = {
        "email": ["address"],
        "webhook": ["url"],
        "telegram": ["chat_id"],
        "sms": ["phone_number"],
        "in_app": [],
    }
    expected = {"display_name", "timezone", "locale", "risk_profile", "notification_preferences"}
    for channel, address_fields in channels.items():
        base = f"notification_preferences.{channel}"
        expected |= {base, f"{base}.enabled"} | {f"{base}.{name}" for name in address_fields}
    assert expected == UPDATABLE_PATHS
    assert "update_time" not in UPDATABLE_PATHS
    # Exactly the paths the contract's update-mask rule admits, so every admitted path has a field to copy.
    assert set(mask_paths(account_pb2.Profile.DESCRIPTOR)) == UPDATABLE_PATHS


def test_default_profile_is_named_after_the_email() -> None:
    assert default_profile("alice.smith@example.com") == Profile(display_name="alice.smith")
    assert default_profile("a" * 70 + "@example.com").display_name == "a" * 64


# --- apply_update ----------------------------------------------------------------------------------------------


def test_apply_update_copies_only_named_top_level_fields() -> None:
    updated = apply_update(CURRENT, INCOMING, ["display_name", "risk_profile"])
    assert updated == dataclasses.replace(CURRENT, display_name="Bob", risk_profile=RiskProfile.AGGRESSIVE)
    assert updated.update_time == STAMP


def test_apply_update_nested_leaf_leaves_siblings_alone() -> None:
    updated = apply_update(CURRENT, INCOMING, ["notification_preferences.telegram.enabled"])
    prefs = updated.notification_preferences
    assert prefs.telegram == TelegramChannel(enabled=True, chat_id="42")
    assert prefs.webhook == CURRENT.notification_preferences.webhook
    assert prefs.sms == CURRENT.notification_preferences.sms
    assert updated.display_name == "Alice"


def test_apply_update_message_path_replaces_the_whole_message() -> None:
    updated = apply_update(CURRENT, INCOMING, ["notification_preferences.webhook"])
    assert updated.notification_preferences.webhook == WebhookChannel(enabled=False, url="https://new.example.com/hook")
    assert updated.notification_preferences.telegram == CURRENT.notification_preferences.telegram

    whole = apply_update(CURRENT, INCOMING, ["notification_preferences"])
    assert whole.notification_preferences == INCOMING.notification_preferences
    assert whole.display_name == "Alice"


def test_apply_update_several_nested_paths() -> None:
    updated = apply_update(
        CURRENT,
        INCOMING,
        ["notification_preferences.sms.phone_number", "notification_preferences.sms.enabled", "locale"],
    )
    assert updated.notification_preferences.sms == SmsChannel(enabled=True, phone_number="+821012345678")
    assert updated.locale == "en-US"
    assert updated.timezone == "Asia/Seoul"


def test_apply_update_star_copies_every_updatable_field_but_not_update_time() -> None:
    updated = apply_update(CURRENT, INCOMING, ["*"])
    assert updated == dataclasses.replace(INCOMING, update_time=STAMP)


def test_apply_update_empty_timezone_and_locale_restore_defaults_but_display_name_stays_empty() -> None:
    cleared = Profile(display_name="", timezone="", locale="")
    updated = apply_update(CURRENT, cleared, ["display_name", "timezone", "locale"])
    assert (updated.display_name, updated.timezone, updated.locale) == ("", "Asia/Seoul", "en-US")
    assert finalize_profile(updated, "carol@example.com").display_name == "carol"


def test_apply_update_copies_a_path_named_twice_once() -> None:
    assert apply_update(CURRENT, INCOMING, ["locale", "locale"]) == apply_update(CURRENT, INCOMING, ["locale"])


def test_apply_update_refuses_a_bare_string_mask() -> None:
    with pytest.raises(TypeError):
        apply_update(CURRENT, INCOMING, "display_name")


# --- validate_profile ------------------------------------------------------------------------------------------


def test_validate_profile_normalises() -> None:
    raw = Profile(
        display_name="  Alice  ",
        timezone=" America/New_York ",
        locale="zh_hant_tw",
        notification_preferences=NotificationPreferences(
            email=EmailChannel(address=" Alerts@Bücher.Example "),
            webhook=WebhookChannel(enabled=True, url=" https://hooks.example.com/x "),
            telegram=TelegramChannel(enabled=True, chat_id=" -100123 "),
            sms=SmsChannel(enabled=True, phone_number=" +821012345678 "),
        ),
        risk_profile=RiskProfile.MODERATE,
        update_time=STAMP,
    )
    clean = validate_profile(raw)
    assert clean == Profile(
        display_name="Alice",
        timezone="America/New_York",
        locale="zh-Hant-TW",
        notification_preferences=NotificationPreferences(
            email=EmailChannel(address="alerts@xn--bcher-kva.example"),
            webhook=WebhookChannel(enabled=True, url="https://hooks.example.com/x"),
            telegram=TelegramChannel(enabled=True, chat_id="-100123"),
            sms=SmsChannel(enabled=True, phone_number="+821012345678"),
        ),
        risk_profile=RiskProfile.MODERATE,
        update_time=STAMP,
    )


def test_validate_profile_accepts_defaults_and_blank_fields_meaning_default() -> None:
    assert validate_profile(Profile()) == Profile()
    blank = validate_profile(Profile(display_name="  ", timezone="", locale=" "))
    assert (blank.display_name, blank.timezone, blank.locale) == ("", "", "")
    assert finalize_profile(blank, "dan@example.com") == Profile(display_name="dan")


def test_validate_profile_email_channel_without_address_uses_login_email() -> None:
    profile = Profile(notification_preferences=NotificationPreferences(email=EmailChannel(enabled=True, address="")))
    assert validate_profile(profile) == profile


def test_validate_profile_collects_every_violation_with_full_paths() -> None:
    bad = Profile(
        display_name="Ali\u202ece",
        timezone="Mars/Olympus",
        locale="english",
        notification_preferences=NotificationPreferences(
            email=EmailChannel(address="not-an-email"),
            webhook=WebhookChannel(enabled=True, url="http://10.0.0.1/"),
            telegram=TelegramChannel(chat_id="@me"),
            sms=SmsChannel(enabled=True, phone_number="010-1234-5678"),
        ),
    )
    reason, violations = _violations(bad)
    assert reason == "DISPLAY_NAME_INVALID"
    assert [field for field, _ in violations] == [
        "profile.display_name",
        "profile.timezone",
        "profile.locale",
        "profile.notification_preferences.email.address",
        "profile.notification_preferences.webhook.url",
        "profile.notification_preferences.telegram.chat_id",
        "profile.notification_preferences.sms.phone_number",
    ]


def test_validate_profile_requires_addresses_for_enabled_channels() -> None:
    bad = Profile(
        notification_preferences=NotificationPreferences(
            webhook=WebhookChannel(enabled=True),
            telegram=TelegramChannel(enabled=True, chat_id="  "),
            sms=SmsChannel(enabled=True),
        )
    )
    reason, violations = _violations(bad)
    assert reason == "CHANNEL_ADDRESS_REQUIRED"
    assert [field for field, _ in violations] == [
        "profile.notification_preferences.webhook.url",
        "profile.notification_preferences.telegram.chat_id",
        "profile.notification_preferences.sms.phone_number",
    ]
    assert all("required" in description for _, description in violations)


def test_validate_profile_reports_violations_in_field_order_across_kinds() -> None:
    bad = Profile(
        notification_preferences=NotificationPreferences(
            email=EmailChannel(address="nope"),
            webhook=WebhookChannel(enabled=True),
            telegram=TelegramChannel(enabled=False, chat_id="x"),
            sms=SmsChannel(enabled=True),
        )
    )
    reason, violations = _violations(bad)
    assert reason == "CHANNEL_ADDRESS_INVALID"
    assert [field for field, _ in violations] == [
        "profile.notification_preferences.email.address",
        "profile.notification_preferences.webhook.url",
        "profile.notification_preferences.telegram.chat_id",
        "profile.notification_preferences.sms.phone_number",
    ]


def test_validate_profile_disabled_channels_may_be_empty_but_not_invalid() -> None:
    assert validate_profile(Profile()) == Profile()
    reason, violations = _violations(
        Profile(notification_preferences=NotificationPreferences(sms=SmsChannel(enabled=False, phone_number="12")))
    )
    assert reason == "CHANNEL_ADDRESS_INVALID"
    assert [field for field, _ in violations] == ["profile.notification_preferences.sms.phone_number"]


def test_validate_profile_reason_is_that_of_the_first_violation() -> None:
    reason, violations = _violations(
        Profile(
            locale="x",
            notification_preferences=NotificationPreferences(webhook=WebhookChannel(enabled=True)),
        )
    )
    assert reason == "LOCALE_INVALID"
    assert [field for field, _ in violations] == ["profile.locale", "profile.notification_preferences.webhook.url"]


def test_validate_profile_rejects_unknown_risk_profile_numbers() -> None:
    reason, violations = _violations(Profile(risk_profile=7))  # type: ignore[arg-type]
    assert reason == "RISK_PROFILE_INVALID"
    assert [field for field, _ in violations] == ["profile.risk_profile"]
    assert validate_profile(Profile(risk_profile=2)).risk_profile is RiskProfile.MODERATE  # type: ignore[arg-type]


# --- finalize_profile ------------------------------------------------------------------------------------------


def test_finalize_profile_fills_only_empty_fields() -> None:
    assert finalize_profile(Profile(display_name="", timezone="", locale=""), "erin@example.com") == Profile(
        display_name="erin"
    )
    kept = Profile(display_name="Erin", timezone="UTC", locale="ko-KR")
    assert finalize_profile(kept, "erin@example.com") == kept


# --- JSON storage ----------------------------------------------------------------------------------------------


def test_json_round_trip_keeps_everything_but_update_time() -> None:
    text = profile_to_json(INCOMING)
    assert "update_time" not in json.loads(text)
    assert profile_from_json(text, update_time=STAMP) == dataclasses.replace(INCOMING, update_time=STAMP)
    assert profile_from_json(text, update_time=None).update_time is None


def test_json_is_stable_and_readable() -> None:
    text = profile_to_json(Profile(display_name="김민수", risk_profile=RiskProfile.MODERATE))
    assert text == profile_to_json(Profile(display_name="김민수", risk_profile=RiskProfile.MODERATE))
    document = json.loads(text)
    assert list(document) == sorted(document)
    assert document["risk_profile"] == "MODERATE"
    assert document["display_name"] == "김민수"
    assert document["notification_preferences"]["sms"] == {"enabled": False, "phone_number": ""}


def test_json_ignores_unknown_keys_and_defaults_missing_ones() -> None:
    text = json.dumps(
        {
            "display_name": "Frank",
            "favourite_colour": "green",
            "notification_preferences": {"sms": {"enabled": True, "phone_number": "+15551234567", "carrier": "x"}},
            "risk_profile": "ULTRA",
        }
    )
    profile = profile_from_json(text, update_time=STAMP)
    assert profile == Profile(
        display_name="Frank",
        notification_preferences=NotificationPreferences(sms=SmsChannel(enabled=True, phone_number="+15551234567")),
        update_time=STAMP,
    )


def test_json_wrongly_typed_values_fall_back_to_defaults() -> None:
    text = json.dumps(
        {"timezone": 9, "notification_preferences": {"email": {"enabled": "yes"}, "webhook": "nope"}, "locale": None}
    )
    assert profile_from_json(text, update_time=None) == Profile()


def test_json_empty_document_is_the_default_profile() -> None:
    assert profile_from_json("{}", update_time=None) == Profile()


@pytest.mark.parametrize("text", ["[]", '"profile"', "null", "not json"])
def test_json_that_is_not_an_object_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        profile_from_json(text, update_time=None)
