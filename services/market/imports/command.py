"""What `bullant import-bars` says: its help, its exit codes, the summary line and the progress bar (the import
itself is BarImports.import_file)."""

from __future__ import annotations

from services.core.progress import ProgressBar
from services.market.imports.bar_import import ImportOutcome
from services.market.imports.service import Progress
from services.market.records import Timeframe

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
