"""Pure validation and normalisation of account inputs: emails, passwords, profile fields and channel addresses."""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
import zoneinfo
from urllib.parse import urlsplit

from services.account.common_passwords import is_common_password
from services.core.errors import FieldViolation, InvalidArgument

MAX_EMAIL_LENGTH = 254
MAX_EMAIL_LOCAL_LENGTH = 64
MAX_DOMAIN_LENGTH = 253
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
MAX_DISPLAY_NAME_LENGTH = 64
MAX_TIMEZONE_LENGTH = 64
MAX_LOCALE_LENGTH = 35
MAX_WEBHOOK_URL_LENGTH = 2048

EMAIL_INVALID = "EMAIL_INVALID"
PASSWORD_TOO_WEAK = "PASSWORD_TOO_WEAK"  # noqa: S105 - an error reason, not a credential
DISPLAY_NAME_INVALID = "DISPLAY_NAME_INVALID"
TIMEZONE_INVALID = "TIMEZONE_INVALID"
LOCALE_INVALID = "LOCALE_INVALID"
CHANNEL_ADDRESS_INVALID = "CHANNEL_ADDRESS_INVALID"

_EMAIL_SHAPE = "must be an email address like name@example.com"
# RFC 5322 dot-atom: atext runs joined by single dots, none at either end.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The separators IDNA treats as dots; splitting on all of them keys every label to the same rules.
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")
_LOCALE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TELEGRAM_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")
_PRIVATE_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".lan", ".home.arpa")


