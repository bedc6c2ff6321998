"""gRPC adapter of the market domain: decodes requests, calls the market service (or the bar imports), encodes
responses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc

from bullant.market.v1 import market_pb2, market_pb2_grpc
from services.core.auth.identity import current_identity
from services.core.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unavailable
from services.core.server import Lifecycle
from services.core.timestamps import naive_utc
from services.market.encoding import (
    backfill_progress_message,
    backfill_result_message,
    bar_message,
    bars_from_messages,
    drop_report_message,
    feed_message,
    heartbeat_message,
    instrument_from_message,
    instrument_message,
    outcome_fields,
    quote_message,
    session_from_message,
)
from services.market.imports.service import BarImports
from services.market.records import AssetClass, BarWindow, Timeframe
from services.market.service import BackfillProgress, MarketService
from services.market.streaming import Subscriber
from services.market.wire import tick_batch_response

SERVICE = market_pb2.DESCRIPTOR.services_by_name["MarketService"]
Context = grpc.aio.ServicerContext[Any, Any]
_DROP_REPORT_SECONDS = 1.0


# Lengths, patterns, counts, ranges and enum values of every request are the contract's declared rules
# (protos/bullant/market/v1/market.proto), checked by the server before a handler runs: symbols arrive well-formed,
# and are only put in their platform form here.


def _symbol(raw: str) -> str:
    """A symbol the declared rules admitted, in its platform form (upper case)."""
    return raw.upper()


def _symbols(raw: list[str]) -> list[str]:
    """Admitted symbols in platform form, each once, in the order given."""
    return list(dict.fromkeys(symbol.upper() for symbol in raw))


class MarketServicer(market_pb2_grpc.MarketServiceServicer):
    """bullant.market.v1.MarketService."""

    def __init__(self, service: MarketService, imports: BarImports, lifecycle: Lifecycle) -> None:
        self._service = service
        self._imports = imports
        self._lifecycle = lifecycle

    # -- instruments ------------------------------------------------------------------------------------------------

    async def ListInstruments(
        self, request: market_pb2.ListInstrumentsRequest, context: Context
    ) -> market_pb2.ListInstrumentsResponse:
        page = await self._service.list_instruments(
            query=request.query,
            asset_class=AssetClass(request.asset_class) if request.asset_class else None,
            venue=request.venue,
            size=request.page_size,
            page_token=request.page_token,
        )
        return market_pb2.ListInstrumentsResponse(
            instruments=[instrument_message(item) for item in page.items], next_page_token=page.next_page_token
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
        quote = await self._service.quote(_symbol(request.symbol))
        return market_pb2.GetQuoteResponse(quote=quote_message(quote))

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
        window = BarWindow(
            naive_utc(request.start_time) if request.HasField("start_time") else None,
            naive_utc(request.end_time) if request.HasField("end_time") else None,
        )
        page = await self._service.list_bars(
            symbol,
            timeframe,
            window,
            descending=request.descending,
            size=request.page_size,
            page_token=request.page_token,
        )
        return market_pb2.ListBarsResponse(
            bars=[bar_message(bar) for bar in page.items], next_page_token=page.next_page_token
        )

    async def ImportBars(
        self, request: market_pb2.ImportBarsRequest, context: Context
    ) -> market_pb2.ImportBarsResponse:
        outcome = await self._imports.import_bars(
            _symbol(request.symbol),
            Timeframe(request.timeframe),
            csv=request.csv,
            bars=bars_from_messages(request.bars),
            skip_invalid=request.mode == market_pb2.IMPORT_MODE_SKIP_INVALID,
            validate_only=request.validate_only,
        )
        return market_pb2.ImportBarsResponse(**outcome_fields(outcome))

    async def ImportBarStream(
        self, request_iterator: AsyncIterator[market_pb2.ImportBarStreamRequest], context: Context
    ) -> market_pb2.ImportBarStreamResponse:
        upload = None
        async for message in request_iterator:
            which = message.WhichOneof("payload")
            if upload is None:
                if which != "header":
                    raise InvalidArgument(
                        FieldViolation("header", "the first message must be the header"), reason="HEADER_REQUIRED"
                    )
                header = message.header
                upload = await self._imports.begin_stream(
                    _symbol(header.symbol),
                    Timeframe(header.timeframe),
                    skip_invalid=header.mode == market_pb2.IMPORT_MODE_SKIP_INVALID,
                    validate_only=header.validate_only,
                )
            elif which == "header":
                raise InvalidArgument(FieldViolation("header", "only one header"), reason="HEADER_REQUIRED")
            elif which == "csv_chunk":
                await upload.add_csv(message.csv_chunk)
            else:
                await upload.add_bars(bars_from_messages(message.bars.bars), payload=which or "")
        if upload is None:
            raise InvalidArgument(FieldViolation("header", "the stream carried no header"), reason="HEADER_REQUIRED")
        outcome = await upload.finish()
        return market_pb2.ImportBarStreamResponse(**outcome_fields(outcome))

    async def BackfillBars(
        self, request: market_pb2.BackfillBarsRequest, context: Context
    ) -> AsyncIterator[market_pb2.BackfillBarsResponse]:
        async for event in self._service.backfill(
            _symbol(request.symbol),
            Timeframe(request.timeframe),
            start=naive_utc(request.start_time),
            end=naive_utc(request.end_time) if request.HasField("end_time") else None,
            feed_id=request.feed_id,
            overwrite=request.overwrite,
        ):
            if isinstance(event, BackfillProgress):
                yield backfill_progress_message(event)
            else:
                yield backfill_result_message(event)

    # -- streaming --------------------------------------------------------------------------------------------------

    # Yields pre-encoded bytes as well as messages; the wiring installs a serializer that passes bytes through.
    async def StreamTicks(  # type: ignore[override]
        self, request: market_pb2.StreamTicksRequest, context: Context
    ) -> AsyncIterator[market_pb2.StreamTicksResponse | bytes]:
        symbols = _symbols(list(request.symbols))
        await self._service.instruments(symbols)
        batch_size = min(request.max_batch_size or 256, 4096)
        heartbeat = float(min(max(request.heartbeat_interval_seconds or 15, 1), 60))
        conflate = request.conflation != market_pb2.CONFLATION_MODE_NONE
        # Subscribe before the snapshot: a tick published meanwhile is queued, and its sequence tells it apart.
        async with self._service.tick_stream(symbols, identity=current_identity(), conflate=conflate) as subscriber:
            if not request.skip_snapshot:
                quotes = await self._service.snapshot(symbols)
                yield market_pb2.StreamTicksResponse(
                    snapshot=market_pb2.QuoteSnapshot(quotes=[quote_message(q) for q in quotes])
                )
            async for message in self._stream(subscriber, batch_size, heartbeat):
                yield message

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
                    yield drop_report_message(subscriber.take_drops(), subscriber.total_dropped)
                # Pre-encoded: the pieces of the published batches, joined (see services/market/wire.py).
                yield tick_batch_response(subscriber.take(batch_size))
                continue
            # asyncio.timeout, not wait_for: no extra task per wait (this runs once per batch per subscriber).
            try:
                async with asyncio.timeout(heartbeat):
                    await subscriber.wake.wait()
            except TimeoutError:
                yield heartbeat_message()

    # -- feeds ------------------------------------------------------------------------------------------------------

    async def ListFeeds(self, request: market_pb2.ListFeedsRequest, context: Context) -> market_pb2.ListFeedsResponse:
        page = await self._service.feeds(size=request.page_size, page_token=request.page_token)
        return market_pb2.ListFeedsResponse(
            feeds=[feed_message(view) for view in page.items], next_page_token=page.next_page_token
        )
