"""Trading calendars: the next bars' open times against exchange_calendars' own sessions and minutes and against
hand-checked dates (weekends, US and Korean holidays, early closes, a lunch break, the FX week), bars a year, and
the calendar an instrument's venue or asset class gives."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import exchange_calendars
import numpy as np
import pytest

from services.core.calendars import (
    CalendarRangeError,
    calendar_name,
    calendar_now,
    default_calendar,
    venue_calendar,
)
from services.core.timeframes import EPOCH, Timeframe


def test_a_daily_forecast_from_a_friday_skips_the_weekend() -> None:
    # The case: from Friday 2013-03-01 the fifth bar is Friday 2013-03-08.
    assert calendar_now("XNAS").bar_open_times(datetime(2013, 3, 1), Timeframe.D1, 5) == [
        datetime(2013, 3, day) for day in (4, 5, 6, 7, 8)
    ]


def test_holidays_and_early_closes_are_skipped() -> None:
    nyse = calendar_now("XNYS")
    # Good Friday 2013-03-29: from Thursday the next session is Monday.
    assert nyse.bar_open_times(datetime(2013, 3, 28), Timeframe.D1, 2) == [datetime(2013, 4, 1), datetime(2013, 4, 2)]
    # Thursday's last minute (15:59 New York, 19:59 UTC), then Monday's open (09:30 EDT, 13:30 UTC).
    assert nyse.bar_open_times(datetime(2013, 3, 28, 19, 58), Timeframe.M1, 3) == [
        datetime(2013, 3, 28, 19, 59),
        datetime(2013, 4, 1, 13, 30),
        datetime(2013, 4, 1, 13, 31),
    ]
    # Hour bars are aligned to UTC hours: the 13:00 bar holds the first half hour after a 13:30 open.
    assert nyse.bar_open_times(datetime(2013, 3, 28, 19, 0), Timeframe.H1, 2) == [
        datetime(2013, 4, 1, 13, 0),
        datetime(2013, 4, 1, 14, 0),
    ]
    # The day after Thanksgiving closes at 13:00 (18:00 UTC); the next bar is Monday's first.
    assert nyse.bar_open_times(datetime(2013, 11, 29, 17, 59), Timeframe.M1, 1) == [datetime(2013, 12, 2, 14, 30)]
    korea = calendar_now("XKRX")
    # Seollal 2024: Friday 9 February to Monday 12 February (a substitute holiday) are closed.
    assert korea.bar_open_times(datetime(2024, 2, 8), Timeframe.D1, 3) == [
        datetime(2024, 2, 13),
        datetime(2024, 2, 14),
        datetime(2024, 2, 15),
    ]
    # 15:29 Seoul time is 06:29 UTC; Tuesday opens at 09:00 (00:00 UTC).
    assert korea.bar_open_times(datetime(2024, 2, 8, 6, 29), Timeframe.M1, 1) == [datetime(2024, 2, 13, 0, 0)]


def test_crypto_never_closes_and_fx_closes_for_the_weekend() -> None:
    assert calendar_now("24/7").bar_open_times(datetime(2024, 3, 8, 23, 59), Timeframe.M1, 2) == [
        datetime(2024, 3, 9, 0, 0),
        datetime(2024, 3, 9, 0, 1),
    ]
    assert calendar_now("24/7").bar_open_times(datetime(2024, 3, 8), Timeframe.D1, 2) == [
        datetime(2024, 3, 9),
        datetime(2024, 3, 10),
    ]
    fx = calendar_now("FX")
    # Friday 17:00 New York (22:00 UTC in winter) to Sunday 17:00, which is 21:00 UTC once summer time began that day.
    assert fx.bar_open_times(datetime(2024, 3, 8, 21, 58), Timeframe.M1, 3) == [
        datetime(2024, 3, 8, 21, 59),
        datetime(2024, 3, 10, 21, 0),
        datetime(2024, 3, 10, 21, 1),
    ]
    assert fx.bar_open_times(datetime(2024, 3, 8), Timeframe.D1, 1) == [datetime(2024, 3, 11)]


@pytest.mark.filterwarnings("ignore:.*values returning an ndarray")  # inside exchange_calendars
@pytest.mark.parametrize("name", ["XNYS", "XKRX", "XTKS", "XLON", "24/7"])
def test_next_bars_are_the_libraries_sessions_and_trading_minutes(name: str) -> None:
    """Against exchange_calendars' own sessions and trading minutes (lunch breaks excluded), from random moments
    (open, closed, holidays) over 2011-2015."""
    ours = calendar_now(name)
    theirs = exchange_calendars.get_calendar(name, start="2010-01-01", end="2016-12-31")
    sessions = [stamp.to_pydatetime() for stamp in theirs.sessions]
    minutes = theirs.minutes_nanos // 1_000_000_000  # seconds since the epoch, UTC
    rng = random.Random(7)
    for _ in range(30):
        moment = datetime(2011, 1, 1) + timedelta(minutes=rng.randrange(5 * 365 * 1440))
        day = Timeframe.D1.floor(moment)
        assert ours.bar_open_times(day, Timeframe.D1, 7) == [when for when in sessions if when > day][:7]
        second = int((moment - EPOCH).total_seconds())
        after = minutes[np.searchsorted(minutes, second, side="right") :][:600]
        assert ours.bar_open_times(moment, Timeframe.M1, 600) == [EPOCH + timedelta(seconds=int(m)) for m in after]
        for timeframe in (Timeframe.M5, Timeframe.H1):
            # A bar exists when the market trades in at least one of its minutes.
            span = timeframe.seconds
            later = minutes[np.searchsorted(minutes, (second // span + 1) * span) :][: 21 * span // 60]
            bars = list(dict.fromkeys((later // span * span).tolist()))[:20]
            assert ours.bar_open_times(moment, timeframe, 20) == [EPOCH + timedelta(seconds=b) for b in bars]


def test_bars_a_year() -> None:
    nyse, crypto, fx = calendar_now("XNYS"), calendar_now("24/7"), calendar_now("FX")
    assert (nyse.sessions_per_year, crypto.sessions_per_year, fx.sessions_per_year) == (252, 365, 261)
    assert nyse.bars_per_year(Timeframe.D1) == 252.0
    assert crypto.bars_per_year(Timeframe.M1) == 365 * 1440
    assert crypto.bars_per_year(Timeframe.H1) == 365 * 24
    assert fx.bars_per_year(Timeframe.M1) == 261 * 1440
    # 6.5 hours: 7 UTC hour bars a session (09:30 opens mid-hour), a few less for the early closes.
    assert 252 * 6.9 < nyse.bars_per_year(Timeframe.H1) < 252 * 7
    assert 252 * 388 < nyse.bars_per_year(Timeframe.M1) < 252 * 390


def test_the_calendar_of_a_venue_or_asset_class() -> None:
    assert [venue_calendar(venue) for venue in ("NASDAQ", "nyse", "XNYS", "KRX", "kosdaq", "LSE", "SIM", "")] == [
        "XNAS",
        "XNYS",
        "XNYS",
        "XKRX",
        "XKRX",
        "XLON",
        None,
        None,
    ]
    stock, crypto, fx, index = 1, 2, 3, 4
    assert default_calendar(stock, "NASDAQ") == "XNAS"
    assert default_calendar(index, "KRX") == "XKRX"
    assert default_calendar(stock, "OTC") is None
    assert default_calendar(crypto, "BINANCE") == "24/7"
    assert default_calendar(fx, "OTC") == "FX"
    assert [calendar_name(name) for name in ("xnas", "NYSE", "24/7", "fx", "MOON", "")] == [
        "XNAS",
        "XNYS",
        "24/7",
        "FX",
        None,
        None,
    ]


def test_dates_past_the_calendars_span_are_refused() -> None:
    with pytest.raises(CalendarRangeError):
        calendar_now("XKRX").bar_open_times(datetime(2050, 12, 20), Timeframe.D1, 30)
