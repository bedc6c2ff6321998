"""Persistence of instruments and OHLCV bars in the global database (SQLAlchemy Core)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.clock import utc_now
from services.core.db.databases import Databases
from services.core.db.schema import DOUBLE_PRECISION, global_metadata
from services.core.errors import AlreadyExists
from services.market.records import AssetClass, Bar, Instrument, Timeframe, TradingSession

# Prices must round-trip exactly so re-imports compare equal.
PRICE = DOUBLE_PRECISION

instruments = Table(
    "instruments",
    global_metadata,
    Column("symbol", String(32), primary_key=True),
    Column("venue", String(32), nullable=False),
    Column("venue_symbol", String(64), nullable=False),
    Column("display_name", String(128), nullable=False, server_default=""),
    Column("asset_class", SmallInteger, nullable=False),
    Column("quote_currency", String(16), nullable=False),
    Column("base_currency", String(16), nullable=False, server_default=""),
    Column("tick_size", PRICE, nullable=False, server_default="0"),
    Column("lot_size", PRICE, nullable=False, server_default="0"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    # TradingSession as JSON: always_open, open/close local times, description, calendar.
    Column("trading_session", Text, nullable=False),
    Column("feed_id", String(64), nullable=False, server_default="", index=True),
    Column("simulated", Boolean, nullable=False, server_default="0"),
    Column("create_time", DateTime(timezone=False), nullable=False),
    Column("update_time", DateTime(timezone=False), nullable=False),
    comment="The instrument catalogue.",
)

bars = Table(
    "bars",
    global_metadata,
    Column("symbol", String(32), primary_key=True),
    # bullant.common.v1.Timeframe number.
    Column("timeframe", SmallInteger, primary_key=True, autoincrement=False),
    Column("open_time", DateTime(timezone=False), primary_key=True),
    Column("open", PRICE, nullable=False),
    Column("high", PRICE, nullable=False),
    Column("low", PRICE, nullable=False),
    Column("close", PRICE, nullable=False),
    Column("volume", PRICE, nullable=False),
    Column("trade_count", BigInteger, nullable=True),
    comment="OHLCV bars keyed by (symbol, timeframe, open_time): re-imports are idempotent.",
)

# Rows per INSERT statement: big enough to amortise round trips, small enough for MySQL's packet limit.
_WRITE_CHUNK = 2000


def _session_json(session: TradingSession) -> str:
    return json.dumps(
        {
            "always_open": session.always_open,
            "open_local_time": session.open_local_time,
            "close_local_time": session.close_local_time,
            "description": session.description,
            "calendar": session.calendar,
        },
        sort_keys=True,
    )


def _session(text: str) -> TradingSession:
    try:
        value = json.loads(text)
        return TradingSession(
            always_open=bool(value.get("always_open", True)),
            open_local_time=str(value.get("open_local_time", "")),
            close_local_time=str(value.get("close_local_time", "")),
            description=str(value.get("description", "")),
            calendar=str(value.get("calendar", "")),
        )
    except (ValueError, AttributeError):
        return TradingSession()


def _instrument(row: Row[Any]) -> Instrument:
    return Instrument(
        symbol=str(row.symbol),
        venue=str(row.venue),
        venue_symbol=str(row.venue_symbol),
        display_name=str(row.display_name),
        asset_class=AssetClass(int(row.asset_class)),
        quote_currency=str(row.quote_currency),
        base_currency=str(row.base_currency),
        tick_size=float(row.tick_size),
        lot_size=float(row.lot_size),
        timezone=str(row.timezone),
        trading_session=_session(str(row.trading_session)),
        feed_id=str(row.feed_id),
        simulated=bool(row.simulated),
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _values(instrument: Instrument) -> dict[str, Any]:
    return {
        "venue": instrument.venue,
        "venue_symbol": instrument.venue_symbol or instrument.symbol,
        "display_name": instrument.display_name,
        "asset_class": int(instrument.asset_class),
        "quote_currency": instrument.quote_currency,
        "base_currency": instrument.base_currency,
        "tick_size": instrument.tick_size,
        "lot_size": instrument.lot_size,
        "timezone": instrument.timezone,
        "trading_session": _session_json(instrument.trading_session),
        "feed_id": instrument.feed_id,
        "simulated": instrument.simulated,
    }


def _bar(row: Row[Any]) -> Bar:
    return Bar(
        row.open_time,
        float(row.open),
        float(row.high),
        float(row.low),
        float(row.close),
        float(row.volume),
        None if row.trade_count is None else int(row.trade_count),
    )


def _bar_values(symbol: str, timeframe: Timeframe, bar: Bar) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timeframe": int(timeframe),
        "open_time": bar.open_time,
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "trade_count": bar.trade_count,
    }


class MarketStore:
    """Instruments and bars."""

    def __init__(self, databases: Databases) -> None:
        self._databases = databases

    # -- instruments ------------------------------------------------------------------------------------------------

    async def create_instrument(self, instrument: Instrument) -> Instrument:
        """Insert a new instrument; AlreadyExists SYMBOL_TAKEN when the symbol exists."""
        now = utc_now()

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                insert(instruments).values(
                    symbol=instrument.symbol, create_time=now, update_time=now, **_values(instrument)
                )
            )

        try:
            await self._databases.run_global(work)
        except IntegrityError:
            raise AlreadyExists(f"instrument {instrument.symbol} exists", reason="SYMBOL_TAKEN") from None
        return replace(instrument, create_time=now, update_time=now)

    async def upsert_instruments(self, items: Sequence[Instrument]) -> None:
        """Insert the feed's instruments, updating the attributes of those that changed (feeds own theirs)."""
        if not items:
            return
        now = utc_now()

        async def work(connection: AsyncConnection) -> None:
            symbols = [item.symbol for item in items]
            existing = {
                str(row.symbol): row
                for row in (await connection.execute(select(instruments).where(instruments.c.symbol.in_(symbols))))
            }
            for item in items:
                values = _values(item)
                row = existing.get(item.symbol)
                if row is None:
                    await connection.execute(
                        insert(instruments).values(symbol=item.symbol, create_time=now, update_time=now, **values)
                    )
                elif any(getattr(row, key) != value for key, value in values.items()):
                    await connection.execute(
                        update(instruments).where(instruments.c.symbol == item.symbol).values(update_time=now, **values)
                    )

        await self._databases.run_global(work)

    async def instrument(self, symbol: str) -> Instrument | None:
        async def work(connection: AsyncConnection) -> Instrument | None:
            row = (await connection.execute(select(instruments).where(instruments.c.symbol == symbol))).first()
            return None if row is None else _instrument(row)

        return await self._databases.run_global(work)

    async def instruments(self, symbols: Sequence[str]) -> dict[str, Instrument]:
        async def work(connection: AsyncConnection) -> dict[str, Instrument]:
            rows = await connection.execute(select(instruments).where(instruments.c.symbol.in_(list(symbols))))
            return {str(row.symbol): _instrument(row) for row in rows}

        return await self._databases.run_global(work)

    async def search_instruments(
        self, *, query: str, asset_class: AssetClass | None, venue: str, after: str, limit: int
    ) -> list[Instrument]:
        """Instruments matching the filters with symbols after `after`, ordered by symbol."""
        statement = select(instruments).where(instruments.c.symbol > after)
        if query:
            escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            statement = statement.where(
                or_(
                    func.lower(instruments.c.symbol).like(pattern, escape="\\"),
                    func.lower(instruments.c.venue_symbol).like(pattern, escape="\\"),
                    func.lower(instruments.c.display_name).like(pattern, escape="\\"),
                )
            )
        if asset_class is not None:
            statement = statement.where(instruments.c.asset_class == int(asset_class))
        if venue:
            statement = statement.where(instruments.c.venue == venue)
        statement = statement.order_by(instruments.c.symbol).limit(limit)

        async def work(connection: AsyncConnection) -> list[Instrument]:
            return [_instrument(row) for row in (await connection.execute(statement)).all()]

        return await self._databases.run_global(work)

    # -- bars -------------------------------------------------------------------------------------------------------

    async def bars(
        self,
        symbol: str,
        timeframe: Timeframe,
        *,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        descending: bool = False,
    ) -> list[Bar]:
        """Stored bars with start <= open_time < end, in open_time order (newest first when descending)."""
        statement = select(bars).where(and_(bars.c.symbol == symbol, bars.c.timeframe == int(timeframe)))
        if start is not None:
            statement = statement.where(bars.c.open_time >= start)
        if end is not None:
            statement = statement.where(bars.c.open_time < end)
        order = bars.c.open_time.desc() if descending else bars.c.open_time
        statement = statement.order_by(order).limit(limit)

        async def work(connection: AsyncConnection) -> list[Bar]:
            return [_bar(row) for row in (await connection.execute(statement)).all()]

        return await self._databases.run_global(work)

    async def bars_at(self, symbol: str, timeframe: Timeframe, open_times: Sequence[datetime]) -> dict[datetime, Bar]:
        """The stored bars among `open_times`, by open time."""
        if not open_times:
            return {}
        first, last = min(open_times), max(open_times)
        found = await self.bars(symbol, timeframe, start=first, end=last + timeframe.delta, limit=10_000_000)
        wanted = set(open_times)
        return {bar.open_time: bar for bar in found if bar.open_time in wanted}

    async def write_bars(
        self, symbol: str, timeframe: Timeframe, inserts: Sequence[Bar], updates: Sequence[Bar]
    ) -> None:
        """Insert new bars and replace changed ones, all in one transaction: a batch is never half-written."""
        if not inserts and not updates:
            return

        async def work(connection: AsyncConnection) -> None:
            await _write(connection, symbol, timeframe, inserts, updates)

        await self._databases.run_global(work)

    async def write_bars_if_absent(self, symbol: str, timeframe: Timeframe, items: Sequence[Bar]) -> int:
        """Insert the bars whose open time is not stored yet (live bars, backfill); how many were inserted."""
        if not items:
            return 0
        stored = await self.bars_at(symbol, timeframe, [bar.open_time for bar in items])
        fresh = [bar for bar in items if bar.open_time not in stored]
        try:
            await self.write_bars(symbol, timeframe, fresh, [])
        except IntegrityError:
            # Another writer stored some of them meanwhile; write the rest one by one.
            inserted = 0
            for bar in fresh:
                try:
                    await self.write_bars(symbol, timeframe, [bar], [])
                    inserted += 1
                except IntegrityError:
                    continue
            return inserted
        return len(fresh)

    async def last_bar(self, symbol: str, timeframe: Timeframe, before: datetime | None = None) -> Bar | None:
        found = await self.bars(symbol, timeframe, start=None, end=before, limit=1, descending=True)
        return found[0] if found else None

    async def delete_bars(self, symbol: str, timeframe: Timeframe) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(
                delete(bars).where(and_(bars.c.symbol == symbol, bars.c.timeframe == int(timeframe)))
            )

        await self._databases.run_global(work)


async def _write(
    connection: AsyncConnection, symbol: str, timeframe: Timeframe, inserts: Sequence[Bar], updates: Sequence[Bar]
) -> None:
    rows = [_bar_values(symbol, timeframe, bar) for bar in inserts]
    for index in range(0, len(rows), _WRITE_CHUNK):
        await connection.execute(insert(bars), rows[index : index + _WRITE_CHUNK])
    for bar in updates:
        values = _bar_values(symbol, timeframe, bar)
        await connection.execute(
            update(bars)
            .where(
                and_(
                    bars.c.symbol == symbol,
                    bars.c.timeframe == int(timeframe),
                    bars.c.open_time == bar.open_time,
                )
            )
            .values({key: values[key] for key in ("open", "high", "low", "close", "volume", "trade_count")})
        )
