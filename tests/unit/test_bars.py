"""Bar import rules and bar aggregation: CSV reading, row validation, classification, roll-ups and live bars."""

from __future__ import annotations

import math
import random
import tracemalloc
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pytest

from services.core.bars import BarBuilder, bars_from_ticks, roll_up
from services.market.imports.rows import (
    MAX_LINE_CHARS,
    CsvHeaderError,
    CsvRowReader,
    RawRow,
    RowError,
    rows_from_bars,
)
from services.market.imports.rules import BarValidator, classify
from services.market.records import Bar, Timeframe

NOW = datetime(2024, 6, 1)
T0 = datetime(2024, 1, 2)
HEADER = "time,open,high,low,close,volume,trade_count\n"


def read_csv(data: str | bytes, chunk_size: int | None = None) -> list[RawRow | RowError]:
    raw = data.encode() if isinstance(data, str) else data
    reader = CsvRowReader()
    size = chunk_size or max(len(raw), 1)
    out: list[RawRow | RowError] = []
    for start in range(0, len(raw), size):
        out += reader.feed(raw[start : start + size])
    return out + reader.finish()


def validate_all(rows: list[RawRow | RowError], timeframe: Timeframe = Timeframe.M1) -> list[Bar | RowError]:
    validator = BarValidator(timeframe)
    return [row if isinstance(row, RowError) else validator.validate(row, NOW) for row in rows]


def errors_of(results: list[Bar | RowError] | list[RawRow | RowError]) -> list[tuple[int, str, str]]:
    return [(r.line, r.field, r.reason) for r in results if isinstance(r, RowError)]


def raw(time: datetime | None = T0, **values: float | int | None) -> RawRow:
    fields: dict[str, float | int | None] = {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 10.0}
    fields.update(values)
    return RawRow(
        7,
        time,
        fields["open"],
        fields["high"],
        fields["low"],
        fields["close"],
        fields["volume"],
        None if fields.get("trade_count") is None else int(fields["trade_count"] or 0),
    )


# --- CSV reading -----------------------------------------------------------------------------------------------------


def test_reads_rows_with_columns_in_any_order_case_and_spaces() -> None:
    rows = read_csv(" Volume , CLOSE,low,High,open,TIME\n5,100.5,99,101,100,2024-01-02T00:00:00Z\n")
    assert rows == [RawRow(2, T0, 100.0, 101.0, 99.0, 100.5, 5.0, None)]


def test_blank_lines_are_skipped_but_counted_and_crlf_and_bom_accepted() -> None:
    data = (
        "\ufeff\r\n  \r\n"
        + HEADER.replace("\n", "\r\n")
        + "\r\n2024-01-02T00:00:00Z,1,2,0.5,1.5,3,4\r\n\n2024-01-02T00:01:00Z,1,2,0.5,1.5,3,\r\n"
    )
    rows = read_csv(data)
    assert rows == [
        RawRow(5, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4),
        RawRow(7, T0 + timedelta(minutes=1), 1.0, 2.0, 0.5, 1.5, 3.0, None),
    ]


