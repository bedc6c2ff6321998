"""Account input validation: every accepted form comes back canonical, every hostile or malformed one is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.account.common_passwords import COMMON_PASSWORDS, is_common_password
from services.account.validation import (
    MAX_EMAIL_LENGTH,
    check_channel_email,
    check_display_name,
    check_locale,
    check_password,
    check_phone_number,
    check_telegram_chat_id,
    check_timezone,
    check_webhook_url,
    no_control_characters,
    normalize_email,
)
from services.core.errors import InvalidArgument

STRONG = "violet tractor orbits quietly 7"


def _rejected(check: Callable[[], object], *, reason: str, field: str) -> str:
    """Runs `check`, asserts it raised exactly one violation on `field` with `reason`; returns the description."""
    with pytest.raises(InvalidArgument) as caught:
        check()
    assert caught.value.reason == reason
    assert [v.field for v in caught.value.violations] == [field]
    return caught.value.violations[0].description


# --- email -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice.Smith@Example.COM \n", "alice.smith@example.com"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("first+tag@sub.example.co.kr", "first+tag@sub.example.co.kr"),
        ("x!#$%&'*+/=?^_`{|}~-y@example.com", "x!#$%&'*+/=?^_`{|}~-y@example.com"),
        ("reader@Bücher.example", "reader@xn--bcher-kva.example"),
        ("reader@ＥＸＡＭＰＬＥ．com", "reader@example.com"),  # fullwidth letters and dot, folded by NFKC
        ("a@b-c.io", "a@b-c.io"),
    ],
)
def test_normalize_email_accepts_and_canonicalises(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "x@y.com' OR '1'='1",
        "plainaddress",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "alice@",
        "alice@example",  # no TLD
        "alice@localhost",
        "alice@example.",  # empty last label
        "alice@example..com",
        "alice..smith@example.com",
        ".alice@example.com",
        "alice.@example.com",
        "jöhn@example.com",  # non-ASCII local part
        "al ice@example.com",
        "alice@[1.2.3.4]",
        "alice@[IPv6:::1]",
        "alice@1.2.3.4",  # numeric TLD: really an IP address
        "alice@-example.com",
        "alice@example-.com",
        "alice@exa_mple.com",
        "alice@" + "a" * 64 + ".com",  # label longer than 63
        "a" * 65 + "@example.com",
        "(comment)alice@example.com",
        '"quoted"@example.com',
    ],
)
def test_normalize_email_rejects_malformed(raw: str) -> None:
    _rejected(lambda: normalize_email(raw), reason="EMAIL_INVALID", field="email")


@pytest.mark.parametrize(
    "raw",
    [
        "ali\u200bce@example.com",  # zero-width space
        "alice\u200d@example.com",  # zero-width joiner
        "\ufeffalice@example.com",  # byte order mark
        "alice@exam\u202eple.com",  # right-to-left override
        "alice\x00@example.com",
        "alice@example.com\x00",
        "ali\tce@example.com",
        "alice\ue000@example.com",  # private use
    ],
)
def test_normalize_email_rejects_invisible_and_control_characters(raw: str) -> None:
    description = _rejected(lambda: normalize_email(raw), reason="EMAIL_INVALID", field="email")
    assert "control or invisible" in description


@pytest.mark.parametrize(
    "raw", ["al ice@example.com", "alice@exa mple.com", "x@y.com' OR '1'='1", "a\u3000b@example.com"]
)
def test_normalize_email_rejects_inner_whitespace(raw: str) -> None:
    description = _rejected(lambda: normalize_email(raw), reason="EMAIL_INVALID", field="email")
    assert description == "must not contain spaces"


def test_normalize_email_rejects_a_huge_input_by_its_length_first_without_echoing_it() -> None:
    # The space far past the limit would be reported if the characters were looked at before the length.
    huge = "a" * 10_000_000 + " @example.com"
    description = _rejected(lambda: normalize_email(huge), reason="EMAIL_INVALID", field="email")
    assert "spaces" not in description
    assert "aaaa" not in description
    assert str(MAX_EMAIL_LENGTH) in description


def test_normalize_email_length_limit_is_254() -> None:
    local = "a" * 64
    domain_254 = ".".join(["b" * 63, "c" * 63, "d" * 57, "com"])
    at_limit = f"{local}@{domain_254}"[:MAX_EMAIL_LENGTH]
    assert len(at_limit) == 254
    assert normalize_email(at_limit) == at_limit
    too_long = at_limit[:-3] + "comm"
    assert len(too_long) == 255
    _rejected(lambda: normalize_email(too_long), reason="EMAIL_INVALID", field="email")


def test_normalize_email_reports_on_the_given_field() -> None:
    _rejected(lambda: normalize_email("nope", field="request.email"), reason="EMAIL_INVALID", field="request.email")


def test_normalize_email_description_is_human_readable() -> None:
    description = _rejected(lambda: normalize_email("nope"), reason="EMAIL_INVALID", field="email")
    assert description == "must be an email address like name@example.com"


def test_check_channel_email_reuses_email_rules_with_channel_reason() -> None:
    assert check_channel_email(" Alerts@Example.com ", field="f") == "alerts@example.com"
    _rejected(
        lambda: check_channel_email("al\u200bice@example.com", field="f"), reason="CHANNEL_ADDRESS_INVALID", field="f"
    )


def test_no_control_characters() -> None:
    assert no_control_characters("Hello, 세계! ✓")
    assert not no_control_characters("a\u202eb")
    assert not no_control_characters("a\x7fb")
    assert not no_control_characters("a\u0378b")  # unassigned


# --- password --------------------------------------------------------------------------------------------------


def test_check_password_accepts_a_strong_passphrase() -> None:
    assert check_password(STRONG, email="alice@example.com") == STRONG


def test_check_password_returns_nfkc() -> None:
    fullwidth = "ｖｉｏｌｅｔ tractor orbits ７"
    assert check_password(fullwidth, email="alice@example.com") == "violet tractor orbits 7"


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("short1!", "at least 10"),
        ("x" * 257 + "y", "at most 256"),
        ("y" * 2000, "at most 256"),
        ("violet tra\x00ctor", "NUL"),
        ("alice.smith@example.com", "email"),
        ("ALICE.SMITH@EXAMPLE.COM", "email"),
        ("alice.smith", "email"),
        ("aaaaaaaaaaaa", "repeated"),
        ("Password123!", "too common"),
        ("qwertyuiop", "too common"),
        ("1234567890", "too common"),
        ("Password2027!!", "too common"),
    ],
)
def test_check_password_names_the_rule_that_failed(password: str, fragment: str) -> None:
    description = _rejected(
        lambda: check_password(password, email="alice.smith@example.com"), reason="PASSWORD_TOO_WEAK", field="password"
    )
    assert fragment in description
    assert password not in description


def test_check_password_length_counts_after_nfkc() -> None:
    # U+FB01 (the "fi" ligature) is one character that NFKC expands into two.
    assert check_password("\ufb01" * 5, email="a@example.com") == "fi" * 5
    _rejected(
        lambda: check_password("\ufb01" * 200, email="a@example.com"), reason="PASSWORD_TOO_WEAK", field="password"
    )


def test_check_password_reports_on_the_given_field() -> None:
    _rejected(
        lambda: check_password("short", email="a@example.com", field="new_password"),
        reason="PASSWORD_TOO_WEAK",
        field="new_password",
    )


# --- common passwords -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "Password123!",
        "password1234",
        "PASSWORD2024",
        "  Qwerty12345  ",
        "qwertyuiop",
        "1234567890",
        "0123456789",
        "9876543210",
        "1234567890123456",
        "1q2w3e4r5t",
        "zaq12wsx!!",
        "iloveyou123",
        "Bullant2026!",
        "p@ssw0rd2025",
        "Password2027!!",
        "qwerty99999",
        "Football#1!!",
        "asdfghjkl;",
        ";lkjhgfdsa",
    ],
)
def test_is_common_password_flags_known_patterns(password: str) -> None:
    assert is_common_password(password)


@pytest.mark.parametrize(
    "password",
    [STRONG, "correct horse battery staple", "Gx7!pQ2#vL9z", "passwordmanager", "dragonfly in amber"],
)
def test_is_common_password_leaves_unusual_passwords_alone(password: str) -> None:
    assert not is_common_password(password)


def test_common_password_list_only_stores_entries_the_length_rule_would_not_catch() -> None:
    assert COMMON_PASSWORDS
    assert min(len(entry) for entry in COMMON_PASSWORDS) >= 10
    assert "password12345" in COMMON_PASSWORDS
    assert "password" not in COMMON_PASSWORDS


# --- display name, timezone, locale -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  Alice  ", "Alice"), ("김민수", "김민수"), ("D'Angelo-Smith Jr.", "D'Angelo-Smith Jr."), ("x" * 64, "x" * 64)],
)
def test_check_display_name_accepts(raw: str, expected: str) -> None:
    assert check_display_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "x" * 65, "Ali\u202ece", "Bob\x00", "tab\there", "zero\u200bwidth", "a\nb"])
def test_check_display_name_rejects(raw: str) -> None:
    _rejected(lambda: check_display_name(raw), reason="DISPLAY_NAME_INVALID", field="display_name")


@pytest.mark.parametrize("name", ["Asia/Seoul", "America/New_York", "UTC", " Europe/London "])
def test_check_timezone_accepts_iana_names(name: str) -> None:
    assert check_timezone(name) == name.strip()


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "asia/seoul", "Asia/Seoul\x00", "../../etc/passwd", "A" * 65])
def test_check_timezone_rejects(name: str) -> None:
    _rejected(lambda: check_timezone(name), reason="TIMEZONE_INVALID", field="timezone")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ko-KR", "ko-KR"),
        ("ko_kr", "ko-KR"),
        ("EN-us", "en-US"),
        ("en", "en"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("ZH_HANT", "zh-Hant"),
        ("es-419", "es-419"),
        ("fil-PH", "fil-PH"),
    ],
)
def test_check_locale_returns_canonical_case(raw: str, expected: str) -> None:
    assert check_locale(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", "e", "english", "en-", "en-USA", "en-US-x-private", "en--US", "12-KR", "ko\nKR", "en-" + "a" * 40]
)
def test_check_locale_rejects(raw: str) -> None:
    _rejected(lambda: check_locale(raw), reason="LOCALE_INVALID", field="locale")


# --- phone, telegram, webhook -----------------------------------------------------------------------------------


def test_check_phone_number_accepts_e164() -> None:
    assert check_phone_number(" +821012345678 ", field="p") == "+821012345678"
    assert check_phone_number("+1234567", field="p") == "+1234567"
    assert check_phone_number("+123456789012345", field="p") == "+123456789012345"


@pytest.mark.parametrize(
    "number", ["", "01012345678", "+0123456789", "+82 10 1234 5678", "+12345", "+1234567890123456", "+８２1012345678"]
)
def test_check_phone_number_rejects(number: str) -> None:
    _rejected(lambda: check_phone_number(number, field="p"), reason="CHANNEL_ADDRESS_INVALID", field="p")


def test_check_telegram_chat_id_accepts_users_and_groups() -> None:
    assert check_telegram_chat_id("123456789", field="t") == "123456789"
    assert check_telegram_chat_id("-1001234567890", field="t") == "-1001234567890"


@pytest.mark.parametrize("chat_id", ["", "@channel", "12a", "1" * 21, "--1", "١٢٣"])
def test_check_telegram_chat_id_rejects(chat_id: str) -> None:
    _rejected(lambda: check_telegram_chat_id(chat_id, field="t"), reason="CHANNEL_ADDRESS_INVALID", field="t")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/bullant",
        "https://hooks.example.com:8443/path?token=abc#frag",
        "https://8.8.8.8/alerts",
        "https://[2606:4700:4700::1111]/alerts",
        "https://xn--bcher-kva.example/hook",
        "https://bücher.example/hook",
    ],
)
def test_check_webhook_url_accepts_public_https(url: str) -> None:
    assert check_webhook_url(f"  {url} ", field="w") == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://hooks.example.com/",
        "ftp://hooks.example.com/",
        "hooks.example.com/path",
        "https://localhost/",
        "https://LOCALHOST:8080/",
        "https://app.localhost/",
        "https://printer.local/",
        "https://metadata.internal/",
        "https://nas.lan/",
        "https://router.home.arpa/",
        "https://intranet/",
        "https://10.0.0.1/",
        "https://192.168.1.10/",
        "https://172.16.0.1/",
        "https://127.0.0.1/",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f.0x1/",
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fe80::1]/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://user:pw@hooks.example.com/",
        "https://token@hooks.example.com/",
        "https://hooks.example.com\\@127.0.0.1/",
        "https://hooks.example.com\\evil.example/",
        "https:///path-only",
        "https://[::1/",
        "https://hooks.example.com:99999/",
        "https://hooks.example.com/a b",
        "https://hooks.exam\tple.com/",
        "https://hooks.example.com/\u202e",
        "https://exa_mple.com/",
        "https://localhost./",
        "https://" + "a" * 2048 + ".com/",
    ],
)
def test_check_webhook_url_rejects(url: str) -> None:
    _rejected(lambda: check_webhook_url(url, field="w"), reason="CHANNEL_ADDRESS_INVALID", field="w")


def test_check_webhook_url_descriptions_say_what_is_wrong() -> None:
    assert "https" in _rejected(
        lambda: check_webhook_url("http://example.com/", field="w"), reason="CHANNEL_ADDRESS_INVALID", field="w"
    )
    assert "private" in _rejected(
        lambda: check_webhook_url("https://10.0.0.1/", field="w"), reason="CHANNEL_ADDRESS_INVALID", field="w"
    )
    assert "user name" in _rejected(
        lambda: check_webhook_url("https://u:p@example.com/", field="w"), reason="CHANNEL_ADDRESS_INVALID", field="w"
    )
