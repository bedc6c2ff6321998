"""Rows to import: the limits, CSV reading (header, cells, values) and bars turned into numbered rows."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from services.core.clock import as_naive_utc
from services.market.records import EPOCH

MAX_ROWS_PER_CALL = 100_000
MAX_ROWS_PER_STREAM = 1_000_000
MAX_REPORTED_ERRORS = 1000
MAX_LINE_CHARS = 10_000

# A UTF-8 character is at most 4 bytes, so an unfinished line longer than this is certainly too long; the bound keeps
# a stream without newlines from growing the buffer.
_MAX_PENDING_BYTES = 4 * MAX_LINE_CHARS
_REQUIRED_COLUMNS = ("time", "open", "high", "low", "close", "volume")
_ALL_COLUMNS = (*_REQUIRED_COLUMNS, "trade_count")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?")
_INTEGER = re.compile(r"[+-]?\d+")
# Stricter than float(): no "1_000", but nan/inf parse so that the validator can name them NOT_FINITE.
_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
_US_PER_SECOND = 1_000_000
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected row: `line` is 1-based (CSV physical line, header = 1; bars: position, first = 1)."""

    line: int
    field: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class RawRow:
    """One input row before validation; a value is None when the input lacks it."""

    line: int
    time: datetime | None
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    trade_count: int | None = None


