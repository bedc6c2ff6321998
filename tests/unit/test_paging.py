"""Page tokens: signed and bound to their list and filters, every field of a position checked in one place, so
anything the server did not issue – or cannot use – is PAGE_TOKEN_INVALID, never an exception from deeper down."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.core.auth.keys import load_page_token_key
from services.core.errors import InvalidArgument
from services.core.paging import (
    COUNT,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    NAME,
    Cursor,
    Integer,
    Page,
    PageTokens,
    Row,
    keyset_after,
    keyset_cursor,
    keyset_page,
)
from services.core.settings import load_settings
from services.core.startup import StartupError

KEY = b"k" * 32
PAGES = PageTokens(KEY)
ALGORITHMS = Cursor.of("model.ListAlgorithms", after=COUNT)
BARS = Cursor.of("market.ListBars", t=keyset_cursor("x").fields["t"])
ALERTS = keyset_cursor("signal.ListAlerts")


def _refused(cursor: Cursor, token: str, query: str = "") -> None:
    with pytest.raises(InvalidArgument) as caught:
        PAGES.decode(cursor, token, query=query)
    assert caught.value.reason == "PAGE_TOKEN_INVALID"
    assert [violation.field for violation in caught.value.violations] == ["page_token"]


def _unsigned(payload: Any) -> str:
    """A token in the old, unsigned format: base64 JSON (what the issue's probe edited)."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_tokens_round_trip_with_typed_positions() -> None:
    moment = datetime(2024, 3, 1, 9, 30, 0, 123456)
    token = PAGES.encode(ALERTS, {"t": moment, "id": "alr_1"}, query="AAPL|None")
    assert PAGES.decode(ALERTS, token, query="AAPL|None") == {"t": moment, "id": "alr_1"}
    assert PAGES.decode(ALERTS, "", query="AAPL|None") is None
    assert PAGES.decode(ALGORITHMS, PAGES.encode(ALGORITHMS, {"after": 7})) == {"after": 7}
    row = Cursor.of("signal.GetSignalPerformance", after=Row((NAME, NAME, Integer(), Integer())))
    token = PAGES.encode(row, {"after": ("sma_cross", "SIM-AAPL", 1, 5)})
    assert PAGES.decode(row, token) == {"after": ("sma_cross", "SIM-AAPL", 1, 5)}


def test_a_token_is_good_only_for_its_list_and_filters() -> None:
    token = PAGES.encode(ALERTS, {"t": datetime(2024, 1, 1), "id": "a"}, query="AAPL|None")
    _refused(ALERTS, token, query="MSFT|None")
    _refused(keyset_cursor("signal.ListBacktests"), token, query="AAPL|None")


def test_tokens_the_server_did_not_sign_are_refused() -> None:
    token = PAGES.encode(ALGORITHMS, {"after": 7})
    body, _, tag = token.partition(".")
    forged_body = base64.urlsafe_b64encode(b'{"p":{"after":1},"q":"e3b0c44298fc1c14"}').decode().rstrip("=")
    for bad in (
        # The probes of the issue, in the old unsigned format.
        _unsigned({"p": {"after": "zzz"}, "q": "e3b0c44298fc1c14"}),
        _unsigned({"p": {"after": None}, "q": "e3b0c44298fc1c14"}),
        _unsigned({"p": {}, "q": "e3b0c44298fc1c14"}),
        _unsigned([]),
        "eyJwIjp7ImFmdGVyIjoxZTQwMH0sInEiOiJlM2IwYzQ0Mjk4ZmMxYzE0In0",
        # An edited body under the original tag, a valid body without its tag or with another's.
        f"{forged_body}.{tag}",
        body,
        f"{body}.",
        f"{body}.{tag[:-2]}",
        f"{body}.{PAGES.encode(ALGORITHMS, {'after': 8}).partition('.')[2]}",
        # Signed with another key.
        PageTokens(b"x" * 32).encode(ALGORITHMS, {"after": 7}),
        # Garbage.
        "%%%",
        "....",
        "é.é",
        "\x00",
        "A" * 1025,
        token + "A" * 1024,
    ):
        _refused(ALGORITHMS, bad)


@pytest.mark.parametrize(
    "position",
    [
        {"after": "zzz"},
        {"after": None},
        {"after": {}},
        {"after": []},
        {"after": True},
        {"after": 1.5},
        {"after": -1},
        {"after": 2**63},
        {"after": 10**400},
        {},
        {"after": 1, "extra": 2},
        [],
        "after",
    ],
)
def test_signed_positions_that_do_not_fit_the_list_are_refused(position: Any) -> None:
    _refused(ALGORITHMS, PAGES.seal(ALGORITHMS.list_name, {"p": position, "q": "e3b0c44298fc1c14"}))


def test_signed_infinities_and_nans_are_refused() -> None:
    for value in (float("inf"), float("-inf"), float("nan")):
        _refused(ALGORITHMS, PAGES.seal(ALGORITHMS.list_name, {"p": {"after": value}, "q": "e3b0c44298fc1c14"}))


@pytest.mark.parametrize(
    "moment",
    ["9999-12-31T23:59:59.999999", "0001-01-01T00:00:00", "0999-12-31T23:59:59", "not a time", "", 20240101, None],
)
def test_signed_moments_outside_what_stores_hold_are_refused(moment: Any) -> None:
    _refused(BARS, PAGES.seal(BARS.list_name, {"p": {"t": moment}, "q": "e3b0c44298fc1c14"}))


def test_text_positions_are_bounded() -> None:
    cursor = Cursor.of("market.ListFeeds", after=NAME)
    for value in ("", "x" * 257, 5, None):
        _refused(cursor, PAGES.seal(cursor.list_name, {"p": {"after": value}, "q": "e3b0c44298fc1c14"}))


def test_the_key_survives_restarts_in_local_and_is_required_elsewhere(tmp_path: Path) -> None:
    local = load_settings(environ={}, data_dir=tmp_path)
    key = load_page_token_key(local)
    token = PageTokens(key).encode(ALGORITHMS, {"after": 3})
    # A restart reads the same key: tokens issued before it still page on.
    assert PageTokens(load_page_token_key(local)).decode(ALGORITHMS, token) == {"after": 3}
    with pytest.raises(StartupError, match="BULLANT_PAGE_TOKEN_KEY_FILE"):
        load_page_token_key(load_settings(environ={"BULLANT_ENV": "prod"}, data_dir=tmp_path))
    configured = tmp_path / "page.key"
    configured.write_text(base64.b64encode(b"p" * 32).decode())
    prod = load_settings(environ={"BULLANT_ENV": "prod", "BULLANT_PAGE_TOKEN_KEY_FILE": str(configured)})
    assert load_page_token_key(prod) == b"p" * 32


# keyset_page over a list newest first, ties by id descending, as the stores read theirs.
ITEMS = [(datetime(2024, 1, 1) + timedelta(minutes=minute), f"id{minute:03}") for minute in range(7)]
NEWEST_FIRST = sorted(ITEMS, reverse=True)


class Listing:
    """A fetch over NEWEST_FIRST[:count] that records what it was asked."""

    def __init__(self, count: int) -> None:
        self.items = NEWEST_FIRST[:count]
        self.calls: list[tuple[dict[str, Any] | None, int]] = []

    async def fetch(self, after: dict[str, Any] | None, limit: int) -> Sequence[tuple[datetime, str]]:
        self.calls.append((after, limit))
        start = keyset_after(after)
        return [item for item in self.items if start is None or item < start][:limit]

    async def page(self, size: int, token: str = "", query: str = "AAPL") -> Page[tuple[datetime, str]]:
        return await keyset_page(PAGES, ALERTS, token, query=query, size=size, fetch=self.fetch, position=_position)


def _position(item: tuple[datetime, str]) -> Mapping[str, Any]:
    return {"t": item[0], "id": item[1]}


async def test_an_empty_list_is_one_empty_page() -> None:
    listing = Listing(0)
    assert await listing.page(3) == Page([], "")
    assert listing.calls == [(None, 4)]


async def test_a_list_of_exactly_one_page_issues_no_token() -> None:
    listing = Listing(3)
    assert await listing.page(3) == Page(NEWEST_FIRST[:3], "")


async def test_one_item_more_than_the_page_issues_the_token_of_the_rest() -> None:
    listing = Listing(4)
    first = await listing.page(3)
    assert first.items == NEWEST_FIRST[:3]
    assert PAGES.decode(ALERTS, first.next_page_token, query="AAPL") == _position(NEWEST_FIRST[2])
    rest = await listing.page(3, first.next_page_token)
    assert rest == Page(NEWEST_FIRST[3:4], "")
    assert listing.calls[1] == (_position(NEWEST_FIRST[2]), 4)


async def test_tokens_page_through_the_whole_list_once() -> None:
    listing = Listing(7)
    seen: list[tuple[datetime, str]] = []
    token, pages = "", 0
    while True:
        page = await listing.page(2, token)
        seen.extend(page.items)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == NEWEST_FIRST
    assert pages == 4


async def test_the_page_size_defaults_and_is_clamped() -> None:
    listing = Listing(0)
    await listing.page(0)
    await listing.page(MAX_PAGE_SIZE + 1)
    assert [limit for _, limit in listing.calls] == [DEFAULT_PAGE_SIZE + 1, MAX_PAGE_SIZE + 1]


async def test_a_token_for_other_filters_is_refused_before_anything_is_read() -> None:
    listing = Listing(4)
    first = await listing.page(3)
    with pytest.raises(InvalidArgument) as caught:
        await listing.page(3, first.next_page_token, query="MSFT")
    assert caught.value.reason == "PAGE_TOKEN_INVALID"
    assert len(listing.calls) == 1
