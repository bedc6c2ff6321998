"""The ccxt feed against a loopback fake of Binance's public REST API: markets, paginated history, polled ticks
without duplicates, errors as FeedError, the rate limiter, and no connection anywhere but loopback.

Polls and request spacing run on a ManualTime the tests advance, so schedules are checked exactly and a loaded
machine changes nothing: between two `advance` calls the feed sleeps, and only what falls due within a span runs."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import types
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from services.market.feeds.base import FeedError, HistoryNotSupported, Transport
from services.market.feeds.ccxt.conversions import from_millis, platform_symbol, precision_to_step, redirect_api_urls
from services.market.feeds.ccxt.feed import CcxtFeed
from services.market.records import AssetClass, Bar, Tick, Timeframe
from tests.fake_exchange import FakeBinance, fake_binance, millis
from tests.manual_time import ManualTime

NOW = datetime(2024, 3, 1, 12, 0, 30)
LISTED = datetime(2024, 1, 1)
T0 = millis(NOW)
# A poll a second of manual time; with the request unit at 1 ms, the pacer's waits within a poll come to a few ms.
POLL = 1.0
# Time that runs a poll that is due (its waits for the pacer included) and stops well before the next one.
WITHIN_A_POLL = 0.5


def _is_loopback(host: object) -> bool:
    if host is None:
        return True  # a passive lookup (binding), not a destination
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def refused(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name lookup and socket connection to anything but loopback fails in these tests (and is listed
    here), so nothing ccxt does can reach the internet."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            attempts.append(f"resolve {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"the tests refuse to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(f"connect {address}")
            raise ConnectionRefusedError(f"the tests refuse to connect to {address}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


@pytest.fixture
def time() -> ManualTime:
    """The feeds' Timer and the fake's clock. It jumps through every wait at once, so paced requests go straight
    through; tests of schedules and spacing switch that off and advance it themselves."""
    return ManualTime(autojump=True)


@pytest.fixture
async def fake(refused: list[str], time: ManualTime) -> AsyncIterator[FakeBinance]:
    async with fake_binance(NOW, LISTED, clock=time.now) as server:
        yield server
    # Whatever the test did, everything went to the fake: it was asked, and nothing was refused.
    assert server.requests
    assert refused == []


@pytest.fixture
async def make_feed(fake: FakeBinance, time: ManualTime) -> AsyncIterator[Callable[..., CcxtFeed]]:
    """Builds feeds on the fake (BTC/USDT and ETH/USDT, a fixed clock, polls and a rate limiter on the manual
    timer); stops them all at the end."""
    feeds: list[CcxtFeed] = []

    def make(**overrides: Any) -> CcxtFeed:
        options: dict[str, Any] = {
            "exchange": "binance",
            "symbols": ["BTC/USDT", "ETH/USDT"],
            "base_url": fake.base_url,
            "poll_interval_seconds": POLL,
            "clock": lambda: NOW,
            "timer": time,
            "rate_limit_ms": 1,
        }
        options.update(overrides)
        feed = CcxtFeed("crypto", **options)
        feeds.append(feed)
        return feed

    yield make
    for feed in feeds:
        await feed.stop()


class Collector:
    """Consumes a feed's ticks in a task, keeping every batch."""

    def __init__(self, feed: CcxtFeed, symbols: list[str]) -> None:
        self.stream = feed.ticks(symbols)
        self.batches: list[list[Tick]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.stream:
            self.batches.append(batch)

    @property
    def ticks(self) -> list[Tick]:
        return [tick for batch in self.batches for tick in batch]

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    running: list[Collector] = []
    yield running
    for collector in running:
        collector.task.cancel()


# ----- start: markets as instruments -----


async def test_start_loads_spot_markets_as_instruments(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed()
    assert (feed.adapter, feed.simulated, feed.transport) == ("ccxt", False, Transport.POLLING)
    assert feed.instruments() == ()

    await feed.start()

    btc, eth = feed.instruments()
    assert (btc.symbol, btc.venue, btc.venue_symbol) == ("BTC-USDT", "BINANCE", "BTC/USDT")
    assert (btc.asset_class, btc.base_currency, btc.quote_currency) == (AssetClass.CRYPTO, "BTC", "USDT")
    assert (btc.tick_size, btc.lot_size) == (0.01, 0.00001)  # PRICE_FILTER tickSize, LOT_SIZE stepSize
    assert btc.display_name == "BTC / USDT on Binance"
    assert (btc.timezone, btc.trading_session.always_open) == ("UTC", True)
    assert (btc.feed_id, btc.simulated) == ("crypto", False)
    assert (eth.symbol, eth.venue_symbol, eth.lot_size) == ("ETH-USDT", "ETH/USDT", 0.0001)
    # Spot only: no futures, options or wallet (sapi) endpoints.
    assert [r.path for r in fake.requests] == ["/api/v3/exchangeInfo"]
    assert feed.exchange.enableRateLimit is True


async def test_a_configured_symbol_the_exchange_lacks_fails_start(make_feed: Callable[..., CcxtFeed]) -> None:
    feed = make_feed(symbols=["BTC/USDT", "DOGE/USDT", "XRP/USDT"])
    with pytest.raises(FeedError, match=r"DOGE/USDT, XRP/USDT"):
        await feed.start()
    assert feed.exchange is None


async def test_restart_after_stop_reloads_markets(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed()
    await feed.start()
    await feed.stop()
    await feed.stop()  # idempotent
    assert feed.exchange is None
    await feed.start()
    assert len(feed.instruments()) == 2
    assert len(fake.requests_to("/api/v3/exchangeInfo")) == 2


def test_configuration_is_checked_up_front() -> None:
    assert platform_symbol("BTC/USDT") == "BTC-USDT"
    assert platform_symbol("btc/usdt:usdt") == "BTC-USDT-USDT"
    with pytest.raises(ValueError, match="valid platform symbol"):
        platform_symbol("BTC USDT")
    with pytest.raises(ValueError, match="unknown ccxt exchange"):
        CcxtFeed("x", exchange="nosuchexchange", symbols=["BTC/USDT"])
    with pytest.raises(ValueError, match="both map to BTC-USDT"):
        CcxtFeed("x", exchange="binance", symbols=["BTC/USDT", "BTC:USDT"])


def test_precisions_become_steps() -> None:
    assert precision_to_step(0.01, 4) == 0.01  # TICK_SIZE: already a step
    assert precision_to_step(2, 2) == 0.01  # DECIMAL_PLACES: 2 places
    assert precision_to_step(0, 2) == 1.0
    assert precision_to_step(5, 3) == 0.0  # SIGNIFICANT_DIGITS: no fixed step
    assert precision_to_step(None, 4) == 0.0


def test_every_api_url_is_redirected_keeping_its_path() -> None:
    api = {"public": "https://api.binance.com/api/v3", "nested": {"x": "https://fapi.binance.com/fapi/v1"}}
    assert redirect_api_urls(api, "http://127.0.0.1:9/") == {
        "public": "http://127.0.0.1:9/api/v3",
        "nested": {"x": "http://127.0.0.1:9/fapi/v1"},
    }


# ----- history -----


def _expected(fake: FakeBinance, symbol: str, interval: str, opens: range) -> list[Bar]:
    bars = []
    for open_ms in opens:
        open_, high, low, close, volume = (float(v) for v in fake.kline(symbol, interval, open_ms)[1:6])
        bars.append(Bar(from_millis(open_ms), open_, high, low, close, volume))
    return bars


async def test_history_pages_through_minute_bars(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed()
    await feed.start()
    start, end = NOW - timedelta(minutes=2500), NOW + timedelta(minutes=10)

    bars = await feed.history("BTC-USDT", Timeframe.M1, start, end)

    # Bars open from the first whole minute at or after `start`, up to the last closed one (11:59, closed at
    # 12:00 <= 12:00:30); the fake also served the open 12:00 bar, which is left out.
    first, last = millis(datetime(2024, 2, 28, 18, 21)), millis(datetime(2024, 3, 1, 11, 59))
    assert bars == _expected(fake, "BTCUSDT", "1m", range(first, last + 1, 60_000))
    assert len(bars) == 2499
    assert all(b.open_time - a.open_time == timedelta(minutes=1) for a, b in pairwise(bars))
    pages = fake.requests_to("/api/v3/klines")
    assert len(pages) == 3
    assert all(int(p.query["limit"]) <= 1000 and p.query["interval"] == "1m" for p in pages)


async def test_history_of_daily_bars(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed()
    await feed.start()

    bars = await feed.history("ETH-USDT", Timeframe.D1, datetime(2024, 2, 20), datetime(2024, 3, 5))

    # 2024 is a leap year: Feb 20..29 are closed; Mar 1 is still open at NOW.
    assert bars == _expected(fake, "ETHUSDT", "1d", range(millis(datetime(2024, 2, 20)), T0 - 86_400_000, 86_400_000))
    assert len(bars) == 10
    assert fake.requests_to("/api/v3/klines")[0].query["limit"] == "10"  # no more than the range can hold
    assert await feed.history("ETH-USDT", Timeframe.D1, NOW, NOW + timedelta(days=3)) == []


async def test_history_of_what_the_feed_lacks(make_feed: Callable[..., CcxtFeed]) -> None:
    feed = make_feed()
    await feed.start()
    with pytest.raises(HistoryNotSupported):
        await feed.history("SOL-USDT", Timeframe.M1, NOW - timedelta(hours=1), NOW)
    assert feed.history_timeframes("BTC-USDT") == tuple(Timeframe)
    assert feed.history_timeframes("SOL-USDT") == ()


async def test_history_on_a_stopped_feed(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed()
    first = await feed.history("BTC-USDT", Timeframe.H1, NOW - timedelta(hours=5), NOW)
    second = await feed.history("BTC-USDT", Timeframe.M15, NOW - timedelta(hours=1), NOW)
    assert [b.open_time.hour for b in first] == [8, 9, 10, 11]  # 07:00 opened before the range began
    assert [b.open_time.minute for b in second] == [15, 30, 45]
    assert feed.exchange is None
    # The markets loaded for the first call serve the second.
    assert len(fake.requests_to("/api/v3/exchangeInfo")) == 1


# ----- ticks -----


async def test_new_trades_come_out_once_each_in_order(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, time: ManualTime, collectors: list[Collector]
) -> None:
    time.autojump = False
    feed = make_feed(fetch_quotes=False)
    await feed.start()
    fake.add_trade("BTCUSDT", "39990.00", "1.0", T0 - 1, "buy")  # before the stream began: not live
    collector = Collector(feed, ["BTC-USDT", "ETH-USDT"])
    collectors.append(collector)
    fake.add_trade("BTCUSDT", "40000.10", "0.50000", T0 + 10, "buy")
    fake.add_trade("ETHUSDT", "2000.50", "1.2500", T0 + 20, "sell")
    fake.add_trade("BTCUSDT", "40000.20", "0.25000", T0 + 30, "sell")

    await time.advance(WITHIN_A_POLL)  # the first poll
    assert len(collector.ticks) == 3
    await time.advance(2 * POLL)  # two polls that find nothing new
    fake.add_trade("ETHUSDT", "2001.00", "0.5000", T0 + 40, "buy")
    await time.advance(POLL)
    assert len(collector.ticks) == 4
    await time.advance(POLL)

    assert [(t.symbol, t.price, t.size, t.aggressor_side) for t in collector.ticks] == [
        ("BTC-USDT", 40000.10, 0.5, 1),
        ("ETH-USDT", 2000.50, 1.25, 2),
        ("BTC-USDT", 40000.20, 0.25, 2),
        ("ETH-USDT", 2001.00, 0.5, 1),
    ]
    assert [t.event_time for t in collector.ticks] == [from_millis(T0 + ms) for ms in (10, 20, 30, 40)]
    assert all(t.sequence == 0 and t.bid is None for t in collector.ticks)
    assert [len(batch) for batch in collector.batches] == [3, 1]  # polls without trades yield nothing
    # Five polls, each symbol once per poll in order, each asking from the newest trade it has seen (inclusive, so
    # that trade comes back and is dropped as known).
    asked = [(r.query["symbol"], int(r.query["startTime"]) - T0) for r in fake.requests_to("/api/v3/aggTrades")]
    assert asked == [("BTCUSDT", 0), ("ETHUSDT", 0)] + [("BTCUSDT", 30), ("ETHUSDT", 20)] * 3 + [
        ("BTCUSDT", 30),
        ("ETHUSDT", 40),
    ]
    polls = [round(r.at - 1000.0, 6) for r in fake.requests_to("/api/v3/aggTrades")][::2]
    assert polls[1:] == [1.0, 2.0, 3.0, 4.0]  # on the poll schedule (the first waited out the pacer)


async def test_trades_sharing_a_millisecond_and_late_trades(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, time: ManualTime, collectors: list[Collector]
) -> None:
    time.autojump = False
    feed = make_feed(symbols=["BTC/USDT"], fetch_quotes=False)
    await feed.start()
    collector = Collector(feed, ["BTC-USDT"])
    collectors.append(collector)

    fake.add_trade("BTCUSDT", "40000.00", "0.1", T0 + 100, "buy")
    await time.advance(WITHIN_A_POLL)
    assert len(collector.ticks) == 1
    fake.add_trade("BTCUSDT", "40000.01", "0.2", T0 + 100, "buy")  # same millisecond, next poll
    fake.add_trade("BTCUSDT", "39999.00", "0.3", T0 + 50, "sell")  # older than what was already sent
    fake.add_trade("BTCUSDT", "40000.02", "0.4", T0 + 200, "sell")
    await time.advance(3 * POLL)

    assert [t.size for t in collector.ticks] == [0.1, 0.2, 0.4]
    assert [len(batch) for batch in collector.batches] == [1, 2]
    times = [t.event_time for t in collector.ticks]
    assert times == sorted(times)
    asked = [int(r.query["startTime"]) - T0 for r in fake.requests_to("/api/v3/aggTrades")]
    assert asked == [0, 100, 200, 200]


async def test_the_last_tick_of_a_symbol_carries_the_book(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, time: ManualTime, collectors: list[Collector]
) -> None:
    time.autojump = False
    feed = make_feed(symbols=["BTC/USDT"])
    await feed.start()
    fake.set_book("BTCUSDT", bid="40000.00", bid_qty="1.5", ask="40000.01", ask_qty="2.5")
    fake.add_trade("BTCUSDT", "40000.00", "0.1", T0 + 1, "sell")
    fake.add_trade("BTCUSDT", "40000.01", "0.2", T0 + 2, "buy")
    collector = Collector(feed, ["BTC-USDT"])
    collectors.append(collector)

    await time.advance(WITHIN_A_POLL + POLL)

    first, last = collector.ticks
    assert (first.bid, first.ask) == (None, None)
    assert (last.bid, last.ask, last.bid_size, last.ask_size) == (40000.00, 40000.01, 1.5, 2.5)
    assert len(fake.requests_to("/api/v3/aggTrades")) == 2
    assert len(fake.requests_to("/api/v3/ticker/24hr")) == 1  # only after a poll that found trades


async def test_cancelling_stops_the_stream_at_once(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, time: ManualTime, collectors: list[Collector]
) -> None:
    time.autojump = False
    feed = make_feed(poll_interval_seconds=30.0)
    await feed.start()
    collector = Collector(feed, ["BTC-USDT"])
    collectors.append(collector)
    await time.advance(WITHIN_A_POLL)
    assert len(fake.requests_to("/api/v3/aggTrades")) == 1
    assert time.sleeping == 1  # waiting for the next poll, 30 s away

    await collector.stop()

    assert time.sleeping == 0
    assert isinstance(collector.stream, types.AsyncGeneratorType)
    assert collector.stream.ag_frame is None  # finished: it will never poll again


async def test_ticks_need_a_started_feed_and_known_symbols(make_feed: Callable[..., CcxtFeed]) -> None:
    feed = make_feed()
    with pytest.raises(FeedError, match="not started"):
        await anext(feed.ticks(["BTC-USDT"]))
    await feed.start()
    with pytest.raises(ValueError, match="SOL-USDT"):
        await anext(feed.ticks(["SOL-USDT"]))


# ----- errors and the rate limiter -----


async def test_a_server_error_at_start_is_a_feed_error(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    fake.fail("/api/v3/exchangeInfo", status=500)
    feed = make_feed()
    with pytest.raises(FeedError, match="load markets failed") as raised:
        await feed.start()
    assert feed.exchange is None
    assert "ccxt" in type(raised.value.__cause__).__module__
    await feed.start()  # the next attempt finds the exchange well again
    assert len(feed.instruments()) == 2


@pytest.mark.parametrize("status", [429, 418])
async def test_rate_limiting_answers_end_the_stream_with_a_feed_error(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, status: int
) -> None:
    feed = make_feed()
    await feed.start()
    fake.fail("/api/v3/aggTrades", status=status, retry_after=7)
    with pytest.raises(FeedError, match=r"the exchange is rate limiting us, retry after 7$") as raised:
        await anext(feed.ticks(["BTC-USDT"]))
    # What the exchange said is kept for the log, never put in the message clients see.
    assert re.match(rf"DDoSProtection: binance {status} ", raised.value.detail)
    assert "binance" not in str(raised.value)


async def test_a_dropped_connection_is_a_feed_error(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed()
    await feed.start()
    # Twice: aiohttp silently retries a request once when a kept-alive connection closes without an answer.
    fake.fail("/api/v3/klines", drop=True, times=2)
    with pytest.raises(
        FeedError, match="fetch 1m candles of BTC/USDT failed: the exchange could not be reached"
    ) as raised:
        await feed.history("BTC-USDT", Timeframe.M1, NOW - timedelta(hours=1), NOW)
    assert raised.value.detail.startswith("ExchangeNotAvailable")
    assert len(await feed.history("BTC-USDT", Timeframe.M1, NOW - timedelta(hours=1), NOW)) == 59  # 11:01..11:59


async def test_a_slow_answer_times_out_as_a_feed_error(make_feed: Callable[..., CcxtFeed], fake: FakeBinance) -> None:
    feed = make_feed(timeout_seconds=0.1)
    await feed.start()
    fake.fail("/api/v3/aggTrades", delay=0.5)
    with pytest.raises(FeedError, match="the exchange could not be reached") as raised:
        await anext(feed.ticks(["BTC-USDT"]))
    assert raised.value.detail.startswith("RequestTimeout")


async def test_the_rate_limiter_spaces_requests(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, time: ManualTime, collectors: list[Collector]
) -> None:
    # ccxt weighs binance's spot exchangeInfo 4 units of rateLimit and aggTrades 0.4: at 100 ms a unit, the first
    # poll waits 400 ms after loading markets and polls come every 40 ms, however short the interval.
    time.autojump = False
    feed = make_feed(symbols=["BTC/USDT"], rate_limit_ms=100, poll_interval_seconds=0.001)
    await feed.start()
    assert feed.exchange.enableRateLimit is True
    collectors.append(Collector(feed, ["BTC-USDT"]))

    await time.advance(0.4 + 3 * 0.04 + 0.02)

    assert [r.path for r in fake.requests] == ["/api/v3/exchangeInfo"] + ["/api/v3/aggTrades"] * 4
    gaps = [later.at - earlier.at for earlier, later in pairwise(fake.requests)]
    assert gaps == pytest.approx([0.4, 0.04, 0.04, 0.04])


async def test_history_pages_are_spaced_on_every_exchange_instance(
    make_feed: Callable[..., CcxtFeed], fake: FakeBinance, time: ManualTime
) -> None:
    feed = make_feed(symbols=["BTC/USDT"], rate_limit_ms=100)
    await feed.start()
    await feed.history("BTC-USDT", Timeframe.M1, NOW - timedelta(minutes=2500), NOW)
    await feed.stop()
    await feed.history("BTC-USDT", Timeframe.H1, NOW - timedelta(hours=5), NOW)  # on a short-lived exchange

    # exchangeInfo costs 4 units, a page of klines 0.4; the short-lived exchange of the last call (its markets
    # kept from before) waits its turn behind the live one's requests.
    assert [r.path for r in fake.requests] == ["/api/v3/exchangeInfo"] + ["/api/v3/klines"] * 4
    gaps = [later.at - earlier.at for earlier, later in pairwise(fake.requests)]
    assert gaps == pytest.approx([0.4, 0.04, 0.04, 0.04])


async def test_without_the_fake_nothing_leaves_the_machine(refused: list[str]) -> None:
    feed = CcxtFeed("real", exchange="binance", symbols=["BTC/USDT"], timeout_seconds=2.0)
    try:
        with pytest.raises(FeedError, match="load markets failed"):
            await feed.start()
    finally:
        await feed.stop()
    assert refused == ["resolve api.binance.com"]
    refused.clear()
