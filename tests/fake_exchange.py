"""A loopback HTTP server answering the public endpoints of Binance's spot REST API that ccxt's binance calls."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from services.core.clock import MonotonicClock
from services.market.records import EPOCH

# Kline intervals Binance accepts, with their lengths; "1M" (calendar months) is accepted but not served here.
INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
MAX_KLINES = 1000
MAX_TRADES = 1000
DEFAULT_LIMIT = 500
HOUR_MS = 3_600_000


def millis(moment: datetime) -> int:
    """Epoch milliseconds of a naive-UTC datetime."""
    return int((moment - EPOCH).total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class Pair:
    """One spot symbol of the fake exchange, with its filters as exchangeInfo reports them."""

    symbol: str
    base: str
    quote: str
    tick_size: str
    step_size: str
    # Klines are generated from this price (in ticks of 1 unit of the quote) upwards.
    base_price: int
    status: str = "TRADING"


@dataclass(frozen=True, slots=True)
class AggTrade:
    """An aggregated trade as /api/v3/aggTrades reports it."""

    id: int
    price: str
    qty: str
    time_ms: int
    buyer_is_maker: bool

    def json(self) -> dict[str, Any]:
        return {
            "a": self.id,
            "p": self.price,
            "q": self.qty,
            "f": self.id * 3,
            "l": self.id * 3 + 2,
            "T": self.time_ms,
            "m": self.buyer_is_maker,
            "M": True,
        }


@dataclass(frozen=True, slots=True)
class Request:
    """One request the fake received, and when (on the fake's clock)."""

    method: str
    path: str
    query: dict[str, str]
    at: float


@dataclass(slots=True)
class Failure:
    """How the fake answers the next `times` requests whose path starts with `path` (every path when empty):
    with `status`, by dropping the connection, or (`delay`) by answering normally only after that many seconds."""

    path: str = ""
    status: int = 500
    retry_after: int | None = None
    drop: bool = False
    delay: float = 0.0
    times: int = 1


@dataclass(slots=True)
class Book:
    bid: str
    bid_qty: str
    ask: str
    ask_qty: str


DEFAULT_PAIRS = (
    Pair("BTCUSDT", "BTC", "USDT", tick_size="0.01000000", step_size="0.00001000", base_price=40_000),
    Pair("ETHUSDT", "ETH", "USDT", tick_size="0.01000000", step_size="0.00010000", base_price=2_000),
)


def kline_prices(pair: Pair, open_ms: int, interval_ms: int) -> tuple[str, str, str, str, str, int]:
    """The deterministic (open, high, low, close, volume, trade count) of a pair's kline: a saw-tooth of whole
    cents so every value has an exact decimal and float form."""
    n = open_ms // interval_ms
    open_cents = pair.base_price * 100 + (n * 37) % 1000
    close_cents = pair.base_price * 100 + ((n + 1) * 37) % 1000
    high_cents = max(open_cents, close_cents) + 25
    low_cents = min(open_cents, close_cents) - 25
    volume_thousandths = 1000 + (n * 7) % 500

    def cents(value: int) -> str:
        return f"{value // 100}.{value % 100:02d}000000"

    volume = f"{volume_thousandths // 1000}.{volume_thousandths % 1000:03d}00000"
    return cents(open_cents), cents(high_cents), cents(low_cents), cents(close_cents), volume, 10 + n % 90


@dataclass(slots=True)
class FakeBinance:
    """The fake's state: pairs, klines from `listed_ms` up to `now_ms` (the last one still open, as on Binance),
    aggregated trades per symbol (tests append), each symbol's top of book, the log of requests (stamped by `clock`,
    a monotonic clock in seconds) and the failures still to inject."""

    now_ms: int
    listed_ms: int
    pairs: dict[str, Pair] = field(default_factory=lambda: {p.symbol: p for p in DEFAULT_PAIRS})
    trades: dict[str, list[AggTrade]] = field(default_factory=dict)
    books: dict[str, Book] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    base_url: str = ""
    clock: MonotonicClock = time.monotonic
    _next_trade_id: int = 1000

    # ----- what tests do -----

    def add_trade(self, symbol: str, price: str, qty: str, time_ms: int, side: str) -> AggTrade:
        """Append a trade; `side` is the taker's ("buy" means the buyer took liquidity, so the buyer is not the
        maker)."""
        self._next_trade_id += 1
        trade = AggTrade(self._next_trade_id, price, qty, time_ms, buyer_is_maker=(side == "sell"))
        self.trades.setdefault(symbol, []).append(trade)
        self.trades[symbol].sort(key=lambda t: (t.time_ms, t.id))
        return trade

    def set_book(self, symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str) -> None:
        self.books[symbol] = Book(bid, bid_qty, ask, ask_qty)

    def fail(
        self,
        path: str = "",
        *,
        status: int = 500,
        retry_after: int | None = None,
        drop: bool = False,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Answer the next `times` requests to `path` (a prefix; all paths when empty) with `status` (and a
        Retry-After header), by dropping the connection without an answer, or normally but `delay` seconds late."""
        self.failures.append(Failure(path, status, retry_after, drop, delay, times))

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def kline(self, symbol: str, interval: str, open_ms: int) -> list[Any]:
        """The kline row the fake serves for this open time."""
        step = INTERVAL_MS[interval]
        open_, high, low, close, volume, count = kline_prices(self.pairs[symbol], open_ms, step)
        quote_volume = f"{float(volume) * float(close):.8f}"
        taker_base = f"{float(volume) / 2:.8f}"
        taker_quote = f"{float(quote_volume) / 2:.8f}"
        return [
            open_ms,
            open_,
            high,
            low,
            close,
            volume,
            open_ms + step - 1,
            quote_volume,
            count,
            taker_base,
            taker_quote,
            "0",
        ]

    # ----- the HTTP side -----

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_fail])
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/aggTrades", self._agg_trades)
        app.router.add_get("/api/v3/ticker/24hr", self._ticker_24hr)
        app.router.add_get("/api/v3/klines", self._klines)
        return app

    @web.middleware
    async def _record_and_fail(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Request(request.method, request.path, dict(request.query), self.clock()))
        for failure in self.failures:
            if failure.times > 0 and request.path.startswith(failure.path):
                failure.times -= 1
                if failure.delay:
                    await asyncio.sleep(failure.delay)
                    break
                if failure.drop:
                    # Close the socket without any answer, as a crashed server or a cut connection would; the
                    # response returned is never written.
                    if request.transport is not None:
                        request.transport.abort()
                    return web.Response(status=499)
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                if failure.status in (418, 429):
                    body = {
                        "code": -1003,
                        "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE.",
                    }
                else:
                    body = {"code": -1000, "msg": "An unknown error occurred while processing the request."}
                return web.json_response(body, status=failure.status, headers=headers)
        response: web.StreamResponse = await handler(request)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(len(self.requests))
        return response

    @staticmethod
    def _error(code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _pair(self, request: web.Request) -> Pair | None:
        return self.pairs.get(request.query.get("symbol", ""))

    @staticmethod
    def _int(request: web.Request, name: str) -> int | None:
        value = request.query.get(name)
        return None if value is None else int(value)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now_ms})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": self.now_ms,
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(pair) for pair in self.pairs.values()],
            }
        )

    @staticmethod
    def _symbol_info(pair: Pair) -> dict[str, Any]:
        return {
            "symbol": pair.symbol,
            "status": pair.status,
            "baseAsset": pair.base,
            "baseAssetPrecision": 8,
            "quoteAsset": pair.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": pair.tick_size,
                    "maxPrice": "1000000.00000000",
                    "tickSize": pair.tick_size,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": pair.step_size,
                    "maxQty": "9000.00000000",
                    "stepSize": pair.step_size,
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": "100.00000000",
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "TRAILING_DELTA",
                    "minTrailingAboveDelta": 10,
                    "maxTrailingAboveDelta": 2000,
                    "minTrailingBelowDelta": 10,
                    "maxTrailingBelowDelta": 2000,
                },
                {
                    "filterType": "PERCENT_PRICE_BY_SIDE",
                    "bidMultiplierUp": "5",
                    "bidMultiplierDown": "0.2",
                    "askMultiplierUp": "5",
                    "askMultiplierDown": "0.2",
                    "avgPriceMins": 5,
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "5.00000000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN", "TRD_GRP_004", "TRD_GRP_005"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    async def _agg_trades(self, request: web.Request) -> web.Response:
        pair = self._pair(request)
        if pair is None:
            return self._error(-1121, "Invalid symbol.")
        limit = self._int(request, "limit") or DEFAULT_LIMIT
        if not 0 < limit <= MAX_TRADES:
            return self._error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end, from_id = (
            self._int(request, "startTime"),
            self._int(request, "endTime"),
            self._int(request, "fromId"),
        )
        if start is not None and end is not None and end - start > HOUR_MS:
            return self._error(-1127, "More than 1 hours between startTime and endTime.")
        trades = self.trades.get(pair.symbol, [])
        if from_id is not None:
            selected = [t for t in trades if t.id >= from_id][:limit]
        elif start is not None or end is not None:
            selected = [
                t for t in trades if (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)
            ][:limit]
        else:
            selected = trades[-limit:]
        return web.json_response([t.json() for t in selected])

    async def _ticker_24hr(self, request: web.Request) -> web.Response:
        if "symbol" not in request.query:
            return web.json_response([self._ticker(pair) for pair in self.pairs.values()])
        pair = self._pair(request)
        if pair is None:
            return self._error(-1121, "Invalid symbol.")
        return web.json_response(self._ticker(pair))

    def _ticker(self, pair: Pair) -> dict[str, Any]:
        trades = self.trades.get(pair.symbol, [])
        last = trades[-1].price if trades else f"{pair.base_price}.00000000"
        book = self.books.get(pair.symbol) or Book(last, "1.00000000", last, "1.00000000")
        open_ = f"{pair.base_price}.00000000"
        change = float(last) - float(open_)
        return {
            "symbol": pair.symbol,
            "priceChange": f"{change:.8f}",
            "priceChangePercent": f"{100 * change / float(open_):.3f}",
            "weightedAvgPrice": last,
            "prevClosePrice": open_,
            "lastPrice": last,
            "lastQty": trades[-1].qty if trades else "0.00000000",
            "bidPrice": book.bid,
            "bidQty": book.bid_qty,
            "askPrice": book.ask,
            "askQty": book.ask_qty,
            "openPrice": open_,
            "highPrice": max([last, open_], key=float),
            "lowPrice": min([last, open_], key=float),
            "volume": f"{sum(float(t.qty) for t in trades):.8f}",
            "quoteVolume": f"{sum(float(t.qty) * float(t.price) for t in trades):.8f}",
            "openTime": self.now_ms - 86_400_000,
            "closeTime": self.now_ms,
            "firstId": trades[0].id if trades else -1,
            "lastId": trades[-1].id if trades else -1,
            "count": len(trades),
        }

    async def _klines(self, request: web.Request) -> web.Response:
        pair = self._pair(request)
        if pair is None:
            return self._error(-1121, "Invalid symbol.")
        interval = request.query.get("interval", "")
        if interval not in INTERVAL_MS:
            return self._error(-1120, "Invalid interval.")
        limit = self._int(request, "limit") or DEFAULT_LIMIT
        if not 0 < limit <= MAX_KLINES:
            return self._error(-1130, "Data sent for parameter 'limit' is not valid.")
        step = INTERVAL_MS[interval]
        first = (self.listed_ms + step - 1) // step * step
        last = self.now_ms // step * step  # the kline still open now is served too, as Binance does
        start, end = self._int(request, "startTime"), self._int(request, "endTime")
        if end is not None:
            last = min(last, end // step * step)
        if start is not None:
            opens = range(max(first, (start + step - 1) // step * step), last + 1, step)[:limit]
        else:
            opens = range(max(first, last - (limit - 1) * step), last + 1, step)
        return web.json_response([self.kline(pair.symbol, interval, open_ms) for open_ms in opens])


@asynccontextmanager
async def fake_binance(
    now: datetime, listed: datetime, *, clock: MonotonicClock = time.monotonic
) -> AsyncIterator[FakeBinance]:
    """A FakeBinance serving on a free port of 127.0.0.1 (its `base_url`), stopped on exit; `clock` stamps the
    requests it receives (the feed's Timer, to see request spacing exactly)."""
    fake = FakeBinance(now_ms=millis(now), listed_ms=millis(listed), clock=clock)
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield fake
    finally:
        await runner.cleanup()
        sock.close()
