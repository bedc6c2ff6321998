"""The simulator's instruments: what a simulated symbol is (its price, regime, jump and volume parameters, checked
when it is made) and the demo symbols the embedded feed lists."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from services.core.calendars import ALWAYS_OPEN
from services.market.records import AssetClass, TradingSession

SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
# The standard deviation of a log-jump as a share of the symbol's annual volatility.
JUMP_SIZE_SHARE = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSymbol:
    """One simulated instrument and the parameters of its price, regime, jump and volume model.

    `annual_volatility` is the long-run volatility of daily log returns including regimes and jumps; the calm
    regime's volatility is derived from it. `daily_volume` is the average traded quantity per (UTC) day.
    `trading_session` gives the regular hours of the market it imitates, which shape the volume profile; the
    simulator itself trades every symbol around the clock, so its instruments are listed 24/7 (`listed_session`).
    `minute_noise` k > 0 moves each minute's close off the efficient (random-walk) price by an independent normal
    error of k times that minute's own volatility (the day's sd times the root of the minute's share of the volume
    profile), as a bid-ask bounce does: the price reverts to the efficient one, so minute returns are negatively
    autocorrelated (lag 1 about -k² / (1 + 2k²), the same at every hour of the day) and partly predictable, while
    daily closes (each day's last close is its next open, without noise), and anything longer than a few minutes,
    are untouched.
    """

    symbol: str
    display_name: str
    asset_class: AssetClass
    quote_currency: str
    start_price: float
    annual_volatility: float
    tick_size: float
    lot_size: float
    daily_volume: float
    venue: str = "SIM"
    base_currency: str = ""
    annual_drift: float = 0.0
    timezone: str = "UTC"
    trading_session: TradingSession = field(default_factory=TradingSession)
    jumps_per_year: float = 3.0
    turbulence_multiplier: float = 2.5
    calm_to_turbulent_per_day: float = 0.01
    turbulent_to_calm_per_day: float = 0.08
    ticks_per_second: float = 4.0
    minute_noise: float = 0.0

    def __post_init__(self) -> None:
        if not SYMBOL_PATTERN.fullmatch(self.symbol):
            raise ValueError(f"symbol {self.symbol!r} must match {SYMBOL_PATTERN.pattern}")
        if "(simulated)" not in self.display_name:
            raise ValueError(f"display name of {self.symbol} must say '(simulated)'")
        positive = ("start_price", "tick_size", "lot_size", "daily_volume", "ticks_per_second")
        if any(not getattr(self, name) > 0 for name in positive):
            raise ValueError(f"{self.symbol}: {', '.join(positive)} must be positive")
        if self.annual_volatility < 0 or self.jumps_per_year < 0 or self.turbulence_multiplier < 1:
            raise ValueError(f"{self.symbol}: volatility and jump rate >= 0, turbulence multiplier >= 1")
        if not (0 <= self.calm_to_turbulent_per_day <= 1 and 0 <= self.turbulent_to_calm_per_day <= 1):
            raise ValueError(f"{self.symbol}: regime switching probabilities must be in [0, 1]")
        if not 0 <= self.minute_noise <= 3:
            raise ValueError(f"{self.symbol}: minute noise must be in [0, 3] minute volatilities")
        if self.jumps_per_year * JUMP_SIZE_SHARE**2 >= 1:
            raise ValueError(f"{self.symbol}: jumps would carry more than the whole volatility budget")
        ZoneInfo(self.timezone)
        if not self.trading_session.always_open:
            session_minutes(self.trading_session)

    @property
    def listed_session(self) -> TradingSession:
        """The session the instrument is listed with: around the clock, like the simulated market."""
        hours = self.trading_session
        busiest = (
            ""
            if hours.always_open
            else f", busiest in {hours.description} {hours.open_local_time}-{hours.close_local_time} {self.timezone}"
        )
        return TradingSession(always_open=True, description=f"24/7 (simulated){busiest}", calendar=ALWAYS_OPEN)


def session_minutes(session: TradingSession) -> tuple[int, int]:
    """The session's open and close as minutes after local midnight."""
    hours_minutes = []
    for text in (session.open_local_time, session.close_local_time):
        hours, _, minutes = text.partition(":")
        hours_minutes.append(int(hours) * 60 + int(minutes))
    return hours_minutes[0], hours_minutes[1]


def _session(open_time: str, close_time: str, description: str) -> TradingSession:
    return TradingSession(
        always_open=False, open_local_time=open_time, close_local_time=close_time, description=description
    )


DEMO_SYMBOLS: tuple[SimSymbol, ...] = (
    SimSymbol(
        symbol="SIM-AAPL", display_name="Apple Inc. (simulated)", asset_class=AssetClass.STOCK,
        quote_currency="USD", start_price=190.0, annual_volatility=0.28, annual_drift=0.08, tick_size=0.01,
        lot_size=1.0, daily_volume=55_000_000, timezone="America/New_York",
        trading_session=_session("09:30", "16:00", "NYSE regular hours"),
    ),
    SimSymbol(
        symbol="SIM-005930", display_name="Samsung Electronics (simulated)", asset_class=AssetClass.STOCK,
        quote_currency="KRW", start_price=72_000.0, annual_volatility=0.30, annual_drift=0.05, tick_size=100.0,
        lot_size=1.0, daily_volume=15_000_000, timezone="Asia/Seoul",
        trading_session=_session("09:00", "15:30", "KRX regular hours"),
    ),
    SimSymbol(
        symbol="SIM-BTC-USDT", display_name="Bitcoin / Tether (simulated)", asset_class=AssetClass.CRYPTO,
        quote_currency="USDT", base_currency="BTC", start_price=65_000.0, annual_volatility=0.60,
        annual_drift=0.10, tick_size=0.01, lot_size=0.00001, daily_volume=25_000, jumps_per_year=5.0,
        minute_noise=1.2,
    ),
    SimSymbol(
        symbol="SIM-EUR-USD", display_name="Euro / US Dollar (simulated)", asset_class=AssetClass.FX,
        quote_currency="USD", base_currency="EUR", start_price=1.08, annual_volatility=0.07, tick_size=0.00001,
        lot_size=1000.0, daily_volume=5_000_000_000, jumps_per_year=1.0,
    ),
    SimSymbol(
        symbol="SIM-KOSPI", display_name="KOSPI Composite Index (simulated)", asset_class=AssetClass.INDEX,
        quote_currency="KRW", start_price=2_600.0, annual_volatility=0.18, annual_drift=0.05, tick_size=0.01,
        lot_size=1.0, daily_volume=400_000_000, timezone="Asia/Seoul",
        trading_session=_session("09:00", "15:30", "KRX regular hours"),
    ),
)  # fmt: skip
