"""Trading calendars: when an instrument's market is open – an exchange's sessions with its holidays, early closes and
breaks (exchange_calendars), every minute of every day (crypto, "24/7"), or the FX week ("FX") – and what follows
from it for bars: the open times of the next bars (forecast dates) and how many bars a year holds (annualisation).

Bars follow the market's convention: intraday bars are aligned to the epoch (UTC) and a bar exists when its interval
overlaps an open period (the 13:00 UTC hour bar of a 13:30 open holds its first 30 minutes); a daily bar is dated by
its session's label, at 00:00 UTC.

Building an exchange's calendar takes from a tenth of a second to a few seconds (holiday rules over decades), so
`load_calendar` builds each one once per process, in a thread."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from services.core.timeframes import EPOCH, Timeframe

ALWAYS_OPEN = "24/7"
FX_WEEK = "FX"
# The span every calendar is built over (clamped to what its holiday rules support).
FIRST_YEAR, LAST_YEAR = 1970, 2060
# The years whose average gives a calendar's sessions a year: fixed, so annualised figures do not move with the date.
REFERENCE_YEARS = (2015, 2024)
_NS = 1_000_000_000
Ints = npt.NDArray[np.int64]

# Venue codes as users and data vendors write them, to the exchange's calendar (ISO 10383 MIC, as exchange_calendars
# names it). A venue that is itself a calendar's name or alias (XNYS, XKRX, NYSE, LSE, ...) needs no entry.
_VENUE_CALENDARS = {
    "NASDAQ": "XNAS",
    "NASDAQGS": "XNAS",
    "NASDAQGM": "XNAS",
    "NASDAQCM": "XNAS",
    "AMEX": "XASE",
    "NYSEAMERICAN": "XASE",
    "NYSEARCA": "ARCX",
    "ARCA": "ARCX",
    "KRX": "XKRX",
    "KSE": "XKRX",
    "KOSPI": "XKRX",
    "KOSDAQ": "XKRX",
    "TSE": "XTKS",
    "TYO": "XTKS",
    "HKG": "XHKG",
    "SGX": "XSES",
    "XETRA": "XETR",
    "EURONEXT": "XPAR",
    "TWSE": "XTAI",
    "NSE": "XBOM",
}


class CalendarRangeError(ValueError):
    """A time outside the span the calendar was built over."""


@functools.cache
def _known_names() -> dict[str, str]:
    """Every accepted calendar name (exchange_calendars' names and aliases, FX), upper-cased, to the name kept: an
    exchange's MIC (an alias that is one, such as XNAS, stays: it names the instrument's exchange) or the library's
    name for the other aliases (NYSE → XNYS, LSE → XLON)."""
    import exchange_calendars  # noqa: PLC0415 - pandas and the holiday rules load on first use

    names = {}
    for name in exchange_calendars.get_calendar_names(include_aliases=True):
        is_mic = re.fullmatch(r"X[A-Z]{3}|ARCX", name) is not None
        names[name.upper()] = name if is_mic else exchange_calendars.resolve_alias(name)
    names[FX_WEEK] = FX_WEEK
    return names


def calendar_name(name: str) -> str | None:
    """The calendar called `name` (case-insensitive, see _known_names), None when unknown."""
    return _known_names().get(name.strip().upper()) if name.strip() else None


def venue_calendar(venue: str) -> str | None:
    """The calendar of an exchange named by its venue code (NASDAQ → XNAS, KRX → XKRX, XNYS → XNYS), None when the
    venue is not a known exchange."""
    code = re.sub(r"[\s_-]", "", venue.strip().upper())
    mapped = _VENUE_CALENDARS.get(code)
    if mapped is not None:
        return mapped
    found = calendar_name(code)
    return found if found not in (None, ALWAYS_OPEN, "24/5", FX_WEEK) else None


def default_calendar(asset_class: int, venue: str) -> str | None:
    """The calendar an instrument of `asset_class` (bullant.market.v1.AssetClass numbers) at `venue` trades on when
    none is named: around the clock for crypto, the FX week for currencies, the exchange's for stocks and indices
    (None when the venue is not a known exchange)."""
    if asset_class == 2:  # CRYPTO
        return ALWAYS_OPEN
    if asset_class == 3:  # FX
        return FX_WEEK
    return venue_calendar(venue)


def _fx_calendar_class() -> type:
    from exchange_calendars import ExchangeCalendar  # noqa: PLC0415

    class FxWeekCalendar(ExchangeCalendar):  # type: ignore[misc]  # an untyped base class
        """Spot FX: sessions Monday to Friday, each from 17:00 New York time the day before to 17:00 (the market
        opens Sunday 17:00 and closes Friday 17:00); no holidays."""

        name = FX_WEEK
        tz = ZoneInfo("America/New_York")
        open_times = ((None, time(17)),)
        close_times = ((None, time(17)),)

        @property
        def open_offset(self) -> int:
            return -1

    return FxWeekCalendar


def _build(name: str) -> TradingCalendar:
    import exchange_calendars  # noqa: PLC0415
    import pandas as pd  # type: ignore[import-untyped]  # noqa: PLC0415

    if name == FX_WEEK:
        kind: Any = _fx_calendar_class()
    else:
        canonical = exchange_calendars.resolve_alias(name)
        # The class, for its bounds: from the library's table, else from a calendar of its default span.
        kind = exchange_calendars.calendar_utils._default_calendar_factories.get(canonical) or type(
            exchange_calendars.get_calendar(canonical)
        )
    start, end = pd.Timestamp(f"{FIRST_YEAR}-01-01"), pd.Timestamp(f"{LAST_YEAR}-12-31")
    bound_min, bound_max = kind.bound_min(), kind.bound_max()
    start = max(start, bound_min) if bound_min is not None else start
    end = min(end, bound_max) if bound_max is not None else end
    with warnings.catch_warnings():
        # exchange_calendars reads Series.values of tz-aware columns, which pandas 3.1 deprecates: its concern.
        warnings.filterwarnings("ignore", message=".*values returning an ndarray")
        calendar = kind(start=start, end=end)
    schedule = calendar.schedule

    def seconds(column: str) -> Ints:
        values = schedule[column]
        stamps = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        missing = np.isnat(stamps)
        result: Ints = np.where(missing, -1, stamps.astype(np.int64) // _NS)
        return result

    labels = schedule.index.to_numpy(dtype="datetime64[D]").astype(np.int64)
    return TradingCalendar(
        name=name,
        timezone=str(calendar.tz),
        regular_open=calendar.open_times[-1][1].strftime("%H:%M"),
        regular_close=calendar.close_times[-1][1].strftime("%H:%M"),
        labels=labels,
        opens=seconds("open"),
        closes=seconds("close"),
        break_starts=seconds("break_start"),
        break_ends=seconds("break_end"),
    )


_built: dict[str, TradingCalendar] = {}
_building = threading.Lock()


def calendar_now(name: str) -> TradingCalendar:
    """The calendar called `name` (see calendar_name), built on first use (blocking: prefer load_calendar on an event
    loop); ValueError for an unknown name."""
    spelled = calendar_name(name)
    if spelled is None:
        raise ValueError(f"unknown trading calendar {name!r}")
    found = _built.get(spelled)
    if found is None:
        with _building:
            found = _built.get(spelled)
            if found is None:
                found = _built[spelled] = _build(spelled)
    return found


async def load_calendar(name: str) -> TradingCalendar:
    """calendar_now, looked up and built in a thread the first time (loading exchange_calendars and pandas takes a
    second or more) so the event loop keeps serving; ValueError for an unknown name."""
    cached = _built.get(name)
    return cached if cached is not None else await asyncio.to_thread(calendar_now, name)


# Compared by identity (one instance per calendar and process), which lets it cache derived figures.
@dataclass(frozen=True, kw_only=True, eq=False)
class TradingCalendar:
    """A calendar's sessions as arrays: session labels (days since the epoch) and, in seconds since the epoch (UTC),
    each session's open, close and break (-1: no break), ascending; its time zone and its latest regular open and
    close there ("HH:MM")."""

    name: str
    timezone: str
    regular_open: str
    regular_close: str
    labels: Ints
    opens: Ints
    closes: Ints
    break_starts: Ints
    break_ends: Ints

    @property
    def first_day(self) -> date:
        return (EPOCH + timedelta(days=int(self.labels[0]))).date()

    @property
    def last_day(self) -> date:
        return (EPOCH + timedelta(days=int(self.labels[-1]))).date()

    def is_open(self, moment: datetime) -> bool:
        """Whether `moment` (naive UTC) falls in an open period."""
        second = _seconds(moment)
        index = int(np.searchsorted(self.closes, second, side="right"))
        if index >= len(self.closes) or second < self.opens[index]:
            return False
        in_break = self.break_starts[index] >= 0 and self.break_starts[index] <= second < self.break_ends[index]
        return not in_break

    def bar_open_times(self, after: datetime, timeframe: Timeframe, count: int) -> list[datetime]:
        """The open times of the first `count` bars of `timeframe` that open after `after` (naive UTC) while the
        market is open; CalendarRangeError when they run past the calendar's span."""
        if timeframe is Timeframe.D1:
            day = (after - EPOCH).days
            first = int(np.searchsorted(self.labels, day, side="right"))
            chosen = self.labels[first : first + count]
            if len(chosen) < count:
                raise CalendarRangeError(f"the {self.name} calendar ends on {self.last_day}")
            return [EPOCH + timedelta(days=int(label)) for label in chosen]
        span = timeframe.seconds
        base = _seconds(after)
        if base < self.opens[0]:
            raise CalendarRangeError(f"the {self.name} calendar starts on {self.first_day}")
        found: list[int] = []
        index = int(np.searchsorted(self.closes, base, side="right"))
        while len(found) < count:
            if index >= len(self.closes):
                raise CalendarRangeError(f"the {self.name} calendar ends on {self.last_day}")
            for start, end in self._periods(index):
                if end <= base:
                    continue
                first = max(start // span * span, (base // span + 1) * span)
                if found and first <= found[-1]:
                    first = found[-1] + span
                last = (end - 1) // span * span
                if first <= last:
                    found.extend(range(first, min(last + span, first + (count - len(found)) * span), span))
            index += 1
        return [EPOCH + timedelta(seconds=second) for second in found[:count]]

    def _periods(self, index: int) -> list[tuple[int, int]]:
        opens, closes = int(self.opens[index]), int(self.closes[index])
        if self.break_starts[index] < 0:
            return [(opens, closes)]
        return [(opens, int(self.break_starts[index])), (int(self.break_ends[index]), closes)]

    @functools.cached_property
    def sessions_per_year(self) -> int:
        """Sessions in an average year of REFERENCE_YEARS (or of the years the calendar spans, when it does not
        reach them), rounded: 252 for the NYSE, 365 around the clock, 261 for the FX week."""
        first, last = self._reference()
        return round(int(np.count_nonzero(self._in_years(first, last))) / (last - first + 1))

    def bars_per_year(self, timeframe: Timeframe) -> float:
        """Bars of `timeframe` in a year: sessions_per_year × the average bars a session holds (over the same years;
        a session's bar that overlaps the previous one's, as on a market that never closes, counts once)."""
        if timeframe is Timeframe.D1:
            return float(self.sessions_per_year)
        return self.sessions_per_year * self._bars_per_session(timeframe.seconds)

    @functools.cache  # noqa: B019 - a handful of timeframes per calendar, which lives as long as the process
    def _bars_per_session(self, span: int) -> float:
        first, last = self._reference()
        chosen = self._in_years(first, last)
        opens, closes = self.opens[chosen], self.closes[chosen]
        break_starts, break_ends = self.break_starts[chosen], self.break_ends[chosen]
        has_break = break_starts >= 0
        # Every open period (a session, or its two halves around a break), in time order.
        starts = np.concatenate((opens, break_ends[has_break]))
        ends = np.concatenate((np.where(has_break, break_starts, closes), closes[has_break]))
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], ends[order]
        first_bars, last_bars = starts // span, (ends - 1) // span
        shared = int(np.count_nonzero(first_bars[1:] == last_bars[:-1]))
        return (int((last_bars - first_bars + 1).sum()) - shared) / int(np.count_nonzero(chosen))

    def _reference(self) -> tuple[int, int]:
        first_year = (EPOCH + timedelta(days=int(self.labels[0]))).year + 1
        last_year = (EPOCH + timedelta(days=int(self.labels[-1]))).year - 1
        first, last = REFERENCE_YEARS
        if first_year > first or last_year < last:
            first, last = first_year, max(first_year, last_year)
        return first, last

    def _in_years(self, first: int, last: int) -> npt.NDArray[np.bool_]:
        low = (datetime(first, 1, 1) - EPOCH).days
        high = (datetime(last + 1, 1, 1) - EPOCH).days
        chosen: npt.NDArray[np.bool_] = (self.labels >= low) & (self.labels < high)
        return chosen


def _seconds(moment: datetime) -> int:
    delta = moment - EPOCH
    return delta.days * 86_400 + delta.seconds
