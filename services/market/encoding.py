"""Conversions between the market domain's records and bullant.market.v1 messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2

if TYPE_CHECKING:
    from services.market.feeds.runner import FeedStatus
    from services.market.imports.bar_import import ImportOutcome
    from services.market.service import BackfillProgress, FeedView
from services.core.timestamps import naive_utc, timestamp
from services.market.records import EPOCH, AssetClass, Bar, Instrument, Quote, Tick, TradingSession
from services.market.sessions import with_calendar


def instrument_message(item: Instrument) -> market_pb2.Instrument:
    session = with_calendar(item).trading_session
    return market_pb2.Instrument(
        symbol=item.symbol,
        venue=item.venue,
        venue_symbol=item.venue_symbol or item.symbol,
        display_name=item.display_name,
        asset_class=int(item.asset_class),  # type: ignore[arg-type]
        quote_currency=item.quote_currency,
        base_currency=item.base_currency,
        tick_size=item.tick_size,
        lot_size=item.lot_size,
        timezone=item.timezone,
        trading_session=market_pb2.TradingSession(
            always_open=session.always_open,
            open_local_time=session.open_local_time,
            close_local_time=session.close_local_time,
            description=session.description,
            calendar=session.calendar,
        ),
        feed_id=item.feed_id,
        simulated=item.simulated,
        create_time=timestamp(item.create_time),
        update_time=timestamp(item.update_time),
    )


def session_from_message(message: market_pb2.Instrument) -> TradingSession | None:
    """The instrument's trading session, None when the message has none."""
    if not message.HasField("trading_session"):
        return None
    session = message.trading_session
    return TradingSession(
        always_open=session.always_open,
        open_local_time=session.open_local_time,
        close_local_time=session.close_local_time,
        description=session.description,
        calendar=session.calendar,
    )


def instrument_from_message(message: market_pb2.Instrument) -> Instrument:
    """The instrument of a message; its time zone "" when it names none, its session always open when it has none
    (see session_from_message)."""
    return Instrument(
        symbol=message.symbol,
        venue=message.venue,
        venue_symbol=message.venue_symbol,
        display_name=message.display_name,
        asset_class=AssetClass(message.asset_class)
        if message.asset_class in AssetClass._value2member_map_
        else AssetClass.UNSPECIFIED,
        quote_currency=message.quote_currency,
        base_currency=message.base_currency,
        tick_size=message.tick_size,
        lot_size=message.lot_size,
        timezone=message.timezone,
        trading_session=session_from_message(message) or TradingSession(),
        feed_id=message.feed_id,
        simulated=message.simulated,
    )


def bar_message(bar: Bar) -> market_pb2.Bar:
    message = market_pb2.Bar(
        open_time=timestamp(bar.open_time),
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
    )
    if bar.trade_count is not None:
        message.trade_count = bar.trade_count
    return message


def quote_message(quote: Quote) -> market_pb2.Quote:
    message = market_pb2.Quote(
        symbol=quote.symbol,
        last_price=quote.last_price,
        day_volume=quote.day_volume,
        last_tick_time=timestamp(quote.last_tick_time),
        sequence=quote.sequence,
        simulated=quote.simulated,
        stale=quote.stale,
    )
    for name in ("bid", "ask", "bid_size", "ask_size", "previous_close", "day_open", "day_high", "day_low"):
        value = getattr(quote, name)
        if value is not None:
            setattr(message, name, value)
    change, change_percent = quote.change, quote.change_percent
    if change is not None:
        message.change = change
    if change_percent is not None:
        message.change_percent = change_percent
    return message


def tick_message(tick: Tick) -> market_pb2.Tick:
    message = market_pb2.Tick(
        symbol=tick.symbol,
        event_time=timestamp(tick.event_time),
        price=tick.price,
        size=tick.size,
        aggressor_side=tick.aggressor_side,  # type: ignore[arg-type]
        sequence=tick.sequence,
    )
    if tick.bid is not None:
        message.bid = tick.bid
    if tick.ask is not None:
        message.ask = tick.ask
    if tick.bid_size is not None:
        message.bid_size = tick.bid_size
    if tick.ask_size is not None:
        message.ask_size = tick.ask_size
    return message


