"""Page sizes and opaque page tokens for List methods (AIP-158), shared by every service.

A token carries the keyset position after the last item of the page and a digest of the filters it was made for,
so that a token used with other filters is refused instead of silently skipping or repeating items. Positions are
only ever applied within the caller's own data, so tokens need no signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.core.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAX_TOKEN_LENGTH = 1024


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The page size to use: `default` for 0, clamped to `maximum`; negative sizes are INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or default, maximum)


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode("utf-8")).hexdigest()[:16]


def encode_page_token(position: Mapping[str, Any], *, query: str = "") -> str:
    """An opaque token for the page after `position` (JSON-serialisable values)."""
    raw = json.dumps({"p": dict(position), "q": _digest(query)}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, *, query: str = "") -> dict[str, Any] | None:
    """The position in `token`, None for an empty token (the first page); INVALID_ARGUMENT PAGE_TOKEN_INVALID for a
    malformed token or one made for other filters."""
    if not token:
        return None
    try:
        if len(token) > _MAX_TOKEN_LENGTH:
            raise ValueError("too long")
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(value, dict) or not isinstance(value.get("p"), dict) or value.get("q") != _digest(query):
            raise ValueError("not a page token of this query")
        position: dict[str, Any] = value["p"]
        return position
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            FieldViolation("page_token", "not a page token of this list with these filters"),
            reason="PAGE_TOKEN_INVALID",
        ) from None


def decode_keyset(token: str, *, query: str = "") -> tuple[datetime, str] | None:
    """The (create time, id) position of a newest-first list's token, None for the first page;
    PAGE_TOKEN_INVALID as decode_page_token, or when the token holds no such position."""
    position = decode_page_token(token, query=query)
    if position is None:
        return None
    try:
        return datetime.fromisoformat(str(position["t"])), str(position["id"])
    except (KeyError, ValueError):
        raise InvalidArgument(
            FieldViolation("page_token", "is not a token of this list"), reason="PAGE_TOKEN_INVALID"
        ) from None


def encode_keyset(create_time: datetime, item_id: str, *, query: str = "") -> str:
    """The token of the page after the item created at `create_time` with id `item_id`."""
    return encode_page_token({"t": create_time.isoformat(), "id": item_id}, query=query)
