"""Stored bars through a real channel: ImportBars and ImportBarStream row rules and modes, ListBars ranges and pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2
from services.core.timestamps import timestamp
from services.market.records import Timeframe
from tests.account_platform import refusal
from tests.market_platform import MarketPlatform, running_market

INVALID = grpc.StatusCode.INVALID_ARGUMENT
M1 = common_pb2.TIMEFRAME_1M
SKIP = market_pb2.IMPORT_MODE_SKIP_INVALID
DAY = datetime(2024, 1, 2)
HEADER = "time,open,high,low,close,volume"


@pytest.fixture
async def platform() -> AsyncIterator[MarketPlatform]:
    """The market service with a history-only instrument HIST-A (live bars and backfill: test_market_feeds.py)."""
    async with running_market() as running:
        await _history_only(running, "HIST-A")
        yield running


def _minute(count: int) -> datetime:
    return DAY + timedelta(minutes=count)


def _unix(moment: datetime) -> str:
    return str(int((moment - datetime(1970, 1, 1)).total_seconds()))


def _iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _row(minute: int, o: float = 10.0, h: float = 11.0, lo: float = 9.0, c: float = 10.5, v: float = 100.0) -> str:
    return f"{_iso(_minute(minute))},{o},{h},{lo},{c},{v}"


def _bar(open_time: datetime, o: float, h: float, lo: float, c: float, v: float) -> market_pb2.Bar:
    return market_pb2.Bar(open_time=timestamp(open_time), open=o, high=h, low=lo, close=c, volume=v)


def _values(bar: market_pb2.Bar) -> tuple[Any, ...]:
    count = bar.trade_count if bar.HasField("trade_count") else None
    return (bar.open_time.ToDatetime(), bar.open, bar.high, bar.low, bar.close, bar.volume, count)


def _counts(reply: Any) -> tuple[int, int, int, int]:
    return (reply.inserted_count, reply.updated_count, reply.unchanged_count, reply.rejected_count)


def _errors(reply: Any) -> list[tuple[int, str, str]]:
    return [(error.line, error.field, error.reason) for error in reply.errors]


def _details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    """The ErrorInfo and every BadRequest violation (field, description), in order."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    violations: list[tuple[str, str]] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return info, violations