def encode_ticks(ticks: Sequence[Tick], sequences: Sequence[int] | None = None) -> bytes:
    """The wire form of a TickBatch: what the feed leader publishes. `sequences` overrides the ticks' own numbers.

    This runs for every tick the platform publishes, so it avoids the general converters: event times of naive-UTC
    datetimes become Timestamp fields by integer arithmetic, once per distinct time.
    """
    batch = market_pb2.TickBatch()
    add = batch.ticks.add
    numbers = sequences if sequences is not None else [tick.sequence for tick in ticks]
    last_time: datetime | None = None
    seconds = nanos = 0
    for tick, sequence in zip(ticks, numbers, strict=True):
        if tick.event_time is not last_time:
            last_time = tick.event_time
            delta = last_time - EPOCH
            seconds, nanos = delta.days * 86_400 + delta.seconds, delta.microseconds * 1000
        message = add(
            symbol=tick.symbol,
            price=tick.price,
            size=tick.size,
            aggressor_side=tick.aggressor_side,
            sequence=sequence,
        )
        stamp = message.event_time
        stamp.seconds = seconds
        stamp.nanos = nanos
        if tick.bid is not None:
            message.bid = tick.bid
        if tick.ask is not None:
            message.ask = tick.ask
        if tick.bid_size is not None:
            message.bid_size = tick.bid_size
        if tick.ask_size is not None:
            message.ask_size = tick.ask_size
    return batch.SerializeToString()


def outcome_fields(outcome: ImportOutcome) -> dict[str, Any]:
    """The fields of ImportBarsResponse / ImportBarStreamResponse for an import's outcome."""
    return {
        "inserted_count": outcome.inserted,
        "updated_count": outcome.updated,
        "unchanged_count": outcome.unchanged,
        "rejected_count": outcome.rejected,
        "errors": [
            market_pb2.RowError(line=e.line, field=e.field, reason=e.reason, message=e.message) for e in outcome.errors
        ],
        "errors_truncated": outcome.errors_truncated,
        "first_open_time": timestamp(outcome.first_open_time),
        "last_open_time": timestamp(outcome.last_open_time),
    }


def bars_from_messages(bars: Any) -> list[Bar]:
    """Bar messages as domain bars (a missing open_time stays None for validation to report)."""
    return [
        Bar(
            naive_utc(bar.open_time) if bar.HasField("open_time") else None,  # type: ignore[arg-type]
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.trade_count if bar.HasField("trade_count") else None,
        )
        for bar in bars
    ]


def backfill_progress_message(event: BackfillProgress) -> market_pb2.BackfillBarsResponse:
    return market_pb2.BackfillBarsResponse(
        progress=market_pb2.BackfillProgress(
            fetched_count=event.fetched,
            written_count=event.written,
            through_time=timestamp(event.through_time),
            percent_complete=event.percent,
        )
    )


def backfill_result_message(outcome: ImportOutcome) -> market_pb2.BackfillBarsResponse:
    fields = outcome_fields(outcome)
    for name in ("errors", "errors_truncated"):
        fields.pop(name)
    return market_pb2.BackfillBarsResponse(result=market_pb2.BackfillResult(**fields))


def heartbeat_message() -> market_pb2.StreamTicksResponse:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return market_pb2.StreamTicksResponse(heartbeat=common_pb2.Heartbeat(server_time=stamp))


def drop_report_message(drops: dict[str, int], total_dropped: int) -> market_pb2.StreamTicksResponse:
    return market_pb2.StreamTicksResponse(
        drops=market_pb2.DropReport(
            symbols=[market_pb2.SymbolDropCount(symbol=s, dropped_count=c) for s, c in sorted(drops.items())],
            total_dropped_count=total_dropped,
        )
    )


_TRANSPORTS = {
    "internal": market_pb2.FEED_TRANSPORT_INTERNAL,
    "streaming": market_pb2.FEED_TRANSPORT_STREAMING,
    "polling": market_pb2.FEED_TRANSPORT_POLLING,
}


def feed_message(view: FeedView) -> market_pb2.Feed:
    """A configured feed as its leader reports it, or DOWN when no replica runs it."""
    status: FeedStatus | None = view.status
    if status is None:
        return market_pb2.Feed(
            feed_id=view.feed_id,
            state=market_pb2.FEED_STATE_DOWN,
            state_reason="no replica holds this feed's leader lock",
        )
    return market_pb2.Feed(
        feed_id=status.feed_id,
        adapter=status.adapter,
        display_name=status.display_name,
        simulated=status.simulated,
        state=int(status.state),  # type: ignore[arg-type]
        state_reason=status.state_reason,
        state_change_time=_iso(status.state_change_time),
        transport=_TRANSPORTS.get(status.transport, market_pb2.FEED_TRANSPORT_UNSPECIFIED),
        symbol_count=status.symbol_count,
        stale_symbols=status.stale_symbols,
        last_tick_time=_iso(status.last_tick_time),
        ticks_per_second=status.ticks_per_second,
        reconnect_count=status.reconnect_count,
        leader=status.leader,
    )


def _iso(text: str) -> Timestamp | None:
    if not text:
        return None
    try:
        return timestamp(datetime.fromisoformat(text))
    except ValueError:
        return None