class CsvHeaderError(Exception):
    """The CSV header has missing, unknown or repeated columns (or there is no usable header line)."""

    def __init__(
        self, message: str, *, missing: Sequence[str] = (), unknown: Sequence[str] = (), repeated: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.unknown = tuple(unknown)
        self.repeated = tuple(repeated)


class CsvRowReader:
    """Incremental CSV reader: chunks may split lines and UTF-8 characters anywhere.

    Lines are cut on b"\\n" before decoding, which is safe because that byte never occurs inside a multi-byte UTF-8
    character. Quoted fields may contain commas and quotes but not line breaks: a line is a row.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._line = 0
        self._columns: tuple[str, ...] | None = None
        self._skipping_overlong = False

    def feed(self, chunk: bytes) -> list[RawRow | RowError]:
        out: list[RawRow | RowError] = []
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:newline]
            start = newline + 1
            self._line += 1
            if self._skipping_overlong:
                self._skipping_overlong = False  # the rest of a line already reported
                continue
            if self._pending:
                piece = bytes(self._pending) + piece
                self._pending.clear()
            self._take_line(piece, out)
        if self._skipping_overlong:
            return out
        if len(self._pending) + len(chunk) - start > _MAX_PENDING_BYTES:
            self._pending.clear()
            self._skipping_overlong = True
            out.append(self._overlong(self._line + 1))
        else:
            self._pending += chunk[start:]
        return out

    def finish(self) -> list[RawRow | RowError]:
        """Takes the last line if the input did not end with a newline; raises CsvHeaderError if there was no header."""
        out: list[RawRow | RowError] = []
        if self._pending:
            self._line += 1
            piece = bytes(self._pending)
            self._pending.clear()
            self._take_line(piece, out)
        if self._columns is None:
            raise CsvHeaderError("the CSV has no header line", missing=_REQUIRED_COLUMNS)
        return out

    def _overlong(self, line: int) -> RowError:
        if self._columns is None:
            raise CsvHeaderError(f"the header line is longer than {MAX_LINE_CHARS} characters")
        return RowError(line, "", "PARSE_ERROR", f"line is longer than {MAX_LINE_CHARS} characters")

    def _take_line(self, raw: bytes, out: list[RawRow | RowError]) -> None:
        if len(raw) > _MAX_PENDING_BYTES:
            out.append(self._overlong(self._line))
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if self._columns is None:
                raise CsvHeaderError("the header line is not valid UTF-8") from None
            out.append(RowError(self._line, "", "PARSE_ERROR", "line is not valid UTF-8"))
            return
        if self._line == 1:
            text = text.removeprefix("\ufeff")  # spreadsheet exports often start with a byte order mark
        text = text.removesuffix("\r")
        if len(text) > MAX_LINE_CHARS:
            out.append(self._overlong(self._line))
        elif not text.strip():
            return
        elif self._columns is None:
            self._columns = _parse_header(text)
        else:
            out.append(_parse_row(self._line, text, self._columns))


def _split_cells(text: str) -> list[str] | None:
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error:
        return None


def _parse_header(text: str) -> tuple[str, ...]:
    cells = _split_cells(text)
    if cells is None:
        raise CsvHeaderError("the header line is not valid CSV")
    names = [cell.strip().lower() for cell in cells]
    unknown = [name for name in names if name not in _ALL_COLUMNS]
    repeated = sorted({name for name in names if names.count(name) > 1 and name in _ALL_COLUMNS})
    missing = [name for name in _REQUIRED_COLUMNS if name not in names]
    if unknown or repeated or missing:
        problems = [
            f"{label} column{'s' if len(group) > 1 else ''}: {', '.join(repr(n) for n in group)}"
            for label, group in (("missing", missing), ("unknown", unknown), ("repeated", repeated))
            if group
        ]
        raise CsvHeaderError("; ".join(problems), missing=missing, unknown=unknown, repeated=repeated)
    return tuple(names)


def _parse_row(line: int, text: str, columns: tuple[str, ...]) -> RawRow | RowError:
    cells = _split_cells(text)
    if cells is None:
        return RowError(line, "", "PARSE_ERROR", "line is not valid CSV (check the quotes)")
    if len(cells) != len(columns):
        return RowError(line, "", "PARSE_ERROR", f"expected {len(columns)} cells, found {len(cells)}")
    by_name = {name: cell.strip() for name, cell in zip(columns, cells, strict=True)}
    # Fields are checked in canonical order, so the one reported does not depend on the file's column order.
    time = _cell(line, "time", by_name, _parse_time)
    if isinstance(time, RowError):
        return time
    numbers: list[float | None] = []
    for name in ("open", "high", "low", "close", "volume"):
        number = _cell(line, name, by_name, _parse_float)
        if isinstance(number, RowError):
            return number
        numbers.append(number)
    trade_count = _cell(line, "trade_count", by_name, _parse_int)
    if isinstance(trade_count, RowError):
        return trade_count
    open_, high, low, close, volume = numbers
    return RawRow(line, time, open_, high, low, close, volume, trade_count)


def _cell(line: int, name: str, cells: Mapping[str, str], parse: Callable[[str], _T | None]) -> _T | RowError | None:
    text = cells.get(name, "")
    if not text:
        return None if name == "trade_count" else RowError(line, name, "MISSING_VALUE", f"{name} is empty")
    value = parse(text)
    if value is None:
        expected = {"time": "an RFC 3339 time or Unix seconds", "trade_count": "an integer"}.get(name, "a number")
        return RowError(line, name, "PARSE_ERROR", f"{name} {text!r} is not {expected}")
    return value


def _parse_time(text: str) -> datetime | None:
    try:
        if _INTEGER.fullmatch(text):
            return EPOCH + timedelta(seconds=int(text))
        if _RFC3339.fullmatch(text):
            moment = datetime.fromisoformat(text.upper())
            return as_naive_utc(moment)
    except (ValueError, OverflowError):
        pass
    return None


def _parse_float(text: str) -> float | None:
    return float(text) if _FLOAT.fullmatch(text) else None


def _parse_int(text: str) -> int | None:
    try:
        return int(text) if _INTEGER.fullmatch(text) else None
    except ValueError:  # more digits than int() accepts
        return None


class BarLike(Protocol):
    """What rows_from_bars reads: records.Bar, or the servicer's decoding of a Bar message (open_time None if unset)."""

    @property
    def open_time(self) -> datetime | None: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...
    @property
    def trade_count(self) -> int | None: ...


def rows_from_bars(bars: Sequence[BarLike], first_line: int = 1) -> list[RawRow]:
    """Rows numbered from `first_line` (pass the count so far + 1 to number across a stream)."""
    return [
        RawRow(first_line + i, b.open_time, b.open, b.high, b.low, b.close, b.volume, b.trade_count)
        for i, b in enumerate(bars)
    ]
