"""An instrument's trading session: the calendar it names, else its asset class's and venue's (crypto around the
clock, FX the FX week, a stock or index its exchange's), with the calendar's regular hours and time zone filled in.
An instrument stored before sessions named their calendar gets the same default when it is read."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from services.core.calendars import ALWAYS_OPEN, FX_WEEK, calendar_name, default_calendar, load_calendar
from services.core.errors import FieldViolation, InvalidArgument
from services.market.records import Instrument, TradingSession

_FIELD = "instrument.trading_session.calendar"
FX_DESCRIPTION = "FX week: Sunday 17:00 to Friday 17:00 America/New_York"


def session_calendar(instrument: Instrument) -> str:
    """The calendar an instrument trades on: the one its session names, "24/7" for an always-open session, else
    the default of its asset class and venue ("" when there is none)."""
    session = instrument.trading_session
    if session.calendar:
        return session.calendar
    if session.always_open:
        return ALWAYS_OPEN
    return default_calendar(int(instrument.asset_class), instrument.venue) or ""


def with_calendar(instrument: Instrument) -> Instrument:
    """The instrument with its session's calendar named (see session_calendar)."""
    if instrument.trading_session.calendar:
        return instrument
    session = replace(instrument.trading_session, calendar=session_calendar(instrument))
    return replace(instrument, trading_session=session)


async def resolve_session(instrument: Instrument, given: TradingSession | None) -> Instrument:
    """The instrument to create, its session from `given` (None: no session in the request) or the default, its
    time zone the calendar's when it names none. INVALID_ARGUMENT TRADING_CALENDAR_REQUIRED when a stock or index
    names no calendar and its venue is not a known exchange, TRADING_CALENDAR_UNKNOWN for a name no calendar has,
    TIMEZONE_INVALID for a time zone that is not its exchange's."""
    # Naming the calendar loads exchange_calendars the first time: off the event loop.
    name = await asyncio.to_thread(_calendar_of, instrument, given)
    calendar = await load_calendar(name)
    timezone = instrument.timezone
    given = given or TradingSession(always_open=False, description="")
    if name == ALWAYS_OPEN:
        session = TradingSession(always_open=True, description=given.description or "24/7", calendar=name)
        return replace(instrument, trading_session=session, timezone=timezone or "UTC")
    if name == FX_WEEK:
        session = TradingSession(always_open=False, description=given.description or FX_DESCRIPTION, calendar=name)
        return replace(instrument, trading_session=session, timezone=timezone or "UTC")
    if timezone and timezone != calendar.timezone:
        raise InvalidArgument(
            FieldViolation("instrument.timezone", f"the {name} calendar trades in {calendar.timezone}"),
            reason="TIMEZONE_INVALID",
        )
    opens = given.open_local_time or calendar.regular_open
    closes = given.close_local_time or calendar.regular_close
    description = given.description or (
        f"{name} sessions, {opens}-{closes} {calendar.timezone}, exchange holidays and early closes included"
    )
    session = TradingSession(
        always_open=False, open_local_time=opens, close_local_time=closes, description=description, calendar=name
    )
    return replace(instrument, trading_session=session, timezone=calendar.timezone)


def _calendar_of(instrument: Instrument, given: TradingSession | None) -> str:
    if given is not None and given.calendar:
        name = calendar_name(given.calendar)
        if name is None:
            raise InvalidArgument(
                FieldViolation(_FIELD, "is not a trading calendar: name an exchange (XNYS, XKRX, ...), 24/7 or FX"),
                reason="TRADING_CALENDAR_UNKNOWN",
            )
        if given.always_open and name != ALWAYS_OPEN:
            raise InvalidArgument(
                FieldViolation("instrument.trading_session.always_open", f"contradicts the {name} calendar")
            )
        return name
    if given is not None and given.always_open:
        return ALWAYS_OPEN
    found = default_calendar(int(instrument.asset_class), instrument.venue)
    if found is None:
        raise InvalidArgument(
            FieldViolation(
                _FIELD,
                f"venue {instrument.venue.strip()!r} is not a known exchange, so its sessions and holidays are "
                "unknown: name the calendar (XNYS, XNAS, XKRX, ...) or set always_open for a market that never closes",
            ),
            reason="TRADING_CALENDAR_REQUIRED",
        )
    return found
