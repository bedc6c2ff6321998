"""Imports a CSV file of bars from the command line (`bullant import-bars`), with the same rules as ImportBars."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.core.db.databases import Databases, utc_now
from services.core.errors import NotFound
from services.core.progress import ProgressBar
from services.market.bars import MAX_ROWS_PER_STREAM, CsvRowReader
from services.market.imports import BarImport, ImportOutcome
from services.market.models import Timeframe
from services.market.store import MarketStore

CHUNK_BYTES = 1 << 20
# SKIP_INVALID commits every this many good rows, so an interrupted import keeps what it wrote (re-running is safe:
# imports are idempotent).
COMMIT_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class Progress:
    read_bytes: int
    total_bytes: int
    rows: int
    rejected: int


# Exit codes of `bullant import-bars` (HELP_EXIT_CODES and the README say what they mean).
EXIT_STORED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ROWS_REJECTED = 3

# `bullant import-bars --help`: printed as written (the command's parser keeps the line breaks).
HELP_DESCRIPTION = """\
Validate and store bars from a CSV file, with the rules of ImportBars, in the databases of
BULLANT_DATA_DIR (or BULLANT_DATABASE_URL). Columns: time,open,high,low,close,volume and
optionally trade_count; time is the bar's open time, in RFC 3339 or Unix seconds. By default
nothing is written unless every row is good; --skip-invalid writes the good rows and reports
the bad ones. Importing the same rows again changes nothing.

A sample: bullant import-bars examples/sim-aapl-1d.csv --symbol SIM-AAPL --timeframe 1d"""

HELP_EXIT_CODES = """exit codes:
  0  done: every row was good and is stored (with --validate-only: every row is good)
  1  the import failed: bad rows without --skip-invalid (they are listed; nothing is written),
     an unknown symbol, a bad header, a file that cannot be read or too big, or a database
     error (what --skip-invalid committed before it stays; running the command again is safe)
  2  the command line or the configuration is wrong
  3  done, but some rows were rejected (they are listed): with --skip-invalid the good rows are
     stored; with --validate-only some rows would be rejected"""


def summary(symbol: str, timeframe: Timeframe, outcome: ImportOutcome, *, validate_only: bool) -> str:
    """One plain line: how many rows, and what became of them ("SIM-AAPL 1d: 5 rows: 5 new, 0 changed, 0 already
    stored, 0 rejected")."""
    rows = outcome.inserted + outcome.updated + outcome.unchanged + outcome.rejected
    counts = (
        f"{outcome.inserted} new, {outcome.updated} changed, {outcome.unchanged} already stored, "
        f"{outcome.rejected} rejected"
    )
    if validate_only:
        return f"{symbol} {timeframe.label}: {rows} rows checked, nothing written; if imported: {counts}"
    return f"{symbol} {timeframe.label}: {rows} rows: {counts}"


class ImportProgressBar(ProgressBar):
    """The import's progress: bytes read of the file, rows and rejected rows so far."""

    def __call__(self, progress: Progress, *, final: bool = False) -> None:
        fraction = progress.read_bytes / progress.total_bytes if progress.total_bytes else 1.0
        self.show(fraction, f"{progress.rows:,} rows, {progress.rejected:,} rejected", final=final)


async def import_file(
    databases: Databases,
    path: Path,
    *,
    symbol: str,
    timeframe: Timeframe,
    skip_invalid: bool,
    validate_only: bool,
    progress: Callable[..., None] | None = None,
) -> ImportOutcome:
    """Import `path` into `symbol`'s `timeframe` bars. ALL_OR_NOTHING (the default) writes nothing unless every row
    is good; SKIP_INVALID writes good rows in chunks as it goes."""
    store = MarketStore(databases)
    if await store.instrument(symbol) is None:
        raise NotFound(f"no instrument {symbol}: create it first (CreateInstrument)", reason="SYMBOL_NOT_FOUND")
    job = BarImport(
        store, symbol, timeframe, skip_invalid=skip_invalid, validate_only=validate_only, now=utc_now(), source="csv"
    )
    reader = CsvRowReader()
    total = (await asyncio.to_thread(path.stat)).st_size
    read = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            read += len(chunk)
            job.add(await asyncio.to_thread(reader.feed, chunk))
            if job.rows > MAX_ROWS_PER_STREAM:
                raise ValueError(f"at most {MAX_ROWS_PER_STREAM:,} rows per import; split the file")
            if skip_invalid and job.pending >= COMMIT_ROWS:
                await job.commit()
            if progress is not None:
                progress(Progress(read, total, job.rows, job.outcome.rejected))
    job.add(reader.finish())
    outcome = await job.finish()
    if progress is not None:
        progress(Progress(read, total, job.rows, outcome.rejected), final=True)
    return outcome