def test_last_line_without_newline_is_read() -> None:
    assert read_csv(HEADER + "1704153600,1,2,0.5,1.5,3,4") == [RawRow(2, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T00:00:00Z", T0),
        ("2024-01-02t00:00:00z", T0),
        ("2024-01-02 00:00:00Z", T0),
        ("2024-01-02T09:00:00+09:00", T0),
        ("2024-01-01T19:00:00-05:00", T0),
        ("2024-01-02T05:30:00+05:30", T0),
        ("2024-01-02T00:00:00", T0),
        ("2024-01-02T00:00:00.250Z", T0 + timedelta(milliseconds=250)),
        ("1704153600", T0),
        ("+1704153660", T0 + timedelta(minutes=1)),
        ("0", datetime(1970, 1, 1)),
        ("-60", datetime(1969, 12, 31, 23, 59)),
    ],
)
def test_time_is_rfc3339_or_unix_seconds_and_becomes_naive_utc(text: str, expected: datetime) -> None:
    (row,) = read_csv(f"time,open,high,low,close,volume\n{text},1,1,1,1,0\n")
    assert isinstance(row, RawRow)
    assert row.time == expected
    assert row.time.tzinfo is None


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02",
        "2024-01-02T00:00",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-01-02T00:00:00+25:00",
        "2024-01-02T00:00:00 UTC",
        "1704153600.5",
        "1e9",
        "99999999999999999999",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_unparseable_time_is_a_parse_error(text: str) -> None:
    assert errors_of(read_csv(f"time,open,high,low,close,volume\n{text},1,1,1,1,0\n")) == [(2, "time", "PARSE_ERROR")]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("2024-01-02T00:00:00Z,abc,2,0.5,1.5,3,4", (2, "open", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1_5,3,4", (2, "close", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1.5,0x10,4", (2, "volume", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1.5,3,4.0", (2, "trade_count", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1.5,3,many", (2, "trade_count", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,,2,0.5,1.5,3,4", (2, "open", "MISSING_VALUE")),
        (",1,2,0.5,1.5,3,4", (2, "time", "MISSING_VALUE")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1.5,  ,4", (2, "volume", "MISSING_VALUE")),
        # Reported in canonical field order, not first-cell order.
        ("2024-01-02T00:00:00Z,1,x,,1.5,3,4", (2, "high", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1.5,3", (2, "", "PARSE_ERROR")),
        ("2024-01-02T00:00:00Z,1,2,0.5,1.5,3,4,5", (2, "", "PARSE_ERROR")),
    ],
)
def test_bad_cells(row: str, expected: tuple[int, str, str]) -> None:
    assert errors_of(read_csv(HEADER + row + "\n")) == [expected]


def test_cell_errors_name_the_value() -> None:
    (error,) = read_csv(HEADER + "2024-01-02T00:00:00Z,abc,2,0.5,1.5,3,4\n")
    assert isinstance(error, RowError)
    assert "'abc'" in error.message


def test_nan_and_inf_parse_so_the_validator_can_reject_them() -> None:
    (row,) = read_csv(HEADER + "2024-01-02T00:00:00Z,NaN,inf,-Infinity,1e999,3,4\n")
    assert isinstance(row, RawRow)
    assert row.open is not None
    assert math.isnan(row.open)
    assert (row.high, row.low, row.close) == (math.inf, -math.inf, math.inf)


def test_quoted_fields() -> None:
    data = HEADER + '"2024-01-02T00:00:00Z","100.5", 101 ,"99","100","1e3",""\n'
    data += '2024-01-02T00:01:00Z,"1,5",2,0.5,1.5,3,4\n'
    data += '2024-01-02T00:02:00Z,"1""",2,0.5,1.5,3,4\n'
    data += '2024-01-02T00:03:00Z,"1,2,0.5,1.5,3,4\n'
    rows = read_csv(data)
    assert rows[0] == RawRow(2, T0, 100.5, 101.0, 99.0, 100.0, 1000.0, None)
    assert errors_of(rows[1:]) == [(3, "open", "PARSE_ERROR"), (4, "open", "PARSE_ERROR"), (5, "", "PARSE_ERROR")]
    assert isinstance(rows[2], RowError)
    assert "'1\"'" in rows[2].message


def test_invalid_utf8_line_is_a_parse_error_and_the_next_line_still_reads() -> None:
    data = HEADER.encode() + b"2024-01-02T00:00:00Z,1,2,0.5,1.5,\xff,4\n" + b"1704153600,1,2,0.5,1.5,3,4\n"
    assert errors_of(read_csv(data)) == [(2, "", "PARSE_ERROR")]
    assert read_csv(data)[1] == RawRow(3, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)


@pytest.mark.parametrize(
    ("header", "missing", "unknown", "repeated"),
    [
        ("time,open,high,low,volume", ("close",), (), ()),
        ("open,high,low,close", ("time", "volume"), (), ()),
        ("time,open,high,low,close,volume,price", (), ("price",), ()),
        ("time,open,high,low,close,volume,", (), ("",), ()),
        ("time,Open,high,low,close,volume, open ", (), (), ("open",)),
        ("time,open,high,low,close,volume,trade_count,TRADE_COUNT", (), (), ("trade_count",)),
        ("time,high,low,close,volume,px", ("open",), ("px",), ()),
    ],
)
def test_header_errors_name_the_columns(
    header: str, missing: tuple[str, ...], unknown: tuple[str, ...], repeated: tuple[str, ...]
) -> None:
    with pytest.raises(CsvHeaderError) as caught:
        read_csv(header + "\n2024-01-02T00:00:00Z,1,2,0.5,1.5,3\n")
    assert (caught.value.missing, caught.value.unknown, caught.value.repeated) == (missing, unknown, repeated)
    for name in missing + unknown + repeated:
        assert repr(name) in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n"])
def test_input_without_a_header_is_a_header_error(data: bytes) -> None:
    with pytest.raises(CsvHeaderError):
        read_csv(data)


def test_the_first_non_empty_line_is_the_header() -> None:
    assert read_csv("\n\n" + HEADER + "1704153600,1,2,0.5,1.5,3,4\n") == [RawRow(4, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)]


SMALL_CSV = (
    "\ufeffTime,open,high,low,close,volume,trade_count\r\n"
    "2024-01-02T00:00:00Z,100,101,99,100.5,10,3\r\n"
    "\r\n"
    '2024-01-02T09:01:00+09:00,"100.5",102,100,101,"1€",\n'
    "2024-01-02T00:02:00Z,101,101,100,100,0,\n"
    "2024-01-02T00:03:00Z,101,101\n"
    "1704154020,101,102,100,101.5,2,7"
).encode()


def test_chunks_split_at_every_byte_offset_read_the_same_rows() -> None:
    whole = read_csv(SMALL_CSV)
    assert errors_of(whole) == [(4, "volume", "PARSE_ERROR"), (6, "", "PARSE_ERROR")]
    assert [r.line for r in whole] == [2, 4, 5, 6, 7]
    assert isinstance(whole[0], RawRow)
    euro = SMALL_CSV.index("€".encode())
    offsets = range(len(SMALL_CSV) + 1)
    assert euro + 1 in offsets  # a split inside the 3-byte character is among them
    for offset in offsets:
        reader = CsvRowReader()
        rows = reader.feed(SMALL_CSV[:offset]) + reader.feed(SMALL_CSV[offset:]) + reader.finish()
        assert rows == whole, offset
    assert read_csv(SMALL_CSV, chunk_size=1) == whole


def test_split_inside_a_multibyte_character_keeps_it_whole() -> None:
    data = HEADER.encode() + "2024-01-02T00:00:00Z,1,2,0.5,1.5,3,é\n".encode()
    split = data.index("é".encode()) + 1
    reader = CsvRowReader()
    rows = reader.feed(data[:split]) + reader.feed(data[split:]) + reader.finish()
    assert isinstance(rows[0], RowError)
    assert rows[0].message == "trade_count 'é' is not an integer"


def padded_row(length: int) -> str:
    row = "2024-01-02T00:00:00Z,1,2,0.5,1.5,3,4"
    return row.replace(",1,", "," + "0" * (length - len(row)) + "1,")


def test_line_length_limit() -> None:
    assert len(padded_row(MAX_LINE_CHARS)) == MAX_LINE_CHARS
    data = (
        HEADER + padded_row(MAX_LINE_CHARS) + "\n" + padded_row(MAX_LINE_CHARS + 1) + "\n1704153660,1,2,0.5,1.5,3,4\n"
    )
    for chunk_size in (None, 1000, 7):
        rows = read_csv(data, chunk_size)
        assert rows[0] == RawRow(2, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)
        assert errors_of(rows) == [(3, "", "PARSE_ERROR")]
        assert rows[2] == RawRow(4, T0 + timedelta(minutes=1), 1.0, 2.0, 0.5, 1.5, 3.0, 4)


def test_line_length_counts_characters_not_bytes() -> None:
    row = "2024-01-02T00:00:00Z,1,2,0.5,1.5,3,"
    fits = row + "é" * (MAX_LINE_CHARS - len(row))
    assert errors_of(read_csv(HEADER + fits + "\n")) == [(2, "trade_count", "PARSE_ERROR")]
    assert errors_of(read_csv(HEADER + fits + "é\n")) == [(2, "", "PARSE_ERROR")]


def test_a_stream_without_newlines_is_reported_early_and_not_buffered() -> None:
    reader = CsvRowReader()
    assert reader.feed(HEADER.encode()) == []
    chunk = b"9" * 4096
    tracemalloc.start()
    try:
        reported: list[RawRow | RowError] = []
        for _ in range(2000):  # 8 MB without a newline
            reported += reader.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert errors_of(reported) == [(2, "", "PARSE_ERROR")]
    assert peak < 1_000_000
    assert reader.feed(b"9\n1704153600,1,2,0.5,1.5,3,4\n") + reader.finish() == [
        RawRow(3, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)
    ]


def test_an_overlong_header_is_a_header_error() -> None:
    with pytest.raises(CsvHeaderError):
        read_csv("time," * 3000 + "\n")
    with pytest.raises(CsvHeaderError):
        CsvRowReader().feed(b"x" * 50_000)


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "reason", "message"),
    [
        (raw(None), "time", "MISSING_VALUE", "time is missing"),
        (raw(open=None), "open", "MISSING_VALUE", "open is missing"),
        (raw(high=None, open=None), "open", "MISSING_VALUE", "open is missing"),
        (raw(close=None), "close", "MISSING_VALUE", "close is missing"),
        (raw(volume=None), "volume", "MISSING_VALUE", "volume is missing"),
        (raw(open=math.nan), "open", "NOT_FINITE", "open nan is not finite"),
        (raw(low=-math.inf), "low", "NOT_FINITE", "low -inf is not finite"),
        (raw(volume=math.inf), "volume", "NOT_FINITE", "volume inf is not finite"),
        (raw(open=-1.0, high=math.nan), "high", "NOT_FINITE", "high nan is not finite"),
        (raw(open=0.0), "open", "PRICE_NOT_POSITIVE", "open 0.0 is not positive"),
        (raw(low=-2.0, close=-1.0), "low", "PRICE_NOT_POSITIVE", "low -2.0 is not positive"),
        (raw(close=-1.0), "close", "PRICE_NOT_POSITIVE", "close -1.0 is not positive"),
        (raw(open=100.0, high=99.5, close=100.2), "high", "HIGH_TOO_LOW", "high 99.5 is below close 100.2"),
        (raw(open=100.2, high=99.5, close=99.0, low=98.0), "high", "HIGH_TOO_LOW", "high 99.5 is below open 100.2"),
        (raw(open=100.0, low=100.25, close=101.0), "low", "LOW_TOO_HIGH", "low 100.25 is above open 100.0"),
        (raw(open=100.0, low=99.9, close=99.8), "low", "LOW_TOO_HIGH", "low 99.9 is above close 99.8"),
        (raw(high=99.0, low=101.0), "high", "HIGH_TOO_LOW", "high 99.0 is below close 100.5"),
        (raw(volume=-0.5), "volume", "VOLUME_NEGATIVE", "volume -0.5 is negative"),
        (raw(volume=-0.5, low=100.2), "low", "LOW_TOO_HIGH", "low 100.2 is above open 100.0"),
        (raw(trade_count=-1), "trade_count", "PARSE_ERROR", "trade_count -1 is negative"),
        (raw(trade_count=-1, volume=-1.0), "volume", "VOLUME_NEGATIVE", "volume -1.0 is negative"),
        (raw(T0 + timedelta(seconds=30)), "time", "TIME_NOT_ALIGNED", "time 2024-01-02T00:00:30Z is not aligned"),
        (raw(T0 + timedelta(seconds=30), open=0.0), "open", "PRICE_NOT_POSITIVE", "open 0.0 is not positive"),
        (raw(NOW), "time", "BAR_NOT_CLOSED", "the 1m bar at 2024-06-01T00:00:00Z has not closed"),
        (
            raw(NOW + timedelta(seconds=1)),
            "time",
            "TIME_NOT_ALIGNED",
            "time 2024-06-01T00:00:01Z is not aligned: 1m bars open on whole minutes",
        ),
    ],
)
def test_each_rule_reports_its_reason_field_and_message(row: RawRow, field: str, reason: str, message: str) -> None:
    result = BarValidator(Timeframe.M1).validate(row, NOW)
    assert isinstance(result, RowError)
    assert (result.line, result.field, result.reason) == (7, field, reason)
    assert result.message.startswith(message)


@pytest.mark.parametrize(
    "row",
    [
        raw(),
        raw(open=100.0, high=100.0, low=100.0, close=100.0),
        raw(volume=0.0, trade_count=0),
        raw(open=1e-9, high=1e-9, low=1e-9, close=1e-9, volume=-0.0),
        raw(NOW - timedelta(minutes=1)),
    ],
)
def test_valid_rows_become_bars(row: RawRow) -> None:
    assert BarValidator(Timeframe.M1).validate(row, NOW) == Bar(
        row.time or T0, row.open or 0, row.high or 0, row.low or 0, row.close or 0, row.volume or 0, row.trade_count
    )


ALIGNMENT = {
    Timeframe.M1: ([T0 + timedelta(minutes=59)], [T0 + timedelta(seconds=1), T0 + timedelta(microseconds=1)]),
    Timeframe.M5: ([T0 + timedelta(minutes=55)], [T0 + timedelta(minutes=1), T0 + timedelta(minutes=14)]),
    Timeframe.M15: ([T0 + timedelta(minutes=45)], [T0 + timedelta(minutes=5), T0 + timedelta(minutes=50)]),
    Timeframe.H1: ([T0 + timedelta(hours=23)], [T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)]),
    Timeframe.D1: ([T0, T0 + timedelta(days=40)], [T0 + timedelta(hours=15), T0 - timedelta(hours=9)]),
}


ALIGNMENT_RULES = {
    Timeframe.M1: "1m bars open on whole minutes",
    Timeframe.M5: "5m bars open on multiples of 5 minutes",
    Timeframe.M15: "15m bars open on multiples of 15 minutes",
    Timeframe.H1: "1h bars open on whole hours",
    Timeframe.D1: "1d bars open at 00:00:00 UTC",
}


@pytest.mark.parametrize("timeframe", list(Timeframe))
def test_alignment_per_timeframe(timeframe: Timeframe) -> None:
    good, bad = ALIGNMENT[timeframe]
    for moment in good:
        assert isinstance(BarValidator(timeframe).validate(raw(moment), NOW), Bar), moment
    for moment in bad:
        result = BarValidator(timeframe).validate(raw(moment), NOW)
        assert isinstance(result, RowError)
        assert result.reason == "TIME_NOT_ALIGNED", moment
    assert isinstance(result, RowError)
    assert result.message.endswith(ALIGNMENT_RULES[timeframe])


def test_daily_bars_open_at_midnight_utc_not_local_midnight() -> None:
    data = "time,open,high,low,close,volume\n2024-01-02T00:00:00+09:00,1,1,1,1,0\n2024-01-03T00:00:00Z,1,1,1,1,0\n"
    results = validate_all(read_csv(data), Timeframe.D1)
    assert errors_of(results) == [(2, "time", "TIME_NOT_ALIGNED")]
    assert isinstance(results[1], Bar)
    assert results[1].open_time == datetime(2024, 1, 3)


@pytest.mark.parametrize("timeframe", list(Timeframe))
def test_bar_not_closed_until_open_time_plus_timeframe(timeframe: Timeframe) -> None:
    open_time = datetime(2024, 5, 1)
    closes = open_time + timeframe.delta
    assert isinstance(BarValidator(timeframe).validate(raw(open_time), closes), Bar)
    early = BarValidator(timeframe).validate(raw(open_time), closes - timedelta(microseconds=1))
    assert isinstance(early, RowError)
    assert early.reason == "BAR_NOT_CLOSED"


def test_far_future_time_does_not_overflow() -> None:
    result = BarValidator(Timeframe.D1).validate(raw(datetime(9999, 12, 31)), NOW)
    assert isinstance(result, RowError)
    assert result.reason == "BAR_NOT_CLOSED"


def test_time_not_increasing_compares_with_the_last_accepted_row() -> None:
    minute = timedelta(minutes=1)
    validator = BarValidator(Timeframe.M1)
    verdicts = [
        validator.validate(row, NOW)
        for row in [
            raw(T0),
            raw(T0),  # duplicate
            raw(T0 - minute),  # going back
            raw(T0 + 2 * minute, high=1.0),  # rejected for its values: does not move the reference
            raw(T0 + minute),
            raw(NOW + 60 * minute),  # a typo'd future time is rejected and does not cascade
            raw(T0 + 2 * minute),
            raw(T0 + 2 * minute),
        ]
    ]
    assert [v.reason if isinstance(v, RowError) else "OK" for v in verdicts] == [
        "OK",
        "TIME_NOT_INCREASING",
        "TIME_NOT_INCREASING",
        "HIGH_TOO_LOW",
        "OK",
        "BAR_NOT_CLOSED",
        "OK",
        "TIME_NOT_INCREASING",
    ]
    assert isinstance(verdicts[1], RowError)
    assert verdicts[1].message == (
        "time 2024-01-02T00:00:00Z is not after the previous accepted row's time 2024-01-02T00:00:00Z"
    )
    assert validator.last_accepted_time == T0 + 2 * minute


def test_verdicts_equal_those_with_the_rejected_rows_deleted() -> None:
    rng = random.Random(7)
    rows = []
    for i in range(300):
        moment = T0 + timedelta(minutes=i + rng.choice([0, 0, 0, -3, -1, 5]), seconds=rng.choice([0] * 9 + [30]))
        rows.append(raw(moment, high=rng.choice([101.0] * 9 + [99.0])))
    validator = BarValidator(Timeframe.M1)
    verdicts = [validator.validate(row, NOW) for row in rows]
    assert {v.reason for v in verdicts if isinstance(v, RowError)} == {
        "TIME_NOT_INCREASING",
        "TIME_NOT_ALIGNED",
        "HIGH_TOO_LOW",
    }
    for index, verdict in enumerate(verdicts):
        replay = BarValidator(Timeframe.M1)
        for row, earlier in zip(rows[:index], verdicts[:index], strict=True):
            if isinstance(earlier, Bar):
                assert replay.validate(row, NOW) == earlier
        assert replay.validate(rows[index], NOW) == verdict


def test_csv_end_to_end_line_numbers_and_fields() -> None:
    data = (
        "time,open,high,low,close,volume\n"
        "\n"
        "2024-01-02T00:00:00Z,100,101,99,100.5,10\n"
        "2024-01-02T00:01:00Z,100,99.5,99,100.2,10\n"
        "\n"
        "\n"
        "2024-01-02T00:00:00Z,100,101,99,100.5,10\n"
        "2024-01-02T00:02:00Z,100,101,99,100.5,-1\n"
        "2024-01-02T00:03:00Z,100,101,99,100.5\n"
        "2024-01-02T00:04:00Z,100,101,99,100.5,0\n"
    )
    results = validate_all(read_csv(data))
    assert errors_of(results) == [
        (4, "high", "HIGH_TOO_LOW"),
        (7, "time", "TIME_NOT_INCREASING"),
        (8, "volume", "VOLUME_NEGATIVE"),
        (9, "", "PARSE_ERROR"),
    ]
    assert [b.open_time.minute for b in results if isinstance(b, Bar)] == [0, 4]
    assert results[1] == RowError(4, "high", "HIGH_TOO_LOW", "high 99.5 is below close 100.2")


@dataclass
class DecodedBar:
    open_time: datetime | None
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int | None = None


def test_rows_from_bars_number_positions_from_first_line() -> None:
    bars = [
        DecodedBar(T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4),
        DecodedBar(None, 1.0, 2.0, 0.5, 1.5, 3.0),
        DecodedBar(T0 + timedelta(minutes=1), 0.0, 2.0, 0.5, 1.5, 0.0),
    ]
    rows = rows_from_bars(bars, first_line=11)
    assert rows[0] == RawRow(11, T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)
    assert errors_of(validate_all(list(rows))) == [(12, "time", "MISSING_VALUE"), (13, "open", "PRICE_NOT_POSITIVE")]
    assert [r.line for r in rows_from_bars([Bar(T0, 1, 1, 1, 1, 0)])] == [1]


# --- classification --------------------------------------------------------------------------------------------------


def test_classify_splits_inserts_updates_and_unchanged() -> None:
    minute = timedelta(minutes=1)
    same = Bar(T0, 1.0, 2.0, 0.5, 1.5, 3.0, 4)
    changed_close = Bar(T0 + minute, 1.0, 2.0, 0.5, 1.25, 3.0, 4)
    changed_count = Bar(T0 + 2 * minute, 1.0, 2.0, 0.5, 1.5, 3.0, None)
    changed_volume = Bar(T0 + 3 * minute, 1.0, 2.0, 0.5, 1.5, 3.0000000000000004, 4)
    new = Bar(T0 + 4 * minute, 1.0, 2.0, 0.5, 1.5, 3.0, 4)
    stored = {t: Bar(t, 1.0, 2.0, 0.5, 1.5, 3.0, 4) for t in (T0, T0 + minute, T0 + 3 * minute)}
    stored[T0 + 2 * minute] = Bar(T0 + 2 * minute, 1.0, 2.0, 0.5, 1.5, 3.0, 0)
    plan = classify([same, changed_close, changed_count, changed_volume, new], stored)
    assert plan.inserts == [new]
    assert plan.updates == [changed_close, changed_count, changed_volume]
    assert plan.unchanged == 1


# --- roll-ups --------------------------------------------------------------------------------------------------------


def m1(minute: int, o: float, h: float, lo: float, c: float, v: float, n: int | None = 1) -> Bar:
    return Bar(datetime(2024, 1, 2, 10) + timedelta(minutes=minute), o, h, lo, c, v, n)


def test_roll_up_hand_computed() -> None:
    bars = [
        m1(0, 10, 12, 9, 11, 1.5, 3),
        m1(1, 11, 15, 10, 14, 2.0, 4),
        m1(3, 14, 14, 8, 9, 0.5, 1),
        m1(5, 9, 10, 9, 10, 1.0, 2),
        m1(6, 10, 11, 7, 8, 3.0, None),
        m1(12, 8, 8, 8, 8, 0.0, 0),
    ]
    assert roll_up(bars, Timeframe.M5) == [
        Bar(datetime(2024, 1, 2, 10, 0), 10, 15, 8, 9, 4.0, 8),
        Bar(datetime(2024, 1, 2, 10, 5), 9, 11, 7, 8, 4.0, None),
        Bar(datetime(2024, 1, 2, 10, 10), 8, 8, 8, 8, 0.0, 0),
    ]
    assert roll_up(bars, Timeframe.H1) == [Bar(datetime(2024, 1, 2, 10), 10, 15, 7, 8, 8.0, None)]
    assert roll_up([], Timeframe.H1) == []


def reference_roll_up(bars: list[Bar], target: Timeframe) -> list[Bar]:
    """Plain-Python grouping, independent of the numpy implementation."""
    groups: dict[datetime, list[Bar]] = {}
    for bar in bars:
        groups.setdefault(target.floor(bar.open_time), []).append(bar)
    result = []
    for open_time, members in groups.items():
        volume = members[0].volume
        for member in members[1:]:
            volume += member.volume
        counts = [m.trade_count for m in members]
        result.append(
            Bar(
                open_time,
                members[0].open,
                max(m.high for m in members),
                min(m.low for m in members),
                members[-1].close,
                volume,
                None if None in counts else sum(c or 0 for c in counts),
            )
        )
    return result


def random_minute_bars(rng: random.Random, count: int, start: datetime) -> list[Bar]:
    bars, moment, price = [], start, 100.0
    for _ in range(count):
        moment += timedelta(minutes=rng.choice([1, 1, 1, 2, 7]))
        o = price
        c = max(0.01, o + rng.gauss(0, 0.3))
        h, lo = max(o, c) + rng.random() * 0.2, min(o, c) - rng.random() * 0.2
        n = None if rng.random() < 0.01 else rng.randint(0, 50)
        bars.append(Bar(moment, o, h, lo, c, rng.random() * 10, n))
        price = c
    return bars


@pytest.mark.parametrize("target", [Timeframe.M5, Timeframe.M15, Timeframe.H1, Timeframe.D1])
def test_roll_up_matches_a_plain_reference(target: Timeframe) -> None:
    bars = random_minute_bars(random.Random(target.seconds), 5000, datetime(2024, 3, 1, 21, 13))
    rolled = roll_up(bars, target)
    assert rolled == reference_roll_up(bars, target)
    assert all(target.aligned(b.open_time) for b in rolled)
    assert len(rolled) > 2
    assert any(b.trade_count is None for b in rolled)
    assert any(b.trade_count is not None for b in rolled)


def test_daily_roll_up_splits_at_midnight_utc() -> None:
    bars = [Bar(datetime(2024, 1, 2, 23, 59), 1, 2, 1, 2, 1), Bar(datetime(2024, 1, 3), 2, 3, 2, 3, 1)]
    assert [b.open_time for b in roll_up(bars, Timeframe.D1)] == [datetime(2024, 1, 2), datetime(2024, 1, 3)]


def test_roll_up_with_now_drops_periods_not_ended() -> None:
    bars = [m1(0, 1, 1, 1, 1, 1), m1(4, 1, 1, 1, 1, 1), m1(5, 1, 1, 1, 1, 1)]
    end_of_second = datetime(2024, 1, 2, 10, 10)
    assert [b.open_time.minute for b in roll_up(bars, Timeframe.M5, now=end_of_second)] == [0, 5]
    before = end_of_second - timedelta(microseconds=1)
    assert [b.open_time.minute for b in roll_up(bars, Timeframe.M5, now=before)] == [0]
    assert roll_up(bars, Timeframe.M5, now=datetime(2024, 1, 2, 10, 4, 59)) == []
    assert len(roll_up(bars, Timeframe.M5)) == 2


def test_roll_up_rejects_unordered_input() -> None:
    with pytest.raises(ValueError, match="increasing"):
        roll_up([m1(1, 1, 1, 1, 1, 1), m1(0, 1, 1, 1, 1, 1)], Timeframe.M5)
    with pytest.raises(ValueError, match="increasing"):
        roll_up([m1(1, 1, 1, 1, 1, 1), m1(1, 1, 1, 1, 1, 1)], Timeframe.M5)


# --- live bars from ticks --------------------------------------------------------------------------------------------


def random_ticks(seed: int, count: int) -> tuple[list[datetime], list[float], list[float]]:
    rng = random.Random(seed)
    times, prices, sizes = [], [], []
    moment, price = datetime(2024, 2, 1, 13, 58, 30), 50.0
    for _ in range(count):
        step = rng.choice([0.0, 0.2, 1.5, 4.0, 95.0, 400.0])
        moment += timedelta(seconds=step * rng.random())
        late = rng.random() < 0.03
        times.append(moment - timedelta(seconds=rng.choice([1, 30, 90, 600])) if late else moment)
        price = max(0.01, price + rng.gauss(0, 0.05))
        prices.append(round(price, 2))
        sizes.append(rng.random() * rng.choice([0.001, 1.0, 1000.0]))
    return times, prices, sizes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bar_builder_agrees_exactly_with_bars_from_ticks(seed: int) -> None:
    times, prices, sizes = random_ticks(seed, 20_000)
    builder = BarBuilder()
    live: list[Bar] = []
    for t, p, s in zip(times, prices, sizes, strict=True):
        live += builder.on_tick(t, p, s)
    live += builder.flush(datetime.max)
    batch = bars_from_ticks(times, prices, sizes)
    assert live == batch
    assert builder.late_ticks > 0
    assert sum(b.trade_count or 0 for b in batch) == len(times) - builder.late_ticks
    # Many ticks per minute, so a pairwise sum would differ from the running one in the last bits.
    assert max(b.trade_count or 0 for b in batch) > 16
    assert bars_from_ticks(np.array(times, dtype="datetime64[us]"), np.array(prices), np.array(sizes)) == batch


def test_bars_from_ticks_by_hand() -> None:
    t = datetime(2024, 1, 2, 10)
    times = [t + timedelta(seconds=s) for s in (5, 1, 59.9, 60, 20, 185)]
    bars = bars_from_ticks(times, [10, 12, 9, 11, 99, 13], [1, 2, 3, 4, 5, 6])
    assert bars == [
        Bar(t, 10, 12, 9, 9, 6.0, 3),
        Bar(t + timedelta(minutes=1), 11, 11, 11, 11, 4.0, 1),
        Bar(t + timedelta(minutes=3), 13, 13, 13, 13, 6.0, 1),
    ]
    assert bars_from_ticks([], [], []) == []


def test_bar_builder_closes_a_bar_when_a_later_minute_starts() -> None:
    t = datetime(2024, 1, 2, 10)
    builder = BarBuilder()
    assert builder.on_tick(t + timedelta(seconds=5), 10, 1) == []
    assert builder.on_tick(t + timedelta(seconds=1), 12, 2) == []  # same minute, earlier second: still counted
    assert builder.current == Bar(t, 10, 12, 10, 12, 3.0, 2)
    assert builder.on_tick(t + timedelta(minutes=3), 13, 1) == [Bar(t, 10, 12, 10, 12, 3.0, 2)]
    assert builder.current == Bar(t + timedelta(minutes=3), 13, 13, 13, 13, 1.0, 1)


def test_bar_builder_ignores_and_counts_late_ticks() -> None:
    t = datetime(2024, 1, 2, 10)
    builder = BarBuilder()
    builder.on_tick(t + timedelta(minutes=2), 10, 1)
    assert builder.on_tick(t + timedelta(minutes=1, seconds=59), 99, 1) == []
    assert builder.on_tick(t, 99, 1) == []
    assert builder.late_ticks == 2
    assert builder.current == Bar(t + timedelta(minutes=2), 10, 10, 10, 10, 1.0, 1)


def test_flush_closes_the_bar_once_its_minute_ended() -> None:
    t = datetime(2024, 1, 2, 10)
    builder = BarBuilder()
    assert builder.flush(t) == []
    builder.on_tick(t + timedelta(seconds=10), 10, 1)
    assert builder.flush(t + timedelta(seconds=59, microseconds=999_999)) == []
    assert builder.flush(t + timedelta(minutes=1)) == [Bar(t, 10, 10, 10, 10, 1.0, 1)]
    assert builder.current is None
    assert builder.flush(t + timedelta(minutes=5)) == []  # quiet minutes make no bars
    # A straggler of the flushed minute would make a second bar with the same open_time.
    assert builder.on_tick(t + timedelta(seconds=50), 11, 1) == []
    assert builder.late_ticks == 1
    assert builder.on_tick(t + timedelta(minutes=7), 12, 1) == []
    assert builder.flush(t + timedelta(minutes=8)) == [Bar(t + timedelta(minutes=7), 12, 12, 12, 12, 1.0, 1)]


def test_validated_bars_round_trip_through_classify_as_unchanged() -> None:
    results = validate_all(read_csv(SMALL_CSV))
    accepted = [r for r in results if isinstance(r, Bar)]
    assert len(accepted) == 3
    stored = {b.open_time: replace(b) for b in accepted}
    assert classify(accepted, stored).unchanged == 3
