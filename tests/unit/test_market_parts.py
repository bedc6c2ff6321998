"""Small parts of the market domain: the tick wire format against protobuf's own parser, subscriber queues with
conflation, and the quote book's days, previous closes and sequence numbers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bullant.market.v1 import market_pb2
from services.market.encoding import encode_ticks
from services.market.quotes import QuoteBook, day_bounds
from services.market.records import AssetClass, Instrument, Quote, Tick
from services.market.streaming import Subscriber
from services.market.wire import encode_varint, split_tick_batch, tick_batch_response

SEOUL = Instrument(symbol="S", venue="KRX", asset_class=AssetClass.STOCK, quote_currency="KRW", timezone="Asia/Seoul")


def _ticks(count: int, symbols: tuple[str, ...] = ("AAA", "BB")) -> list[Tick]:
    start = datetime(2026, 1, 2, 3, 4, 5, 678901)
    return [
        Tick(
            symbols[i % len(symbols)],
            start + timedelta(milliseconds=i),
            100.0 + i,
            1.0 + i,
            bid=99.0 if i % 3 else None,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("symbol_length", [1, 20, 127, 128, 300])
def test_split_pieces_are_the_ticks_protobuf_reads(symbol_length: int) -> None:
    ticks = [Tick("X" * symbol_length, datetime(2026, 1, 1), 1.5, 2.0), *_ticks(5)]
    encoded = encode_ticks(ticks, [2**40 + i for i in range(len(ticks))])
    pieces = split_tick_batch(encoded)
    parsed = market_pb2.TickBatch.FromString(encoded)
    assert [symbol for symbol, _ in pieces] == [tick.symbol for tick in parsed.ticks]
    assert b"".join(data for _, data in pieces) == encoded
    # Any subset of pieces, joined, is a StreamTicksResponse carrying exactly those ticks.
    subset = [pieces[0][1], pieces[3][1]]
    response = market_pb2.StreamTicksResponse.FromString(tick_batch_response(subset))
    assert list(response.ticks.ticks) == [parsed.ticks[0], parsed.ticks[3]]
    assert parsed.ticks[1].event_time.ToDatetime() == ticks[1].event_time
    assert parsed.ticks[1].sequence == 2**40 + 1


def test_malformed_batches_are_refused() -> None:
    for bad in (b"\x12\x01a", b"\x0a\x05ab", b"\x0a" + encode_varint(2**70)):
        with pytest.raises(ValueError):  # noqa: PT011 - any refusal
            split_tick_batch(bad)


def test_a_conflating_subscriber_keeps_the_newest_tick_per_symbol_and_counts_the_rest() -> None:
    subscriber = Subscriber(frozenset({"A", "B"}), capacity=4, conflate=True)
    subscriber.offer([("A", b"a1"), ("B", b"b1"), ("A", b"a2")])
    assert subscriber.pending == 3
    subscriber.offer([("A", b"a3"), ("B", b"b2")])
    assert subscriber.take(10) == [b"a3", b"b2"]
    assert subscriber.take_drops() == {"A": 2, "B": 1}
    assert subscriber.total_dropped == 3
    assert subscriber.take_drops() == {}
    strict = Subscriber(frozenset({"A"}), capacity=2, conflate=False)
    strict.offer([("A", b"1"), ("A", b"2"), ("A", b"3")])
    assert strict.overflowed
    assert strict.pending == 0


def test_day_bounds_follow_the_instruments_time_zone() -> None:
    # 2026-03-01 15:30 UTC is 2026-03-02 00:30 in Seoul (UTC+9).
    start, end = day_bounds(datetime(2026, 3, 1, 15, 30), "Asia/Seoul")
    assert (start, end) == (datetime(2026, 3, 1, 15, 0), datetime(2026, 3, 2, 15, 0))
    # A daylight-saving day in New York has 23 hours.
    start, end = day_bounds(datetime(2026, 3, 8, 12, 0), "America/New_York")
    assert end - start == timedelta(hours=23)


def test_the_quote_book_folds_days_and_rolls_the_previous_close_over() -> None:
    book = QuoteBook([SEOUL])
    book.restore({}, {"S": 70_000.0}, floor=1 << 40)
    day1 = datetime(2026, 3, 2, 1, 0)  # 10:00 in Seoul
    for price, size in ((71_000.0, 2.0), (72_500.0, 1.0), (70_500.0, 3.0)):
        book.apply(Tick("S", day1, price, size), book.next_sequence("S"))
        day1 += timedelta(minutes=1)
    quote = book.quote("S")
    assert quote is not None
    assert (quote.previous_close, quote.day_open, quote.day_high, quote.day_low) == (
        70_000.0,
        71_000.0,
        72_500.0,
        70_500.0,
    )
    assert quote.day_volume == 6.0
    assert quote.sequence == (1 << 40) + 3
    assert quote.change == 500.0
    # The next Seoul day starts at 15:00 UTC: the last price becomes the previous close.
    book.apply(Tick("S", datetime(2026, 3, 2, 15, 0, 1), 71_000.0, 1.0), book.next_sequence("S"))
    quote = book.quote("S")
    assert quote is not None
    assert (quote.previous_close, quote.day_open, quote.day_volume) == (70_500.0, 71_000.0, 1.0)
    assert [q.symbol for q in book.take_dirty()] == ["S"]
    assert book.take_dirty() == []


def test_sequences_continue_above_a_shared_quote_and_across_reconnects() -> None:
    shared = Quote(symbol="S", last_price=1.0, last_tick_time=datetime(2026, 3, 2), sequence=(1 << 40) + 50)
    book = QuoteBook([SEOUL])
    book.restore({"S": shared}, {}, floor=1 << 40)
    assert book.next_sequence("S") == (1 << 40) + 51
    # A new leadership (larger fencing token) numbers above everything before it.
    later = QuoteBook([SEOUL])
    later.restore({"S": shared}, {}, floor=2 << 40)
    assert later.next_sequence("S") == (2 << 40) + 1
    # A reconnect whose cache read is stale still continues from what this process handed out.
    rebuilt = QuoteBook([SEOUL])
    rebuilt.restore({"S": shared}, {}, floor=1 << 40)
    rebuilt.continue_after(book)
    assert rebuilt.next_sequence("S") == (1 << 40) + 52
