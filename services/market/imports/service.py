"""The bar-import use cases: ImportBars (one call), ImportBarStream (piece by piece) and `bullant import-bars` (a
file), each with the same rules, into a known instrument's stored bars."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.clock import WallClock
from services.core.errors import FieldViolation, InvalidArgument, NotFound
from services.market.imports.bar_import import BarImport, ImportOutcome, StreamImport, csv_rows
from services.market.imports.rows import MAX_ROWS_PER_CALL, MAX_ROWS_PER_STREAM, CsvRowReader, rows_from_bars
from services.market.records import Bar, Instrument, Timeframe
from services.market.store import MarketStore

FILE_CHUNK_BYTES = 1 << 20
# A file's SKIP_INVALID import commits every this many good rows, so an interrupted import keeps what it wrote
# (re-running is safe: imports are idempotent).
FILE_COMMIT_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a file's import is."""

    read_bytes: int
    total_bytes: int
    rows: int
    rejected: int


async def known_instrument(store: MarketStore, symbol: str) -> Instrument:
    """The instrument, NOT_FOUND SYMBOL_NOT_FOUND when the catalogue has no `symbol`."""
    found = await store.instrument(symbol)
    if found is None:
        raise NotFound(f"no instrument {symbol}", reason="SYMBOL_NOT_FOUND", metadata={"symbol": symbol})
    return found


class BarImports:
    """Imports of bars: validated in input order, written atomically per commit, counted as the responses say."""

    def __init__(self, store: MarketStore, *, clock: WallClock) -> None:
        self._store = store
        self._clock = clock

    def _begin(
        self, symbol: str, timeframe: Timeframe, *, skip_invalid: bool, validate_only: bool, source: str = "bars"
    ) -> BarImport:
        return BarImport(
            self._store,
            symbol,
            timeframe,
            skip_invalid=skip_invalid,
            validate_only=validate_only,
            now=self._clock(),
            source=source,
        )

    async def import_bars(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        csv: bytes,
        bars: Sequence[Bar],
        skip_invalid: bool,
        validate_only: bool,
    ) -> ImportOutcome:
        """One call's import (ImportBars) from exactly one of a CSV file and bars, at most MAX_ROWS_PER_CALL rows."""
        if bool(csv) == bool(bars):
            raise InvalidArgument(FieldViolation("csv", "set exactly one of csv and bars"), reason="SOURCE_INVALID")
        await known_instrument(self._store, symbol)
        job = self._begin(
            symbol, timeframe, skip_invalid=skip_invalid, validate_only=validate_only, source="csv" if csv else "bars"
        )
        # Parsing and validating 100k rows takes seconds of CPU: off the event loop, which keeps serving.
        rows = await asyncio.to_thread(csv_rows, CsvRowReader(), csv) if csv else list(rows_from_bars(bars))
        if len(rows) > MAX_ROWS_PER_CALL:
            raise InvalidArgument(
                FieldViolation("bars" if bars else "csv", f"at most {MAX_ROWS_PER_CALL} rows per call"),
                reason="IMPORT_TOO_LARGE",
            )
        await asyncio.to_thread(job.add, rows)
        return await job.finish()

    async def begin_stream(
        self, symbol: str, timeframe: Timeframe, *, skip_invalid: bool, validate_only: bool
    ) -> StreamImport:
        """An import of a known symbol fed piece by piece (ImportBarStream)."""
        await known_instrument(self._store, symbol)
        return StreamImport(self._begin(symbol, timeframe, skip_invalid=skip_invalid, validate_only=validate_only))

    async def import_file(
        self,
        path: Path,
        *,
        symbol: str,
        timeframe: Timeframe,
        skip_invalid: bool,
        validate_only: bool,
        progress: Callable[..., None] | None = None,
    ) -> ImportOutcome:
        """Import `path` into `symbol`'s `timeframe` bars. ALL_OR_NOTHING (the default) writes nothing unless every
        row is good; SKIP_INVALID writes good rows in chunks as it goes."""
        if await self._store.instrument(symbol) is None:
            raise NotFound(f"no instrument {symbol}: create it first (CreateInstrument)", reason="SYMBOL_NOT_FOUND")
        job = self._begin(symbol, timeframe, skip_invalid=skip_invalid, validate_only=validate_only, source="csv")
        reader = CsvRowReader()
        total = (await asyncio.to_thread(path.stat)).st_size
        read = 0
        with path.open("rb") as handle:
            while chunk := handle.read(FILE_CHUNK_BYTES):
                read += len(chunk)
                job.add(await asyncio.to_thread(reader.feed, chunk))
                if job.rows > MAX_ROWS_PER_STREAM:
                    raise ValueError(f"at most {MAX_ROWS_PER_STREAM:,} rows per import; split the file")
                if skip_invalid and job.pending >= FILE_COMMIT_ROWS:
                    await job.commit()
                if progress is not None:
                    progress(Progress(read, total, job.rows, job.outcome.rejected))
        job.add(reader.finish())
        outcome = await job.finish()
        if progress is not None:
            progress(Progress(read, total, job.rows, outcome.rejected), final=True)
        return outcome
