"""Market rules at their homes: a bar listing's time window (BarWindow), a streamed import's payload rules
(StreamImport), one call's import source (BarImports.import_bars) and the per-account tick-stream limit
(TickStreams)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import pytest

from services.core.auth.identity import Credential, Identity
from services.core.auth.service_identity import SERVICE_ROLE
from services.core.coordination import PubSub
from services.core.errors import InvalidArgument, ResourceExhausted
from services.market.imports.bar_import import BarImport, StreamImport
from services.market.imports.service import BarImports
from services.market.records import Bar, BarWindow, Timeframe
from services.market.store import MarketStore
from services.market.streaming import TickHub, TickStreams

NOW = datetime(2024, 6, 1)


def test_a_bar_window_starts_before_it_ends() -> None:
    assert BarWindow(datetime(2024, 1, 1), datetime(2024, 1, 2)).end == datetime(2024, 1, 2)
    assert BarWindow(None, datetime(2024, 1, 2)).start is None
    assert BarWindow().start is None
    for start, end in ((datetime(2024, 1, 2), datetime(2024, 1, 2)), (datetime(2024, 1, 3), datetime(2024, 1, 2))):
        with pytest.raises(InvalidArgument) as refused:
            BarWindow(start, end)
        assert refused.value.reason == "TIME_RANGE_INVALID"
        assert [v.field for v in refused.value.violations] == ["start_time"]


def _stream_import() -> tuple[StreamImport, BarImport]:
    # No row reaches the store: nothing is committed before 20,000 good rows or the end.
    job = BarImport(cast(MarketStore, None), "SIM-AAPL", Timeframe.D1, skip_invalid=True, validate_only=False, now=NOW)
    return StreamImport(job), job


async def test_a_stream_import_never_mixes_csv_and_bars() -> None:
    upload, job = _stream_import()
    await upload.add_csv(b"time,open,high,low,close,volume\n")
    assert job.source == "csv"
    with pytest.raises(InvalidArgument) as refused:
        await upload.add_bars([])
    assert refused.value.reason == "SOURCE_INVALID"
    assert [v.field for v in refused.value.violations] == ["bars"]
    with pytest.raises(InvalidArgument) as empty:
        await upload.add_bars([], payload="")
    assert [v.field for v in empty.value.violations] == ["payload"]


async def test_a_stream_import_numbers_bar_rows_across_batches() -> None:
    upload, job = _stream_import()
    bad = Bar(datetime(2024, 1, 2), 1.0, 0.5, 1.0, 1.0, 1.0, None)  # high below open
    await upload.add_bars([bad])
    await upload.add_bars([bad, bad])
    assert job.source == "bars"
    assert [error.line for error in job.outcome.errors] == [1, 2, 3]


async def test_one_call_imports_exactly_one_source() -> None:
    imports = BarImports(cast(MarketStore, None), clock=lambda: NOW)
    bar = Bar(datetime(2024, 1, 2), 1.0, 1.0, 1.0, 1.0, 1.0, None)
    for csv, bars in ((b"", []), (b"time\n", [bar])):
        with pytest.raises(InvalidArgument) as refused:
            await imports.import_bars(
                "SIM-AAPL", Timeframe.D1, csv=csv, bars=bars, skip_invalid=False, validate_only=False
            )
        assert refused.value.reason == "SOURCE_INVALID"


def _identity(account_id: int, *roles: str) -> Identity:
    return Identity(account_id=account_id, shard=0, roles=roles, scopes=("read",), credential=Credential.SESSION)


async def test_tick_streams_are_limited_per_account_but_not_for_the_platforms_services() -> None:
    hub = TickHub(cast(PubSub, None))
    streams = TickStreams(hub, capacity=8, max_per_account=1)
    async with streams.open(["SIM-AAPL"], identity=_identity(1, "user"), conflate=True) as subscriber:
        assert subscriber.capacity == 8
        assert subscriber.conflate
        with pytest.raises(ResourceExhausted) as refused:
            async with streams.open(["SIM-AAPL"], identity=_identity(1, "user"), conflate=True):
                pass
        assert refused.value.reason == "TOO_MANY_STREAMS"
        async with streams.open(["SIM-AAPL"], identity=_identity(2, "user"), conflate=False):
            assert hub.subscriber_count == 2
        async with streams.open(["SIM-AAPL"], identity=_identity(1, SERVICE_ROLE), conflate=True):
            pass
    assert hub.subscriber_count == 0
    async with streams.open(["SIM-AAPL"], identity=_identity(1, "user"), conflate=True):
        pass
