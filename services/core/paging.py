"""Page sizes and opaque page tokens for List methods (AIP-158), shared by every service.

A token carries the keyset position after the last item of a page and a digest of the filters it was made for, so a
token used with other filters is refused instead of silently skipping or repeating items. It is signed (HMAC-SHA256
with the platform's page-token key, the same on every replica and across restarts) and bound to its list, so a token
the server did not issue for this list – edited, forged, garbage, or another list's – is INVALID_ARGUMENT with reason
PAGE_TOKEN_INVALID before anything reads it. Positions are readable (base64 JSON), never secret: they hold only
values of the caller's own last page.

Each List method declares its position once as a `Cursor` (which fields, of which kind), and every field of every
decoded token is checked against it here, in one place: a validly signed but unusable position (a moment at the end
of time, a number too big for the database, a wrong type) is refused the same way, never an INTERNAL error.

Every List method pages with `keyset_page`: it reads the token, fetches one item more than the page holds and issues
the next page's token from the page's last item only when another follows; its answer is a `Page`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from services.core.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Bytes of the HMAC-SHA256 tag kept in a token: 128 bits, far beyond guessing.
_TAG_BYTES = 16
_DOMAIN = b"bullant page token v1\x00"
# Moments a position may hold: what every database stores (MariaDB's DATETIME starts at year 1000), with room to
# step a microsecond either way without leaving datetime's range.
_FIRST_YEAR = 1000
_LAST_YEAR = 9998
_INT64_MAX = 2**63 - 1

T = TypeVar("T")


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The page size to use: `default` for 0, clamped to `maximum`. Every List request declares its page_size at
    least 0 and its page_token at most 1024 characters (the contract's rules, checked before a handler runs), so
    neither is checked again here."""
    return min(requested or default, maximum)


def page_token_invalid() -> InvalidArgument:
    """The one refusal of a page token this server cannot use."""
    return InvalidArgument(
        FieldViolation(
            "page_token", "not a page token this server issued for this list with these filters: start from page one"
        ),
        reason="PAGE_TOKEN_INVALID",
    )


class Kind(Protocol):
    """One field of a position: how a value is written into a token and checked when read back."""

    def dump(self, value: Any) -> Any:
        """The JSON value for `value`."""

    def load(self, raw: object) -> Any:
        """The value of `raw` (from JSON); ValueError when it is not one this field may hold."""


@dataclass(frozen=True, slots=True)
class Text:
    """A non-empty string (a name, an id, a symbol) of at most `max_length` characters."""

    max_length: int = 256

    def dump(self, value: Any) -> Any:
        return str(value)

    def load(self, raw: object) -> str:
        if not isinstance(raw, str) or not 0 < len(raw) <= self.max_length:
            raise ValueError("not a text position")
        return raw


@dataclass(frozen=True, slots=True)
class Integer:
    """A whole number within [minimum, maximum] (a database BIGINT by default)."""

    minimum: int = 0
    maximum: int = _INT64_MAX

    def dump(self, value: Any) -> Any:
        return int(value)

    def load(self, raw: object) -> int:
        # bool is an int in Python, and 1e400 arrives as a float: neither is a position.
        if type(raw) is not int or not self.minimum <= raw <= self.maximum:
            raise ValueError("not a whole-number position")
        return raw


@dataclass(frozen=True, slots=True)
class Moment:
    """A datetime (naive UTC like the stores' columns), ISO 8601, between the years 1000 and 9998."""

    def dump(self, value: Any) -> Any:
        if not isinstance(value, datetime):
            raise TypeError(f"a Moment position needs a datetime, got {type(value).__name__}")
        return value.isoformat()

    def load(self, raw: object) -> datetime:
        if not isinstance(raw, str) or len(raw) > 40:
            raise ValueError("not a moment position")
        moment = datetime.fromisoformat(raw)
        if not _FIRST_YEAR <= moment.year <= _LAST_YEAR:
            raise ValueError("a moment outside the stored range")
        return moment


@dataclass(frozen=True, slots=True)
class Row:
    """A fixed sequence of values, each of its own kind (a composite sort key)."""

    kinds: tuple[Kind, ...]

    def dump(self, value: Any) -> Any:
        values = list(value)
        if len(values) != len(self.kinds):
            raise TypeError(f"a Row position needs {len(self.kinds)} values, got {len(values)}")
        return [kind.dump(item) for kind, item in zip(self.kinds, values, strict=True)]

    def load(self, raw: object) -> tuple[Any, ...]:
        if not isinstance(raw, list) or len(raw) != len(self.kinds):
            raise ValueError("not a row position")
        return tuple(kind.load(item) for kind, item in zip(self.kinds, raw, strict=True))