async def _failure(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


async def _history_only(platform: MarketPlatform, symbol: str) -> None:
    instrument = market_pb2.Instrument(
        symbol=symbol,
        venue="HIST",
        asset_class=market_pb2.ASSET_CLASS_STOCK,
        quote_currency="USD",
        trading_session=market_pb2.TradingSession(always_open=True),
    )
    await platform.stub.CreateInstrument(
        market_pb2.CreateInstrumentRequest(instrument=instrument), metadata=platform.admin
    )


async def _import(platform: MarketPlatform, symbol: str, **fields: Any) -> market_pb2.ImportBarsResponse:
    request = market_pb2.ImportBarsRequest(symbol=symbol, timeframe=fields.pop("timeframe", M1), **fields)
    return await platform.stub.ImportBars(request, metadata=platform.admin)


async def _stored(platform: MarketPlatform, symbol: str, **fields: Any) -> list[tuple[Any, ...]]:
    request = market_pb2.ListBarsRequest(symbol=symbol, page_size=1000, **{"timeframe": M1, **fields})
    reply = await platform.stub.ListBars(request, metadata=platform.reader)
    return [_values(bar) for bar in reply.bars]


def _header(symbol: str, **fields: Any) -> market_pb2.ImportBarStreamRequest:
    return market_pb2.ImportBarStreamRequest(
        header=market_pb2.ImportBarStreamHeader(symbol=symbol, timeframe=M1, **fields)
    )


# Every row rule, one bad row each (line numbers are physical lines, the header is line 1, blank lines count).
MIXED = _csv(
    HEADER,
    _row(0),  # 2 good
    _row(1, h=10.2),  # 3 high below close
    _row(2, c=9.5, lo=9.9),  # 4 low above close
    _row(3, v=-1),  # 5
    f"{_iso(_minute(4) + timedelta(seconds=30))},10,11,9,10.5,1",  # 6
    _row(5, v=7),  # 7 good
    _row(5, v=8),  # 8 same time again
    "2099-01-01T00:00:00Z,10,11,9,10.5,1",  # 9 in the future
    f"{_iso(_minute(6))},abc,11,9,10.5,1",  # 10
    f"{_iso(_minute(7))},10,,9,10.5,1",  # 11
    f"{_iso(_minute(8))},10,11,9,nan,1",  # 12
    _row(9, o=0),  # 13
    f"{_iso(_minute(10))},10,11,9",  # 14 too few cells
    "",  # 15 blank: skipped
    f"{_unix(_minute(11))},10,12,8,11,5",  # 16 good, Unix seconds
)
MIXED_ERRORS = [
    (3, "high", "HIGH_TOO_LOW"),
    (4, "low", "LOW_TOO_HIGH"),
    (5, "volume", "VOLUME_NEGATIVE"),
    (6, "time", "TIME_NOT_ALIGNED"),
    (8, "time", "TIME_NOT_INCREASING"),
    (9, "time", "BAR_NOT_CLOSED"),
    (10, "open", "PARSE_ERROR"),
    (11, "high", "MISSING_VALUE"),
    (12, "close", "NOT_FINITE"),
    (13, "open", "PRICE_NOT_POSITIVE"),
    (14, "", "PARSE_ERROR"),
]
MIXED_GOOD = [
    (_minute(0), 10.0, 11.0, 9.0, 10.5, 100.0, None),
    (_minute(5), 10.0, 11.0, 9.0, 10.5, 7.0, None),
    (_minute(11), 10.0, 12.0, 8.0, 11.0, 5.0, None),
]


# -- ImportBars -------------------------------------------------------------------------------------------------------


async def test_csv_import_in_any_column_order_is_idempotent(platform: MarketPlatform) -> None:
    csv = _csv(
        "Volume, close,time,low,trade_count,high,open",
        f"100,10.5,{_iso(_minute(0))},9,12,11,10",
        f"200,10.75,{_iso(_minute(1))},10.25,,11.5,10.5",
    )
    reply = await _import(platform, "hist-a", csv=csv)
    assert _counts(reply) == (2, 0, 0, 0)
    assert (reply.first_open_time.ToDatetime(), reply.last_open_time.ToDatetime()) == (_minute(0), _minute(1))
    expected = [(_minute(0), 10.0, 11.0, 9.0, 10.5, 100.0, 12), (_minute(1), 10.5, 11.5, 10.25, 10.75, 200.0, None)]
    assert await _stored(platform, "HIST-A") == expected
    assert _counts(await _import(platform, "HIST-A", csv=csv)) == (0, 0, 2, 0)
    assert _counts(await _import(platform, "HIST-A", csv=csv.replace(b"\n", b"\r\n"))) == (0, 0, 2, 0)
    changed = csv.replace(b"200,10.75", b"250,10.75")
    assert _counts(await _import(platform, "HIST-A", csv=changed)) == (0, 1, 1, 0)
    assert (await _stored(platform, "HIST-A"))[1][5] == 250.0
    # Other timeframes are stored apart.
    assert await _stored(platform, "HIST-A", timeframe=common_pb2.TIMEFRAME_5M) == []


async def test_all_or_nothing_refuses_the_batch_naming_the_lines(platform: MarketPlatform) -> None:
    error = await _failure(_import(platform, "HIST-A", csv=MIXED))
    info, violations = _details(error)
    assert (error.code(), info.reason, info.metadata["rejected_count"]) == (INVALID, "BARS_REJECTED", "11")
    assert {field for field, _ in violations} == {"csv"}
    assert [int(text.split(":")[0].removeprefix("line ")) for _, text in violations] == [e[0] for e in MIXED_ERRORS]
    assert "HIGH_TOO_LOW" in violations[0][1]
    assert await _stored(platform, "HIST-A") == []


async def test_skip_invalid_writes_the_good_rows_and_reports_the_bad(platform: MarketPlatform) -> None:
    reply = await _import(platform, "HIST-A", csv=MIXED, mode=SKIP)
    assert _counts(reply) == (3, 0, 0, 11)
    assert _errors(reply) == MIXED_ERRORS
    assert not reply.errors_truncated
    assert all(error.message for error in reply.errors)
    assert (reply.first_open_time.ToDatetime(), reply.last_open_time.ToDatetime()) == (_minute(0), _minute(11))
    assert await _stored(platform, "HIST-A") == MIXED_GOOD


async def test_validate_only_counts_without_writing(platform: MarketPlatform) -> None:
    for mode in (market_pb2.IMPORT_MODE_UNSPECIFIED, SKIP):
        reply = await _import(platform, "HIST-A", csv=MIXED, mode=mode, validate_only=True)
        assert _counts(reply) == (3, 0, 0, 11)
        assert _errors(reply) == MIXED_ERRORS
    assert await _stored(platform, "HIST-A") == []
    await _import(platform, "HIST-A", csv=_csv(HEADER, _row(0), _row(1)))
    reply = await _import(platform, "HIST-A", csv=_csv(HEADER, _row(0), _row(1, v=5), _row(2)), validate_only=True)
    assert _counts(reply) == (1, 1, 1, 0)
    assert [bar[5] for bar in await _stored(platform, "HIST-A")] == [100.0, 100.0]


async def test_times_align_to_the_timeframe_and_bars_must_have_closed(platform: MarketPlatform) -> None:
    today = Timeframe.D1.floor(datetime.now(UTC).replace(tzinfo=None))
    cases = {
        common_pb2.TIMEFRAME_1M: (["2024-01-02T00:01:00+09:00"], ["2024-01-02T00:01:00.5Z"]),
        common_pb2.TIMEFRAME_5M: ([_unix(_minute(5))], [_iso(_minute(7))]),
        common_pb2.TIMEFRAME_15M: ([_iso(_minute(45))], [_iso(_minute(50))]),
        common_pb2.TIMEFRAME_1H: (["2024-01-02T03:00:00+01:00"], [_iso(_minute(90))]),
        common_pb2.TIMEFRAME_1D: (["2024-01-02T00:00:00Z", "2024-01-03T01:00:00+01:00"], ["2024-01-04T05:00:00Z"]),
    }
    for timeframe, (good, misaligned) in cases.items():
        rows = [f"{time},10,11,9,10.5,1" for time in [*good, *misaligned]]
        reply = await _import(platform, "HIST-A", timeframe=timeframe, csv=_csv(HEADER, *rows), mode=SKIP)
        assert _counts(reply) == (len(good), 0, 0, len(misaligned)), timeframe
        assert {error.reason for error in reply.errors} == {"TIME_NOT_ALIGNED"}, timeframe
    stored = await _stored(platform, "HIST-A", timeframe=common_pb2.TIMEFRAME_1D)
    assert [bar[0] for bar in stored] == [DAY, DAY + timedelta(days=1)]
    assert [bar[0] for bar in await _stored(platform, "HIST-A")] == [_minute(-539)]
    assert [bar[0] for bar in await _stored(platform, "HIST-A", timeframe=common_pb2.TIMEFRAME_1H)] == [_minute(120)]
    # Today's daily bar is still forming; yesterday's has closed.
    rows = [f"{_iso(today - timedelta(days=1))},10,11,9,10.5,1", f"{_iso(today)},10,11,9,10.5,1"]
    reply = await _import(platform, "HIST-A", timeframe=common_pb2.TIMEFRAME_1D, csv=_csv(HEADER, *rows), mode=SKIP)
    assert (_counts(reply), _errors(reply)) == ((1, 0, 0, 1), [(3, "time", "BAR_NOT_CLOSED")])


async def test_bad_import_requests(platform: MarketPlatform) -> None:
    good = _csv(HEADER, _row(0))
    bar = _bar(_minute(0), 10, 11, 9, 10.5, 1)
    assert await refusal(_import(platform, "HIST-A", csv=good, bars=[bar])) == (INVALID, "SOURCE_INVALID")
    assert await refusal(_import(platform, "HIST-A")) == (INVALID, "SOURCE_INVALID")
    for header in (
        "time,open,high,low,close",  # missing volume
        HEADER + ",vwap",  # unknown
        HEADER + ",open",  # repeated
    ):
        call = _import(platform, "HIST-A", csv=_csv(header, _row(0)))
        assert await refusal(call) == (INVALID, "CSV_HEADER_INVALID"), header
    assert await refusal(_import(platform, "HIST-A", csv=b"\n\n")) == (INVALID, "CSV_HEADER_INVALID")
    missing = await _failure(
        platform.stub.ImportBars(market_pb2.ImportBarsRequest(symbol="HIST-A", csv=good), metadata=platform.admin)
    )
    assert missing.code() is INVALID
    assert [field for field, _ in _details(missing)[1]] == ["timeframe"]
    assert await refusal(_import(platform, "HIST-NONE", csv=good)) == (grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND")
    request = market_pb2.ImportBarsRequest(symbol="HIST-A", timeframe=M1, csv=good)
    refused = await refusal(platform.stub.ImportBars(request, metadata=platform.reader))
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    assert await _stored(platform, "HIST-A") == []


async def test_bar_messages_are_checked_field_by_field(platform: MarketPlatform) -> None:
    bars = [
        _bar(_minute(0), 10, 11, 9, 10.5, 1),
        _bar(_minute(1), 10, 10.2, 9, 10.5, 1),
        market_pb2.Bar(open=10, high=11, low=9, close=10.5),
        _bar(_minute(3), 10, 11, 9, 10.5, -2),
        _bar(_minute(4) + timedelta(seconds=1), 10, 11, 9, 10.5, 1),
    ]
    error = await _failure(_import(platform, "HIST-A", bars=bars))
    info, violations = _details(error)
    assert (info.reason, info.metadata["rejected_count"]) == ("BARS_REJECTED", "4")
    fields = [field for field, _ in violations]
    assert fields == ["bars[1].high", "bars[2].open_time", "bars[3].volume", "bars[4].open_time"]
    assert await _stored(platform, "HIST-A") == []
    reply = await _import(platform, "HIST-A", bars=bars, mode=SKIP)
    assert _counts(reply) == (1, 0, 0, 4)
    assert _errors(reply) == [
        (2, "high", "HIGH_TOO_LOW"),
        (3, "time", "MISSING_VALUE"),
        (4, "volume", "VOLUME_NEGATIVE"),
        (5, "time", "TIME_NOT_ALIGNED"),
    ]


async def test_reports_are_capped_but_counts_are_not(platform: MarketPlatform) -> None:
    csv = _csv(HEADER, *(_row(m, v=-1) for m in range(1001)), _row(2000))
    error = await _failure(_import(platform, "HIST-A", csv=csv))
    info, violations = _details(error)
    assert info.metadata["rejected_count"] == "1001"
    # At most 100 rows are listed, fewer when the trailer would grow past what clients accept; a last entry says so.
    assert len(violations) <= 101
    assert violations[-1][1].startswith("... and ")
    reply = await _import(platform, "HIST-A", csv=csv, mode=SKIP)
    assert _counts(reply) == (1, 0, 0, 1001)
    assert (len(reply.errors), reply.errors_truncated) == (1000, True)
    assert (reply.errors[0].line, reply.errors[-1].line) == (2, 1001)


# -- ImportBarStream --------------------------------------------------------------------------------------------------


async def test_a_chunked_stream_matches_one_call(platform: MarketPlatform) -> None:
    await _history_only(platform, "HIST-B")
    data = "\ufeff".encode() + MIXED
    whole = await _import(platform, "HIST-A", csv=data, mode=SKIP)
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]  # cuts lines and the byte order mark
    messages = [_header("HIST-B", mode=SKIP), *(market_pb2.ImportBarStreamRequest(csv_chunk=c) for c in chunks)]
    streamed = await platform.stub.ImportBarStream(iter(messages), metadata=platform.admin)
    assert _counts(streamed) == _counts(whole) == (3, 0, 0, 11)
    assert _errors(streamed) == _errors(whole) == MIXED_ERRORS
    assert streamed.last_open_time == whole.last_open_time
    assert await _stored(platform, "HIST-B") == await _stored(platform, "HIST-A") == MIXED_GOOD
    again = await platform.stub.ImportBarStream(iter(messages), metadata=platform.admin)
    assert _counts(again) == (0, 0, 3, 11)

    messages[0] = _header("HIST-B")
    refused = await _failure(platform.stub.ImportBarStream(iter(messages), metadata=platform.admin))
    info, violations = _details(refused)
    assert (info.reason, info.metadata["rejected_count"]) == ("BARS_REJECTED", "11")
    assert {field for field, _ in violations} == {"csv"}


async def test_bar_batches_number_rows_across_the_stream(platform: MarketPlatform) -> None:
    first = market_pb2.BarBatch(bars=[_bar(_minute(0), 10, 11, 9, 10, 1), _bar(_minute(1), 10, 11, 9, 10, 1)])
    second = market_pb2.BarBatch(bars=[_bar(_minute(2), 10, 9.5, 9, 10, 1), _bar(_minute(3), 10, 11, 9, 10, 1)])
    messages = [_header("HIST-A"), market_pb2.ImportBarStreamRequest(bars=first)]
    messages.append(market_pb2.ImportBarStreamRequest(bars=second))
    refused = await _failure(platform.stub.ImportBarStream(iter(messages), metadata=platform.admin))
    assert [field for field, _ in _details(refused)[1]] == ["bars[2].high"]
    assert await _stored(platform, "HIST-A") == []
    messages[0] = _header("HIST-A", mode=SKIP)
    reply = await platform.stub.ImportBarStream(iter(messages), metadata=platform.admin)
    assert _counts(reply) == (3, 0, 0, 1)
    assert _errors(reply) == [(3, "high", "HIGH_TOO_LOW")]
    assert [bar[0] for bar in await _stored(platform, "HIST-A")] == [_minute(0), _minute(1), _minute(3)]


async def test_a_broken_skip_invalid_stream_keeps_what_it_committed(platform: MarketPlatform) -> None:
    # More rows than one commit takes (20,000), then a second header breaks the stream.
    data = _csv(HEADER, *(_row(m) for m in range(-20_500, 0)))
    body = [market_pb2.ImportBarStreamRequest(csv_chunk=data[i : i + 65536]) for i in range(0, len(data), 65536)]
    for mode, kept in ((market_pb2.IMPORT_MODE_ALL_OR_NOTHING, False), (SKIP, True)):
        messages = [_header("HIST-A", mode=mode), *body, _header("HIST-A")]
        call = platform.stub.ImportBarStream(iter(messages), metadata=platform.admin)
        assert await refusal(call) == (INVALID, "HEADER_REQUIRED")
        stored = await platform.stub.ListBars(
            market_pb2.ListBarsRequest(symbol="HIST-A", timeframe=M1, page_size=1), metadata=platform.reader
        )
        assert bool(stored.bars) is kept, mode
    # Sent again whole, the import completes; rows committed before count as unchanged.
    reply = await platform.stub.ImportBarStream(iter([_header("HIST-A", mode=SKIP), *body]), metadata=platform.admin)
    assert reply.inserted_count + reply.unchanged_count == 20_500
    assert reply.unchanged_count >= 20_000
    assert (reply.first_open_time.ToDatetime(), reply.last_open_time.ToDatetime()) == (_minute(-20_500), _minute(-1))


async def test_bad_streams(platform: MarketPlatform) -> None:
    chunk = market_pb2.ImportBarStreamRequest(csv_chunk=_csv(HEADER, _row(0)))
    bars = market_pb2.ImportBarStreamRequest(bars=market_pb2.BarBatch(bars=[_bar(_minute(1), 10, 11, 9, 10, 1)]))
    cases: list[tuple[Sequence[market_pb2.ImportBarStreamRequest], str]] = [
        ([chunk], "HEADER_REQUIRED"),
        ([], "HEADER_REQUIRED"),
        ([_header("HIST-A"), _header("HIST-A"), chunk], "HEADER_REQUIRED"),
        ([_header("HIST-A"), chunk, bars], "SOURCE_INVALID"),
        ([_header("HIST-A"), bars, chunk], "SOURCE_INVALID"),
        ([_header("HIST-A"), market_pb2.ImportBarStreamRequest(csv_chunk=b"time,open\n")], "CSV_HEADER_INVALID"),
        ([_header("a/b"), chunk], "SYMBOL_INVALID"),
    ]
    for messages, reason in cases:
        call = platform.stub.ImportBarStream(iter(messages), metadata=platform.admin)
        assert await refusal(call) == (INVALID, reason), reason
    call = platform.stub.ImportBarStream(iter([_header("HIST-NONE"), chunk]), metadata=platform.admin)
    assert await refusal(call) == (grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND")
    call = platform.stub.ImportBarStream(iter([_header("HIST-A"), chunk]), metadata=platform.reader)
    assert await refusal(call) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    assert await _stored(platform, "HIST-A") == []


# -- ListBars ---------------------------------------------------------------------------------------------------------


def _list(platform: MarketPlatform, **fields: Any) -> Any:
    request = market_pb2.ListBarsRequest(**{"symbol": "HIST-A", "timeframe": M1, **fields})
    return platform.stub.ListBars(request, metadata=platform.reader)


async def test_list_bars_ranges_orders_and_pages(platform: MarketPlatform) -> None:
    await _import(platform, "HIST-A", csv=_csv(HEADER, *(_row(m, c=10 + m / 10) for m in range(7))))
    times = [_minute(m) for m in range(7)]
    assert [bar[0] for bar in await _stored(platform, "HIST-A")] == times
    window: dict[str, Any] = {"start_time": timestamp(_minute(2)), "end_time": timestamp(_minute(5))}
    assert [bar[0] for bar in await _stored(platform, "hist-a", **window)] == times[2:5]
    assert [bar[0] for bar in await _stored(platform, "HIST-A", descending=True, **window)] == times[4:1:-1]
    assert [bar[0] for bar in await _stored(platform, "HIST-A", end_time=timestamp(_minute(1)))] == times[:1]
    assert [bar[4] for bar in await _stored(platform, "HIST-A", start_time=timestamp(_minute(6)))] == [10.6]

    for descending in (False, True):
        seen: list[datetime] = []
        token = ""
        while True:
            reply = await _list(platform, page_size=2, page_token=token, descending=descending)
            assert 1 <= len(reply.bars) <= 2
            seen.extend(bar.open_time.ToDatetime() for bar in reply.bars)
            token = reply.next_page_token
            if not token:
                break
            assert len(seen) < 10, "pagination does not end"
        assert seen == (times[::-1] if descending else times)

    token = (await _list(platform, page_size=2)).next_page_token
    await _history_only(platform, "HIST-B")
    for changed in (
        {"descending": True},
        {"timeframe": common_pb2.TIMEFRAME_5M},
        {"start_time": timestamp(_minute(1))},
        {"end_time": timestamp(_minute(6))},
        {"symbol": "HIST-B"},
    ):
        assert await refusal(_list(platform, page_size=2, page_token=token, **changed)) == (
            INVALID,
            "PAGE_TOKEN_INVALID",
        ), changed
    for start, end in ((_minute(3), _minute(3)), (_minute(4), _minute(3))):
        call = _list(platform, start_time=timestamp(start), end_time=timestamp(end))
        assert await refusal(call) == (INVALID, "TIME_RANGE_INVALID")
    missing = await _failure(_list(platform, timeframe=common_pb2.TIMEFRAME_UNSPECIFIED))
    assert (missing.code(), _details(missing)[0].reason) == (INVALID, "INVALID_ARGUMENT")
    assert [field for field, _ in _details(missing)[1]] == ["timeframe"]
    assert await refusal(_list(platform, symbol="NOPE")) == (grpc.StatusCode.NOT_FOUND, "SYMBOL_NOT_FOUND")
