"""One bar import (a call, a stream or a file): rows validated in input order, accepted bars written atomically per
commit, the outcome counted as ImportBarsResponse reports it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from services.core.errors import FieldViolation, InvalidArgument
from services.market.imports.rows import (
    MAX_REPORTED_ERRORS,
    MAX_ROWS_PER_STREAM,
    CsvHeaderError,
    CsvRowReader,
    RawRow,
    RowError,
    rows_from_bars,
)
from services.market.imports.rules import BarValidator, classify
from services.market.records import Bar, Timeframe
from services.market.store import MarketStore

_MAX_VIOLATIONS = 100
# Rows committed at a time by a SKIP_INVALID stream import.
STREAM_COMMIT_ROWS = 20_000


@dataclass(slots=True)
class ImportOutcome:
    """Counts of an import, as ImportBarsResponse reports them."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)
    first_open_time: datetime | None = None
    last_open_time: datetime | None = None

    @property
    def errors_truncated(self) -> bool:
        return self.rejected > len(self.errors)

    def reject(self, error: RowError) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def accept_times(self, bars: Sequence[Bar]) -> None:
        if bars:
            first, last = bars[0].open_time, bars[-1].open_time
            self.first_open_time = first if self.first_open_time is None else min(first, self.first_open_time)
            self.last_open_time = last if self.last_open_time is None else max(last, self.last_open_time)


def rejected_error(outcome: ImportOutcome, *, source: str) -> InvalidArgument:
    """ALL_OR_NOTHING's refusal: one field violation per bad row (at most 100): "csv" with the line number for CSV,
    "bars[<index>].<field>" for bars."""

    def field_of(error: RowError) -> str:
        if source == "csv":
            return "csv"
        name = "open_time" if error.field == "time" else error.field
        return f"bars[{error.line - 1}]" + (f".{name}" if name else "")

    violations = [
        FieldViolation(field_of(error), f"line {error.line}: {error.reason}: {error.message}")
        for error in outcome.errors[:_MAX_VIOLATIONS]
    ]
    return InvalidArgument(
        violations,
        f"{outcome.rejected} row(s) rejected; nothing was written",
        reason="BARS_REJECTED",
        metadata={"rejected_count": outcome.rejected},
    )


class BarImport:
    """One import (a call or a stream): validates rows in order and writes accepted bars atomically per commit."""

    def __init__(
        self,
        store: MarketStore,
        symbol: str,
        timeframe: Timeframe,
        *,
        skip_invalid: bool,
        validate_only: bool,
        now: datetime,
        source: str = "bars",
    ) -> None:
        self._store = store
        self.source = source
        self.symbol = symbol
        self.timeframe = timeframe
        self.skip_invalid = skip_invalid
        self.validate_only = validate_only
        self._now = now
        self._validator = BarValidator(timeframe)
        self._accepted: list[Bar] = []
        self.rows = 0
        self.outcome = ImportOutcome()

    def add(self, rows: Sequence[RawRow | RowError]) -> None:
        for row in rows:
            self.rows += 1
            result = row if isinstance(row, RowError) else self._validator.validate(row, self._now)
            if isinstance(result, RowError):
                self.outcome.reject(result)
            else:
                self._accepted.append(result)

    @property
    def pending(self) -> int:
        return len(self._accepted)

    async def commit(self) -> None:
        """Write the accepted bars so far in one transaction (nothing with validate_only)."""
        accepted, self._accepted = self._accepted, []
        if not accepted:
            return
        stored = await self._store.bars_at(self.symbol, self.timeframe, [bar.open_time for bar in accepted])
        plan = classify(accepted, stored)
        if not self.validate_only:
            await self._store.write_bars(self.symbol, self.timeframe, plan.inserts, plan.updates)
        self.outcome.inserted += len(plan.inserts)
        self.outcome.updated += len(plan.updates)
        self.outcome.unchanged += plan.unchanged
        self.outcome.accept_times(accepted)

    async def finish(self) -> ImportOutcome:
        """Commit what is left. ALL_OR_NOTHING with bad rows writes nothing and raises BARS_REJECTED (reported in the
        outcome instead with validate_only)."""
        if self.outcome.rejected and not self.skip_invalid and not self.validate_only:
            raise rejected_error(self.outcome, source=self.source)
        await self.commit()
        return self.outcome


def csv_rows(reader: CsvRowReader, data: bytes) -> list[RawRow | RowError]:
    """Every row of a whole CSV file; CSV_HEADER_INVALID for a bad header."""
    return [*csv_feed(reader, data), *csv_finish(reader)]


def csv_feed(reader: CsvRowReader, data: bytes) -> list[RawRow | RowError]:
    """The rows completed by the next chunk of a CSV stream."""
    try:
        return list(reader.feed(data))
    except CsvHeaderError as error:
        raise InvalidArgument(FieldViolation("csv", str(error)), reason="CSV_HEADER_INVALID") from None


def csv_finish(reader: CsvRowReader) -> list[RawRow | RowError]:
    """The rows left when a CSV stream ends."""
    try:
        return list(reader.finish())
    except CsvHeaderError as error:
        raise InvalidArgument(FieldViolation("csv", str(error)), reason="CSV_HEADER_INVALID") from None


class StreamImport:
    """An import fed piece by piece (ImportBarStream): CSV chunks or bar batches, never both; at most
    MAX_ROWS_PER_STREAM rows; SKIP_INVALID commits as it goes, so a broken stream keeps what arrived, while
    ALL_OR_NOTHING waits for the end."""

    def __init__(self, job: BarImport) -> None:
        self._job = job
        self._kind = ""
        self._reader: CsvRowReader | None = None
        self._position = 0

    def _payload(self, kind: str) -> None:
        if self._kind and kind != self._kind:
            raise InvalidArgument(
                FieldViolation(kind or "payload", "csv_chunk and bars cannot be mixed"), reason="SOURCE_INVALID"
            )
        self._kind = kind
        self._job.source = "csv" if kind == "csv_chunk" else "bars"

    async def add_csv(self, chunk: bytes) -> None:
        """The next chunk of a CSV file (payload `csv_chunk`)."""
        self._payload("csv_chunk")
        self._reader = self._reader or CsvRowReader()
        # Parsing and validating many rows takes CPU: off the event loop, which keeps serving.
        await self._add(await asyncio.to_thread(csv_feed, self._reader, chunk))

    async def add_bars(self, bars: Sequence[Bar], *, payload: str = "bars") -> None:
        """The next batch of bars; `payload` names the message's payload ("" for a message without one, which
        counts as an empty batch)."""
        self._payload(payload)
        rows: list[RawRow | RowError] = list(rows_from_bars(bars, first_line=self._position + 1))
        self._position += len(bars)
        await self._add(rows)

    async def _add(self, rows: list[RawRow | RowError]) -> None:
        job = self._job
        await asyncio.to_thread(job.add, rows)
        if job.rows > MAX_ROWS_PER_STREAM:
            raise InvalidArgument(
                FieldViolation("payload", f"at most {MAX_ROWS_PER_STREAM} rows per stream"), reason="IMPORT_TOO_LARGE"
            )
        if job.skip_invalid and job.pending >= STREAM_COMMIT_ROWS:
            await job.commit()

    async def finish(self) -> ImportOutcome:
        """The rows a CSV stream left pending, then the import's end (see BarImport.finish)."""
        if self._reader is not None:
            await self._add(csv_finish(self._reader))
        return await self._job.finish()