# The kinds most lists use.
NAME = Text()
MOMENT = Moment()
COUNT = Integer()


@dataclass(frozen=True, slots=True)
class Cursor:
    """What the page tokens of one List method hold: the list (tokens of other lists are refused) and each field's
    kind. Declared once per method, next to it."""

    list_name: str
    fields: Mapping[str, Kind] = field(default_factory=dict)

    @classmethod
    def of(cls, list_name: str, **fields: Kind) -> Cursor:
        return cls(list_name, dict(fields))


def keyset_cursor(list_name: str) -> Cursor:
    """The cursor of a list sorted by (a moment, an id): creation time and id, bar time and signal id..."""
    return Cursor.of(list_name, t=MOMENT, id=NAME)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()[:16]


class PageTokens:
    """Issues and reads the page tokens of every List method of a process, signed with the platform's page-token
    key (services.core.auth.keys.load_page_token_key): every replica must hold the same key, so a token from one
    is good on the others and after a restart."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a page-token key needs at least 16 bytes")
        self._key = key

    def encode(self, cursor: Cursor, position: Mapping[str, Any], *, query: str = "") -> str:
        """The token of the page after `position` (a value for every field of `cursor`) of the list filtered by
        `query`."""
        if set(position) != set(cursor.fields):
            raise TypeError(f"{cursor.list_name} positions have the fields {sorted(cursor.fields)}")
        values = {name: kind.dump(position[name]) for name, kind in cursor.fields.items()}
        return self.seal(cursor.list_name, {"p": values, "q": _digest(query)})

    def seal(self, list_name: str, payload: Mapping[str, Any]) -> str:
        """`payload` as a token of `list_name`: base64 JSON, a dot, the base64 HMAC tag. Only `encode` should need
        this; tests use it to sign positions no list would write."""
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{body}.{_b64encode(self._tag(list_name, body))}"

    def decode(self, cursor: Cursor, token: str, *, query: str = "") -> dict[str, Any] | None:
        """The position in `token`, None for an empty token (the first page); PAGE_TOKEN_INVALID for any token
        this server did not issue for this list and these filters, or whose position does not fit the cursor."""
        if not token:
            return None
        try:
            body, separator, tag = token.partition(".")
            if not separator or not hmac.compare_digest(_b64decode(tag), self._tag(cursor.list_name, body)):
                raise ValueError("not signed by this platform for this list")
            payload = json.loads(_b64decode(body), parse_constant=_refuse_constant)
            if not isinstance(payload, dict) or payload.get("q") != _digest(query):
                raise ValueError("made for other filters")
            values = payload.get("p")
            if not isinstance(values, dict) or set(values) != set(cursor.fields):
                raise ValueError("not a position of this list")
            return {name: kind.load(values[name]) for name, kind in cursor.fields.items()}
        except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise page_token_invalid() from None

    def _tag(self, list_name: str, body: str) -> bytes:
        message = _DOMAIN + list_name.encode("utf-8") + b"\x00" + body.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_TAG_BYTES]


def _refuse_constant(name: str) -> float:
    # NaN and Infinity are not JSON; Python's reader accepts them unless told otherwise.
    raise ValueError(f"{name} is not a position value")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a List method's answer: the items and the token of the next page ("" on the last page)."""

    items: list[T] = field(default_factory=list)
    next_page_token: str = ""


async def keyset_page(
    pages: PageTokens,
    cursor: Cursor,
    page_token: str,
    *,
    query: str = "",
    size: int,
    fetch: Callable[[dict[str, Any] | None, int], Awaitable[Sequence[T]]],
    position: Callable[[T], Mapping[str, Any]],
) -> Page[T]:
    """One page of a list read in keyset order.

    `page_token` is decoded for `cursor`'s list and the filters `query` (PAGE_TOKEN_INVALID for any other token);
    `fetch(after, limit)` returns at most `limit` items following the position `after` (None: from the start) in the
    list's order. `size` is the request's page_size (0: the default, clamped to the maximum). One item more than the
    page holds is fetched, so the next page's token – the position of the page's last item, `position(item)` – is
    issued only when another item follows."""
    limit = page_size(size)
    after = pages.decode(cursor, page_token, query=query)
    found = list(await fetch(after, limit + 1))
    if len(found) <= limit:
        return Page(found)
    items = found[:limit]
    return Page(items, pages.encode(cursor, position(items[-1]), query=query))


def keyset_after(position: Mapping[str, Any] | None) -> tuple[datetime, str] | None:
    """The (moment, id) a `keyset_cursor` position holds, as the stores' `after` takes it; None on the first page."""
    return (position["t"], position["id"]) if position is not None else None
