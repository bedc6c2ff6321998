"""gRPC adapter of the market domain: validates and decodes requests, calls the domain, encodes responses."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bullant.common.v1 import common_pb2
from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.auth.identity import current_identity
from services.core.auth.service_identity import SERVICE_ROLE
from services.core.db.databases import utc_now
from services.core.dependencies import Dependencies
from services.core.errors import FieldViolation, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.core.paging import MOMENT, NAME, Cursor, PageTokens, page_size
from services.core.server import Lifecycle, PreEncodedResponses, ServiceRegistration
from services.market.bars import MAX_ROWS_PER_CALL, MAX_ROWS_PER_STREAM, CsvRowReader, rows_from_bars
from services.market.encoding import (
    bar_message,
    bars_from_messages,
    instrument_from_message,
    instrument_message,
    naive_utc,
    outcome_fields,
    quote_message,
    session_from_message,
    timestamp,
)
from services.market.feeds.registry import AdapterFactory
from services.market.imports import BarImport, csv_feed, csv_finish, csv_rows
from services.market.models import AssetClass, Timeframe
from services.market.runtime import build_market
from services.market.service import BackfillProgress, MarketService
from services.market.streaming import Subscriber, TickHub
from services.market.wire import tick_batch_response

SERVICE = market_pb2.DESCRIPTOR.services_by_name["MarketService"]
Context = grpc.aio.ServicerContext[Any, Any]
_DROP_REPORT_SECONDS = 1.0
# Rows committed at a time by a SKIP_INVALID stream import.
_STREAM_COMMIT_ROWS = 20_000


# Lengths, patterns, counts, ranges and enum values of every request are the contract's declared rules
# (protos/bullant/market/v1/market.proto), checked by the server before a handler runs: symbols arrive well-formed,
# and are only put in their platform form here.


def _symbol(raw: str) -> str:
    """A symbol the declared rules admitted, in its platform form (upper case)."""
    return raw.upper()


def _symbols(raw: list[str]) -> list[str]:
    """Admitted symbols in platform form, each once, in the order given."""
    return list(dict.fromkeys(symbol.upper() for symbol in raw))


def _heartbeat() -> market_pb2.StreamTicksResponse:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return market_pb2.StreamTicksResponse(heartbeat=common_pb2.Heartbeat(server_time=stamp))


# What each list's page tokens hold.
_INSTRUMENTS_CURSOR = Cursor.of("market.ListInstruments", after=NAME)
_BARS_CURSOR = Cursor.of("market.ListBars", t=MOMENT)
_FEEDS_CURSOR = Cursor.of("market.ListFeeds", after=NAME)


class MarketServicer(market_pb2_grpc.MarketServiceServicer):
    """bullant.market.v1.MarketService."""

    def __init__(
        self,
        service: MarketService,
        hub: TickHub,
        lifecycle: Lifecycle,
        *,
        queue: int,
        streams: int,
        pages: PageTokens,
    ) -> None:
        self._service = service
        self._pages = pages
        self._hub = hub
        self._lifecycle = lifecycle
        self._queue_capacity = queue
        self._max_streams = streams
        self._streams: Counter[int] = Counter()

    # -- instruments ------------------------------------------------------------------------------------------------

    async def ListInstruments(
        self, request: market_pb2.ListInstrumentsRequest, context: Context
    ) -> market_pb2.ListInstrumentsResponse:
        size = page_size(request.page_size)
        query = f"{request.query}|{request.asset_class}|{request.venue}"
        position = self._pages.decode(_INSTRUMENTS_CURSOR, request.page_token, query=query)
        after = position["after"] if position else ""
        found = await self._service.store.search_instruments(
            query=request.query.strip(),
            asset_class=AssetClass(request.asset_class) if request.asset_class else None,
            venue=request.venue.strip().upper(),
            after=after,
            limit=size + 1,
        )
        page = found[:size]
        token = ""
        if len(found) > size:
            token = self._pages.encode(_INSTRUMENTS_CURSOR, {"after": page[-1].symbol}, query=query)
        return market_pb2.ListInstrumentsResponse(
            instruments=[instrument_message(item) for item in page], next_page_token=token
        )

    async def GetInstrument(
        self, request: market_pb2.GetInstrumentRequest, context: Context
    ) -> market_pb2.GetInstrumentResponse:
        instrument = await self._service.instrument(_symbol(request.symbol))
        return market_pb2.GetInstrumentResponse(instrument=instrument_message(instrument))

    async def CreateInstrument(
        self, request: market_pb2.CreateInstrumentRequest, context: Context
    ) -> market_pb2.CreateInstrumentResponse:
        incoming = instrument_from_message(request.instrument)
        symbol = _symbol(incoming.symbol)
        created = await self._service.create_instrument(
            replace(incoming, symbol=symbol), session=session_from_message(request.instrument)
        )
        return market_pb2.CreateInstrumentResponse(instrument=instrument_message(created))

    # -- quotes -----------------------------------------------------------------------------------------------------

    async def GetQuote(self, request: market_pb2.GetQuoteRequest, context: Context) -> market_pb2.GetQuoteResponse:
        symbol = _symbol(request.symbol)
        quotes = await self._service.quotes([symbol])
        if symbol not in quotes:
            raise NotFound(f"{symbol} has no market data yet", reason="QUOTE_NOT_AVAILABLE")
        return market_pb2.GetQuoteResponse(quote=quote_message(quotes[symbol]))

    async def BatchGetQuotes(
        self, request: market_pb2.BatchGetQuotesRequest, context: Context
    ) -> market_pb2.BatchGetQuotesResponse:
        symbols = _symbols(list(request.symbols))
        quotes = await self._service.quotes(symbols)
        return market_pb2.BatchGetQuotesResponse(
            quotes=[quote_message(quotes[s]) for s in symbols if s in quotes],
            unavailable_symbols=[s for s in symbols if s not in quotes],
        )

    # -- bars -------------------------------------------------------------------------------------------------------

    async def ListBars(self, request: market_pb2.ListBarsRequest, context: Context) -> market_pb2.ListBarsResponse:
        symbol = _symbol(request.symbol)
        timeframe = Timeframe(request.timeframe)
        start = naive_utc(request.start_time) if request.HasField("start_time") else None
        end = naive_utc(request.end_time) if request.HasField("end_time") else None
        if start is not None and end is not None and not start < end:
            raise InvalidArgument(FieldViolation("start_time", "must be before end_time"), reason="TIME_RANGE_INVALID")
        size = page_size(request.page_size)
        query = f"{symbol}|{timeframe}|{start}|{end}|{request.descending}"
        position = self._pages.decode(_BARS_CURSOR, request.page_token, query=query)
        await self._service.instrument(symbol)
        if position is not None:
            cursor = position["t"]
            if request.descending:
                end = cursor
            else:
                start = cursor + timedelta(microseconds=1)
        found = await self._service.store.bars(
            symbol, timeframe, start=start, end=end, limit=size + 1, descending=request.descending
        )
        page = found[:size]
        token = self._pages.encode(_BARS_CURSOR, {"t": page[-1].open_time}, query=query) if len(found) > size else ""
        return market_pb2.ListBarsResponse(bars=[bar_message(bar) for bar in page], next_page_token=token)

    async def ImportBars(
        self, request: market_pb2.ImportBarsRequest, context: Context
    ) -> market_pb2.ImportBarsResponse:
        symbol = _symbol(request.symbol)
        timeframe = Timeframe(request.timeframe)
        if bool(request.csv) == bool(request.bars):
            raise InvalidArgument(FieldViolation("csv", "set exactly one of csv and bars"), reason="SOURCE_INVALID")
        await self._service.instrument(symbol)
        job = self._service.begin_import(
            symbol,
            timeframe,
            skip_invalid=request.mode == market_pb2.IMPORT_MODE_SKIP_INVALID,
            validate_only=request.validate_only,
            source="csv" if request.csv else "bars",
        )
        # Parsing and validating 100k rows takes seconds of CPU: off the event loop, which keeps serving.
        if request.csv:
            rows = await asyncio.to_thread(csv_rows, CsvRowReader(), request.csv)
        else:
            rows = list(rows_from_bars(bars_from_messages(request.bars)))
        if len(rows) > MAX_ROWS_PER_CALL:
            raise InvalidArgument(
                FieldViolation("bars" if request.bars else "csv", f"at most {MAX_ROWS_PER_CALL} rows per call"),
                reason="IMPORT_TOO_LARGE",
            )
        await asyncio.to_thread(job.add, rows)
        outcome = await job.finish()
        return market_pb2.ImportBarsResponse(**outcome_fields(outcome))

    async def ImportBarStream(
        self, request_iterator: AsyncIterator[market_pb2.ImportBarStreamRequest], context: Context
    ) -> market_pb2.ImportBarStreamResponse:
        job: BarImport | None = None
        reader: CsvRowReader | None = None
        kind = ""
        position = 0
        async for message in request_iterator:
            which = message.WhichOneof("payload")
            if job is None:
                if which != "header":
                    raise InvalidArgument(
                        FieldViolation("header", "the first message must be the header"), reason="HEADER_REQUIRED"
                    )
                job = await self._stream_job(message.header)
                continue
            if which == "header":
                raise InvalidArgument(FieldViolation("header", "only one header"), reason="HEADER_REQUIRED")
            if kind and which != kind:
                raise InvalidArgument(
                    FieldViolation(which or "payload", "csv_chunk and bars cannot be mixed"), reason="SOURCE_INVALID"
                )
            kind = which or ""
            job.source = "csv" if which == "csv_chunk" else "bars"
            if which == "csv_chunk":
                reader = reader or CsvRowReader()
                rows = await asyncio.to_thread(csv_feed, reader, message.csv_chunk)
            else:
                rows = list(rows_from_bars(bars_from_messages(message.bars.bars), first_line=position + 1))
                position += len(message.bars.bars)
            await self._stream_rows(job, rows)
        if job is None:
            raise InvalidArgument(FieldViolation("header", "the stream carried no header"), reason="HEADER_REQUIRED")
        if reader is not None:
            await self._stream_rows(job, csv_finish(reader))
        outcome = await job.finish()
        return market_pb2.ImportBarStreamResponse(**outcome_fields(outcome))

    async def _stream_job(self, header: market_pb2.ImportBarStreamHeader) -> BarImport:
        symbol = _symbol(header.symbol)
        timeframe = Timeframe(header.timeframe)
        await self._service.instrument(symbol)
        return self._service.begin_import(
            symbol,
            timeframe,
            skip_invalid=header.mode == market_pb2.IMPORT_MODE_SKIP_INVALID,
            validate_only=header.validate_only,
        )

    async def _stream_rows(self, job: BarImport, rows: list[Any]) -> None:
        await asyncio.to_thread(job.add, rows)
        if job.rows > MAX_ROWS_PER_STREAM:
            raise InvalidArgument(
                FieldViolation("payload", f"at most {MAX_ROWS_PER_STREAM} rows per stream"), reason="IMPORT_TOO_LARGE"
            )
        # SKIP_INVALID commits as it goes, so a broken stream keeps what arrived; ALL_OR_NOTHING waits for the end.
        if job.skip_invalid and job.pending >= _STREAM_COMMIT_ROWS:
            await job.commit()

    async def BackfillBars(
        self, request: market_pb2.BackfillBarsRequest, context: Context
    ) -> AsyncIterator[market_pb2.BackfillBarsResponse]:
        symbol = _symbol(request.symbol)
        timeframe = Timeframe(request.timeframe)
        async for event in self._service.backfill(
            symbol,
            timeframe,
            start=naive_utc(request.start_time),
            end=naive_utc(request.end_time) if request.HasField("end_time") else None,
            feed_id=request.feed_id.strip(),
            overwrite=request.overwrite,
        ):
            if isinstance(event, BackfillProgress):
                yield market_pb2.BackfillBarsResponse(
                    progress=market_pb2.BackfillProgress(
                        fetched_count=event.fetched,
                        written_count=event.written,
                        through_time=timestamp(event.through_time),
                        percent_complete=event.percent,
                    )
                )
            else:
                fields = outcome_fields(event)
                for name in ("errors", "errors_truncated"):
                    fields.pop(name)
                yield market_pb2.BackfillBarsResponse(result=market_pb2.BackfillResult(**fields))

    # -- streaming --------------------------------------------------------------------------------------------------

    # Yields pre-encoded bytes as well as messages; the registration installs a serializer that passes bytes through.
    async def StreamTicks(  # type: ignore[override]
        self, request: market_pb2.StreamTicksRequest, context: Context
    ) -> AsyncIterator[market_pb2.StreamTicksResponse | bytes]:
        symbols = _symbols(list(request.symbols))
        await self._service.instruments(symbols)
        batch_size = min(request.max_batch_size or 256, 4096)
        heartbeat = float(min(max(request.heartbeat_interval_seconds or 15, 1), 60))
        identity = current_identity()
        account = identity.account_id if identity is not None else 0
        # The limit guards against one user's many streams; the platform's own services (the gateway's shared tick
        # streams, the signal engine's) are not limited.
        limited = identity is None or SERVICE_ROLE not in identity.roles
        if limited and self._streams[account] >= self._max_streams:
            raise ResourceExhausted(
                f"at most {self._max_streams} tick streams per account on this server",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=5.0,
            )
        conflate = request.conflation != market_pb2.CONFLATION_MODE_NONE
        # Subscribe before the snapshot: a tick published meanwhile is queued, and its sequence tells it apart.
        subscriber = self._hub.subscribe(symbols, capacity=self._queue_capacity, conflate=conflate)
        self._streams[account] += 1
        try:
            if not request.skip_snapshot:
                quotes = await self._service.snapshot(symbols)
                yield market_pb2.StreamTicksResponse(
                    snapshot=market_pb2.QuoteSnapshot(quotes=[quote_message(q) for q in quotes])
                )
            async for message in self._stream(subscriber, batch_size, heartbeat):
                yield message
        finally:
            self._hub.unsubscribe(subscriber)
            self._streams[account] -= 1
            if self._streams[account] <= 0:
                del self._streams[account]

    async def _stream(
        self, subscriber: Subscriber, batch_size: int, heartbeat: float
    ) -> AsyncIterator[market_pb2.StreamTicksResponse | bytes]:
        last_report = 0.0
        while True:
            if subscriber.closed or self._lifecycle.draining.is_set():
                raise Unavailable("the server is shutting down: reconnect", reason="SERVER_DRAINING")
            if subscriber.overflowed:
                raise ResourceExhausted(
                    "the stream fell too far behind (conflation is off)", reason="SUBSCRIBER_TOO_SLOW"
                )
            if subscriber.pending:
                now = time.monotonic()
                if subscriber.dropped and now - last_report >= _DROP_REPORT_SECONDS:
                    last_report = now
                    drops = subscriber.take_drops()
                    yield market_pb2.StreamTicksResponse(
                        drops=market_pb2.DropReport(
                            symbols=[
                                market_pb2.SymbolDropCount(symbol=s, dropped_count=c) for s, c in sorted(drops.items())
                            ],
                            total_dropped_count=subscriber.total_dropped,
                        )
                    )
                # Pre-encoded: the pieces of the published batches, joined (see services/market/wire.py).
                yield tick_batch_response(subscriber.take(batch_size))
                continue
            # asyncio.timeout, not wait_for: no extra task per wait (this runs once per batch per subscriber).
            try:
                async with asyncio.timeout(heartbeat):
                    await subscriber.wake.wait()
            except TimeoutError:
                yield _heartbeat()

    # -- feeds ------------------------------------------------------------------------------------------------------

    async def ListFeeds(self, request: market_pb2.ListFeedsRequest, context: Context) -> market_pb2.ListFeedsResponse:
        size = page_size(request.page_size)
        position = self._pages.decode(_FEEDS_CURSOR, request.page_token)
        after = position["after"] if position else ""
        views = [view for view in await self._service.feeds() if view.feed_id > after]
        page = views[:size]
        feeds = []
        for view in page:
            status = view.status
            if status is None:
                feeds.append(
                    market_pb2.Feed(
                        feed_id=view.feed_id,
                        state=market_pb2.FEED_STATE_DOWN,
                        state_reason="no replica holds this feed's leader lock",
                    )
                )
                continue
            feeds.append(
                market_pb2.Feed(
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
            )
        token = self._pages.encode(_FEEDS_CURSOR, {"after": page[-1].feed_id}) if len(views) > size else ""
        return market_pb2.ListFeedsResponse(feeds=feeds, next_page_token=token)


_TRANSPORTS = {
    "internal": market_pb2.FEED_TRANSPORT_INTERNAL,
    "streaming": market_pb2.FEED_TRANSPORT_STREAMING,
    "polling": market_pb2.FEED_TRANSPORT_POLLING,
}


def _iso(text: str) -> Timestamp | None:
    if not text:
        return None
    try:
        return timestamp(datetime.fromisoformat(text))
    except ValueError:
        return None


def registration(
    deps: Dependencies,
    *,
    clock: Callable[[], datetime] = utc_now,
    factories: Mapping[str, AdapterFactory] | None = None,
) -> ServiceRegistration:
    """The market service and its components (tick hub, feed runners, history sources); `factories` replaces the
    configured feeds."""
    market = build_market(deps, clock=clock, factories=factories)
    servicer = MarketServicer(
        market.service,
        market.hub,
        deps.lifecycle,
        queue=deps.settings.stream_queue_capacity,
        streams=deps.settings.max_streams_per_account,
        pages=deps.page_tokens,
    )
    return ServiceRegistration(
        name="market",
        full_name=SERVICE.full_name,
        add_to_server=lambda server: market_pb2_grpc.add_MarketServiceServicer_to_server(
            servicer,
            PreEncodedResponses(server, {"StreamTicks"}),  # type: ignore[arg-type]
        ),
        components=market.components,
    )