class _Rejected(Exception):
    """Why a value failed, before the caller decides which field and reason to report it under."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _invalid(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description), reason=reason)


def no_control_characters(value: str) -> bool:
    """True if `value` has no control, format (zero-width, bidi override), private-use or unassigned characters."""
    return not any(unicodedata.category(ch).startswith("C") for ch in value)


def _ascii_domain(domain: str) -> str:
    """The domain in lower-case IDNA (punycode) form, or _Rejected if it is not a plausible public host name."""
    if domain.startswith("["):
        raise _Rejected("must use a domain name, not an IP address")
    labels = _IDNA_DOTS.split(unicodedata.normalize("NFKC", domain).lower())
    ascii_labels: list[str] = []
    for label in labels:
        try:
            ascii_label = label.encode("idna").decode("ascii") if label else ""
        except UnicodeError:
            raise _Rejected("has a domain that is not a valid host name") from None
        if not _DNS_LABEL.fullmatch(ascii_label):
            raise _Rejected("has a domain that is not a valid host name")
        ascii_labels.append(ascii_label)
    if len(ascii_labels) < 2:
        raise _Rejected("has a domain without a top-level domain, like example.com")
    # A numeric last label makes resolvers read the name as an IPv4 address ("127.1", "0x7f.1").
    if ascii_labels[-1].isdigit() or _HEX_NUMBER.fullmatch(ascii_labels[-1]):
        raise _Rejected("has a domain whose top-level domain is a number")
    ascii_domain = ".".join(ascii_labels)
    if len(ascii_domain) > MAX_DOMAIN_LENGTH:
        raise _Rejected(f"has a domain longer than {MAX_DOMAIN_LENGTH} characters")
    return ascii_domain


def _normalized_email(raw: str) -> str:
    # Bounded before any per-character work so a megabyte of input costs nothing; the slack lets surrounding
    # whitespace through to be stripped.
    if len(raw) > 4 * MAX_EMAIL_LENGTH:
        raise _Rejected(f"must be at most {MAX_EMAIL_LENGTH} characters")
    value = raw.strip()
    if not value:
        raise _Rejected("must not be empty")
    if len(value) > MAX_EMAIL_LENGTH:
        raise _Rejected(f"must be at most {MAX_EMAIL_LENGTH} characters")
    if not no_control_characters(value):
        raise _Rejected("must not contain control or invisible characters")
    if any(ch.isspace() for ch in value):
        raise _Rejected("must not contain spaces")
    if value.count("@") != 1:
        raise _Rejected(_EMAIL_SHAPE)
    local, _, domain = value.partition("@")
    if not local or not domain:
        raise _Rejected(_EMAIL_SHAPE)
    if len(local) > MAX_EMAIL_LOCAL_LENGTH:
        raise _Rejected(f"must have at most {MAX_EMAIL_LOCAL_LENGTH} characters before the @")
    if not local.isascii():
        raise _Rejected("must use only ASCII letters, digits and punctuation before the @")
    if not _DOT_ATOM.fullmatch(local):
        raise _Rejected(
            "must use only letters, digits and !#$%&'*+/=?^_`{|}~.- before the @, with no dot at either end "
            "and no two dots in a row"
        )
    email = f"{local.lower()}@{_ascii_domain(domain)}"
    # Punycode can lengthen the domain past the limit the original spelling met.
    if len(email) > MAX_EMAIL_LENGTH:
        raise _Rejected(f"must be at most {MAX_EMAIL_LENGTH} characters")
    return email


def normalize_email(raw: str, *, field: str = "email") -> str:
    """The canonical form of an account email: stripped, lower-cased, domain in IDNA ASCII form.

    The whole address is lower-cased so uniqueness is case-insensitive. Raises InvalidArgument (EMAIL_INVALID).
    """
    try:
        return _normalized_email(raw)
    except _Rejected as rejected:
        raise _invalid(field, rejected.description, EMAIL_INVALID) from None


def check_channel_email(value: str, *, field: str) -> str:
    """A notification email address, normalised like an account email; raises CHANNEL_ADDRESS_INVALID."""
    try:
        return _normalized_email(value)
    except _Rejected as rejected:
        raise _invalid(field, rejected.description, CHANNEL_ADDRESS_INVALID) from None


def _password_problem(password: str, email: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if "\x00" in password:
        return "must not contain NUL characters"
    folded = password.strip().casefold()
    if folded in {email.casefold(), email.partition("@")[0].casefold()}:
        return "must not be your email address or the part of it before the @"
    if is_common_password(password):
        return "is too common; choose a passphrase of several unrelated words"
    if len(set(password)) == 1:
        return "must not be a single character repeated"
    return None


def check_password(password: str, *, email: str, field: str = "password") -> str:
    """The password in NFKC form, so the same passphrase typed on any keyboard hashes the same.

    `email` must already be normalised. Raises InvalidArgument (PASSWORD_TOO_WEAK) naming the rule that failed,
    never echoing the password.
    """
    # NFKC can expand a character up to a few times; anything this long cannot come back under the limit.
    if len(password) > 4 * MAX_PASSWORD_LENGTH:
        raise _invalid(field, f"must be at most {MAX_PASSWORD_LENGTH} characters", PASSWORD_TOO_WEAK)
    normalized = unicodedata.normalize("NFKC", password)
    problem = _password_problem(normalized, email)
    if problem is not None:
        raise _invalid(field, problem, PASSWORD_TOO_WEAK)
    return normalized


def check_display_name(value: str, *, field: str = "display_name") -> str:
    """The display name stripped: 1–64 printable characters. Raises DISPLAY_NAME_INVALID."""
    if len(value) > 4 * MAX_DISPLAY_NAME_LENGTH:
        raise _invalid(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters", DISPLAY_NAME_INVALID)
    name = value.strip()
    if not name:
        raise _invalid(field, "must not be empty", DISPLAY_NAME_INVALID)
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise _invalid(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters", DISPLAY_NAME_INVALID)
    if not name.isprintable() or not no_control_characters(name):
        raise _invalid(field, "must contain only printable characters", DISPLAY_NAME_INVALID)
    return name


@functools.cache
def _timezones() -> frozenset[str]:
    # Reads the tz database from disk once; nothing needs it until the first profile update.
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: str, *, field: str = "timezone") -> str:
    """An IANA time zone name such as "Asia/Seoul". Raises TIMEZONE_INVALID."""
    name = value.strip()
    if len(name) > MAX_TIMEZONE_LENGTH or name not in _timezones():
        raise _invalid(field, "must be an IANA time zone name like Asia/Seoul", TIMEZONE_INVALID)
    return name


def check_locale(value: str, *, field: str = "locale") -> str:
    """A BCP 47 language tag (language, optional script, optional region) in canonical case, e.g. "zh-Hant-TW".

    "_" is accepted as a separator because POSIX locales use it ("ko_KR"); the result always uses "-".
    Raises LOCALE_INVALID.
    """
    tag = value.strip()
    match = _LOCALE.fullmatch(tag) if len(tag) <= MAX_LOCALE_LENGTH else None
    if match is None:
        raise _invalid(field, "must be a language tag like en-US, ko-KR or zh-Hant-TW", LOCALE_INVALID)
    language, script, region = match.groups()
    parts = [language.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


def check_phone_number(value: str, *, field: str) -> str:
    """A phone number in E.164 form ("+821012345678"). Raises CHANNEL_ADDRESS_INVALID."""
    number = value.strip()
    if not _E164.fullmatch(number):
        raise _invalid(
            field, "must be a phone number in international form like +821012345678", CHANNEL_ADDRESS_INVALID
        )
    return number


def check_telegram_chat_id(value: str, *, field: str) -> str:
    """A Telegram chat id: an integer, negative for groups and channels. Raises CHANNEL_ADDRESS_INVALID."""
    chat_id = value.strip()
    if not _TELEGRAM_CHAT_ID.fullmatch(chat_id):
        raise _invalid(field, "must be a Telegram chat id (a whole number)", CHANNEL_ADDRESS_INVALID)
    return chat_id


def _check_webhook_host(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not address.is_global:
            raise _Rejected("must not point to a private, loopback, link-local or reserved address")
        return
    if "." not in host:
        raise _Rejected("must use a fully qualified host name like hooks.example.com")
    ascii_host = _ascii_domain(host)
    if ascii_host == "localhost" or ascii_host.endswith(_PRIVATE_SUFFIXES):
        raise _Rejected("must not point to a local or internal host name")


def _check_webhook(url: str) -> None:
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise _Rejected(f"must be at most {MAX_WEBHOOK_URL_LENGTH} characters")
    # urlsplit silently drops tabs and newlines, and HTTP clients read "\" as "/": either would let the URL we
    # check differ from the URL that is fetched.
    if not url or not no_control_characters(url) or any(ch.isspace() for ch in url) or "\\" in url:
        raise _Rejected("must be an https URL like https://hooks.example.com/bullant")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises for a malformed one
    except ValueError:
        raise _Rejected("must be an https URL like https://hooks.example.com/bullant") from None
    if parts.scheme != "https":
        raise _Rejected("must use https")
    if "@" in parts.netloc:
        raise _Rejected("must not contain a user name or password")
    if not parts.hostname:
        raise _Rejected("must include a host name")
    _check_webhook_host(parts.hostname)


def check_webhook_url(value: str, *, field: str) -> str:
    """A webhook target: an https URL to a public host. Returns the URL stripped, otherwise unchanged.

    Only the URL's own text is checked – no DNS lookup happens here, so a public name may still resolve to a
    private address. The notification service checks the resolved address again at send time, which is what
    defends against DNS rebinding. Raises CHANNEL_ADDRESS_INVALID.
    """
    url = value.strip()
    try:
        _check_webhook(url)
    except _Rejected as rejected:
        raise _invalid(field, rejected.description, CHANNEL_ADDRESS_INVALID) from None
    return url


class Checks:
    """Collects every violation of the rules a request's contract cannot declare (an email's normal form, a
    password's strength), so the client learns about all of them at once. Lengths, patterns, ranges and required
    fields are the contract's declared rules (protos/bullant/account/v1/account.proto), checked by the server before
    a handler runs."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []
        # The reason of the first check that named one (EMAIL_INVALID, PASSWORD_TOO_WEAK), for ErrorInfo.
        self.reason: str | None = None

    def email(self, field: str, value: str) -> str:
        try:
            return normalize_email(value, field=field)
        except InvalidArgument as error:
            self._add(error)
            return ""

    def new_password(self, field: str, value: str, email: str) -> None:
        """The password policy, checked with the other fields so every problem is reported at once."""
        try:
            check_password(value, email=email, field=field)
        except InvalidArgument as error:
            self._add(error)

    def _add(self, error: InvalidArgument) -> None:
        self.violations.extend(error.violations)
        self.reason = self.reason or error.reason

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations, reason=self.reason)
